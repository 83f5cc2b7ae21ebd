"""Read the features parquet written by spark_jobs/bank_features.py and split it.

Only the model's columns are read (parquet is columnar: the rest is never
fetched). Rows are sorted on every column after reading, so the split, and
therefore the trained model's bytes, depend only on the rows, not on how Spark
happened to partition them into files.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bank_serving import schema

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.fs

LABEL = "label"


class FeatureDataError(ValueError):
    """The features are missing, unreadable, or not what the Spark job writes."""


def feature_columns() -> tuple[str, ...]:
    """The model's inputs (the serving contract's FEATURE_COLUMNS)."""
    return tuple(schema.FEATURE_COLUMNS)


def categorical_columns() -> tuple[str, ...]:
    return tuple(schema.CATEGORICAL_COLUMNS)


def feature_paths(manifest: Mapping[str, Any], manifest_dir: str) -> list[str]:
    """Absolute paths/URIs of the parquet files a committed manifest lists (they are relative to it)."""
    files = manifest.get("files")
    if not files:
        raise FeatureDataError("manifest lists no feature files")
    base = manifest_dir.rstrip("/")
    return [f"{base}/{posixpath.normpath(rel)}" for rel in files]


def _resolve(path: str, filesystem: pyarrow.fs.FileSystem | None) -> tuple[pyarrow.fs.FileSystem, str]:
    from pyarrow import fs

    parts = urlsplit(path)
    if filesystem is not None:
        # A given filesystem (e.g. S3 with devstack's endpoint) wants "bucket/key", not a URI.
        return filesystem, f"{parts.netloc}{parts.path}" if parts.scheme else path
    if parts.scheme and parts.scheme != "file":
        resolved: tuple[pyarrow.fs.FileSystem, str] = fs.FileSystem.from_uri(path)
        return resolved
    return fs.LocalFileSystem(), str(Path(parts.path if parts.scheme else path).resolve())


def _read_one(path: str, filesystem: pyarrow.fs.FileSystem | None) -> pa.Table:
    import pyarrow.parquet as pq

    wanted = [*feature_columns(), LABEL]
    fs, resolved = _resolve(path, filesystem)
    try:
        with fs.open_input_file(resolved) as f:
            parquet = pq.ParquetFile(f)  # one footer read, reused by read()
            missing = [c for c in wanted if c not in parquet.schema_arrow.names]
            if missing:
                raise FeatureDataError(f"{path}: missing column(s) {', '.join(missing)}")
            return parquet.read(columns=wanted)
    except (OSError, ValueError) as err:
        if isinstance(err, FeatureDataError):
            raise
        raise FeatureDataError(f"{path}: unreadable as parquet: {err}") from err


def read_features(paths: Iterable[str], filesystem: pyarrow.fs.FileSystem | None = None) -> pa.Table:
    """The model's columns and the label from every file, as one table in a canonical row order.

    paths: local paths or URIs (s3://bucket/key with pyarrow's own S3 support), or
    paths for `filesystem` when one is given (a URI's scheme is then dropped).
    """
    import pyarrow as pa

    paths = list(paths)
    if not paths:
        raise FeatureDataError("no feature files given")
    tables = [_read_one(p, filesystem) for p in paths]
    try:
        table = pa.concat_tables(tables)
    except pa.ArrowInvalid as err:
        raise FeatureDataError(f"feature files disagree on their schema: {err}") from err
    if table.num_rows == 0:
        raise FeatureDataError("the feature files hold no rows")
    return table.sort_by([(c, "ascending") for c in table.column_names])


def to_xy(table: pa.Table) -> tuple[pd.DataFrame, np.ndarray]:
    """Model inputs as a DataFrame (strings as object, numbers as float32 with NaN for null) and labels."""
    import numpy as np
    import pandas as pd

    strings = set(categorical_columns())
    data: dict[str, Any] = {}
    for name in feature_columns():
        column = table.column(name)
        if name in strings:
            data[name] = np.asarray(column.to_pylist(), dtype=object)
        else:
            # float32: exactly what the ONNX model receives, so scikit-learn and ONNX split on the same values.
            # Through numpy: no range checks, nulls become NaN (pdays of the never-contacted).
            data[name] = column.to_numpy(zero_copy_only=False).astype(np.float32)
    labels = table.column(LABEL).to_numpy(zero_copy_only=False)
    if table.column(LABEL).null_count or not set(np.unique(labels)) <= {0, 1}:
        raise FeatureDataError(f"label must be 0 or 1, got values {sorted(set(labels.tolist()))[:10]}")
    return pd.DataFrame(data), labels.astype(np.int64)


@dataclass(frozen=True)
class Split:
    """A seeded stratified train/holdout split."""

    X_train: pd.DataFrame
    y_train: np.ndarray
    X_test: pd.DataFrame
    y_test: np.ndarray
    holdout_fraction: float
    seed: int


def split_holdout(table: pa.Table, holdout_fraction: float = 0.2, seed: int = 42) -> Split:
    """Stratified on the label, so the holdout keeps the positive rate (about 12%)."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be strictly between 0 and 1, got {holdout_fraction}")
    X, y = to_xy(table)
    counts = np.bincount(y, minlength=2)
    if counts.min() < 2 or round(len(y) * holdout_fraction) < 2:
        raise FeatureDataError(
            f"too few rows to split: {counts[0]} negatives, {counts[1]} positives, holdout {holdout_fraction}"
        )
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=holdout_fraction, stratify=y, random_state=seed)
    return Split(
        X_train=X_train.reset_index(drop=True),
        y_train=y_train,
        X_test=X_test.reset_index(drop=True),
        y_test=y_test,
        holdout_fraction=holdout_fraction,
        seed=seed,
    )


def features_from_csv(path: str | Path) -> pa.Table:
    """Features of a raw bank CSV computed with serving's derivation, without Spark.

    For tests and benchmarks only: production features come from the Spark job
    (which also quarantines bad rows); a test holds the two derivations equal.
    Raises bank_serving's RequestError on a row the contract rejects.
    """
    import csv

    import pyarrow as pa

    from bank_serving import features, validation

    ints = {name for name, kind, *_ in schema.RECORD_FIELDS if kind == "int"}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    records = [
        {k: int(v) if k in ints else v for k, v in row.items() if k in schema.RECORD_FIELD_NAMES} for row in rows
    ]
    derived = features.derive_features(validation.validate_records(records, "rows"))
    columns = {
        name: pa.array(values.tolist() if values.dtype == object else values) for name, values in derived.items()
    }
    columns[LABEL] = pa.array([int(row["y"] == "yes") for row in rows], type=pa.int32())
    table = pa.table(columns)
    return table.sort_by([(c, "ascending") for c in table.column_names])
