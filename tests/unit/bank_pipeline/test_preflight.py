"""The preflight's pieces that need no account: rows, the table, the Airflow checks, the parsers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bank_pipeline import permissions, preflight, settings
from bank_pipeline.preflight import Fail, Row, Skip, Warn, airflow_checks, aws_checks, kubernetes_checks

pytestmark = pytest.mark.unit

PLACEHOLDER_EMR = {
    "conn_type": "emr",
    "extra": {"Instances": {"Ec2KeyName": "mykey", "Ec2SubnetId": "somesubnet", "InstanceCount": 1}},
}


def test_outcome_maps_each_exception_to_its_status() -> None:
    def ok() -> str:
        return "found"

    def fail() -> str:
        raise Fail("broken", "mend it")

    def warn() -> str:
        raise Warn("half", "mend some")

    def skip() -> str:
        raise Skip("not configured")

    def denied() -> str:
        raise RuntimeError("An error occurred (AccessDenied) when calling the GetRole operation: not authorized")

    rows = [
        preflight.outcome("A", name, fn)
        for name, fn in [("ok", ok), ("fail", fail), ("warn", warn), ("skip", skip), ("denied", denied)]
    ]
    assert [(r.status, r.detail, r.fix) for r in rows[:4]] == [
        ("ok", "found", ""), ("fail", "broken", "mend it"), ("warn", "half", "mend some"), ("skip", "not configured", ""),
    ]  # fmt: skip
    assert rows[4].status == "fail" and rows[4].detail.startswith("RuntimeError: An error occurred (AccessDenied)")
    assert "AirflowWorkerPolicyArn" in rows[4].fix
    with pytest.raises(ValueError, match="unknown status 'bad'"):
        Row("A", "c", "bad", "d")


def test_the_table_shows_every_row_its_fix_and_the_counts() -> None:
    rows = [
        Row("IAM", "roles", "ok", "EMR_DefaultRole"),
        Row("EMR", "network", "fail", "subnet-1 not tagged " + "x" * 120, "aws ec2 create-tags --resources subnet-1"),
    ]
    text = preflight.table(rows, width=100)
    assert all(len(line) <= 100 for line in text.splitlines()), text
    assert re.search(r"^EMR\s+network\s+FAIL\s+subnet-1 not tagged", text, re.MULTILINE)
    assert "fix: aws ec2 create-tags --resources subnet-1" in text
    assert text.splitlines()[-1] == "1 ok, 1 fail"
    assert preflight.failed(rows) == rows[1:]
    assert "| EMR | network | fail |" in preflight.markdown(rows)


def test_bad_settings_stop_the_preflight_at_the_first_row(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BANK_POLL_SECONDS", "soon")
    rows = preflight.run()
    assert [(r.check, r.status) for r in rows] == [("settings", "fail")]
    assert "BANK_POLL_SECONDS='soon': expected a whole number of seconds" in rows[0].detail


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("BANK_CANARY_MAX_ERROR_RATE", "5%", "BANK_CANARY_MAX_ERROR_RATE='5%': expected a number from 0 to 1"),
        ("BANK_CANARY_MAX_ERROR_RATE", "1.5", "BANK_CANARY_MAX_ERROR_RATE='1.5': expected a number from 0 to 1"),
        ("BANK_CANARY_MAX_P99_MS", "-3", "BANK_CANARY_MAX_P99_MS='-3': expected a number from 0"),
        ("BANK_CANARY_MAX_THROTTLES", "none", "BANK_CANARY_MAX_THROTTLES='none': expected a number from 0"),
        ("BANK_DRIFT_PSI_THRESHOLD", "0", "BANK_DRIFT_PSI_THRESHOLD='0': expected a number above 0 and below 10"),
        ("BANK_DRIFT_PSI_THRESHOLD", "high", "BANK_DRIFT_PSI_THRESHOLD='high': expected a number above 0 and below"),
    ],
)
def test_bad_canary_thresholds_stop_the_preflight_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    rows = preflight.run()
    assert [(r.check, r.status) for r in rows] == [("settings", "fail")]
    assert message in rows[0].detail


def test_canary_settings_reach_the_thresholds_and_alarms(monkeypatch: pytest.MonkeyPatch) -> None:
    from bank_pipeline import settings

    monkeypatch.setenv("BANK_CANARY_MAX_P99_MS", "250")
    monkeypatch.setenv("BANK_CANARY_ALARMS", "bank-5xx, bank-latency ,")
    monkeypatch.setenv("BANK_CANARY_MAX_THROTTLES", "3")
    cfg = settings.load()
    assert cfg.canary_thresholds == {"max_error_rate": 0.05, "max_p99_ms": 250.0, "max_throttles": 3.0}
    assert cfg.canary_alarms == ("bank-5xx", "bank-latency")


def test_a_misspelt_variable_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BANK_LAKE_BUKCET", "mine")
    rows, cfg = airflow_checks.settings_rows(None)
    assert cfg is not None
    assert [(r.check, r.status) for r in rows] == [("settings", "ok"), ("unknown BANK_* variables", "warn")]
    assert "BANK_LAKE_BUKCET" in rows[1].detail


def test_every_variable_the_product_reads_is_known() -> None:
    root = Path(settings.__file__).parent
    read = set()
    for source in [root / "settings.py", root / "links.py"]:
        read |= set(re.findall(r'"(BANK_[A-Z0-9_]+)"', source.read_text()))
    assert read == set(settings.VARIABLES)


def test_airflows_placeholders_fail_the_emr_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_EMR_DEFAULT", json.dumps(PLACEHOLDER_EMR))
    with pytest.raises(Fail, match=r"Instances.Ec2KeyName='mykey', Instances.Ec2SubnetId='somesubnet'"):
        airflow_checks.check_emr_connection(settings.load())
    # The other checks judge the rest of the extra, not the placeholders again.
    assert airflow_checks.emr_extra(without_placeholders=True) == {"Instances": {"InstanceCount": 1}}
    monkeypatch.setenv(
        "AIRFLOW_CONN_EMR_DEFAULT",
        json.dumps({"conn_type": "emr", "extra": {"Instances": {"Ec2SubnetId": "subnet-9"}}}),
    )
    assert "extra sets Instances" in airflow_checks.check_emr_connection(settings.load())


def test_a_missing_connection_names_how_to_make_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_AWS_DEFAULT", raising=False)
    with pytest.raises(Fail, match="no connection 'aws_default'") as err:
        airflow_checks.check_aws_connection(settings.load())
    assert "AIRFLOW_CONN_AWS_DEFAULT" in err.value.fix


def test_no_kubernetes_target_skips_its_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BANK_RELEASE_TARGETS", "lambda")
    assert [r.status for r in kubernetes_checks.run_checks(settings.load())] == ["skip"]


def test_a_kubeconfig_using_the_aws_cli_is_found() -> None:
    config = {"users": [{"name": "eks", "user": {"exec": {"command": "aws", "args": ["eks", "get-token"]}}}]}
    assert kubernetes_checks.exec_commands(json.dumps(config)) == ["aws"]
    assert kubernetes_checks.exec_commands({"users": [{"name": "t", "user": {"token": "x"}}]}) == []


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            {
                "Statement": [
                    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
                ]
            },
            True,
        ),
        (
            {
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": ["x", "ec2.amazonaws.com"]},
                        "Action": ["sts:AssumeRole"],
                    }
                ]
            },
            True,
        ),
        (
            {
                "Statement": [
                    {"Effect": "Deny", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
                ]
            },
            False,
        ),
        (
            {
                "Statement": [
                    {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
                ]
            },
            False,
        ),
    ],
)
def test_trust_is_read_from_the_roles_document(document: dict, expected: bool) -> None:
    assert aws_checks.trusts({"AssumeRolePolicyDocument": document}, "ec2.amazonaws.com") is expected
    encoded = json.dumps(document).replace(" ", "%20").replace('"', "%22")  # IAM's URL-encoded form
    assert aws_checks.trusts({"AssumeRolePolicyDocument": encoded}, "ec2.amazonaws.com") is expected


def test_every_dag_call_resolves_with_the_preflights_names() -> None:
    names = dict.fromkeys(
        [
            "lake",
            "repo",
            "function",
            "region",
            "account",
            "principal",
            "EmrServiceRoleName",
            "EmrJobFlowRoleName",
            "LambdaRoleName",
        ],
        "x",
    )
    for call in permissions.CALLS:
        assert "{" not in call.resolve(names), call
    assert all(not c.preflight for c in permissions.dag_calls())
    assert {c.action for c in permissions.CALLS if c.preflight} >= {
        "iam:SimulatePrincipalPolicy",
        "ec2:DescribeSubnets",
    }


def test_the_task_fails_naming_each_failed_check(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from bank_pipeline.errors import PreflightFailedError

    monkeypatch.setattr(
        preflight, "run", lambda cfg=None: [Row("A", "one", "ok", "fine"), Row("B", "two", "fail", "broken", "mend")]
    )
    with (
        caplog.at_level("INFO"),
        pytest.raises(PreflightFailedError, match=r"1 check\(s\) failed: B two: broken \(fix: mend\)"),
    ):
        preflight.report()
    assert "B     two    FAIL    broken" in caplog.text
    monkeypatch.setattr(preflight, "run", lambda cfg=None: [Row("A", "one", "ok", "fine")])
    assert preflight.report() == [{"area": "A", "check": "one", "status": "ok", "detail": "fine", "fix": ""}]
