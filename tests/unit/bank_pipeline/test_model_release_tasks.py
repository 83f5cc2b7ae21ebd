"""The worker's side of the model build: the step it asks for, and the record it trusts only once checked."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from bank_pipeline import model_release_tasks as release
from bank_pipeline import settings
from bank_pipeline.errors import BadInputError, CandidateInvalidError, RegistryInvalidError, WheelhouseMissingError
from bank_pipeline.operators.emr_cluster import with_integer_counts

pytestmark = pytest.mark.unit

CFG = settings.load()
MANIFEST = "s3://bank-lake/features/bank/run=r1/_manifest.json"
RECORD_URI = "s3://bank-lake/training/bank/run=r1/candidate.json"
VERSION = "fd3d5a1110e5390e"


class Objects:
    """The S3Hook calls the worker's release code makes, over a dict of keys."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = dict(objects)

    def check_for_key(self, key: str, bucket_name: str) -> bool:
        return f"s3://{bucket_name}/{key}" in self.objects

    def read_key(self, key: str, bucket_name: str) -> str:
        return self.objects[f"s3://{bucket_name}/{key}"].decode()

    def load_bytes(self, data: bytes, key: str, bucket_name: str, **_: Any) -> None:
        self.objects[f"s3://{bucket_name}/{key}"] = data


def record(**changes: Any) -> bytes:
    base = {
        "run_id": "r1", "version": VERSION, "registered": True, "registry_uri": f"s3://bank-lake/models/bank/{VERSION}/",
        "metrics": {"roc_auc": 0.814}, "baseline": {"roc_auc": 0.77}, "live": None, "deploy": True,
        "reason": "deploy: first model", "phase_seconds": {"train": 6.0}, "rows": 45211,
    }  # fmt: skip
    return json.dumps({**base, **changes}).encode()


REGISTERED = {f"s3://bank-lake/models/bank/{VERSION}/model.json": b'{"sha256": "ab"}'}
WHEELHOUSE = {CFG.lake.wheelhouse("x86_64") + "requirements.txt": b"x"}


def prepare(hook: Objects, **changes: Any) -> release.PreparedTraining:
    args: dict[str, Any] = {
        "manifest_uri": MANIFEST, "hyperparameters": {"max_iter": 50}, "min_roc_auc": 0.8, "roc_auc_tolerance": 0.005,
        "force_deploy": False, "run_id": "scheduled__2026-01-01T00:00:00+00:00", "instance_type": "m5.xlarge",
    }  # fmt: skip
    return release.prepare_training(hook, CFG, **{**args, **changes})


def test_the_step_builds_the_model_from_the_features_into_the_registry() -> None:
    hook = Objects({MANIFEST: b"{}", **WHEELHOUSE})
    prepared = prepare(hook, force_deploy=True)
    (step,) = prepared["steps"]
    args = step["HadoopJarStep"]["Args"]
    assert args[args.index("--features") + 1] == "s3://bank-lake/features/bank/run=r1/"
    assert args[args.index("--registry") + 1] == CFG.lake.models
    assert args[args.index("--hyperparameters") + 1] == '{"max_iter": 50}'
    assert "--force-deploy" in args and args[args.index("--output") + 1] == prepared["candidate_uri"]
    assert (
        prepared["candidate_uri"]
        == "s3://bank-lake/training/bank/run=scheduled__2026-01-01T00_00_00_00_00/candidate.json"
    )
    assert prepared["code_uri"].endswith("/bank_train.py") and prepared["wheelhouse_uri"].endswith("/")
    assert any(key.endswith("/bank_jobs.zip") for key in hook.objects)  # the code was staged


def build_of(prepared: release.PreparedTraining) -> str:
    args = prepared["steps"][0]["HadoopJarStep"]["Args"]
    return args[args.index("--build-record") + 1]


def test_a_first_build_is_keyed_by_its_inputs_and_needs_a_cluster() -> None:
    prepared = prepare(Objects({MANIFEST: b"{}", **WHEELHOUSE}))
    assert prepared["reused"] is False and prepared["built_by"] == "scheduled__2026-01-01T00:00:00+00:00"
    assert prepared["candidate_uri"].endswith("/candidate.json")
    assert build_of(prepared).startswith(f"{CFG.lake.training}builds/") and build_of(prepared).endswith(".json")


def test_a_build_of_the_same_inputs_on_record_is_reused_by_another_run() -> None:
    first = build_of(prepare(Objects({MANIFEST: b"{}", **WHEELHOUSE})))
    hook = Objects({MANIFEST: b"{}", **WHEELHOUSE, **REGISTERED, first: record(run_id="r0")})
    prepared = prepare(hook, run_id="manual__2026-02-01")
    assert (prepared["reused"], prepared["built_by"], prepared["candidate_uri"]) == (True, "r0", first)
    trained = release.read_candidate(hook, CFG, first, run_id="r0", reused=True)
    assert trained["version"] == VERSION and trained["registered"] is False  # this run registered nothing


@pytest.mark.parametrize(
    ("changes", "objects"),
    [
        ({"hyperparameters": {"max_iter": 60}}, {}),
        ({"min_roc_auc": 0.9}, {}),
        ({"force_deploy": True}, {}),
        ({"instance_type": "m6g.xlarge"}, {CFG.lake.wheelhouse("aarch64") + "requirements.txt": b"x"}),
        ({}, {MANIFEST: b'{"rows": 1}'}),  # the features run was rerun: its manifest changed
        ({}, {CFG.lake.live_model: json.dumps({"version": "0000aaaa0000aaaa"}).encode()}),  # another live model
    ],
    ids=["hyperparameters", "gate floor", "force", "architecture", "features rewritten", "live model"],
)
def test_other_inputs_are_another_build(changes: dict[str, Any], objects: dict[str, bytes]) -> None:
    first = build_of(prepare(Objects({MANIFEST: b"{}", **WHEELHOUSE})))
    hook = Objects({MANIFEST: b"{}", **WHEELHOUSE, **REGISTERED, first: record(run_id="r0"), **objects})
    prepared = prepare(hook, **changes)
    assert prepared["reused"] is False and build_of(prepared) != first


@pytest.mark.parametrize(
    "on_record",
    [b"not json", record(version="0000bbbb0000bbbb"), record(run_id=""), b"[]"],
    ids=["not JSON", "version not registered", "no run", "not an object"],
)
def test_a_build_record_that_cannot_be_trusted_is_built_again(on_record: bytes) -> None:
    first = build_of(prepare(Objects({MANIFEST: b"{}", **WHEELHOUSE})))
    prepared = prepare(Objects({MANIFEST: b"{}", **WHEELHOUSE, **REGISTERED, first: on_record}))
    assert prepared["reused"] is False and prepared["candidate_uri"].endswith("/candidate.json")


@pytest.mark.parametrize(
    ("body", "message"),
    [(b"{not json", " is not JSON: Expecting property name"), (b'["v"]', ": expected a JSON object, got list")],
    ids=["not JSON", "not an object"],
)
def test_a_corrupt_registry_file_fails_naming_it(body: bytes, message: str) -> None:
    live = CFG.lake.live_model
    with pytest.raises(RegistryInvalidError, match="^" + re.escape(live + message)):
        prepare(Objects({MANIFEST: b"{}", **WHEELHOUSE, live: body}))
    model_json = next(iter(REGISTERED))
    with pytest.raises(RegistryInvalidError, match="^" + re.escape(model_json + message)):
        release.read_candidate(Objects({RECORD_URI: record(), model_json: body}), CFG, RECORD_URI, run_id="r1")


def test_missing_features_or_wheelhouse_fail_before_anything_is_staged() -> None:
    hook = Objects({**WHEELHOUSE})
    with pytest.raises(BadInputError, match=f"features manifest {MANIFEST} does not exist"):
        prepare(hook)
    with pytest.raises(BadInputError, match="must name a _manifest.json"):
        prepare(hook, manifest_uri="s3://bank-lake/features/bank/run=r1/")
    hook = Objects({MANIFEST: b"{}"})
    with pytest.raises(
        WheelhouseMissingError, match="python -m bank_pipeline.wheelhouse --bucket bank-lake --arch aarch64"
    ):
        prepare(hook, instance_type="m6g.xlarge")
    assert set(hook.objects) == {MANIFEST}


def test_the_record_is_read_when_it_is_this_runs_and_registered() -> None:
    trained = release.read_candidate(Objects({RECORD_URI: record(), **REGISTERED}), CFG, RECORD_URI, run_id="r1")
    assert trained["version"] == VERSION and trained["deploy"] is True
    assert set(trained) == set(release.TrainedCandidate.__annotations__)


@pytest.mark.parametrize(
    ("objects", "message"),
    [
        ({}, f"the model build wrote no candidate record: {RECORD_URI} does not exist"),
        ({RECORD_URI: b"{not json"}, f"{RECORD_URI} is not JSON"),
        ({RECORD_URI: b"[1]"}, f"{RECORD_URI}: expected a JSON object, got list"),
        ({RECORD_URI: record(run_id="r0")}, f"{RECORD_URI} is for run 'r0', not 'r1'"),
        ({RECORD_URI: json.dumps({"run_id": "r1"}).encode()}, "lacks version, registered"),
        ({RECORD_URI: record(version="0000000000000000")}, "names version '0000000000000000', which the registry does not hold"),
    ],
)  # fmt: skip
def test_a_record_that_cannot_be_trusted_fails_the_task(objects: dict[str, bytes], message: str) -> None:
    with pytest.raises(CandidateInvalidError) as error:
        release.read_candidate(Objects({**objects, **REGISTERED}), CFG, RECORD_URI, run_id="r1")
    assert message in str(error.value)


def test_instance_counts_reach_emr_as_integers() -> None:
    config = {
        "Instances": {
            "InstanceGroups": [{"Name": "primary", "InstanceCount": 1}, {"Name": "core", "InstanceCount": "2"}]
        }
    }
    assert [g["InstanceCount"] for g in with_integer_counts(config)["Instances"]["InstanceGroups"]] == [1, 2]
    bad = {"Instances": {"InstanceGroups": [{"Name": "core", "InstanceCount": "two"}]}}
    with pytest.raises(ValueError, match="InstanceCount of instance group 'core' must be a whole number, got 'two'"):
        with_integer_counts(bad)
