"""docker-compose.yaml cannot run here (no Docker): check that everything it refers to exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


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


def test_airflow_finds_the_bundle_where_it_is_mounted(compose):
    env = compose["x-airflow-common"]["environment"]
    mounts = dict((target, source) for source, target in bind_mounts(compose["x-airflow-common"]))
    for setting, folder in (("AIRFLOW__CORE__DAGS_FOLDER", "dags"), ("AIRFLOW__CORE__PLUGINS_FOLDER", "plugins")):
        assert mounts[env[setting]] == f"./{folder}"
    # the features DAG stages spark_jobs/ from beside dags/; training imports serving/
    assert {"./spark_jobs", "./serving"} <= set(mounts.values())
    assert Path(env["AIRFLOW__CORE__DAGS_FOLDER"]).parent == Path(env["AIRFLOW__CORE__PLUGINS_FOLDER"]).parent


def test_every_long_running_service_has_a_healthcheck(compose):
    one_shot = {"airflow-init", "k3s-kubeconfig"}
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
