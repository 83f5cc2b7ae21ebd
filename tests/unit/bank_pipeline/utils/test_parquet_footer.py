"""The pure-Python footer reader agrees with pyarrow on every shape of metadata the lake's files carry."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bank_pipeline.utils.parquet_footer import TAIL, ParquetFooterError, footer_length, num_rows

pytestmark = pytest.mark.unit


def parquet_bytes(table: pa.Table, **options: object) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, **options)
    return buffer.getvalue()


def metadata(data: bytes) -> bytes:
    length = footer_length(data[-TAIL:])
    return data[-TAIL - length : -TAIL]


TABLES = {
    "empty": pa.table({"x": pa.array([], pa.int64())}),
    "one row": pa.table({"x": [1]}),
    "strings, nulls, stats": pa.table({"s": ["a", None, "c" * 300], "d": [1.5, None, -2.0]}),
    "nested": pa.table({
        "m": pa.array([{"k": 1}, {"j": 2}], type=pa.map_(pa.string(), pa.int32())),
        "l": pa.array([[1, 2], None]),
        "st": pa.array([{"a": True, "b": "x"}, {"a": False, "b": None}]),
    }),
    "many row groups": pa.table({"x": list(range(100_000)), "b": [i % 2 == 0 for i in range(100_000)]}),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(TABLES))
@pytest.mark.parametrize("options", [{}, {"row_group_size": 7_000, "compression": "zstd"}, {"write_statistics": False}])
def test_row_counts_agree_with_pyarrow(name: str, options: dict[str, object]) -> None:
    data = parquet_bytes(TABLES[name], **options)
    assert num_rows(metadata(data)) == pq.ParquetFile(io.BytesIO(data)).metadata.num_rows == TABLES[name].num_rows


def test_a_file_that_is_not_parquet_is_named_as_such() -> None:
    with pytest.raises(ParquetFooterError, match="not a parquet file: it ends with b'2;3\\\\n'"):
        footer_length(b"a;b\n1;2;3\n"[-TAIL:])


def test_truncated_or_garbled_metadata_is_an_error_not_a_count() -> None:
    data = metadata(parquet_bytes(TABLES["strings, nulls, stats"]))
    for cut in (0, 1, 6, 12):  # inside the version, or the schema that precedes num_rows
        with pytest.raises(ParquetFooterError, match="ends inside its metadata"):
            num_rows(data[:cut])
    with pytest.raises(ParquetFooterError, match="no num_rows"):
        num_rows(b"\x15\x04\x00")  # version only, then the struct's end
