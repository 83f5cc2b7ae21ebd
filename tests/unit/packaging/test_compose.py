"""docker-compose.yaml cannot run here (no Docker): check that everything it refers to exists."""

from __future__ import annotations

import json

import pytest
import yaml

from bank_pipeline import settings
from tests.support.paths import REPO  # noqa: E402

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
    assert compose["services"]["devstack-seed"]["command"][:3] == ["python", "-m", "devstack.aws.seed"]


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
    assert {k for k in env if k.startswith("BANK_")} <= settings.VARIABLES
    assert env["AIRFLOW_CONN_AWS_DEFAULT"].count("http://devstack:4566") == 1
    assert env["BANK_IMAGE_REGISTRY"] == "devstack:5000"
    devstack = compose["services"]["devstack"]["command"]
    assert devstack[devstack.index("--registry-port") + 1] == "5000"
    assert devstack[devstack.index("--public-host") + 1] == "devstack"


def test_k3s_is_an_optional_profile(compose):
    assert compose["services"]["k3s"]["profiles"] == ["k3s"]
    registries = yaml.safe_load((REPO / "docker" / "k3s-registries.yaml").read_text())
    assert "devstack:5000" in registries["mirrors"]


def test_the_seed_hands_the_stacks_network_to_airflow_through_a_shared_file(compose, tmp_path):
    """Subnet and security-group ids exist only once the seed deployed the template: it writes emr_default
    to a volume the Airflow services read connections from (LocalFilesystemBackend)."""
    from devstack.aws.seed import write_connections

    env = compose["x-airflow-common"]["environment"]
    assert env["AIRFLOW__SECRETS__BACKEND"] == "airflow.secrets.local_filesystem.LocalFilesystemBackend"
    path = json.loads(env["AIRFLOW__SECRETS__BACKEND_KWARGS"])["connections_file_path"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in compose["x-airflow-common"]["volumes"]}
    airflow_dir, name = path.rsplit("/", 1)
    seed = compose["services"]["devstack-seed"]
    seed_file = seed["command"][seed["command"].index("--connections-file") + 1]
    seed_mounts = {v.split(":")[1]: v.split(":")[0] for v in seed["volumes"]}
    assert seed_mounts[seed_file.rsplit("/", 1)[0]] == mounts[airflow_dir] and seed_file.endswith("/" + name)
    assert "AIRFLOW_CONN_EMR_DEFAULT" not in env  # the file's emr_default is the one

    outputs = {"EmrSubnetId": "subnet-1", "EmrPrimarySecurityGroup": "sg-p", "EmrCoreSecurityGroup": "sg-c",
               "EmrServiceAccessSecurityGroup": "sg-s"}  # fmt: skip
    written = tmp_path / "seeded" / "connections.json"
    write_connections(written, outputs)
    from airflow.secrets.local_filesystem import LocalFilesystemBackend

    conn = LocalFilesystemBackend(connections_file_path=str(written)).get_connection("emr_default")
    assert conn.extra_dejson == {"Instances": {
        "Ec2SubnetId": "subnet-1", "EmrManagedMasterSecurityGroup": "sg-p",
        "EmrManagedSlaveSecurityGroup": "sg-c", "ServiceAccessSecurityGroup": "sg-s",
    }}  # fmt: skip


def test_without_podman_the_seed_says_first_what_the_release_needs_in_host_commands(compose):
    from devstack.aws.seed import no_podman_message

    seed = compose["services"]["devstack-seed"]["command"]
    host_registry = seed[seed.index("--host-registry") + 1]
    assert host_registry.startswith("localhost:")
    assert host_registry.split(":")[1] in [p.split(":")[0] for p in compose["services"]["devstack"]["ports"]]
    message = no_podman_message("no /dev/fuse", host_registry)
    assert message.startswith("NOTE: podman cannot run here (no /dev/fuse)")
    assert f"-t {host_registry}/bank-model:serving-base --push ." in message
    assert "devstack:5000" not in message  # a name the host cannot resolve
    assert "BANK_RELEASE_TARGETS=kubernetes docker compose --profile k3s up -d" in message
