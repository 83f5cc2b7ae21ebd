"""Assets shared between the producing and the consuming DAG."""

from __future__ import annotations

from airflow.sdk import Asset

from bank_pipeline import settings

FEATURES = Asset(name="bank_features", uri=settings.load().features_prefix)
