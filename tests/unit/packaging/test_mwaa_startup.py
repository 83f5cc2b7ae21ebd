"""``make mwaa``'s startup.sh: every BANK_* setting, as MWAA's image runs a startup script.

MWAA (aws/amazon-mwaa-docker-images, bin/airflow-user/execute-user-startup-script) runs
``source startup.sh`` in bash with ``exit`` aliased to a handler, then hands every variable
of the resulting environment to Airflow, except MWAA__* and a list of protected names
(python/mwaa/config/setup_environment.py, ``_is_protected_os_environ``).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from bank_pipeline import settings
from devstack.deploy import OPTIONAL_SETTINGS, PLACEHOLDERS, SETTINGS_FILE, bank_settings, mwaa_bundle, startup_script
from tests.support.paths import REPO

pytestmark = pytest.mark.unit

# setup_environment._is_protected_os_environ (3.3.1): a startup script cannot set these.
MWAA_PROTECTED = {
    "AIRFLOW_ENV_ID", "AIRFLOW_ENV_NAME", "AIRFLOW_HOME", "AIRFLOW_TASK_REVISION_ID", "AIRFLOW_VERSION",
    "AIRFLOW__AWS_MWAA__REDIRECT_URL", "JWT_PUBLIC_KEY", "AIRFLOW__WEBSERVER__BASE_URL", "AIRFLOW__API__BASE_URL",
    "AWS_DEFAULT_REGION", "AWS_REGION", "CUSTOMER_ACCOUNT_ID", "ECS_AGENT_URI", "ECS_CONTAINER_METADATA_URI",
    "ECS_CONTAINER_METADATA_URI_V4", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_EXECUTION_ENV", "PYTHONPATH",
    "PYTHONUNBUFFERED", "WATCHTOWER_VERSION", "USE_NON_CRITICAL_LOGGING", "AIRFLOW__CORE__DATABASE_ACCESS_ISOLATION",
}  # fmt: skip

# execute-user-startup-script, with `jq -n env` replaced by Python (no jq here).
MWAA_RUNNER = r"""
handle_exit() {
    python3 -c 'import json, os; print("ENV" + json.dumps(dict(os.environ)))'
    unalias exit
    exit
}
shopt -s expand_aliases
alias exit=handle_exit
source "$1"
handle_exit
"""


def run_as_mwaa(script: Path, tmp_path: Path) -> tuple[dict[str, str], str]:
    """(the environment Airflow would get, the script's output), from a clean environment."""
    runner = tmp_path / "execute-user-startup-script"
    runner.write_text(MWAA_RUNNER)
    result = subprocess.run(
        ["bash", str(runner), str(script)],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("ENV"))
    return json.loads(line[3:]), result.stdout


def test_the_script_exports_every_setting_load_reads_and_nothing_mwaa_protects() -> None:
    read = re.findall(r"env\.get\(\"(BANK_\w+)\"", SETTINGS_FILE.read_text())
    names = [name for name, _, _ in bank_settings()]
    assert names == read and len(set(names)) == len(names)
    assert all(n.startswith("BANK_") and n not in MWAA_PROTECTED for n in [*names, *OPTIONAL_SETTINGS])
    assert set(PLACEHOLDERS) <= set(names)
    for name in OPTIONAL_SETTINGS:  # still read by the package
        assert f'"{name}"' in (REPO / "plugins" / "bank_pipeline" / "links.py").read_text()


def test_sourced_as_mwaa_does_it_gives_settings_their_defaults_but_the_placeholders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "startup.sh"
    script.write_text(startup_script())
    env, output = run_as_mwaa(script, tmp_path)
    bank = {k: v for k, v in env.items() if k.startswith("BANK_")}
    assert set(bank) == {name for name, _, _ in bank_settings()}
    assert "_bank_var" not in env  # the script leaves nothing else behind
    for name in PLACEHOLDERS:
        assert f"WARNING: edit {name}" in output
    for name in list(bank):
        monkeypatch.delenv(name, raising=False)
    defaults = settings.load()
    for name, value in bank.items():
        monkeypatch.setenv(name, value)
    loaded = settings.load()  # every value parses (ints, release targets)
    assert loaded.lake_bucket == PLACEHOLDERS["BANK_LAKE_BUCKET"]
    assert loaded.lambda_role_arn == PLACEHOLDERS["BANK_LAMBDA_ROLE_ARN"]
    assert loaded.__dict__ | {"lake_bucket": defaults.lake_bucket, "lambda_role_arn": ""} == defaults.__dict__


def test_an_edited_script_says_nothing_and_keeps_odd_values_intact(tmp_path: Path) -> None:
    text = startup_script()
    text = text.replace("'<your-lake-bucket>'", "my-lake").replace(
        "'arn:aws:iam::<account-id>:role/<lambda-execution-role>'", "arn:aws:iam::123456789012:role/bank-lambda"
    )
    text = text.replace("export BANK_KUBERNETES_NAMESPACE=''", "export BANK_KUBERNETES_NAMESPACE='team $a b'")
    script = tmp_path / "startup.sh"
    script.write_text(text)
    env, output = run_as_mwaa(script, tmp_path)
    assert "WARNING" not in output
    assert env["BANK_LAKE_BUCKET"] == "my-lake" and env["BANK_KUBERNETES_NAMESPACE"] == "team $a b"


def test_make_mwaa_writes_the_script_beside_plugins_zip_and_requirements(tmp_path: Path) -> None:
    wheel = tmp_path / "bank_marketing_release-1.0.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    out = mwaa_bundle(wheel, tmp_path / "mwaa")
    assert sorted(p.name for p in out.iterdir()) == ["dags", "plugins.zip", "requirements.txt", "startup.sh"]
    assert (out / "startup.sh").read_text() == startup_script()
    assert subprocess.run(["bash", "-n", str(out / "startup.sh")], timeout=30).returncode == 0
