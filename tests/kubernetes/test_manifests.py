"""The model server's manifests (bank_pipeline/manifests): valid against the Kubernetes schema (strict) for the EKS versions in standard support, and safe.

kubernetes-validate 1.37.0 ships the OpenAPI-derived JSON schemas of Kubernetes
1.25-1.37, offline; strict mode also rejects fields the API does not know (a typo
like ``readinessprobe`` would otherwise be dropped silently by the API server).

EKS standard support is 14 months from each EKS release. In late November 2026:
1.33 left it on 29 Jul 2026; 1.34 is in it until 2 Dec 2026, 1.35 until 27 Mar 2027;
1.36 (upstream April 2026) is in it, and 1.37 (upstream August 2026) is the newest
schema the package ships. Validating 1.34-1.37 covers every cluster a user can create
on standard support now and the next one; versions in extended support only (1.31-1.33)
are left out on purpose (the preStop sleep action went GA in 1.34).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

pytestmark = pytest.mark.unit

K8S = Path(str(resources.files("bank_pipeline").joinpath("manifests")))  # a checkout or site-packages
EKS_STANDARD_SUPPORT = ("1.34", "1.35", "1.36", "1.37")
DIGEST = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")


def _docs(directory: Path = K8S) -> list[tuple[str, dict[str, Any]]]:
    files = sorted(directory.glob("*.yaml"))
    return [(f.relative_to(K8S).as_posix(), doc) for f in files for doc in yaml.safe_load_all(f.read_text()) if doc]


DOCS = _docs()
RBAC_DOCS = _docs(K8S / "rbac")  # for the namespace's administrator; the operator never applies these


def _one(kind: str) -> dict[str, Any]:
    (doc,) = [doc for _, doc in DOCS if doc["kind"] == kind]
    return doc


def test_the_four_manifests_are_there() -> None:
    kinds = sorted(doc["kind"] for _, doc in DOCS)
    assert kinds == ["Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]


def test_the_release_rbac_is_an_identity_a_role_and_their_binding() -> None:
    kinds = {doc["kind"]: doc for _, doc in RBAC_DOCS}
    assert sorted(kinds) == ["Role", "RoleBinding", "ServiceAccount"]
    binding, account = kinds["RoleBinding"], kinds["ServiceAccount"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": kinds["Role"]["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"]}]
    assert account["automountServiceAccountToken"] is False


def test_the_role_reaches_only_the_objects_of_the_manifests() -> None:
    """get and patch name the manifests' objects; create covers exactly their kinds."""
    (role,) = [doc for _, doc in RBAC_DOCS if doc["kind"] == "Role"]
    plural = {"Service": "services", "PodDisruptionBudget": "poddisruptionbudgets", "Deployment": "deployments",
              "HorizontalPodAutoscaler": "horizontalpodautoscalers"}  # fmt: skip
    names = {doc["metadata"]["name"] for _, doc in DOCS}
    created = set()
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
        if {"get", "patch"} & set(rule["verbs"]):
            assert set(rule["resourceNames"]) == names, rule
        if "create" in rule["verbs"]:
            created.update(rule["resources"])
    assert created == {plural[doc["kind"]] for _, doc in DOCS}


@pytest.mark.parametrize("version", EKS_STANDARD_SUPPORT)
@pytest.mark.parametrize(("name", "doc"), DOCS + RBAC_DOCS, ids=[name for name, _ in DOCS + RBAC_DOCS])
def test_valid_in_strict_mode(name: str, doc: dict[str, Any], version: str) -> None:
    # validate() falls back to the newest schema not newer than asked: check none was skipped.
    assert kubernetes_validate.validate(doc, version, strict=True) == version


def test_strict_mode_catches_an_unknown_field() -> None:
    broken = yaml.safe_load(yaml.safe_dump(_one("Deployment")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinessprobe"):
        kubernetes_validate.validate(broken, EKS_STANDARD_SUPPORT[-1], strict=True)


def test_no_namespace_anywhere() -> None:
    # The operator puts everything in its namespace; the RBAC goes where it is applied (kubectl -n).
    assert [name for name, doc in DOCS + RBAC_DOCS if "namespace" in doc["metadata"]] == []


def test_deployment_policy() -> None:
    deployment = _one("Deployment")
    spec, pod = deployment["spec"], deployment["spec"]["template"]["spec"]
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert 60 <= spec["progressDeadlineSeconds"] <= 600
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in pod["containers"]:
        assert DIGEST.match(container["image"]), container["image"]
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        assert "add" not in context["capabilities"]
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) == {"cpu", "memory"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
        # The only writable place on a read-only root file system is an emptyDir.
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
    grace = pod["terminationGracePeriodSeconds"]
    pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop + 20 < grace  # + the server's default --graceful-timeout


def test_everything_selects_the_same_pods() -> None:
    deployment = _one("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "Deployment": deployment["spec"]["selector"]["matchLabels"],
        "Service": _one("Service")["spec"]["selector"],
        "PodDisruptionBudget": _one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        assert selector.items() <= pod_labels.items(), kind
    assert len({tuple(sorted(s.items())) for s in selectors.values()}) == 1
    assert all(doc["metadata"]["labels"]["app.kubernetes.io/name"] == "bank-model" for _, doc in DOCS)


def test_service_hpa_and_pdb_fit_the_deployment() -> None:
    deployment, hpa, pdb = _one("Deployment"), _one("HorizontalPodAutoscaler"), _one("PodDisruptionBudget")
    assert _one("Service")["spec"]["ports"][0]["targetPort"] == "http"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"] == 2
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    # With 2 replicas the budget still lets a drain evict one pod, never both.
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
