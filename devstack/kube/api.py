"""The API server as its admin sees it: requests, server-side apply, tokens of a ServiceAccount,
kwok Stages; and what a release needs from the cluster (its RBAC, an Airflow connection)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The least-privilege identity of the release (package data of bank_pipeline, read from the
# checkout: devstack does not import the pipeline's packages).
RELEASE_RBAC_DIR = Path(__file__).resolve().parents[2] / "plugins" / "bank_pipeline" / "manifests" / "rbac"
RELEASE_IDENTITY = "bank-model-release"  # the ServiceAccount in RELEASE_RBAC_DIR
FIELD_MANAGER = "devstack"


class KubeError(RuntimeError):
    """The control plane could not be started, reached or stopped."""


# What apply() can write: API path prefix, resource, namespaced.
_APPLY_PATHS: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("/api/v1", "namespaces", False),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    # rbac/networkpolicy.yaml: accepted and validated by the API server, never enforced (no CNI here).
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies", True),
}


class KubeApi:
    """API access as the admin user (system:masters): ``server`` and the PKI under ``pki``."""

    server: str
    pki: Path
    _ssl: ssl.SSLContext | None

    def ssl_context(self) -> ssl.SSLContext:
        """TLS for the API server as the admin user (system:masters)."""
        if self._ssl is None:
            ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
            ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
            self._ssl = ctx
        return self._ssl

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | str | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> tuple[int, Any]:
        """One API call as admin: (HTTP status, decoded JSON body or text). ``body`` is a
        dict (sent as JSON) or YAML/JSON text (the API server accepts application/yaml)."""
        data = None
        if body is not None:
            if isinstance(body, str):
                data = body.encode()
                if content_type == "application/json":
                    content_type = "application/yaml"
            else:
                data = json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        req.add_header("Accept", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context()) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def _get_status(self, path: str) -> int:
        return self.request("GET", path, timeout=5)[0]

    def get(self, path: str) -> Any:
        """GET ``path``; raise KubeError unless 200."""
        status, body = self.request("GET", path)
        if status != 200:
            raise KubeError(f"GET {path}: {status} {body}")
        return body

    def create(self, path: str, obj: dict[str, Any] | str, exist_ok: bool = False) -> Any:
        """POST an object (dict or YAML text) to a collection; 409 is fine with ``exist_ok``."""
        status, body = self.request("POST", path, obj)
        if status in (200, 201) or (status == 409 and exist_ok):
            return body
        raise KubeError(f"POST {path}: {status} {body}")

    def apply(self, manifest: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        """Create or update an object by server-side apply, as admin (idempotent): a Namespace,
        ServiceAccount, Role, RoleBinding or NetworkPolicy, in ``namespace`` unless cluster-scoped."""
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        if kind not in _APPLY_PATHS:
            raise KubeError(f"apply: kind {kind!r} of {name!r} is not one of {', '.join(_APPLY_PATHS)}")
        prefix, plural, namespaced = _APPLY_PATHS[kind]
        if namespaced and not namespace:
            raise KubeError(f"apply: {kind} {name} needs a namespace")
        where = f"/namespaces/{namespace}" if namespaced else ""
        path = f"{prefix}{where}/{plural}/{name}?fieldManager={FIELD_MANAGER}&force=true"
        body = {**manifest, "metadata": {**manifest["metadata"], **({"namespace": namespace} if namespaced else {})}}
        status, answer = self.request("PATCH", path, json.dumps(body), content_type="application/apply-patch+yaml")
        if status not in (200, 201):
            raise KubeError(f"apply {kind} {name}: {status} {answer}")
        return answer

    def token_kubeconfig(self, namespace: str, service_account: str, seconds: int = 3600) -> dict[str, Any]:
        """A kubeconfig whose user is a fresh token of ``service_account`` (TokenRequest, valid
        ``seconds``), its context in ``namespace``: what a workload of that identity would use."""
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token"
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds},
        }
        token = self.create(path, request)["status"]["token"]
        ca = base64.b64encode((self.pki / "ca.crt").read_bytes()).decode()
        user = f"system:serviceaccount:{namespace}:{service_account}"
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "devstack", "cluster": {"server": self.server, "certificate-authority-data": ca}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {"name": "devstack", "context": {"cluster": "devstack", "user": user, "namespace": namespace}}
            ],
            "current-context": "devstack",
        }

    def release_identity(
        self, namespace: str, rbac: Sequence[dict[str, Any]] | None = None, seconds: int = 3600
    ) -> dict[str, Any]:
        """The namespace, the release's ServiceAccount, Role and RoleBinding (and NetworkPolicy) in it
        (``rbac``, by default the package's manifests/rbac), and a kubeconfig with a token of that
        ServiceAccount: the operator then has exactly the Role's permissions."""
        manifests = list(rbac) if rbac is not None else release_rbac()
        accounts = [m["metadata"]["name"] for m in manifests if m["kind"] == "ServiceAccount"]
        if len(accounts) != 1:
            raise KubeError(f"the release's RBAC needs exactly one ServiceAccount, found {accounts}")
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        for manifest in manifests:
            self.apply(manifest, namespace)
        return self.token_kubeconfig(namespace, accounts[0], seconds)

    def add_stage(self, stage: dict[str, Any] | str) -> Any:
        """Create or replace a kwok Stage (dict or YAML) by server-side apply. kwok picks
        it up from the API at once; among matching stages one of weight > 0 always wins
        over kwok's defaults (weight 0)."""
        if isinstance(stage, str):
            match = re.search(r"^metadata:\s*\n(?:[ \t]+.*\n)*?[ \t]+name:\s*['\"]?([\w.-]+)", stage, re.MULTILINE)
            if not match:
                raise KubeError("a Stage needs metadata.name")
            name = match.group(1)
        else:
            name = stage["metadata"]["name"]
            stage = json.dumps({"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", **stage})
        path = f"/apis/kwok.x-k8s.io/v1alpha1/stages/{name}?fieldManager=devstack&force=true"
        status, body = self.request("PATCH", path, stage, content_type="application/apply-patch+yaml")
        if status not in (200, 201):
            raise KubeError(f"apply Stage {name}: {status} {body}")
        return body


def image_pull_backoff_stage(image: str, name: str | None = None) -> dict[str, Any]:
    """A kwok Stage that keeps every pod with a container of ``image`` Pending, its
    containers waiting in ImagePullBackOff, as a kubelet does when a pull fails. Its name
    (default: from the image) is cluster-wide: one stage per image.

    Weight 1 makes it win over kwok's pod-ready (weight 0) for those pods. Its status
    has no timestamps, so applying it again changes nothing and kwok stops there. Like
    the kubelet, it records a Warning event ``Failed`` on the pod (once: kwok applies a
    stage once), which says that a stage, not a registry, refused the image.
    """
    name = name or f"pod-image-pull-backoff-{hashlib.sha256(image.encode()).hexdigest()[:12]}"
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": name},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
            "selector": {
                "matchExpressions": [
                    {"cel": {"expression": "!has(self.metadata.deletionTimestamp)"}},
                    {"cel": {"expression": f"self.spec.containers.exists(c, c.image == {json.dumps(image)})"}},
                ]
            },
            "weight": 1,
            "next": {
                "event": {
                    "type": "Warning",
                    "reason": "Failed",
                    "message": f"Failed to pull image {json.dumps(image)}: kwok stage {name} makes this image unpullable",
                },
                "statusTemplate": """\
conditions:
- type: Initialized
  status: "True"
- type: Ready
  status: "False"
  reason: ContainersNotReady
- type: ContainersReady
  status: "False"
  reason: ContainersNotReady
- type: PodScheduled
  status: "True"
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: false
  started: false
  restartCount: 0
  state:
    waiting:
      reason: ImagePullBackOff
      message: {{ printf "Back-off pulling image %q" .image | Quote }}
{{ end }}
phase: Pending
""",
            },
        },
    }


def release_rbac(directory: Path = RELEASE_RBAC_DIR) -> list[dict[str, Any]]:
    """What the namespace's administrator applies for the release (bank_pipeline/manifests/rbac:
    ServiceAccount, Role, RoleBinding, the model pods' NetworkPolicy), as dicts."""
    import yaml

    docs = [doc for f in sorted(directory.glob("*.yaml")) for doc in yaml.safe_load_all(f.read_text()) if doc]
    if not docs:
        raise KubeError(f"no RBAC manifests in {directory}")
    return docs


def airflow_connection(kubeconfig: dict[str, Any], namespace: str) -> str:
    """An AIRFLOW_CONN_* value (JSON) for the cncf-kubernetes provider's hooks: the kubeconfig
    inline (the hooks write it to a file of their own) and the namespace."""
    return json.dumps({"conn_type": "kubernetes", "extra": {"kube_config": kubeconfig, "namespace": namespace}})


def condition(obj: dict[str, Any], kind: str) -> bool:
    conditions = obj.get("status", {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)
