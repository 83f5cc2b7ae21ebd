"""LambdaImageDeployOperator against devstack's Lambda: create, update, no-op, rollback, bad input."""

from __future__ import annotations

import pytest

from bank_pipeline.errors import BadInputError, DeployFailedError
from bank_pipeline.operators.lambda_function import LambdaImageDeployOperator, subset_mismatch
from devstack.airflow_env import LAMBDA_ROLE_ARN, seed_release
from tests.devstack.devstack_image_helpers import model_image, write_serving

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def images(ds, account, tmp_path_factory):
    """Two good images (models v1, v2) and one whose handler raises."""
    good = write_serving(tmp_path_factory.mktemp("good"))
    bad = tmp_path_factory.mktemp("bad")
    (bad / "bank_serving").mkdir()
    (bad / "bank_serving" / "lambda_handler.py").write_text(
        "def handler(event, context):\n    raise RuntimeError('boom at smoke')\n"
    )
    seed_release(ds.registry_url, source_dir=good)  # `account` made the Lambda role
    uri = lambda pushed, repo: f"{ds.registry_url}/{repo}@{pushed.digest}"  # noqa: E731
    return {
        "v1": uri(model_image(ds.registry_url, good, "v1", repo="deploy-good"), "deploy-good"),
        "v2": uri(model_image(ds.registry_url, good, "v2", repo="deploy-good"), "deploy-good"),
        "bad": uri(model_image(ds.registry_url, bad, "v3", repo="deploy-bad"), "deploy-bad"),
    }


@pytest.fixture
def aws_env(ds, monkeypatch):
    for key, value in ds.env().items():
        monkeypatch.setenv(key, value)


def deploy(function: str, image_uri: str, version_expected: str | None = None, **kw):
    op = LambdaImageDeployOperator(
        task_id="deploy",
        aws_conn_id=None,
        function_name=function,
        image_uri=image_uri,
        role_arn=LAMBDA_ROLE_ARN,
        smoke_event={"ping": 1},
        smoke_expect={"model": {"version": version_expected}} if version_expected else None,
        smoke_check=lambda answer: None,  # the stand-in handler answers without statusCode
        deferrable=False,
        waiter_delay=1,
        **kw,
    )
    return op.execute(context={})


def test_first_deploy_creates_then_update_moves_alias_then_rerun_is_a_no_op(aws_env, images, ds):
    lam = ds.client("lambda")
    first = deploy("fn-cycle", images["v1"], "v1")
    assert first == {
        "function_name": "fn-cycle", "version": "1", "alias": "live",
        "previous_version": None, "image_uri": images["v1"], "changed": True,
    }  # fmt: skip
    second = deploy("fn-cycle", images["v2"], "v2")
    assert (second["version"], second["previous_version"], second["changed"]) == ("2", "1", True)
    again = deploy("fn-cycle", images["v2"], "v2")
    assert (again["version"], again["changed"]) == ("2", False)
    versions = [v["Version"] for v in lam.list_versions_by_function(FunctionName="fn-cycle")["Versions"]]
    assert versions == ["$LATEST", "1", "2"]


def test_failing_smoke_test_rolls_the_alias_back(aws_env, images, ds):
    lam = ds.client("lambda")
    deploy("fn-rollback", images["v1"], "v1")
    with pytest.raises(DeployFailedError, match=r"failed its smoke test: the function raised .*boom at smoke.*rolled back to version 1"):
        deploy("fn-rollback", images["bad"])
    assert lam.get_alias(FunctionName="fn-rollback", Name="live")["FunctionVersion"] == "1"


def test_wrong_answer_on_first_deploy_removes_the_alias(aws_env, images, ds):
    lam = ds.client("lambda")
    with pytest.raises(DeployFailedError, match=r"answer.model.version: expected 'v9', got 'v1'; alias live removed"):
        deploy("fn-first-bad", images["v1"], "v9")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_alias(FunctionName="fn-first-bad", Name="live")


def test_mutable_tag_is_refused(aws_env, ds):
    with pytest.raises(BadInputError, match="deploy by digest, not by a mutable tag"):
        deploy("fn-tag", f"{ds.registry_url}/deploy-good:model-v1")


def test_missing_function_without_role_is_refused(aws_env, images):
    op = LambdaImageDeployOperator(
        task_id="d", aws_conn_id=None, function_name="fn-no-role", image_uri=images["v1"], smoke_event={}
    )
    with pytest.raises(BadInputError, match="does not exist and no role_arn was given"):
        op.execute(context={})


@pytest.mark.parametrize(
    ("expected", "actual", "problem"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, None),
        ({"a": {"b": "x"}}, {"a": {"b": "x", "c": 0}}, None),
        ({"a": 1}, {"b": 1}, "answer.a: missing"),
        ({"a": {"b": "x"}}, {"a": {"b": "y"}}, "answer.a.b: expected 'x', got 'y'"),
        ({"a": {"b": "x"}}, {"a": [1]}, "answer.a: expected an object, got [1]"),
    ],
)
def test_subset_mismatch(expected, actual, problem):
    assert subset_mismatch(expected, actual) == problem
