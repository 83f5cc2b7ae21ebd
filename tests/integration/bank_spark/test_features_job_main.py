"""Tests of the features job end to end (bank_spark.features_job.main): bad input files and arguments, commits and reruns, bank-full."""

from __future__ import annotations

import contextlib
import io
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from bank_spark import features_job as bf
from tests.support.bank_csv import HEADER, csv_line, write_csv
from tests.support.paths import BANK_CSV as BANK
from tests.support.paths import BANK_FULL_CSV as BANK_FULL

pytestmark = pytest.mark.integration

GOOD_LINE = csv_line()


def run_main(*args: Any) -> tuple[int, str, str]:
    """main() with stdout and stderr captured (works in module-scoped fixtures, unlike capsys)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = bf.main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def last_line(text: str) -> str:
    return text.rstrip("\n").splitlines()[-1]


def tree(root: Path) -> list[str]:
    """Every file under root (hidden ones too), relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def attempts(root: Path) -> set[str]:
    return {p.name for p in (root / "_attempts").iterdir()}


def parquet_rows(root: Path, files: list[str]) -> int:
    return sum(pq.ParquetFile(root / f).metadata.num_rows for f in files)


# --------------------------------------------------------------------------- the quarantine of a run


def test_an_empty_quarantine_has_the_schema_of_a_full_one(spark: SparkSession, tmp_path: Path) -> None:
    """A run with no bad row writes its quarantine without planning the reasons: the same parquet schema."""
    schemas = []
    for name, lines in {"clean": [HEADER, GOOD_LINE], "dirty": [HEADER, GOOD_LINE, csv_line(y="maybe")]}.items():
        out = tmp_path / name
        rc, _, stderr = run_main(
            "--input", write_csv(tmp_path / f"{name}.csv", lines), "--output", out, "--run-id", "r"
        )
        assert rc == 0 or "quarantined 1 of 2 rows" in stderr
        (attempt,) = attempts(out)
        schemas.append(pq.read_table(out / "_attempts" / attempt / "quarantine").schema)
    assert schemas[0] == schemas[1]
    assert schemas[0].names == ["record", "reason"]


# --------------------------------------------------------------------------- main(): bad inputs


def sample_lines(step: int = 15) -> list[str]:
    """The header and every step-th data row of bank.csv (~300 rows for step 15)."""
    lines = BANK.read_text().splitlines()
    return [lines[0], *lines[1::step]]


@pytest.mark.parametrize(
    "content, fragments",
    [
        pytest.param(
            [HEADER.replace('"duration";', "").replace('"pdays";', ""), GOOD_LINE],
            ["bad header: missing column(s): duration, pdays"],
            id="missing-columns",
        ),
        pytest.param(
            [HEADER.replace('"y"', '"target";"extra"'), GOOD_LINE],
            ["missing column(s): y", "unexpected column(s): target, extra"],
            id="unexpected-columns",
        ),
        pytest.param(
            [HEADER.replace('"job";"marital"', '"marital";"job"'), GOOD_LINE],
            ["columns in a different order (Spark maps CSV columns by position)", "got age;marital;job;"],
            id="reordered-columns",
        ),
        pytest.param([GOOD_LINE, GOOD_LINE], ["first line is not a header"], id="no-header"),
        pytest.param([HEADER], ["input has a header but no data rows"], id="header-only"),
        pytest.param([HEADER, "", "  "], ["input has a header but no data rows"], id="header-and-blank-lines"),
        pytest.param([], ["input is empty: no header line"], id="empty-file"),
    ],
)
def test_main_rejects_bad_input_files(
    spark: SparkSession, tmp_path: Path, content: list[str], fragments: list[str]
) -> None:
    source = write_csv(tmp_path / "in.csv", content)
    rc, stdout, stderr = run_main("--input", source, "--output", tmp_path / "out", "--run-id", "r")
    assert rc != 0
    assert stdout == ""
    error = last_line(stderr)
    assert error.startswith("bank_features: error: ")
    for fragment in fragments:
        assert fragment in error
    assert not (tmp_path / "out").exists(), "nothing is written for an input rejected up front"


def test_blank_lines_are_not_rows_and_not_quarantined(spark: SparkSession, tmp_path: Path) -> None:
    # Spark's CSV reader skips blank lines: the one pass finds no bad row, and no quarantine pass runs.
    source = write_csv(tmp_path / "in.csv", [HEADER, GOOD_LINE, "", GOOD_LINE, ""])
    rc, _, stderr = run_main("--input", source, "--output", tmp_path / "out", "--run-id", "r")
    assert rc == 0, stderr
    m = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert m["rows"] == {"in": 2, "out": 2, "quarantined": 0}
    assert set(m["phase_seconds"]) == {"features", "quarantine"}
    assert "a row was rejected" not in stderr
    assert pq.read_table(tmp_path / "out" / m["paths"]["quarantine"]).num_rows == 0


def test_the_first_pass_silences_spark_task_failure_logs_only_while_it_runs(
    spark: SparkSession, tmp_path: Path
) -> None:
    log4j = spark.sparkContext._jvm.org.apache.logging.log4j
    before = {name: str(log4j.LogManager.getLogger(name).getLevel()) for name in bf.TASK_FAILURE_LOGGERS}
    source = write_csv(tmp_path / "in.csv", [HEADER, GOOD_LINE, csv_line(age=0)])
    with bf.quiet_task_failures(spark):
        assert {str(log4j.LogManager.getLogger(n).getLevel()) for n in bf.TASK_FAILURE_LOGGERS} == {"OFF"}
    rc, _, stderr = run_main("--input", source, "--output", tmp_path / "out", "--run-id", "r")
    assert rc == 1 and "quarantined 1 of 2 rows" in last_line(stderr)
    assert {name: str(log4j.LogManager.getLogger(name).getLevel()) for name in bf.TASK_FAILURE_LOGGERS} == before


def test_a_failure_of_the_first_pass_that_is_no_rejected_row_fails_the_job(spark: SparkSession, tmp_path: Path) -> None:
    """Only a rejected row sends the job to its second pass: a write that cannot happen is reported, not retried."""
    source = write_csv(tmp_path / "in.csv", [HEADER, GOOD_LINE])
    (tmp_path / "a-file").write_text("not a directory")
    rc, stdout, stderr = run_main("--input", source, "--output", tmp_path / "a-file" / "out", "--run-id", "r")
    assert rc == 1
    assert stdout == ""
    assert last_line(stderr).startswith("bank_features: error: Py4JJavaError: ")
    assert "a row was rejected" not in stderr
    assert (tmp_path / "a-file").read_text() == "not a directory"


def test_main_rejects_a_missing_input_and_a_directory(spark: SparkSession, tmp_path: Path) -> None:
    rc, _, stderr = run_main("--input", tmp_path / "nope.csv", "--output", tmp_path / "out", "--run-id", "r")
    assert rc != 0
    assert last_line(stderr) == f"bank_features: error: input not found: {tmp_path / 'nope.csv'}"
    rc, _, stderr = run_main("--input", tmp_path, "--output", tmp_path / "out", "--run-id", "r")
    assert rc != 0
    assert last_line(stderr).startswith("bank_features: error: input is a directory, expected one CSV file")
    assert not (tmp_path / "out").exists()


def test_main_reports_unexpected_failures_on_one_line(spark: SparkSession, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", sample_lines(step=227))
    not_a_dir = tmp_path / "out"
    not_a_dir.write_text("a file where the output directory should be")
    rc, stdout, stderr = run_main("--input", source, "--output", not_a_dir, "--run-id", "r")
    assert rc != 0 and stdout == ""
    assert "Traceback" in stderr  # the details stay available above the contract line
    error = last_line(stderr)
    assert error.startswith("bank_features: error: Py4JJavaError: ")
    assert len(error) < 600


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--max-quarantine-ratio", "-0.1"], "--max-quarantine-ratio must be within 0..1"),
        (["--max-quarantine-ratio", "x"], "argument --max-quarantine-ratio: invalid float value: 'x'"),
        # The baseline moved to the model build (bank_spark.train_job): its options are gone from here.
        (["--baseline-max-rows", "10"], "unrecognized arguments: --baseline-max-rows 10"),
    ],
)
def test_main_rejects_bad_arguments(tmp_path: Path, extra: list[str], fragment: str) -> None:
    rc, _, stderr = run_main("--input", "in.csv", "--output", tmp_path / "out", "--run-id", "r", *extra)
    assert rc == 2
    assert last_line(stderr).startswith("bank_features: error: ")
    assert fragment in last_line(stderr)


def test_main_fails_when_too_many_rows_are_quarantined(spark: SparkSession, tmp_path: Path) -> None:
    bad = [GOOD_LINE.rsplit(";", 1)[0], GOOD_LINE + ';"x"', csv_line(balance="abc")]
    good = sample_lines(step=227)  # header + 20 rows
    source = write_csv(tmp_path / "in.csv", good + bad)
    out = tmp_path / "out"
    rc, stdout, stderr = run_main("--input", source, "--output", out, "--run-id", "r")

    assert rc != 0 and stdout == ""
    error = last_line(stderr)
    rows = len(good) - 1 + len(bad)
    assert error.startswith(f"bank_features: error: quarantined 3 of {rows} rows: ratio {3 / rows:.4f} ")
    assert "exceeds --max-quarantine-ratio 0.01" in error
    assert "top reasons: " in error and "wrong field count: 16, expected 17 (1)" in error
    assert "bad int in balance: 'abc' (1)" in error
    assert not (out / "_manifest.json").exists()
    (attempt,) = attempts(out)
    files = tree(out / "_attempts" / attempt)
    assert files and all(f.startswith("quarantine/part-") and f.endswith(".parquet") for f in files)
    quarantine = pq.read_table(out / "_attempts" / attempt / "quarantine")
    assert quarantine.column_names == ["record", "reason"]
    assert sorted(quarantine.column("record").to_pylist()) == sorted(bad)


# --------------------------------------------------------------------------- main(): commits and reruns

SAMPLE_BAD = {
    GOOD_LINE + ';"extra"': "wrong field count: 18, expected 17",
    csv_line(y="maybe"): "y not yes/no: 'maybe'",
}


@pytest.fixture(scope="module")
def history(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three runs of one run id on one output: commit, rerun (commit), failed rerun."""
    root = tmp_path_factory.mktemp("history")
    source = write_csv(root / "bank-sample.csv", sample_lines() + list(SAMPLE_BAD))
    out = root / "out"
    base = ["--input", source, "--output", out, "--run-id", "sample"]
    h: dict[str, Any] = {"source": source, "out": out}

    h["rc1"], h["stdout1"], h["stderr1"] = run_main(*base)
    assert h["rc1"] == 0, h["stderr1"]
    h["manifest1"] = json.loads((out / "_manifest.json").read_text())

    h["rc2"], h["stdout2"], h["stderr2"] = run_main(*base, "--input-etag", '"etag-2"')
    assert h["rc2"] == 0, h["stderr2"]
    h["manifest2_text"] = (out / "_manifest.json").read_text()
    h["manifest2"] = json.loads(h["manifest2_text"])
    h["tree2"] = tree(out)
    h["attempts2"] = attempts(out)

    h["rc3"], h["stdout3"], h["stderr3"] = run_main(*base, "--max-quarantine-ratio", "0.001")
    h["tree3"] = tree(out)
    h["attempts3"] = attempts(out)
    return h


def test_run_prints_a_one_line_json_summary(history: dict[str, Any]) -> None:
    assert history["rc1"] == 0, history["stderr1"]
    (line,) = history["stdout1"].splitlines()
    summary = json.loads(line)
    m1 = history["manifest1"]
    assert summary["attempt_id"] == m1["attempt_id"]
    assert summary["output"] == str(history["out"])
    assert (summary["rows_in"], summary["rows_out"], summary["rows_quarantined"]) == (
        m1["rows"]["in"], m1["rows"]["out"], m1["rows"]["quarantined"],
    )  # fmt: skip


def test_manifest_fields_are_complete_and_consistent(history: dict[str, Any]) -> None:
    assert history["rc2"] == 0, history["stderr2"]
    m = history["manifest2"]
    out: Path = history["out"]
    attempt = f"_attempts/{m['attempt_id']}"
    assert m["format_version"] == 1
    assert m["run_id"] == "sample"
    assert datetime.fromisoformat(m["committed_at"].replace("Z", "+00:00")).utcoffset().total_seconds() == 0
    source = history["source"]
    assert m["input"] == {"uri": str(source), "etag": '"etag-2"', "bytes": os.path.getsize(source)}
    assert m["paths"] == {"features": f"{attempt}/features", "quarantine": f"{attempt}/quarantine"}
    assert m["files"] and all(f.startswith(f"{attempt}/features/part-") and f.endswith(".parquet") for f in m["files"])
    assert all((out / f).is_file() for f in m["files"])

    rows = m["rows"]
    assert rows == {"in": len(sample_lines()) - 1 + len(SAMPLE_BAD), "out": len(sample_lines()) - 1, "quarantined": 2}
    assert rows["in"] == rows["out"] + rows["quarantined"]
    assert parquet_rows(out, m["files"]) == rows["out"]
    assert m["quarantine"] == {
        "ratio": round(2 / rows["in"], 6),
        "max_ratio": 0.01,
        "reasons": {reason: 1 for reason in sorted(SAMPLE_BAD.values())},
    }

    parquet_schema = pq.read_schema(out / m["files"][0])
    assert [f["name"] for f in m["schema"]] == list(bf.FEATURE_COLUMNS) == parquet_schema.names
    assert {f["name"]: f["type"] for f in m["schema"]}["balance_slog"] == "double"
    assert [f["name"] for f in m["schema"] if f["nullable"]] == ["balance_slog", "pdays"]
    assert m["spark_version"] == "3.5.6"
    assert m["duration_seconds"] > 0
    # Bad rows: the first pass stopped at one, then the features without them and the quarantine.
    assert set(m["phase_seconds"]) == {"until_rejection", "features", "quarantine"}
    assert "bank_features: a row was rejected; writing the features without the rejected rows" in history["stderr2"]
    assert sum(m["phase_seconds"].values()) <= m["duration_seconds"]
    assert "baseline" not in m  # fitted by the model build now (tests/integration/bank_spark/test_train_job.py)


def test_committed_data_matches_the_manifest(history: dict[str, Any]) -> None:
    out: Path = history["out"]
    m = history["manifest2"]
    features = pq.read_table(out / m["paths"]["features"]).to_pydict()
    assert set(features["label"]) == {0, 1}
    assert set(features["month"]) <= set(range(1, 13))
    assert all((p is None) == (w == 0) for p, w in zip(features["pdays"], features["was_contacted"]))
    quarantine = pq.read_table(out / m["paths"]["quarantine"]).to_pylist()
    assert {q["record"]: q["reason"] for q in quarantine} == SAMPLE_BAD


def test_rerun_replaces_the_output(history: dict[str, Any]) -> None:
    m1, m2 = history["manifest1"], history["manifest2"]
    assert m1["attempt_id"] != m2["attempt_id"]
    assert history["attempts2"] == {m2["attempt_id"]}, "older attempts are deleted after the commit"
    assert parquet_rows(history["out"], m2["files"]) == m2["rows"]["out"]  # no duplicates
    assert history["tree2"] == sorted(
        ["_manifest.json", *m2["files"], *(f for f in history["tree2"] if "/quarantine/" in f)]
    )


def test_failed_rerun_leaves_the_previous_commit_in_force(history: dict[str, Any]) -> None:
    assert history["rc3"] != 0
    error = last_line(history["stderr3"])
    assert error.startswith("bank_features: error: quarantined 2 of ")
    assert "exceeds --max-quarantine-ratio 0.001" in error
    out: Path = history["out"]
    m2 = history["manifest2"]
    assert (out / "_manifest.json").read_text() == history["manifest2_text"]
    assert parquet_rows(out, m2["files"]) == m2["rows"]["out"]
    # One attempt left by the failed run: its first pass, stopped at a bad row, took its own along.
    (failed,) = history["attempts3"] - {m2["attempt_id"]}
    failed_files = [f for f in history["tree3"] if f.startswith(f"_attempts/{failed}/")]
    assert failed_files and all(f.startswith(f"_attempts/{failed}/quarantine/part-") for f in failed_files)


def test_output_holds_only_the_contract_files(history: dict[str, Any]) -> None:
    for f in history["tree3"]:
        parts = f.split("/")
        assert f == "_manifest.json" or (
            len(parts) == 4
            and parts[0] == "_attempts"
            and parts[2] in ("features", "quarantine")
            and parts[3].startswith("part-")
            and parts[3].endswith(".parquet")
        ), f"unexpected file {f}"  # no .crc side files, no _SUCCESS


# --------------------------------------------------------------------------- main(): the full data set


def test_bank_full(spark: SparkSession, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc, stdout, stderr = run_main("--input", BANK_FULL, "--output", out, "--run-id", "full")
    assert rc == 0, stderr
    m = json.loads((out / "_manifest.json").read_text())
    assert m["rows"]["in"] == 45211
    assert m["rows"]["out"] + m["rows"]["quarantined"] == 45211
    assert parquet_rows(out, m["files"]) == m["rows"]["out"]
    print(f"bank-full: rows {m['rows']}, {m['duration_seconds']} s")
