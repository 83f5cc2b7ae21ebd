"""How the transient cluster's configuration is layered, and what the DAGs ask of EMR (no AWS calls)."""

from __future__ import annotations

import pytest

from bank_pipeline import settings
from bank_pipeline import spark_steps as emr
from bank_pipeline.operators.emr_cluster import deep_merge, run_tags

pytestmark = pytest.mark.unit

DAG_OVERRIDES = {
    "Name": "bank-features-r1",
    "Instances": {"InstanceGroups": [{"Name": "primary"}], "KeepJobFlowAliveWhenNoSteps": True},
    "Configurations": [{"Classification": "spark-defaults", "Properties": {"spark.pyspark.python": "/opt/p"}}],
    "Tags": [{"Key": "airflow:dag_id", "Value": "d"}, {"Key": "airflow:run_id", "Value": "r1"}],
}
ACCOUNT_EXTRA = {
    "Instances": {
        "Ec2SubnetId": "subnet-1",
        "EmrManagedMasterSecurityGroup": "sg-m",
        "KeepJobFlowAliveWhenNoSteps": False,
    },
    "ServiceRole": "acct-emr-service",
    "JobFlowRole": "acct-emr-profile",
    "Configurations": [
        {
            "Classification": "spark-defaults",
            "Properties": {"spark.sql.shuffle.partitions": "64", "spark.pyspark.python": "/x"},
        },
        {"Classification": "yarn-site", "Properties": {"k": "v"}},
    ],
    "Tags": [{"Key": "cost-center", "Value": "ml"}, {"Key": "airflow:run_id", "Value": "stale"}],
}


def test_the_accounts_nested_settings_survive_the_dags_overrides():
    merged = deep_merge(
        deep_merge({"ServiceRole": "EMR_DefaultRole", "JobFlowRole": "EMR_EC2_DefaultRole"}, ACCOUNT_EXTRA),
        DAG_OVERRIDES,
    )
    assert merged["Instances"] == {
        "Ec2SubnetId": "subnet-1",
        "EmrManagedMasterSecurityGroup": "sg-m",
        "InstanceGroups": [{"Name": "primary"}],
        "KeepJobFlowAliveWhenNoSteps": True,  # the DAG's, over the account's
    }
    assert (merged["ServiceRole"], merged["JobFlowRole"]) == ("acct-emr-service", "acct-emr-profile")
    assert merged["Configurations"] == [
        {
            "Classification": "spark-defaults",
            "Properties": {"spark.sql.shuffle.partitions": "64", "spark.pyspark.python": "/opt/p"},
        },
        {"Classification": "yarn-site", "Properties": {"k": "v"}},
    ]
    assert merged["Tags"] == [
        {"Key": "cost-center", "Value": "ml"},
        {"Key": "airflow:run_id", "Value": "r1"},
        {"Key": "airflow:dag_id", "Value": "d"},
    ]
    assert ACCOUNT_EXTRA["Instances"]["KeepJobFlowAliveWhenNoSteps"] is False  # inputs untouched


def test_the_providers_shallow_merge_loses_them():
    # EmrHook.create_job_flow: config = extra.copy(); config.update(job_flow_overrides)
    config = dict(ACCOUNT_EXTRA)
    config.update(DAG_OVERRIDES)
    assert "Ec2SubnetId" not in config["Instances"]


def test_run_tags_identify_the_run():
    assert run_tags(DAG_OVERRIDES) == {"airflow:dag_id": "d", "airflow:run_id": "r1"}
    assert run_tags({"Tags": [{"Key": "airflow:run_id", "Value": "r"}]}) == {"airflow:run_id": "r"}


def test_role_names_are_settings(monkeypatch: pytest.MonkeyPatch):
    assert emr.account_defaults(settings.load()) == {
        "ServiceRole": "EMR_DefaultRole",
        "JobFlowRole": "EMR_EC2_DefaultRole",
    }
    monkeypatch.setenv("BANK_EMR_SERVICE_ROLE", "arn:aws:iam::1:role/svc")
    monkeypatch.setenv("BANK_EMR_JOB_FLOW_ROLE", "nodes")
    assert emr.account_defaults(settings.load()) == {"ServiceRole": "arn:aws:iam::1:role/svc", "JobFlowRole": "nodes"}


def test_network_settings_reach_instances_under_the_connection(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BANK_EMR_SUBNET_ID", "subnet-1")
    monkeypatch.setenv("BANK_EMR_PRIMARY_SECURITY_GROUP", "sg-p")
    monkeypatch.setenv("BANK_EMR_CORE_SECURITY_GROUP", "sg-c")
    monkeypatch.setenv("BANK_EMR_SERVICE_ACCESS_SECURITY_GROUP", "sg-s")
    defaults = emr.account_defaults(settings.load())
    assert defaults["Instances"] == {
        "Ec2SubnetId": "subnet-1",
        "EmrManagedMasterSecurityGroup": "sg-p",
        "EmrManagedSlaveSecurityGroup": "sg-c",
        "ServiceAccessSecurityGroup": "sg-s",
    }
    # The connection's extra still wins over settings (a subnet per environment kept in Airflow).
    merged = deep_merge(defaults, {"Instances": {"Ec2SubnetId": "subnet-conn"}})
    assert merged["Instances"]["Ec2SubnetId"] == "subnet-conn"
    assert merged["Instances"]["ServiceAccessSecurityGroup"] == "sg-s"
