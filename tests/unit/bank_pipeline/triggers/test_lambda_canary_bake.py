"""LambdaCanaryTrigger as the triggerer stores it: serialized, then built again from what it stored."""

from __future__ import annotations

import importlib

import pytest

from bank_pipeline.triggers.lambda_canary_bake import LambdaCanaryTrigger

pytestmark = pytest.mark.unit


def test_it_serializes_to_what_builds_it_again() -> None:
    trigger = LambdaCanaryTrigger(
        function_name="bank-model", alias="live", version="7", started_at=1_765_000_000.0, bake_seconds=600,
        thresholds={"max_error_rate": 0.01, "max_p99_ms": 250.0}, alarm_names=["bank-5xx"], poll_interval=15,
        aws_conn_id="aws_default", region_name="eu-west-1", state={"previous_version": "6"},
    )  # fmt: skip
    path, kwargs = trigger.serialize()
    module, _, name = path.rpartition(".")
    again = getattr(importlib.import_module(module), name)(**kwargs)
    assert again.serialize() == (path, kwargs)
    assert kwargs["thresholds"] == {"max_error_rate": 0.01, "max_p99_ms": 250.0} and kwargs["state"] == {
        "previous_version": "6"
    }
