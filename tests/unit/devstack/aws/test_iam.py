"""devstack.aws.iam's resource ARNs and PassRole evaluation, without a server: what moto checks against "*" otherwise."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from devstack.aws.iam import _ecr_resource, _emr_resource, _lambda_resource, statement_applies

pytestmark = pytest.mark.unit

FN = "arn:aws:lambda:us-east-1:123456789012:function"


def request(path: str = "/", body: dict | None = None, **query: str) -> SimpleNamespace:
    return SimpleNamespace(
        path=path, body=json.dumps(body or {}), querystring={k: [v] for k, v in query.items()},
        region="us-east-1", current_account="123456789012",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("req", "arn"),
    [
        (request("/2015-03-31/functions/bank-model"), f"{FN}:bank-model"),
        (request("/2015-03-31/functions/bank-model/invocations", Qualifier="live"), f"{FN}:bank-model:live"),
        (request("/2015-03-31/functions/bank-model%3Alive/invocations"), f"{FN}:bank-model:live"),
        (request(f"/2015-03-31/functions/{FN}:bank-model:3/configuration"), f"{FN}:bank-model:3"),
        (request("/2015-03-31/functions/bank-model/aliases/live"), f"{FN}:bank-model"),
        (request("/2015-03-31/functions", {"FunctionName": "bank-model"}), f"{FN}:bank-model"),
        (request("/2015-03-31/functions/"), "*"),
    ],
)
def test_lambda_calls_are_checked_on_the_function(req: SimpleNamespace, arn: str) -> None:
    assert _lambda_resource(req) == arn


@pytest.mark.parametrize(
    ("body", "arn"),
    [
        ({"ClusterId": "j-1"}, "arn:aws:elasticmapreduce:us-east-1:123456789012:cluster/j-1"),
        ({"JobFlowId": "j-2", "Steps": []}, "arn:aws:elasticmapreduce:us-east-1:123456789012:cluster/j-2"),
        ({"JobFlowIds": ["j-3"]}, "arn:aws:elasticmapreduce:us-east-1:123456789012:cluster/j-3"),
        ({"Name": "c", "Instances": {}}, "*"),  # RunJobFlow
    ],
)
def test_emr_calls_are_checked_on_the_cluster(body: dict, arn: str) -> None:
    assert _emr_resource(request(body=body)) == arn


def test_ecr_calls_are_checked_on_the_repository() -> None:
    assert _ecr_resource(request(body={"repositoryName": "bank-model"})) == (
        "arn:aws:ecr:us-east-1:123456789012:repository/bank-model"
    )
    assert _ecr_resource(request(body={})) == "*"


PASS_EMR = {
    "Effect": "Allow", "Action": "iam:PassRole", "Resource": "arn:aws:iam::1:role/EMR_DefaultRole",
    "Condition": {"StringEquals": {"iam:PassedToService": "elasticmapreduce.amazonaws.com"}},
}  # fmt: skip


def test_pass_role_needs_the_role_and_the_service() -> None:
    role = "arn:aws:iam::1:role/EMR_DefaultRole"
    assert statement_applies(PASS_EMR, "iam:PassRole", role, {"iam:passedtoservice": "elasticmapreduce.amazonaws.com"})
    assert not statement_applies(PASS_EMR, "iam:PassRole", role, {"iam:passedtoservice": "ec2.amazonaws.com"})
    assert not statement_applies(PASS_EMR, "iam:PassRole", role, {})  # a missing key fails, as on AWS
    assert not statement_applies(PASS_EMR, "iam:PassRole", "arn:aws:iam::1:role/other", {})
    with pytest.raises(ValueError, match="NumericLessThan"):
        statement_applies({**PASS_EMR, "Condition": {"NumericLessThan": {"x": "1"}}}, "iam:PassRole", role, {})
