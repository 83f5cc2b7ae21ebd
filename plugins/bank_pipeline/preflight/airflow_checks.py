"""The Airflow side: the BANK_* settings and the connections the DAGs use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bank_pipeline.preflight import Fail, Row, Skip, outcome

if TYPE_CHECKING:
    from bank_pipeline.settings import Settings

AREA = "Airflow"
# Airflow's own default emr_default connection (`airflow connections create-default-connections`,
# or [database] load_default_connections) carries these placeholders; the operators merge the
# connection's extra under the DAG's overrides, so they would reach RunJobFlow.
EMR_DEFAULT_PLACEHOLDERS = {("Instances", "Ec2KeyName"): "mykey", ("Instances", "Ec2SubnetId"): "somesubnet"}
EMR_CONN_ID = "emr_default"


def settings_rows(cfg: Settings | None) -> tuple[list[Row], Settings | None]:
    """The settings parse (else nothing else can be checked), and no BANK_* variable is misspelt."""
    from bank_pipeline import settings

    if cfg is None:
        try:
            cfg = settings.load()
        except ValueError as exc:
            return [
                Row(
                    AREA, "settings", "fail", str(exc), "set the variable to a valid value (docs/deploy-aws.md, step 2)"
                )
            ], None
    rows = [Row(AREA, "settings", "ok", f"lake {cfg.lake_bucket}, targets {', '.join(cfg.release_targets)}")]
    unknown = settings.unknown_variables()
    if unknown:
        rows.append(Row(
            AREA, "unknown BANK_* variables", "warn", f"no setting reads {', '.join(unknown)}",
            "a misspelt name leaves its setting at the default: check the names against docs/interfaces.md",
        ))  # fmt: skip
    return rows, cfg


def connection(conn_id: str) -> Any:
    """The connection, or Fail naming how to create it."""
    from bank_pipeline.utils.compat import AirflowNotFoundException, BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise Fail(
            f"no connection {conn_id!r}",
            f"create it (Admin > Connections, `airflow connections add {conn_id}`, or AIRFLOW_CONN_{conn_id.upper()})",
        ) from None


def check_aws_connection(cfg: Settings) -> str:
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    connection(cfg.aws_conn_id)
    hook = AwsBaseHook(aws_conn_id=cfg.aws_conn_id, client_type="sts")
    region = hook.conn_region_name or hook.get_session().region_name
    if not region:
        raise Fail(
            f"connection {cfg.aws_conn_id!r} names no region and the worker has no default region",
            "set \"region_name\" in the connection's extra (MWAA: the environment's region is the default)",
        )
    return f"{cfg.aws_conn_id!r}, region {region}"


def emr_extra(*, without_placeholders: bool = False) -> dict[str, Any]:
    """The emr_default connection's extra ({} when there is none: it is optional).

    ``without_placeholders``: less Airflow's default placeholders, so that the checks of the
    network and roles judge the rest (the connection's row reports the placeholders).
    """
    import copy

    from bank_pipeline.utils.compat import AirflowNotFoundException, BaseHook

    try:
        extra = copy.deepcopy(dict(BaseHook.get_connection(EMR_CONN_ID).extra_dejson or {}))
    except AirflowNotFoundException:
        return {}
    if without_placeholders:
        for (*parents, key), placeholder in EMR_DEFAULT_PLACEHOLDERS.items():
            node: Any = extra
            for parent in parents:
                node = node.get(parent) if isinstance(node, dict) else None
            if isinstance(node, dict) and node.get(key) == placeholder:
                del node[key]
    return extra


def check_emr_connection(_cfg: Settings) -> str:
    extra = emr_extra()
    if not extra:
        return f"{EMR_CONN_ID!r} absent or empty: the cluster's roles and network come from settings"
    found = []
    for path, placeholder in EMR_DEFAULT_PLACEHOLDERS.items():
        value: Any = extra
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value == placeholder:
            found.append(f"{'.'.join(path)}={placeholder!r}")
    if found:
        raise Fail(
            f"{EMR_CONN_ID!r} holds Airflow's default placeholders {', '.join(found)}, which RunJobFlow would get",
            f"delete {EMR_CONN_ID!r} (`airflow connections delete {EMR_CONN_ID}`) or empty its extra to {{}}: "
            "settings give the cluster's roles and network",
        )
    return f"{EMR_CONN_ID!r} extra sets {', '.join(sorted(extra))} (merged over settings)"


def check_kubernetes_connection(cfg: Settings) -> str:
    """The connection names a cluster, as the rollout requires (hooks.kubernetes_rollout.cluster_not_configured)."""
    from bank_pipeline.hooks.kubernetes_api import cluster_not_configured

    if "kubernetes" not in cfg.release_targets:
        raise Skip("BANK_RELEASE_TARGETS has no kubernetes")
    problem = cluster_not_configured(cfg.kubernetes_conn_id)
    if problem:
        raise Fail(
            problem,
            f"create {cfg.kubernetes_conn_id!r} with the cluster's kubeconfig in its extra (kube_config), or "
            '{"in_cluster": true} (docs/kubernetes.md)',
        )
    return f"{cfg.kubernetes_conn_id!r}"


def connection_rows(cfg: Settings) -> list[Row]:
    return [
        outcome(AREA, f"connection {cfg.aws_conn_id}", check_aws_connection, cfg),
        outcome(AREA, f"connection {EMR_CONN_ID}", check_emr_connection, cfg),
        outcome(AREA, f"connection {cfg.kubernetes_conn_id}", check_kubernetes_connection, cfg),
    ]
