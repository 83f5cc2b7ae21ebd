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
PLURAL = {"Service": "services", "PodDisruptionBudget": "poddisruptionbudgets", "Deployment": "deployments",
          "HorizontalPodAutoscaler": "horizontalpodautoscalers"}  # fmt: skip


def _one(kind: str, docs: list[tuple[str, dict[str, Any]]] = DOCS) -> dict[str, Any]:
    (doc,) = [doc for _, doc in docs if doc["kind"] == kind]
    return doc


def test_the_four_manifests_are_there() -> None:
    kinds = sorted(doc["kind"] for _, doc in DOCS)
    assert kinds == ["Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]


def test_the_admins_part_is_an_identity_a_role_their_binding_and_the_network_policy() -> None:
    kinds = {doc["kind"]: doc for _, doc in RBAC_DOCS}
    assert sorted(kinds) == ["NetworkPolicy", "Role", "RoleBinding", "ServiceAccount"]
    binding, account = kinds["RoleBinding"], kinds["ServiceAccount"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": kinds["Role"]["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"]}]
    assert account["automountServiceAccountToken"] is False


# Verbs Kubernetes RBAC cannot limit by resourceNames (a create has no name yet; a list or watch
# only with a metadata.name field selector, which the operator's lists of generated names never use).
UNNAMEABLE = {"create", "list", "watch", "deletecollection"}


# What a canary release adds (plans/kubernetes_canary.py): its own Deployment, by name, which it deletes
# when done, and its pods' metrics through the API server's pod proxy (generated pod names: no resourceNames).
CANARY_RULES = [
    {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["bank-model-canary"],
     "verbs": ["get", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["pods/proxy"], "verbs": ["get"]},
]  # fmt: skip


def test_the_role_reaches_only_the_objects_of_the_manifests() -> None:
    """Every verb that can be limited by name names exactly the manifests' objects; create covers
    exactly their kinds; list only what explains a failed rollout; nothing deletes or updates, but
    the canary's own Deployment (CANARY_RULES)."""
    role = _one("Role", RBAC_DOCS)
    names = {doc["metadata"]["name"] for _, doc in DOCS}
    created, listed = set(), set()
    assert [rule for rule in role["rules"] if rule in CANARY_RULES] == CANARY_RULES
    for rule in [rule for rule in role["rules"] if rule not in CANARY_RULES]:
        verbs = set(rule["verbs"])
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
        assert not verbs & {"update", "delete", "deletecollection", "watch", "escalate", "bind", "impersonate"}, rule
        if verbs - UNNAMEABLE:
            assert set(rule["resourceNames"]) == names, rule
            assert set(rule["resources"]) <= set(PLURAL.values()), rule
        else:
            # One verb per rule here, so a named verb never shares a rule that cannot carry names.
            assert "resourceNames" not in rule and len(verbs) == 1, rule
        if "create" in verbs:
            created.update(rule["resources"])
        if "list" in verbs:
            listed.update(rule["resources"])
    assert created == {PLURAL[doc["kind"]] for _, doc in DOCS}
    assert listed == {"replicasets", "pods", "events"}
    assert "networkpolicies" not in {r for rule in role["rules"] for r in rule["resources"]}  # the admin's


def test_the_network_policy_admits_only_the_services_target_port_on_the_deployments_pods() -> None:
    """It selects exactly the Deployment's pods (its selector, a subset of the pod labels) and
    admits ingress from anywhere on the one port the Service's targetPort names, nothing else."""
    policy, deployment, service = _one("NetworkPolicy", RBAC_DOCS), _one("Deployment"), _one("Service")
    spec = policy["spec"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"] == {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert spec["podSelector"]["matchLabels"] == service["spec"]["selector"]
    assert spec["policyTypes"] == ["Ingress"]  # Ingress listed: with no rule for a port, that port is denied
    # The Service's targetPort, resolved as kube-proxy does: a name is the container's port of that name.
    ports = [p for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]]
    targets = set()
    for service_port in service["spec"]["ports"]:
        target = service_port["targetPort"]
        (container_port,) = [p for p in ports if target in (p.get("name"), p["containerPort"])]
        targets.add((service_port["protocol"], container_port["containerPort"]))
    rule, metrics_rule = spec["ingress"]
    assert "from" not in rule  # any source: the Service's clients are wherever they are
    assert {(p["protocol"], p["port"]) for p in rule["ports"]} == targets == {("TCP", 8080)}
    (metrics,) = [p for p in ports if p["name"] == "metrics"]
    assert [(p["protocol"], p["port"]) for p in metrics_rule["ports"]] == [("TCP", metrics["containerPort"])]
    for port in rule["ports"] + metrics_rule["ports"]:
        assert isinstance(port["port"], int) and "endPort" not in port  # a number: see the file
    assert policy["metadata"]["name"] == deployment["metadata"]["name"]


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
        assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
        assert container["args"][container["args"].index("--metrics-port") + 1] == "9090"
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
