"""Deployment settings, read from the environment.

The same DAGs run against AWS and against devstack; only these values and the
Airflow connections differ. Environment variables (not Airflow Variables) so
that reading them at DAG parse time costs nothing and needs no database.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from bank_pipeline.lake import Lake


@dataclass(frozen=True)
class Settings:
    lake_bucket: str
    """Bucket holding raw data, features, job code, EMR logs and the model registry."""
    aws_conn_id: str
    emr_release_label: str
    """EMR release whose Spark matches the pinned pyspark (emr-7.12.0 ships Spark 3.5.6)."""
    poll_seconds: int
    """How often sensors and triggers poll AWS; devstack sets it low."""
    emr_idle_timeout_seconds: int
    """Auto-termination idle timeout: a second guard behind the teardown task."""
    emr_service_role: str
    """The EMR service role (name or ARN); the emr connection's extra may override it."""
    emr_job_flow_role: str
    """The EC2 instance profile of the cluster's nodes (JobFlowRole); the emr connection's extra may override it."""
    emr_subnet_id: str
    """The clusters' subnet (Ec2SubnetId); empty leaves it to the emr connection's extra, else EMR's default VPC."""
    emr_primary_security_group: str
    emr_core_security_group: str
    emr_service_access_security_group: str
    """EMR-managed security groups (the template's, tagged for AmazonEMRServicePolicy_v2); empty: EMR's defaults."""
    image_registry: str
    """host[:port] of the image registry; empty means the account's ECR (credentials from EcrHook)."""
    plain_http_registries: frozenset[str]
    """Registries (host[:port]) reached over plain HTTP without credentials: a local one only. Any other
    registry that is not ECR is reached over HTTPS, anonymously."""
    image_repository: str
    """Repository holding the serving base image and every model image (one repo: no cross-repo mounts)."""
    serving_base_tag: str
    """Tag of the serving base image (built from serving/Dockerfile by CI, or by devstack locally)."""
    lambda_function: str
    lambda_role_arn: str
    """Execution role, needed only to create the function on the first release."""
    release_targets: tuple[str, ...]
    """Where a release goes: "lambda", "kubernetes" or both, in that order."""
    kubernetes_conn_id: str
    kubernetes_namespace: str | None
    """None: the connection's namespace, else "default"."""
    canary_thresholds: dict[str, float]
    """What a Lambda canary's new version may not exceed during a bake (plans.lambda_canary.Thresholds)."""
    canary_alarms: tuple[str, ...]
    """CloudWatch alarms that fail a canary step when in ALARM (or missing)."""
    drift_psi_threshold: float = 0.2
    """Population stability above which a scoring run's feature (or score) has drifted (bank_ml.drift)."""

    @property
    def lake(self) -> Lake:
        """The lake's paths, in the lake bucket."""
        return Lake(self.lake_bucket)


RELEASE_TARGETS = ("lambda", "kubernetes")
# Every variable the product reads: load()'s and links.py's templates (a test keeps this true).
VARIABLES = frozenset({
    "BANK_LAKE_BUCKET", "BANK_AWS_CONN_ID", "BANK_EMR_RELEASE_LABEL", "BANK_POLL_SECONDS",
    "BANK_EMR_IDLE_TIMEOUT_SECONDS", "BANK_EMR_SERVICE_ROLE", "BANK_EMR_JOB_FLOW_ROLE", "BANK_EMR_SUBNET_ID",
    "BANK_EMR_PRIMARY_SECURITY_GROUP", "BANK_EMR_CORE_SECURITY_GROUP", "BANK_EMR_SERVICE_ACCESS_SECURITY_GROUP",
    "BANK_IMAGE_REGISTRY", "BANK_PLAIN_HTTP_REGISTRIES", "BANK_IMAGE_REPOSITORY", "BANK_SERVING_BASE_TAG", "BANK_LAMBDA_FUNCTION",
    "BANK_LAMBDA_ROLE_ARN", "BANK_RELEASE_TARGETS", "BANK_KUBERNETES_CONN_ID", "BANK_KUBERNETES_NAMESPACE",
    "BANK_KUBERNETES_DASHBOARD_URL", "BANK_LAMBDA_CONSOLE_URL", "BANK_CANARY_MAX_ERROR_RATE",
    "BANK_CANARY_MAX_P99_MS", "BANK_CANARY_MAX_THROTTLES", "BANK_CANARY_ALARMS", "BANK_DRIFT_PSI_THRESHOLD",
})  # fmt: skip


def _targets(value: str) -> tuple[str, ...]:
    """BANK_RELEASE_TARGETS ("lambda,kubernetes") as a tuple in release order; unknown names raise."""
    asked = {t.strip() for t in value.split(",") if t.strip()}
    unknown = sorted(asked - set(RELEASE_TARGETS))
    if unknown or not asked:
        raise ValueError(
            f"BANK_RELEASE_TARGETS={value!r}: expected a comma-separated subset of {', '.join(RELEASE_TARGETS)}"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
        )
    return tuple(t for t in RELEASE_TARGETS if t in asked)


def _positive_int(name: str, default: str) -> int:
    value = os.environ.get(name, default)
    if not value.strip().isdigit() or int(value) < 1:
        raise ValueError(f"{name}={value!r}: expected a whole number of seconds, at least 1")
    return int(value)


def _canary_thresholds(env: os._Environ[str] | dict[str, str]) -> dict[str, float]:
    """BANK_CANARY_MAX_ERROR_RATE (0..1, default 0.05), BANK_CANARY_MAX_P99_MS (empty: no limit) and
    BANK_CANARY_MAX_THROTTLES (default 0: a throttled canary is not serving its share)."""
    thresholds: dict[str, float] = {}
    for name, key, default, top in (
        ("BANK_CANARY_MAX_ERROR_RATE", "max_error_rate", "0.05", 1.0),
        ("BANK_CANARY_MAX_P99_MS", "max_p99_ms", "", math.inf),
        ("BANK_CANARY_MAX_THROTTLES", "max_throttles", "0", math.inf),
    ):
        value = env.get(name, default).strip()
        if not value:
            continue
        try:
            number = float(value)
        except ValueError:
            number = math.nan  # refused below with the others
        if not 0 <= number <= top:
            raise ValueError(f"{name}={value!r}: expected a number from 0" + (" to 1" if top == 1.0 else ""))
        thresholds[key] = number
    return thresholds


def _drift_threshold(value: str) -> float:
    """BANK_DRIFT_PSI_THRESHOLD: above 0 and below 10 (default 0.2, the usual "shifted")."""
    value = value.strip()
    try:
        number = float(value)
    except ValueError:
        number = math.nan  # refused below
    if not 0 < number < 10:
        raise ValueError(f"BANK_DRIFT_PSI_THRESHOLD={value!r}: expected a number above 0 and below 10")
    return number


def unknown_variables(environ: dict[str, str] | None = None) -> list[str]:
    """BANK_* variables set that no setting reads (a typo leaves its setting at the default)."""
    env = os.environ if environ is None else environ
    return sorted(k for k in env if k.startswith("BANK_") and k not in VARIABLES)


def load() -> Settings:
    """Settings from BANK_* variables, with defaults for a real AWS account."""
    env = os.environ
    return Settings(
        lake_bucket=env.get("BANK_LAKE_BUCKET", "bank-lake"),
        aws_conn_id=env.get("BANK_AWS_CONN_ID", "aws_default"),
        emr_release_label=env.get("BANK_EMR_RELEASE_LABEL", "emr-7.12.0"),
        poll_seconds=_positive_int("BANK_POLL_SECONDS", "30"),
        emr_idle_timeout_seconds=_positive_int("BANK_EMR_IDLE_TIMEOUT_SECONDS", "3600"),
        emr_service_role=env.get("BANK_EMR_SERVICE_ROLE", "EMR_DefaultRole"),
        emr_job_flow_role=env.get("BANK_EMR_JOB_FLOW_ROLE", "EMR_EC2_DefaultRole"),
        emr_subnet_id=env.get("BANK_EMR_SUBNET_ID", ""),
        emr_primary_security_group=env.get("BANK_EMR_PRIMARY_SECURITY_GROUP", ""),
        emr_core_security_group=env.get("BANK_EMR_CORE_SECURITY_GROUP", ""),
        emr_service_access_security_group=env.get("BANK_EMR_SERVICE_ACCESS_SECURITY_GROUP", ""),
        image_registry=env.get("BANK_IMAGE_REGISTRY", ""),
        plain_http_registries=frozenset(
            h.strip() for h in env.get("BANK_PLAIN_HTTP_REGISTRIES", "").split(",") if h.strip()
        ),
        image_repository=env.get("BANK_IMAGE_REPOSITORY", "bank-model"),
        serving_base_tag=env.get("BANK_SERVING_BASE_TAG", "serving-base"),
        lambda_function=env.get("BANK_LAMBDA_FUNCTION", "bank-model"),
        lambda_role_arn=env.get("BANK_LAMBDA_ROLE_ARN", ""),
        release_targets=_targets(env.get("BANK_RELEASE_TARGETS", "lambda,kubernetes")),
        kubernetes_conn_id=env.get("BANK_KUBERNETES_CONN_ID", "kubernetes_default"),
        kubernetes_namespace=env.get("BANK_KUBERNETES_NAMESPACE") or None,
        canary_thresholds=_canary_thresholds(env),
        canary_alarms=tuple(a.strip() for a in env.get("BANK_CANARY_ALARMS", "").split(",") if a.strip()),
        drift_psi_threshold=_drift_threshold(env.get("BANK_DRIFT_PSI_THRESHOLD", "0.2")),
    )
