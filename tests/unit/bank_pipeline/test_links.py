"""Extra links of the release operators, and the plugin that registers them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bank_pipeline.links import (
    DASHBOARD_ENV,
    LAMBDA_CONSOLE_ENV,
    KubernetesDeploymentLink,
    LambdaFunctionVersionLink,
    RegistryImageLink,
)
from bank_pipeline.operators.images import ModelImagePushOperator
from bank_pipeline.operators.kubernetes_rollout import KubernetesRolloutOperator
from bank_pipeline.operators.lambda_deploy import LambdaImageDeployOperator
from tests.support.paths import REPO  # noqa: E402
from tests.support.recording_ti import RecordingTI

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32


def test_lambda_version_link_on_aws() -> None:
    url = LambdaFunctionVersionLink().format_link(
        function_name="bank-model", version="7", region_name="eu-west-1", aws_partition="aws"
    )
    assert (
        url == "https://console.aws.amazon.com/lambda/home?region=eu-west-1#/functions/bank-model/versions/7?tab=image"
    )


def test_lambda_version_link_in_china_and_unknown_partition() -> None:
    link = LambdaFunctionVersionLink()
    cn = link.format_link(function_name="f", version="2", region_name="cn-north-1", aws_partition="aws-cn")
    assert cn.startswith("https://console.amazonaws.cn/lambda/home?region=cn-north-1#/functions/f/versions/2")
    assert link.format_link(function_name="f", version="2", region_name="x", aws_partition="nope") == ""


def test_lambda_version_link_from_the_console_template(monkeypatch: pytest.MonkeyPatch) -> None:
    link = LambdaFunctionVersionLink()
    values = {"function_name": "bank model", "version": "3", "region_name": "us-east-1"}
    monkeypatch.setenv(LAMBDA_CONSOLE_ENV, "http://127.0.0.1:4566/moto-api/")  # devstack's: moto's dashboard
    assert link.format_link(**values) == "http://127.0.0.1:4566/moto-api/"
    monkeypatch.setenv(LAMBDA_CONSOLE_ENV, "https://c.example/{region}/{function}/{version}")
    assert link.format_link(**values) == "https://c.example/us-east-1/bank%20model/3"
    monkeypatch.setenv(LAMBDA_CONSOLE_ENV, "https://c.example/{account}")  # a placeholder it cannot fill
    assert link.format_link(**values) == ""


def test_lambda_version_link_through_an_endpoint_is_still_the_aws_console(monkeypatch: pytest.MonkeyPatch) -> None:
    # A VPC endpoint (or a version persisted by an older release, with its endpoint_url): AWS, so AWS's console.
    monkeypatch.delenv(LAMBDA_CONSOLE_ENV, raising=False)
    url = LambdaFunctionVersionLink().format_link(
        function_name="f", version="2", region_name="eu-west-1",
        endpoint_url="https://vpce-0abc.lambda.eu-west-1.vpce.amazonaws.com",
    )  # fmt: skip
    assert url.startswith("https://console.aws.amazon.com/lambda/home?region=eu-west-1#/functions/f/versions/2")


def test_image_link_in_ecr_is_the_console_page_of_the_digest() -> None:
    url = RegistryImageLink().format_link(
        registry="123456789012.dkr.ecr.us-east-2.amazonaws.com", repository="bank-model", digest=DIGEST
    )
    assert url == (
        "https://console.aws.amazon.com/ecr/repositories/private/123456789012/bank-model"
        f"/_/image/{DIGEST}/details?region=us-east-2"
    )


def test_image_link_in_another_registry_is_its_manifest_over_https_unless_pushed_over_http() -> None:
    link = RegistryImageLink()
    url = link.format_link(registry="ghcr.io", repository="bank-model", digest=DIGEST)
    assert url == f"https://ghcr.io/v2/bank-model/manifests/{DIGEST}"
    url = link.format_link(registry="127.0.0.1:5000", repository="bank-model", digest=DIGEST, plain_http=True)
    assert url == f"http://127.0.0.1:5000/v2/bank-model/manifests/{DIGEST}"


def test_deployment_link_from_the_dashboard_template(monkeypatch: pytest.MonkeyPatch) -> None:
    link = KubernetesDeploymentLink()
    monkeypatch.delenv(DASHBOARD_ENV, raising=False)
    assert link.format_link(namespace="ml", deployment="bank-model") == ""  # no dashboard: no link
    monkeypatch.setenv(DASHBOARD_ENV, "https://k8s.example/#/deployment/{namespace}/{deployment}?namespace={namespace}")
    assert link.format_link(namespace="ml", deployment="bank-model") == (
        "https://k8s.example/#/deployment/ml/bank-model?namespace=ml"
    )
    monkeypatch.setenv(DASHBOARD_ENV, "https://k8s.example/{cluster}")  # a placeholder it cannot fill
    assert link.format_link(namespace="ml", deployment="bank-model") == ""


def test_operators_carry_their_links() -> None:
    assert [type(x) for x in LambdaImageDeployOperator.operator_extra_links] == [LambdaFunctionVersionLink]
    assert [type(x) for x in ModelImagePushOperator.operator_extra_links] == [RegistryImageLink]
    assert [type(x) for x in KubernetesRolloutOperator.operator_extra_links] == [KubernetesDeploymentLink]


def test_persist_stores_the_values_under_the_links_key_and_is_a_noop_without_a_ti() -> None:
    op = ModelImagePushOperator(
        task_id="push", version="v1", registry_prefix="s3://b/r/", registry="h:1", repository="r", base_tag="b"
    )
    ti = RecordingTI()
    RegistryImageLink.persist({"ti": ti}, op, registry="h:1", repository="r", digest=DIGEST)
    assert ti.pushed == {"bank_registry_image": {"registry": "h:1", "repository": "r", "digest": DIGEST}}
    RegistryImageLink.persist({}, op, registry="h:1", repository="r", digest=DIGEST)  # unit tests' context={}


PROBE = """
import json, sys
from airflow import plugins_manager
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization as SerializedDAG


plugins, errors = plugins_manager._get_plugins()
links = [f"{type(l).__module__}.{type(l).__name__}" for l in plugins_manager.get_operator_extra_links()]
bag = DagBag()
out = {"plugins": [p.name for p in plugins], "errors": {k: str(v) for k, v in errors.items()}, "links": links,
       "dag_errors": {k: str(v) for k, v in bag.import_errors.items()}, "task_links": {}}
for dag_id in ("bank_features_emr", "bank_model_release"):
    dag = SerializedDAG.from_dict(SerializedDAG.to_dict(bag.dags[dag_id]))
    for task in dag.tasks:
        if task.extra_links:
            out["task_links"][f"{dag_id}.{task.task_id}"] = sorted(task.extra_links)
out["modules"] = {name: getattr(m, "__file__", None) for name, m in list(sys.modules.items())
                  if (getattr(m, "__file__", None) or "").startswith(sys.argv[1])}
print("PROBE" + json.dumps(out))
"""


def expected_name(path: Path) -> str:
    """The one name a project file may be imported under: its package path, or its stem for plugins/*.py."""
    rel = path.relative_to(REPO)
    root, *parts = rel.with_suffix("").parts
    if root == "plugins" and len(parts) == 1:
        return parts[0]  # the plugin registration, imported by Airflow's loader under its file name
    if root in ("plugins", "serving", "spark_jobs"):
        return ".".join(p for p in parts if p != "__init__")
    if root == "dags":
        raise AssertionError(f"a DAG file is imported as a module: {rel}")
    return ".".join(p for p in (root, *parts) if p != "__init__")


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """PROBE's report, run once in a fresh interpreter as Airflow's processes load the bundle."""
    home = tmp_path_factory.mktemp("airflow-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
    )
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO / "plugins")], env=env, cwd=home, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    line = next((x for x in proc.stdout.splitlines() if x.startswith("PROBE")), None)
    assert line, proc.stdout[-2000:] + proc.stderr[-4000:]
    return dict(json.loads(line[len("PROBE") :]))


def test_plugin_is_discovered_and_serialized_dags_keep_the_links(probe: dict[str, Any]) -> None:
    out = probe
    assert "bank_pipeline" in out["plugins"] and not out["errors"] and not out["dag_errors"]
    assert {
        "bank_pipeline.links.LambdaFunctionVersionLink",
        "bank_pipeline.links.RegistryImageLink",
        "bank_pipeline.links.KubernetesDeploymentLink",
    } <= set(out["links"])
    links = out["task_links"]
    assert links["bank_model_release.deploy_lambda"] == ["Lambda function version"]
    assert links["bank_model_release.push_image"] == ["Image in registry"]
    assert links["bank_model_release.rollout_kubernetes"] == ["Kubernetes Deployment"]
    assert "EMR Cluster" in links["bank_features_emr.create_cluster"]  # the provider's own link


def test_loading_plugins_and_dags_imports_each_project_module_once_under_its_package_name(
    probe: dict[str, Any],
) -> None:
    # The same probe, read for what it imported: Airflow's plugin loader imports every .py
    # under plugins/ as a top-level module named after the file, unless .airflowignore hides it.
    modules = probe["modules"]
    assert "bank_pipeline_plugin" in modules and "bank_pipeline.plugin" in modules
    wrong = {name: file for name, file in modules.items() if name != expected_name(Path(file))}
    assert wrong == {}, wrong
    files = list(modules.values())
    assert len(files) == len(set(files)), sorted(files)
