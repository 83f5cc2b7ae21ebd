"""Deployment settings, read from the environment.

The same DAGs run against AWS and against devstack; only these values and the
Airflow connections differ. Environment variables (not Airflow Variables) so
that reading them at DAG parse time costs nothing and needs no database.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


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

    @property
    def raw_bank_uri(self) -> str:
        return f"s3://{self.lake_bucket}/raw/bank/bank-full.csv"

    @property
    def features_prefix(self) -> str:
        return f"s3://{self.lake_bucket}/features/bank/"

    @property
    def emr_log_uri(self) -> str:
        return f"s3://{self.lake_bucket}/emr-logs/"

    @property
    def code_prefix(self) -> str:
        return f"s3://{self.lake_bucket}/code/"


def load() -> Settings:
    """Settings from BANK_* variables, with defaults for a real AWS account."""
    env = os.environ
    return Settings(
        lake_bucket=env.get("BANK_LAKE_BUCKET", "bank-lake"),
        aws_conn_id=env.get("BANK_AWS_CONN_ID", "aws_default"),
        emr_release_label=env.get("BANK_EMR_RELEASE_LABEL", "emr-7.12.0"),
        poll_seconds=int(env.get("BANK_POLL_SECONDS", "30")),
        emr_idle_timeout_seconds=int(env.get("BANK_EMR_IDLE_TIMEOUT_SECONDS", "3600")),
    )
