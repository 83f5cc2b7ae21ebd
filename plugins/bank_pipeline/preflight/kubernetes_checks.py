"""The Kubernetes target: the API server answers, the release's RBAC allows every verb, the Deployment fits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bank_pipeline.preflight import Fail, Row, outcome

if TYPE_CHECKING:
    from bank_pipeline.settings import Settings

AREA = "Kubernetes"
ARCH_LABEL = "kubernetes.io/arch"
PROVIDER_TOKEN = "python3 -m airflow.providers.amazon.aws.utils.eks_get_token"


class Cluster:
    def __init__(self, cfg: Settings) -> None:
        self.cfg = cfg

    def hook(self) -> Any:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        return KubernetesHook(conn_id=self.cfg.kubernetes_conn_id)

    def namespace(self) -> str:
        return self.cfg.kubernetes_namespace or self.hook().get_namespace() or "default"


def exec_commands(kube_config: Any) -> list[str]:
    """The programs a kubeconfig's users run for their credentials (``users[].user.exec.command``)."""
    import yaml

    config = yaml.safe_load(kube_config) if isinstance(kube_config, str) else (kube_config or {})
    return [
        str(((u.get("user") or {}).get("exec") or {}).get("command"))
        for u in config.get("users") or []
        if (u.get("user") or {}).get("exec")
    ]


def check_api(cluster: Cluster) -> str:
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
    from kubernetes import client

    from bank_pipeline.utils.compat import BaseHook

    extra = BaseHook.get_connection(cluster.cfg.kubernetes_conn_id).extra_dejson or {}
    config = extra.get("kube_config") or extra.get("extra__kubernetes__kube_config")
    if config and "aws" in exec_commands(config):
        raise Fail(
            "the kubeconfig gets its token from the AWS CLI (`aws eks get-token`), which MWAA and Astronomer images may lack",
            f"use the Amazon provider's `{PROVIDER_TOKEN} --cluster-name <name> --region-name <region>` as the exec command",
        )
    hook: KubernetesHook = cluster.hook()
    version = client.VersionApi(hook.api_client).get_code()
    return f"API server {version.git_version} answers; namespace {cluster.namespace()}"


def role_rules() -> list[dict[str, Any]]:
    """The release's Role, as shipped (manifests/rbac/role.yaml): what the rollout needs."""
    from importlib import resources

    import yaml

    text = resources.files("bank_pipeline").joinpath("manifests", "rbac", "role.yaml").read_text()
    return list(yaml.safe_load(text)["rules"])


def check_access(cluster: Cluster) -> str:
    """SelfSubjectAccessReview of every verb of the shipped Role, on the names it limits them to."""
    from kubernetes import client

    namespace = cluster.namespace()
    api = client.AuthorizationV1Api(cluster.hook().api_client)
    asked, refused = 0, []
    for rule in role_rules():
        for group in rule.get("apiGroups", [""]):
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in rule.get("resourceNames") or [None]:
                        attributes = client.V1ResourceAttributes(
                            namespace=namespace, verb=verb, group=group, resource=resource, name=name
                        )
                        review = client.V1SelfSubjectAccessReview(
                            spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes)
                        )
                        asked += 1
                        if not api.create_self_subject_access_review(review).status.allowed:
                            refused.append(
                                f"{verb} {resource}{'/' + name if name else ''}" + (f" ({group})" if group else "")
                            )
    # create cannot be limited by name: an administrator may drop those rules once the objects exist.
    present = _existing(cluster, namespace)
    not_needed = [r for r in refused if r.startswith("create ") and r.split()[1] in present]
    refused = [r for r in refused if r not in not_needed]
    if refused:
        raise Fail(
            f"the connection's identity may not {', '.join(refused)} in namespace {namespace}",
            f"apply the bundle's rbac/ there (kubectl apply -n {namespace} -f manifests/rbac/) and give the connection that ServiceAccount's token",
        )
    if not_needed:
        return f"{asked - len(not_needed)} of {asked} verbs allowed in {namespace}; not {', '.join(not_needed)}, unneeded while those objects exist"
    return f"all {asked} verbs of the release's Role are allowed in {namespace}"


def _existing(cluster: Cluster, namespace: str) -> set[str]:
    """The resources (plural) whose object of the manifests exists in ``namespace``."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from bank_pipeline import resources
    from bank_pipeline.utils.rollout import KINDS

    api_client, found = cluster.hook().api_client, set()
    for manifest in resources.kubernetes_manifests():
        _, api_class, suffix = KINDS[manifest["kind"]]
        resource = manifest["kind"].lower() + "s"
        try:
            read = getattr(getattr(client, api_class)(api_client), f"read_namespaced_{suffix}")
            read(manifest["metadata"]["name"], namespace)
        except ApiException as exc:
            if exc.status in (403, 404):
                continue
            raise
        found.add(resource)
    return found


def check_deployment(cluster: Cluster) -> str:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from bank_pipeline import resources

    manifest = next(m for m in resources.kubernetes_manifests() if m["kind"] == "Deployment")
    name, namespace = manifest["metadata"]["name"], cluster.namespace()
    wanted = manifest["spec"]["template"]["spec"].get("nodeSelector", {}).get(ARCH_LABEL)
    try:
        found = client.AppsV1Api(cluster.hook().api_client).read_namespaced_deployment(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return f"Deployment {namespace}/{name} does not exist yet: the first release creates it ({ARCH_LABEL}={wanted})"
        raise
    have = (found.spec.template.spec.node_selector or {}).get(ARCH_LABEL)
    if have != wanted:
        raise Fail(
            f"Deployment {namespace}/{name} selects nodes {ARCH_LABEL}={have}, the image needs {wanted}",
            f"set spec.template.spec.nodeSelector {ARCH_LABEL}: {wanted} (manifests/deployment.yaml)",
        )
    return f"Deployment {namespace}/{name} exists, {ARCH_LABEL}={have}"


def run_checks(cfg: Settings) -> list[Row]:
    if "kubernetes" not in cfg.release_targets:
        return [Row(AREA, "target", "skip", "BANK_RELEASE_TARGETS has no kubernetes")]
    from bank_pipeline.preflight.airflow_checks import check_kubernetes_connection

    try:
        check_kubernetes_connection(cfg)
    except Fail:  # the Airflow row says why; the hook would fall back to ~/.kube/config
        return [
            Row(AREA, name, "skip", "the connection names no cluster (see Airflow)")
            for name in ("API server", "release RBAC", "Deployment")
        ]
    cluster = Cluster(cfg)
    first = outcome(AREA, "API server", check_api, cluster)
    if first.status != "ok":
        return [
            first,
            Row(AREA, "release RBAC", "skip", "the API server did not answer"),
            Row(AREA, "Deployment", "skip", "the API server did not answer"),
        ]
    return [
        first,
        outcome(AREA, "release RBAC", check_access, cluster),
        outcome(AREA, "Deployment", check_deployment, cluster),
    ]
