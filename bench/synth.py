"""Synthetic bank-full CSVs for the features benchmark: scale × 45,211 rows in bank-full's own format.

    .venv/bin/python bench/synth.py --scale 10 [--seed 42]

Each column is drawn independently from bank-full's empirical distribution of
that column (uniform row indices into the column, numpy Generator with a fixed
seed). Correlations between columns are not preserved (pdays = -1 next to
previous = 3, say): the data is no use for modelling, but the work per row
(parse, validate, derive, encode) is the same, which is what the benchmark
measures. One exception: the job's baseline model finds no signal here (AUC
0.5) and may converge in fewer iterations than on bank-full. Every value is
one bank-full holds, so no row is quarantined.

The header line is bank-full's, byte for byte, and the values are its own
tokens (ints bare, strings double-quoted, ';' between, '\\n' after), so the
job's header check and CSV parser see exactly the format they see in production.
Rows are built and written in chunks of a quarter million (pyarrow joins the
tokens in C): about 300 MB of memory at any scale, where chunks of a million
rows took 720 MB for no gain in speed. 1000× (4.6 GB) takes about 30 s on one core.

Files are cached: <name>.csv plus a sidecar <name>.json (rows, seed, chunk
size, generator version, source digest, bytes); a call whose parameters match
the sidecar reuses the file. The CSV is written under a temporary name and
renamed, and the sidecar written last, so an interrupted generation never
leaves a file that looks complete.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "data" / "bank" / "bank-full.csv"
DATA_DIR = REPO / "build" / "bench" / "data"
BASE_ROWS = 45_211  # rows of bank-full: scale 1
# Bump when the output for given (rows, seed, chunk rows) changes, so cached files are regenerated.
GENERATOR_VERSION = 1
CHUNK_ROWS = 1 << 18  # the draws go chunk by chunk, column by column: part of what decides the bytes
PROGRESS_EVERY_S = 5.0


@dataclass(frozen=True)
class Synthetic:
    """A generated (or reused) CSV; `seconds` is how long its generation took, reused or not."""

    path: Path
    rows: int
    seed: int
    bytes: int
    seconds: float
    reused: bool


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _source_columns(source: Path) -> tuple[bytes, list[pa.Array]]:
    """bank-full's header line and, per column, its raw tokens in row order (the last one with its '\\n')."""
    header, _, body = source.read_bytes().partition(b"\n")
    rows = [line.split(b";") for line in body.split(b"\n") if line]
    if {len(r) for r in rows} != {len(header.split(b";"))}:
        # A quoted ';' would need a real CSV parser here; bank-full has none.
        raise ValueError(f"{source}: every line must split on ';' into the header's columns")
    columns = [list(c) for c in zip(*rows)]
    columns[-1] = [token + b"\n" for token in columns[-1]]
    return header + b"\n", [pa.array(c, pa.binary()) for c in columns]


def _expected(rows: int, seed: int, source: Path) -> dict[str, object]:
    return {
        "rows": rows,
        "seed": seed,
        "chunk_rows": CHUNK_ROWS,
        "generator_version": GENERATOR_VERSION,
        "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
    }


def _cached(path: Path, expected: dict[str, object]) -> Synthetic | None:
    try:
        meta = json.loads(_sidecar(path).read_text())
        size = path.stat().st_size
    except (OSError, ValueError):
        return None
    if any(meta.get(k) != v for k, v in expected.items()) or meta.get("bytes") != size:
        return None
    return Synthetic(path, meta["rows"], meta["seed"], size, meta["seconds"], reused=True)


def write_synthetic(
    path: Path, scale: int, seed: int = 42, *, rows: int | None = None, source: Path = SOURCE
) -> Synthetic:
    """Write (or reuse) `path`: scale × 45,211 rows, or `rows` rows when given (small files for tests).

    The same (rows, seed) always gives the same bytes.
    """
    if scale < 1:
        raise ValueError(f"scale must be at least 1, got {scale}")
    total = scale * BASE_ROWS if rows is None else rows
    if total < 1:
        raise ValueError(f"rows must be at least 1, got {total}")
    path = Path(path)
    expected = _expected(total, seed, source)
    cached = _cached(path, expected)
    if cached is not None:
        return cached

    started = time.perf_counter()
    header, columns = _source_columns(source)
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sidecar(path).unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    long_run = total > 8 * CHUNK_ROWS
    last_report = started
    try:
        with tmp.open("wb") as f:
            f.write(header)
            for done in range(0, total, CHUNK_ROWS):
                n = min(CHUNK_ROWS, total - done)
                picked = [c.take(rng.integers(0, len(c), n, dtype=np.int32)) for c in columns]
                lines = pc.binary_join_element_wise(*picked, b";")
                # The joined lines lie back to back in the data buffer: write it as it is.
                end = int(np.frombuffer(lines.buffers()[1], np.int32)[lines.offset + len(lines)])
                f.write(memoryview(lines.buffers()[2])[:end])
                now = time.perf_counter()
                if long_run and now - last_report >= PROGRESS_EVERY_S:
                    last_report = now
                    print(
                        f"synth: {path.name} {done + n:,}/{total:,} rows ({100 * (done + n) / total:.0f}%), "
                        f"{now - started:.0f} s",
                        flush=True,
                    )
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    seconds = round(time.perf_counter() - started, 2)
    size = path.stat().st_size
    meta = {**expected, "bytes": size, "seconds": seconds}
    tmp_meta = _sidecar(tmp)
    tmp_meta.write_text(json.dumps(meta, indent=2) + "\n")
    tmp_meta.replace(_sidecar(path))
    if long_run:
        print(f"synth: {path.name} {total:,} rows, {size / 2**30:.2f} GiB in {seconds:.0f} s", flush=True)
    return Synthetic(path, total, seed, size, seconds, reused=False)


def synthetic_csv(scale: int, seed: int = 42, data_dir: Path = DATA_DIR) -> Synthetic:
    """The cached CSV for a scale: <data_dir>/bank-x<scale>.csv."""
    return write_synthetic(data_dir / f"bank-x{scale}.csv", scale, seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, required=True, help="multiple of bank-full's 45,211 rows")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    result = synthetic_csv(args.scale, args.seed)
    print(json.dumps({**asdict(result), "path": str(result.path)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
