"""Tests of the scoring job (bank_spark.batch_score_job): serving's scores on Spark, the manifest commit, every bad input."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from bank_ml import artifacts, data, drift, release
from bank_pipeline.resources import py_files_zip
from bank_serving.model import OnnxModel
from bank_spark import batch_score_job as bs
from bank_spark import features_job as bf
from tests.support.paths import BANK_CSV as BANK

pytestmark = pytest.mark.integration

FEATURES_ROWS = 4521  # bank.csv: every row is good


# --------------------------------------------------------------------------- fixtures and helpers


def run_main(*args: Any) -> tuple[int, str, str]:
    """main() with stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = bs.main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def last_line(text: str) -> str:
    return text.rstrip("\n").splitlines()[-1]


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module", autouse=True)
def py_files(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The DAG's --py-files zip, shipped to this session's Python workers as EMR ships it."""
    path = tmp_path_factory.mktemp("py_files") / "bank_batch_score.zip"
    path.write_bytes(py_files_zip())
    spark.sparkContext.addPyFile(str(path))
    return path


@pytest.fixture(scope="module")
def candidate() -> release.Candidate:
    """A small real model (bank.csv, serving's feature derivation, no Spark: about a second)."""
    return release.train_candidate(data.features_from_csv(BANK))


@pytest.fixture(scope="module")
def model_dir(candidate: release.Candidate, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model's registry files, with the profile of the data it was trained on, as the model build writes."""
    directory = tmp_path_factory.mktemp("models") / candidate.version
    artifacts.write_model_files(directory, candidate.onnx_bytes, candidate.threshold)
    profile = drift.reference_profile(data.features_from_csv(BANK), candidate.probabilities)
    (directory / "profile.json").write_text(json.dumps(profile))
    return directory


@pytest.fixture(scope="module")
def features_dir(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bank.csv committed by the real bank_features job, plus a stray attempt no manifest lists."""
    output = tmp_path_factory.mktemp("features") / "run=tests"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert bf.main(["--input", str(BANK), "--output", str(output), "--run-id", "tests"]) == 0
    manifest = json.loads((output / "_manifest.json").read_text())
    stray = output / "_attempts" / "99999999T000000Z-halfdone" / "features"
    stray.mkdir(parents=True)
    shutil.copy(output / manifest["files"][0], stray / "part-00000-stray.parquet")
    return output


@pytest.fixture(scope="module")
def features(spark: SparkSession, features_dir: Path) -> DataFrame:
    df, _ = bs.read_features(spark, str(features_dir))
    return df


def commit_features(df: DataFrame, directory: Path, **manifest: Any) -> Path:
    """`df` committed as bank_features commits (one attempt, then the manifest), with manifest overrides."""
    attempt = "_attempts/20260101T000000Z-test/features"
    df.write.parquet(str(directory / attempt))
    files = sorted(f"{attempt}/{p.name}" for p in (directory / attempt).glob("part-*.parquet"))
    body = {"format_version": 1, "run_id": "t", "attempt_id": "x", "files": files, "rows": {"out": df.count()}}
    (directory / "_manifest.json").write_text(json.dumps({**body, **manifest}))
    return directory


def edited_onnx(onnx_bytes: bytes, edit: Callable[[onnx.ModelProto], None]) -> bytes:
    model = onnx.load_from_string(onnx_bytes)
    edit(model)
    return model.SerializeToString()


def rename_input(model: onnx.ModelProto, old: str = "age", new: str = "years") -> None:
    for value in model.graph.input:
        if value.name == old:
            value.name = new
    for node in model.graph.node:
        node.input[:] = [new if name == old else name for name in node.input]


# --------------------------------------------------------------------------- scoring


def test_scores_equal_serving_predictions_row_for_row(features: DataFrame, candidate: release.Candidate) -> None:
    scored = bs.score(features, candidate.onnx_bytes).toPandas()
    model = OnnxModel.from_bytes(candidate.onnx_bytes)

    expected = model.predict_proba(scored)  # the very rows, as the Lambda scores them
    assert len(scored) == FEATURES_ROWS
    np.testing.assert_allclose(scored[bs.PROBABILITY].to_numpy(), expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(scored[bs.PREDICTED].to_numpy(), model.labels(expected))
    assert scored[bs.PROBABILITY].dtype == np.float64 and scored[bs.PREDICTED].dtype == np.int32
    assert 0 < scored[bs.PREDICTED].sum() < len(scored)
    # The never-contacted have pdays null; it goes to the model as NaN and comes back null.
    assert scored["pdays"].isna().sum() == features.where(F.col("pdays").isNull()).count() > 0


def test_every_row_and_column_passes_through(spark: SparkSession, features: DataFrame, candidate) -> None:
    with_id = features.withColumn("client_id", F.monotonically_increasing_id()).repartition(3)
    scored = bs.score(with_id, candidate.onnx_bytes)

    assert scored.columns == [*with_id.columns, bs.PROBABILITY, bs.PREDICTED]
    assert [f.dataType.simpleString() for f in scored.schema.fields[-2:]] == ["double", "int"]
    assertDataFrameEqual(scored.drop(bs.PROBABILITY, bs.PREDICTED), with_id)


def test_score_batches_is_a_plain_arrow_iterator_function(candidate: release.Candidate) -> None:
    record = {
        "age": 41, "job": "management", "marital": "married", "education": "tertiary", "default": 0,
        "balance": 1270, "balance_slog": 7.147, "housing": 1, "loan": 0, "contact": "cellular", "day": 15,
        "month": 5, "campaign": 2, "campaign_capped": 2, "pdays": None, "was_contacted": 0, "previous": 0,
        "poutcome": "unknown",
    }  # fmt: skip
    rows = [
        [{**record, "client": "a"}, {**record, "age": 30, "job": "student", "client": "b"}],
        [{**record, "job": "retired", "pdays": 90, "was_contacted": 1, "client": "c"}],
    ]
    schema = pa.schema(
        [(n, pa.string() if n in ("job", "marital", "education", "contact", "poutcome", "client") else
          pa.float64() if n == "balance_slog" else pa.int32()) for n in rows[0][0]]
    )  # fmt: skip
    batches = [pa.RecordBatch.from_pylist(r, schema=schema) for r in rows]
    out = list(bs.score_batches(candidate.onnx_bytes)(iter(batches)))

    assert [b.num_rows for b in out] == [2, 1]
    assert out[0].schema.names == [*schema.names, bs.PROBABILITY, bs.PREDICTED]
    assert out[1].column("client").to_pylist() == ["c"]
    assert out[0].column("pdays").null_count == 2, "pass-through columns are the input's, nulls kept"
    model = OnnxModel.from_bytes(candidate.onnx_bytes)
    for batch, scored in zip(batches, out):
        expected = model.predict_proba(batch.to_pandas())
        np.testing.assert_allclose(scored.column(bs.PROBABILITY).to_numpy(), expected, rtol=0, atol=1e-6)
        assert scored.column(bs.PREDICTED).to_pylist() == model.labels(expected).tolist()


def test_the_scorer_ships_by_reference_and_each_worker_loads_the_model_once(
    spark: SparkSession, candidate: release.Candidate
) -> None:
    from pyspark import cloudpickle

    payload = cloudpickle.dumps(bs.score_batches(b"model bytes"))
    # By reference: the module's name and the bytes, not the code (nor a copy of the model cache).
    assert b"bank_spark.batch_score_job" in payload and len(payload) < 400, payload

    model_bytes = candidate.onnx_bytes

    def sessions(batches):  # runs in the workers: which model object serves each task
        for _ in batches:
            model = bs.load_model(model_bytes)
            yield pd.DataFrame({"pid": [os.getpid()], "model": [id(model)]})

    seen = spark.range(0, 8, numPartitions=8).mapInPandas(sessions, "pid long, model long").toPandas()
    assert len(seen) == 8 and seen.groupby("pid").size().max() > 1  # workers are reused across tasks
    assert (seen.groupby("pid")["model"].nunique() == 1).all(), seen  # and build one session each


def test_a_null_category_is_refused_naming_the_column(features: DataFrame, model_dir: Path, tmp_path: Path) -> None:
    broken = features.limit(5).withColumn("job", F.when(F.col("age") < 0, F.lit("never")))
    commit_features(broken, tmp_path / "features")

    rc, _, err = run_main(
        "--features", tmp_path / "features", "--model", model_dir, "--output", tmp_path / "out", "--run-id", "r"
    )
    assert rc == 1
    assert last_line(err) == (
        "batch_score: error: features column job holds 5 null(s) in a batch of 5 rows; "
        "the model needs a category in every row"
    )
    assert not (tmp_path / "out" / "_manifest.json").exists()


# --------------------------------------------------------------------------- the job, end to end


@pytest.fixture(scope="module")
def history(features_dir: Path, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two runs of the same run id into one output, then a failing third: what each left behind."""
    output = tmp_path_factory.mktemp("scores") / "run=r1"
    broken = tmp_path_factory.mktemp("models") / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "model.onnx").write_bytes(b"not the model")
    runs, manifests = [], []
    for model in (model_dir, model_dir, broken):
        runs.append(run_main("--features", features_dir, "--model", model, "--output", output, "--run-id", "r1"))
        manifests.append(json.loads((output / "_manifest.json").read_text()))
    return {"output": output, "runs": runs, "manifests": manifests}


def test_run_prints_a_one_line_json_summary(history: dict[str, Any], model_dir: Path) -> None:
    rc, out, _ = history["runs"][0]
    assert rc == 0
    summary = json.loads(last_line(out))
    assert summary["status"] == "committed" and summary["rows"] == FEATURES_ROWS
    assert summary["model_version"] == model_dir.name
    assert 0 < summary["mean_probability"] < 1


def test_manifest_records_model_features_rows_and_summary(
    history: dict[str, Any], features_dir: Path, model_dir: Path
) -> None:
    manifest = history["manifests"][1]
    output = history["output"]
    info = json.loads((model_dir / "model.json").read_text())
    assert manifest["format_version"] == 1 and manifest["run_id"] == "r1"
    assert manifest["model"]["version"] == info["version"] and manifest["model"]["sha256"] == info["sha256"]
    assert manifest["model"]["threshold"] == info["threshold"]
    features_manifest = (features_dir / "_manifest.json").read_bytes()
    assert manifest["features"]["manifest_sha256"] == hashlib.sha256(features_manifest).hexdigest()
    assert manifest["features"]["run_id"] == "tests"
    # rows in = the committed rows only: the stray attempt's copy is never read
    assert manifest["rows"] == {"in": FEATURES_ROWS, "out": FEATURES_ROWS}
    table = pq.ParquetDataset([output / f for f in manifest["files"]]).read().to_pandas()
    assert len(table) == FEATURES_ROWS
    assert manifest["summary"] == {
        "mean_probability": round(float(table["probability"].mean()), 6),
        "predicted_positive": int(table["predicted"].sum()),
        "predicted_positive_ratio": round(int(table["predicted"].sum()) / FEATURES_ROWS, 6),
    }
    assert [f["name"] for f in manifest["schema"]][-2:] == ["probability", "predicted"]
    assert manifest["arrow_max_records_per_batch"] == bs.ARROW_BATCH_ROWS
    assert manifest["duration_seconds"] >= manifest["score_seconds"] > 0


def test_rerun_replaces_the_output(history: dict[str, Any]) -> None:
    first, second = history["manifests"][:2]
    assert history["runs"][1][0] == 0
    assert first["attempt_id"] != second["attempt_id"]
    assert {p.name for p in (history["output"] / "_attempts").iterdir()} == {second["attempt_id"]}


def test_failed_rerun_leaves_the_previous_commit_in_force(history: dict[str, Any]) -> None:
    rc, _, err = history["runs"][2]
    assert rc == 1
    assert "corrupt or replaced: sha256" in last_line(err)
    assert history["manifests"][2] == history["manifests"][1]
    assert {p.name for p in (history["output"] / "_attempts").iterdir()} == {history["manifests"][1]["attempt_id"]}


def test_output_holds_only_the_contract_files(history: dict[str, Any]) -> None:
    manifest = history["manifests"][1]
    drift_files = [manifest["paths"]["drift"], manifest["paths"]["drift_html"]]
    assert tree(history["output"]) == sorted(["_manifest.json", *manifest["files"], *drift_files])
    assert all(f.startswith(f"_attempts/{manifest['attempt_id']}/scores/part-") for f in manifest["files"])


# --------------------------------------------------------------------------- drift


def test_scoring_the_training_data_shows_no_drift(history: dict[str, Any]) -> None:
    """The batch is the data the model was trained on: every feature's bins hold the shares training's did."""
    manifest = history["manifests"][1]
    summary = manifest["drift"]
    assert summary["status"] == "measured" and summary["crossed"] == [] and summary["threshold"] == 0.2
    assert summary["max_psi"] < 1e-3 and summary["out_of_range"] == {} and summary["new_categories"] == {}
    assert summary["score_psi"] < 0.05  # the holdout's scores against every row's: the same model, a sample
    report = json.loads((history["output"] / manifest["paths"]["drift"]).read_text())
    assert set(report["features"]) == set(bs.FEATURE_COLUMNS) and report["rows"] == FEATURES_ROWS
    assert report["features"]["job"]["bins"][-1] == "(new)" and report["features"]["job"]["new_rows"] == 0
    page = (history["output"] / manifest["paths"]["drift_html"]).read_text()
    assert "No feature or score beyond PSI 0.2." in page and page.count("<svg") == len(bs.FEATURE_COLUMNS) + 1


def test_a_shifted_batch_crosses_the_threshold_naming_the_features(
    features: DataFrame, model_dir: Path, tmp_path: Path
) -> None:
    """Clients fifteen years older, and a job training never saw on every tenth row: age and job cross PSI 0.2,
    the new category is named, the ages beyond training's oldest are counted; the scores are committed all the same."""
    shifted = features.withColumn("age", F.col("age") + 15).withColumn(
        "job", F.when(F.col("day") % 10 == 0, F.lit("astronaut")).otherwise(F.col("job"))
    )
    directory = commit_features(shifted, tmp_path / "shifted")
    output = tmp_path / "out"
    rc, out, err = run_main("--features", directory, "--model", model_dir, "--output", output, "--run-id", "s")
    assert rc == 0, err
    manifest = json.loads((output / "_manifest.json").read_text())
    summary = manifest["drift"]
    print("drift of the shifted batch:", summary, "in", manifest["drift_seconds"], "s")
    assert {"age", "job"} <= set(summary["crossed"]) and summary["max_psi"] > 0.2
    assert summary["new_categories"] == {"job": ["astronaut"]} and summary["out_of_range"]["age"] > 0
    assert json.loads(last_line(out))["drift_crossed"] == summary["crossed"]
    report = json.loads((output / manifest["paths"]["drift"]).read_text())
    assert report["features"]["job"]["new_rows"] == shifted.filter(F.col("job") == "astronaut").count()
    assert report["features"]["balance"]["psi"] < 1e-3  # what did not move does not cross
    page = (output / manifest["paths"]["drift_html"]).read_text()
    assert "Shifted beyond PSI 0.2: " in page and "new: astronaut" in page


def test_a_model_without_a_profile_is_scored_and_says_drift_was_not_measured(
    features_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    older = tmp_path / "model"
    older.mkdir()
    for name in ("model.onnx", "model.json"):
        shutil.copy(model_dir / name, older)
    output = tmp_path / "out"
    rc, _, err = run_main("--features", features_dir, "--model", older, "--output", output, "--run-id", "o")
    assert rc == 0, err
    manifest = json.loads((output / "_manifest.json").read_text())
    assert manifest["drift"] == {
        "status": "unmeasured",
        "reason": f"model {model_dir.name} has no profile.json (registered before drift was measured)",
    }
    assert set(manifest["paths"]) == {"scores"}


# --------------------------------------------------------------------------- bad input


def _model_case(case: str, model_dir: Path, target: Path) -> Path:
    """A model directory broken as `case` says."""
    good = (model_dir / "model.onnx").read_bytes()
    if case == "absent":
        return target / "absent"
    target.mkdir(parents=True)
    if case == "no-onnx":
        shutil.copy(model_dir / "model.json", target)
    elif case == "no-json":
        shutil.copy(model_dir / "model.onnx", target)
    elif case == "json-not-json":
        shutil.copy(model_dir / "model.onnx", target)
        (target / "model.json").write_text("{not json")
    elif case == "json-no-sha256":
        shutil.copy(model_dir / "model.onnx", target)
        (target / "model.json").write_text(json.dumps({"version": "x"}))
    elif case == "swapped":
        shutil.copy(model_dir / "model.json", target)
        (target / "model.onnx").write_bytes(good[:-10])
    elif case == "not-onnx":
        artifacts.write_model_files(target, b"\x80\x04not a model at all", 0.5)
    elif case == "other-contract":
        artifacts.write_model_files(target, edited_onnx(good, rename_input), 0.5)
    elif case in ("profile-not-json", "profile-other"):
        for name in ("model.onnx", "model.json"):
            shutil.copy(model_dir / name, target)
        (target / "profile.json").write_text("{not json" if case == "profile-not-json" else '{"format_version": 2}')
    return target


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("absent", "model not found: {target}"),
        ("no-onnx", "no model at {target}: model.onnx is missing"),
        ("no-json", "no model at {target}: model.json is missing"),
        ("json-not-json", "model.json is not JSON"),
        ("json-no-sha256", "model.json: expected an object with a sha256 string"),
        ("swapped", "model.onnx: corrupt or replaced: sha256 "),
        ("not-onnx", "model.onnx: not a valid ONNX model"),
        ("other-contract", "model inputs do not match the serving contract: got years:tensor(float)"),
        ("profile-not-json", "profile.json is not JSON"),
        ("profile-other", "profile.json: expected a training profile of format_version 1"),
    ],
)
def test_bad_models_are_refused_naming_the_problem(
    features_dir: Path, model_dir: Path, tmp_path: Path, case: str, message: str
) -> None:
    target = _model_case(case, model_dir, tmp_path / "model")
    rc, _, err = run_main("--features", features_dir, "--model", target, "--output", tmp_path / "out", "--run-id", "r")
    assert rc == 1
    line = last_line(err)
    assert line.startswith("batch_score: error: ") and message.format(target=target) in line, line
    assert not (tmp_path / "out" / "_manifest.json").exists()


def _features_case(case: str, features: DataFrame, features_dir: Path, target: Path) -> None:
    """A features directory broken as `case` says."""
    if case == "absent":
        return
    if case == "wrong-types":
        commit_features(features.limit(3).withColumn("job", F.lit(1)).withColumn("age", F.lit("41")), target)
        return
    if case == "missing-columns":
        commit_features(features.limit(3).drop("balance_slog", "month"), target)
        return
    if case == "taken-column":
        commit_features(features.limit(3).withColumn("probability", F.lit(0.5)), target)
        return
    shutil.copytree(features_dir, target)
    manifest = json.loads((target / "_manifest.json").read_text())
    if case == "uncommitted":
        (target / "_manifest.json").unlink()
    elif case == "manifest-not-json":
        (target / "_manifest.json").write_text("{")
    elif case == "no-files":
        (target / "_manifest.json").write_text(json.dumps({**manifest, "files": []}))
    elif case == "format-version":
        (target / "_manifest.json").write_text(json.dumps({**manifest, "format_version": 2}))
    elif case == "outside-files":
        (target / "_manifest.json").write_text(json.dumps({**manifest, "files": ["../elsewhere.parquet"]}))
    elif case == "file-gone":
        (target / manifest["files"][0]).unlink()
    elif case == "not-parquet":
        (target / manifest["files"][0]).write_text("age;job\n")
    elif case == "row-count":
        (target / "_manifest.json").write_text(json.dumps({**manifest, "rows": {**manifest["rows"], "out": 7}}))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("absent", "features not found: {target}"),
        ("uncommitted", "no committed features at {target}: _manifest.json is missing"),
        ("manifest-not-json", "_manifest.json is not JSON"),
        ("no-files", "'files' must be a non-empty list of paths, got []"),
        ("format-version", "format_version 2, expected 1"),
        ("outside-files", "files must be relative to the manifest's directory: ../elsewhere.parquet"),
        ("file-gone", "_manifest.json lists file(s) that do not exist: _attempts/"),
        (
            "not-parquet",
            ("features at {target} are unreadable: RuntimeException: file:", ".parquet is not a Parquet file"),
        ),
        ("row-count", f"features at {{target}} hold {FEATURES_ROWS} rows but their manifest says rows.out=7"),
        ("missing-columns", "features do not fit the model: missing column(s): balance_slog, month"),
        ("wrong-types", "wrong type(s): age is string, expected a number; job is int, expected string"),
        ("taken-column", "column(s) probability already exist and would be overwritten by the scores"),
    ],
)
def test_bad_features_are_refused_naming_the_problem(
    features: DataFrame,
    features_dir: Path,
    model_dir: Path,
    tmp_path: Path,
    case: str,
    message: str | tuple[str, ...],
) -> None:
    target = tmp_path / "features"
    _features_case(case, features, features_dir, target)
    rc, _, err = run_main("--features", target, "--model", model_dir, "--output", tmp_path / "out", "--run-id", "r")
    assert rc == 1
    line = last_line(err)
    assert line.startswith("batch_score: error: "), line
    for fragment in (message,) if isinstance(message, str) else message:
        assert fragment.format(target=target) in line, line
    assert not (tmp_path / "out" / "_manifest.json").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--features", "f", "--output", "o", "--run-id", "r"], "the following arguments are required: --model"),
        (["--features", "f", "--model", "m", "--output", "o", "--run-id", " "], "--run-id must not be empty"),
        (
            ["--features", "f", "--model", "m", "--output", "o", "--run-id", "r", "--psi-threshold", "0"],
            "--psi-threshold must be above 0 and below 10, got 0",
        ),
        (
            ["--features", "f", "--model", "m", "--output", "o", "--run-id", "r", "--psi-threshold", "x"],
            "argument --psi-threshold: invalid float value: 'x'",
        ),
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str], fragment: str) -> None:
    rc, _, err = run_main(*args)
    assert rc == 2
    assert last_line(err) == f"batch_score: error: {fragment}"


@pytest.mark.parametrize("which", ["features", "model"])
def test_output_must_not_be_an_input_directory(features_dir: Path, model_dir: Path, which: str) -> None:
    output = features_dir if which == "features" else model_dir
    rc, _, err = run_main("--features", features_dir, "--model", model_dir, "--output", output, "--run-id", "r")
    assert rc == 1
    assert f"--output must be a directory of its own, not the --{which} directory" in last_line(err)
