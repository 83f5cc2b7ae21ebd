"""The row count of a parquet file from its footer alone, in pure Python: what workers check outputs with.

A parquet file ends with its ``FileMetaData`` (Thrift compact protocol), a 4-byte little-endian
length and ``PAR1``. ``num_rows`` is field 3 of that struct, after the format version and the
schema, so reading it means skipping two fields: a Thrift reader of the compact protocol's
skipping rules, about forty lines, instead of pyarrow on every Airflow worker. Tests compare it
with pyarrow on the files Spark writes.
"""

from __future__ import annotations

MAGIC = b"PAR1"
TAIL = 8  # footer length (4 bytes, little-endian) + magic
NUM_ROWS_FIELD = 3
# Compact protocol types.
_BOOL_TRUE, _BOOL_FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(1, 13)


class ParquetFooterError(ValueError):
    """The bytes are not a parquet footer (truncated, wrong magic, or not compact Thrift)."""


def footer_length(tail: bytes) -> int:
    """The metadata's length from a file's last 8 bytes."""
    if len(tail) != TAIL or tail[4:] != MAGIC:
        raise ParquetFooterError(f"not a parquet file: it ends with {tail[-4:]!r}, not {MAGIC!r}")
    return int.from_bytes(tail[:4], "little")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise ParquetFooterError("footer ends inside its metadata")
        self.pos += 1
        return self.data[self.pos - 1]

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise ParquetFooterError("varint longer than 64 bits")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def skip(self, kind: int, depth: int = 0) -> None:
        if depth > 64:
            raise ParquetFooterError("metadata nested too deep")
        if kind in (_BOOL_TRUE, _BOOL_FALSE):
            return  # a struct field's value is in its type; list elements are read as bytes below
        if kind == _BYTE:
            self.byte()
        elif kind in (_I16, _I32, _I64):
            self.varint()
        elif kind == _DOUBLE:
            self.pos += 8
        elif kind == _BINARY:
            length = self.varint()  # read before adding: `pos += varint()` would add to the old pos
            self.pos += length
        elif kind in (_LIST, _SET):
            header = self.byte()
            size, element = header >> 4, header & 0x0F
            if size == 15:
                size = self.varint()
            for _ in range(size):
                self.byte() if element in (_BOOL_TRUE, _BOOL_FALSE) else self.skip(element, depth + 1)
        elif kind == _MAP:
            size = self.varint()
            if size:
                types = self.byte()
                for _ in range(size):
                    self.skip(types >> 4, depth + 1)
                    self.skip(types & 0x0F, depth + 1)
        elif kind == _STRUCT:
            self.struct_field(None, depth + 1)
        else:
            raise ParquetFooterError(f"unknown compact type {kind}")
        if self.pos > len(self.data):
            raise ParquetFooterError("footer ends inside its metadata")

    def struct_field(self, wanted: int | None, depth: int = 0) -> int | None:
        """Read a struct up to field ``wanted`` (an integer field) and return its value; skip it all if None."""
        field = 0
        while True:
            header = self.byte()
            if header == 0:
                return None
            kind, delta = header & 0x0F, header >> 4
            field = field + delta if delta else self.zigzag()
            if field == wanted and kind in (_I16, _I32, _I64):
                return self.zigzag()
            self.skip(kind, depth)


def num_rows(metadata: bytes) -> int:
    """``FileMetaData.num_rows`` of a parquet footer's metadata (without the trailing length and magic)."""
    value = _Reader(metadata).struct_field(NUM_ROWS_FIELD)
    if value is None:
        raise ParquetFooterError("the footer's metadata has no num_rows")
    if value < 0:
        raise ParquetFooterError(f"the footer says num_rows={value}")
    return value
