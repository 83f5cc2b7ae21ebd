"""Files through the Hadoop FileSystem API of the JVM: EMRFS or S3A on s3://, the local file system otherwise.

The jobs list, read, write and delete through this one class, so the same code
runs on EMR, on local Spark against S3 (S3A) and on local paths.
"""

from __future__ import annotations

import math
from typing import Any

from pyspark.sql import DataFrame, SparkSession

ROWS_PER_FILE = 2_000_000  # bank rows compress to a few bytes each: ~tens of MB per file


class HadoopFs:
    """The Hadoop FileSystem of one URI through the JVM gateway (EMRFS on s3://, local otherwise).

    Relative names are resolved under the qualified root URI.
    """

    def __init__(self, spark: SparkSession, uri: str) -> None:
        jvm: Any = spark._jvm  # the Py4J gateway's JVM view: untyped
        self._jvm = jvm
        self._Path = jvm.org.apache.hadoop.fs.Path
        path = self._Path(uri)
        self.fs = path.getFileSystem(spark._jsc.hadoopConfiguration())  # type: ignore[attr-defined]
        # LocalFileSystem writes .crc side files next to everything (the manifest and,
        # via this cached instance, Spark's parquet parts); the output holds only the
        # contract's files. No-ops on S3.
        self.fs.setWriteChecksum(False)
        self.fs.setVerifyChecksum(False)
        self.root = self.fs.makeQualified(path)

    def _path(self, name: str = "") -> Any:
        return self._Path(self.root, name) if name else self.root

    def uri(self, name: str = "") -> str:
        return str(self._path(name).toString())

    def exists(self, name: str = "") -> bool:
        return bool(self.fs.exists(self._path(name)))

    def is_dir(self, name: str = "") -> bool:
        return bool(self.fs.getFileStatus(self._path(name)).isDirectory())

    def size(self, name: str = "") -> int:
        return int(self.fs.getFileStatus(self._path(name)).getLen())

    def list_names(self, name: str = "") -> list[str]:
        if not self.exists(name):
            return []
        return sorted(str(s.getPath().getName()) for s in self.fs.listStatus(self._path(name)))

    def write_bytes(self, name: str, data: bytes) -> None:
        # One create+close: a single PUT on S3, so readers see the old object or the new one.
        stream = self.fs.create(self._path(name), True)
        try:
            stream.write(bytearray(data))
        finally:
            stream.close()

    def read_bytes(self, name: str = "") -> bytes:
        """The whole file (small files only: manifests, models): one GET on S3."""
        stream = self.fs.open(self._path(name))
        try:
            return bytes(self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
        finally:
            stream.close()

    def read_head(self, size: int, name: str = "") -> bytes:
        """At most the first `size` bytes of a file: one ranged GET on S3."""
        stream = self.fs.open(self._path(name))
        try:
            return bytes(stream.readNBytes(size))
        finally:
            stream.close()

    def parquet_rows(self, name: str) -> int:
        """Rows of one parquet file, from its footer: one ranged read, no Spark job."""
        conf = self.fs.getConf()
        parquet = self._jvm.org.apache.parquet.hadoop
        reader = parquet.ParquetFileReader.open(parquet.util.HadoopInputFile.fromPath(self._path(name), conf))
        try:
            return int(reader.getRecordCount())
        finally:
            reader.close()

    def copy_to_local(self, name: str, local_path: str) -> None:
        """Copy one file to the driver's local disk (streamed by the JVM, not through Py4J)."""
        # useRawLocalFileSystem: no .crc side file next to the copy.
        self.fs.copyToLocalFile(False, self._path(name), self._Path("file://" + local_path), True)

    def copy_from_local(self, local_path: str, name: str) -> None:
        """Upload one local file (one PUT on S3: readers see the old object or the new one)."""
        self.fs.copyFromLocalFile(False, True, self._Path("file://" + local_path), self._path(name))

    def delete(self, name: str) -> None:
        self.fs.delete(self._path(name), True)


def write_parquet(df: DataFrame, uri: str, rows: int) -> None:
    """`df` as parquet at `uri`, in about one file per ROWS_PER_FILE rows, without a _SUCCESS marker."""
    # A few files for small outputs rather than one per input split or shuffle partition.
    files = max(1, math.ceil(rows / ROWS_PER_FILE))
    (
        df.coalesce(files)
        .write.option("mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")  # no _SUCCESS
        .parquet(uri)
    )


def parquet_parts(out: HadoopFs, directory: str) -> list[str]:
    """The part-*.parquet files Spark wrote under `directory`, as paths relative to `out` (the manifest's)."""
    return [
        f"{directory}/{name}"
        for name in out.list_names(directory)
        if name.startswith("part-") and name.endswith(".parquet")
    ]
