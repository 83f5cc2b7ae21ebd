"""bank_model_release's own logic, without running it: which features, and the smoke check."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest

from bank_pipeline import assets
from bank_pipeline.errors import BadInputError
from tests.support.paths import REPO  # noqa: E402

pytestmark = pytest.mark.unit

MANIFEST = "s3://bank-lake/features/bank/run=r1/_manifest.json"


@pytest.fixture(scope="module")
def dag_module():
    spec = importlib.util.spec_from_file_location("bank_model_release", REPO / "dags" / "bank_model_release.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def event(uri: str | None) -> SimpleNamespace:
    return SimpleNamespace(extra={"manifest_uri": uri} if uri else {})


def resolve(dag_module, param: str = "", triggering=None, inlet=None) -> str:
    return dag_module.resolve_features.function(
        params={"features_manifest_uri": param}, triggering_asset_events=triggering, inlet_events=inlet
    )


def test_param_wins_over_the_asset_event(dag_module):
    other = "s3://bank-lake/features/bank/run=r0/_manifest.json"
    assert resolve(dag_module, other, triggering={assets.FEATURES: [event(MANIFEST)]}) == other


def test_scheduled_run_uses_the_newest_triggering_event(dag_module):
    older = "s3://bank-lake/features/bank/run=r0/_manifest.json"
    assert resolve(dag_module, triggering={assets.FEATURES: [event(older), event(MANIFEST)]}) == MANIFEST


def test_manual_run_falls_back_to_the_assets_latest_event(dag_module):
    assert resolve(dag_module, triggering={}, inlet={assets.FEATURES: [event(None), event(MANIFEST)]}) == MANIFEST


def test_no_features_anywhere_says_what_to_do(dag_module):
    with pytest.raises(BadInputError, match="run bank_features_emr first, or give features_manifest_uri"):
        resolve(dag_module, triggering={}, inlet={assets.FEATURES: []})


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"predictions": [{"probability": 0.2, "label": 0}]}, None),
        ({"predictions": []}, "expected one prediction"),
        ({"predictions": [{"probability": 1.5, "label": 1}]}, "malformed prediction"),
        ({"predictions": [{"probability": 0.5, "label": 2}]}, "malformed prediction"),
        ({"error": "age: missing"}, "expected one prediction, got None"),
    ],
)
def test_smoke_check(dag_module, body, problem):
    result = dag_module.check_prediction({"statusCode": 200, "body": body})
    assert result is None if problem is None else problem in result


def load_release_dag(monkeypatch, targets: str):
    monkeypatch.setenv("BANK_RELEASE_TARGETS", targets)
    spec = importlib.util.spec_from_file_location("release_targets", REPO / "dags" / "bank_model_release.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


@pytest.mark.parametrize(
    ("targets", "tasks"),
    [
        ("lambda,kubernetes", ["deploy_lambda", "lambda_url", "rollout_kubernetes"]),
        (
            "kubernetes, lambda",
            ["deploy_lambda", "lambda_url", "rollout_kubernetes"],
        ),  # release order, whatever the order given
        ("lambda", ["deploy_lambda", "lambda_url"]),
        ("kubernetes", ["rollout_kubernetes"]),
    ],
)
def test_release_targets_are_configuration(monkeypatch, targets, tasks):
    dag = load_release_dag(monkeypatch, targets)
    released = [t for t in ("deploy_lambda", "lambda_url", "rollout_kubernetes") if t in dag.task_dict]
    assert released == tasks
    # After the image push; read_candidate too, for the version the smoke test expects.
    assert dag.task_dict[tasks[0]].upstream_task_ids - {"read_candidate"} == {"push_image"}
    assert dag.task_dict["record_live"].upstream_task_ids >= {tasks[-1]}


@pytest.mark.parametrize("targets", ["", "lambda,ecs", "k8s"])
def test_unknown_release_target_is_refused_naming_it(monkeypatch, targets):
    with pytest.raises(
        ValueError, match=r"BANK_RELEASE_TARGETS=.*expected a comma-separated subset of lambda, kubernetes"
    ):
        load_release_dag(monkeypatch, targets)


def test_the_function_url_follows_the_alias_with_auth_from_a_param(monkeypatch):
    dag = load_release_dag(monkeypatch, "lambda")
    url = dag.task_dict["lambda_url"]
    assert "deploy_lambda" in url.upstream_task_ids and "lambda_url" in dag.task_dict["record_live"].upstream_task_ids
    assert (url.alias, url.auth_type) == ("live", "{{ params.function_url_auth }}")
    param = dag.params.get_param("function_url_auth")
    assert param.value == "AWS_IAM" and param.schema["enum"] == ["AWS_IAM", "NONE"]
    with pytest.raises(ValueError, match="BASIC"):
        param.resolve("BASIC")


@pytest.mark.parametrize(
    ("targets", "order", "guarded"),
    [
        (
            "lambda,kubernetes",
            ["deploy_lambda", "lambda_url", "rollout_kubernetes"],
            {"lambda_url", "rollout_kubernetes"},
        ),
        ("lambda", ["deploy_lambda", "lambda_url"], {"lambda_url"}),
        ("kubernetes", ["rollout_kubernetes"], None),
    ],
)
def test_every_step_after_the_alias_moves_is_undone_by_revert_lambda(monkeypatch, targets, order, guarded):
    """All-or-nothing: the release is one line (each step runs only if the one before it succeeded), and
    revert_lambda moves the alias back if any step after deploy_lambda fails."""
    dag = load_release_dag(monkeypatch, targets)
    for before, after in zip(order, order[1:], strict=False):
        # The step before, and otherwise only tasks before it (the XComArgs it takes: the image, the version).
        upstream = dag.task_dict[after].upstream_task_ids
        assert before in upstream and upstream - {before} <= dag.task_dict[before].get_flat_relative_ids(upstream=True)
    assert ("revert_lambda" in dag.task_dict) is (guarded is not None)
    if guarded:
        revert = dag.task_dict["revert_lambda"]
        assert revert.upstream_task_ids == {"deploy_lambda", *guarded} and revert.trigger_rule == "one_failed"
        assert revert.release.operator.task_id == "deploy_lambda"
        assert list(revert.steps) == [t for t in order if t in guarded]  # release order: the first unfinished failed
        assert {name: step["result"].operator.task_id for name, step in revert.steps.items()} == {t: t for t in guarded}
        assert "task lambda_url says why" in revert.steps["lambda_url"]["failure"]
        # Not upstream of record_live: live.json waits for every target, never for the revert.
        assert "revert_lambda" not in dag.task_dict["record_live"].upstream_task_ids
        assert dag.task_dict["record_live"].upstream_task_ids >= {order[-1]}


@pytest.mark.parametrize(
    ("finished", "failed"),
    [([], "lambda_url"), (["lambda_url"], "rollout_kubernetes"), (["lambda_url", "rollout_kubernetes"], None)],
)
def test_the_failed_step_is_the_first_that_did_not_finish(finished, failed):
    from bank_pipeline.plans.lambda_release import failed_step

    assert failed_step(["lambda_url", "rollout_kubernetes"], finished) == failed


def test_the_url_smoke_post_is_retried_within_seconds_not_at_poll_seconds(monkeypatch):
    monkeypatch.setenv("BANK_POLL_SECONDS", "30")  # AWS's default: the EMR and Lambda waiters' interval
    dag = load_release_dag(monkeypatch, "lambda")
    assert dag.task_dict["deploy_lambda"].waiter_delay == 30
    url = dag.task_dict["lambda_url"]
    assert url.poll_interval <= 2 and url.smoke_timeout == 60
    assert url.retries == 0  # a failure reverts the alias at once, not after a retry a minute later


def test_the_model_is_built_on_a_temporary_cluster_before_the_gate(dag_module):
    dag = dag_module.dag
    assert dag.task_dict["prepare_training"].upstream_task_ids == {"resolve_features"}
    # A build of the same inputs on record skips the cluster, and read_candidate reads its record.
    assert dag.task_dict["build_needed"].upstream_task_ids == {"prepare_training"}
    assert dag.task_dict["create_cluster"].upstream_task_ids == {"build_needed", "prepare_training"}
    assert dag.task_dict["read_candidate"].trigger_rule == "none_failed"
    assert dag.task_dict["run_train"].upstream_task_ids == {"create_cluster", "prepare_training"}
    assert dag.task_dict["wait_for_train"].upstream_task_ids == {"run_train", "create_cluster"}
    assert dag.task_dict["read_candidate"].upstream_task_ids == {"wait_for_train", "prepare_training"}
    assert dag.task_dict["deploy_gate"].upstream_task_ids == {"read_candidate"}
    teardown = dag.task_dict["terminate_cluster"]
    assert teardown.is_teardown and teardown.upstream_task_ids == {"create_cluster", "wait_for_train"}
    # Manual retraining: the hyperparameters form and the cluster's size are Params.
    assert {"hyperparameters", "instance_type", "core_instance_count"} <= set(dag.params)
    assert dag.params["core_instance_count"] == 1


def test_loading_every_dag_and_the_worker_modules_imports_no_ml_library():
    """What a worker imports to run these DAGs' tasks leaves the ML stack and the node packages alone
    (the import contracts say the same of the code; this checks the running interpreter)."""
    import subprocess
    import sys

    code = (
        "import runpy, sys\n"
        "for dag in ('bank_features_emr', 'bank_model_release', 'bank_batch_score'):\n"
        f"    runpy.run_path('{REPO}/dags/' + dag + '.py')\n"
        "import bank_pipeline.model_release_tasks, bank_pipeline.lake, bank_pipeline.features_emr_tasks, bank_pipeline.batch_score_tasks\n"
        "import bank_pipeline.wheelhouse, bank_pipeline.model_registry, bank_pipeline.utils.parquet_footer\n"
        "print(sorted({m.split('.')[0] for m in sys.modules}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    loaded = set(eval(result.stdout.strip().splitlines()[-1]))  # noqa: S307 - our own printout
    heavy = {"sklearn", "numpy", "pandas", "pyarrow", "scipy", "onnx", "onnxruntime", "skl2onnx", "matplotlib"}
    assert "airflow" in loaded and "bank_pipeline" in loaded  # the check saw the modules load
    assert loaded & (heavy | {"bank_ml", "bank_spark", "bank_serving"}) == set()
