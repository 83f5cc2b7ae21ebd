"""docker-compose.yaml cannot run here (no Docker): check that everything it refers to exists."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.paths import REPO  # noqa: E402

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yaml").read_text())


def bind_mounts(service: dict) -> list[tuple[str, str]]:
    return [tuple(v.split(":")[:2]) for v in service.get("volumes", []) if v.startswith(".")]


def test_every_bind_mount_and_build_file_exists(compose):
    for name, service in compose["services"].items():
        for source, _ in bind_mounts(service):
            assert (REPO / source).exists(), (name, source)
        build = service.get("build")
        if build:
            assert (REPO / build["context"] / build["dockerfile"]).is_file(), name


def test_named_volumes_are_declared(compose):
    declared = set(compose["volumes"])
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, (name, source)


def test_depends_on_names_services(compose):
    for name, service in compose["services"].items():
        for dep in service.get("depends_on", {}):
            assert dep in compose["services"], (name, dep)


def test_airflow_installs_the_wheel_and_mounts_only_the_dags_and_the_plugin_registration(compose):
    env = compose["x-airflow-common"]["environment"]
    mounts = {target: source for source, target in bind_mounts(compose["x-airflow-common"])}
    assert mounts[env["AIRFLOW__CORE__DAGS_FOLDER"]] == "./dags"
    plugins = env["AIRFLOW__CORE__PLUGINS_FOLDER"]
    assert {t: s for t, s in mounts.items() if t.startswith(plugins)} == {
        f"{plugins}/bank_pipeline_plugin.py": "./plugins/bank_pipeline_plugin.py"
    }
    assert not {"./spark_jobs", "./serving", "./plugins"} & set(mounts.values())
    dockerfile = (REPO / "docker" / "airflow.Dockerfile").read_text()
    assert "uv build --wheel" in dockerfile and "-r /tmp/requirements.txt /tmp/dist/*.whl" in dockerfile
    assert "constraints-${AIRFLOW_VERSION}/constraints-3.11.txt" in dockerfile


def test_the_password_file_is_writable(compose):
    # SimpleAuthManager opens its passwords file "a+": a read-only mount fails the api-server.
    env = compose["x-airflow-common"]["environment"]
    path = env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    volumes = compose["x-airflow-common"]["volumes"]
    (volume,) = [v for v in volumes if path.startswith(v.split(":")[1])]
    assert not volume.endswith(":ro") and not volume.startswith(".")
    assert path in " ".join(compose["services"]["airflow-init"]["command"])


def test_devstack_needs_no_bundle_folders_mounted(compose):
    devstack = compose["services"]["devstack"]
    assert bind_mounts(devstack) == []
    assert compose["services"]["devstack-seed"]["command"][:3] == ["python", "-m", "devstack.seed"]


def test_the_k3s_profile_has_a_kubernetes_connection_and_the_manifests_ship_in_the_wheel(compose):
    env = compose["x-airflow-common"]["environment"]
    connection = json.loads(env["AIRFLOW_CONN_KUBERNETES_DEFAULT"])
    assert connection["extra"]["kube_config_path"].startswith("/opt/airflow/kube/")
    assert "k3s-kubeconfig:/opt/airflow/kube:ro" in compose["x-airflow-common"]["volumes"]
    assert env["BANK_RELEASE_TARGETS"] == "${BANK_RELEASE_TARGETS:-lambda}"


def test_every_long_running_service_has_a_healthcheck(compose):
    one_shot = {"airflow-init", "devstack-seed", "k3s-kubeconfig"}
    for name, service in compose["services"].items():
        if name not in one_shot:
            assert "healthcheck" in service, name


def test_bank_settings_match_what_the_code_reads(compose):
    env = compose["x-airflow-common"]["environment"]
    read = set(re.findall(r'env\.get\("(BANK_[A-Z_]+)"', (REPO / "plugins/bank_pipeline/settings.py").read_text()))
    assert {k for k in env if k.startswith("BANK_")} <= read
    assert env["AIRFLOW_CONN_AWS_DEFAULT"].count("http://devstack:4566") == 1
    assert env["BANK_IMAGE_REGISTRY"] == "devstack:5000"
    devstack = compose["services"]["devstack"]["command"]
    assert devstack[devstack.index("--registry-port") + 1] == "5000"
    assert devstack[devstack.index("--public-host") + 1] == "devstack"


def test_k3s_is_an_optional_profile(compose):
    assert compose["services"]["k3s"]["profiles"] == ["k3s"]
    registries = yaml.safe_load((REPO / "docker" / "k3s-registries.yaml").read_text())
    assert "devstack:5000" in registries["mirrors"]
