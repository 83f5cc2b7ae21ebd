"""devstack refuses what EMR refuses, runs bootstrap actions, and runs steps on the interpreter EMR would."""

from __future__ import annotations

import gzip
import json
import sys
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from devstack import Devstack
from devstack.aws.infra import Account
from tests.support.devstack_helpers import cluster_state, network_of, new_cluster, put_script, spark_step, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# Reports the driver's interpreter and the workers', and whether the driver can import pyarrow
# (EMR's system Python cannot; the jobs' Python can).
WHICH_PYTHON = """\
import json, sys
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
workers = sorted(set(spark.sparkContext.parallelize(range(4), 2).map(lambda _: __import__("sys").executable).collect()))
try:
    import pyarrow
    driver_pyarrow = True
except ImportError:
    driver_pyarrow = False
print("WHICH " + json.dumps({"driver": sys.executable, "workers": workers, "driver_pyarrow": driver_pyarrow}))
spark.stop()
"""


def ended(emr: Any, cluster_id: str) -> dict[str, Any]:
    wait_until(lambda: cluster_state(emr, cluster_id), lambda s: s.startswith("TERMINATED"), timeout=120)
    return emr.describe_cluster(ClusterId=cluster_id)["Cluster"]


def step_stdout(emr: Any, s3: Any, cluster_id: str, bucket: str, prefix: str) -> str:
    (step,) = emr.list_steps(ClusterId=cluster_id)["Steps"]
    wait_until(
        lambda: emr.describe_step(ClusterId=cluster_id, StepId=step["Id"])["Step"]["Status"]["State"],
        lambda s: s in ("COMPLETED", "FAILED", "CANCELLED"),
        timeout=240,
    )
    key = f"{prefix}/{cluster_id}/steps/{step['Id']}/stdout.gz"
    return gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).decode()


def which_python(emr: Any, s3: Any, bucket: str, **cluster: Any) -> dict[str, Any]:
    script = put_script(s3, bucket, f"code/which-{uuid.uuid4().hex[:6]}.py", WHICH_PYTHON)
    prefix = f"logs-{uuid.uuid4().hex[:6]}"
    cluster_id = new_cluster(emr, f"s3://{bucket}/{prefix}/", steps=[spark_step("which", script)], **cluster)
    try:
        out = step_stdout(emr, s3, cluster_id, bucket, prefix)
    finally:
        emr.terminate_job_flows(JobFlowIds=[cluster_id])
    line = next((x for x in out.splitlines() if x.startswith("WHICH ")), None)
    assert line, out[-3000:]
    return json.loads(line[len("WHICH ") :])


# --------------------------------------------------------------------------- what RunJobFlow refuses


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"ReleaseLabel": "emr-7.99.0"}, "The specified release label is not valid: emr-7.99.0"),
        ({"ServiceRole": "NoSuchServiceRole"}, "Invalid ServiceRole: the role NoSuchServiceRole does not exist"),
        ({"JobFlowRole": "NoSuchProfile"}, "Invalid InstanceProfile: NoSuchProfile"),
        # A role is not an instance profile: EMR wants the profile's name.
        ({"JobFlowRole": "EMR_DefaultRole"}, "Invalid InstanceProfile: EMR_DefaultRole"),
    ],
)
def test_run_job_flow_refuses_what_emr_refuses(emr: Any, override: dict[str, str], message: str) -> None:
    before = {c["Id"] for c in emr.list_clusters()["Clusters"]}
    with pytest.raises(ClientError, match="ValidationException") as error:
        new_cluster(emr, **override)
    assert message in str(error.value)
    assert {c["Id"] for c in emr.list_clusters()["Clusters"]} == before  # nothing was created


def test_an_untagged_network_ends_the_cluster_as_emr_does(ds: Devstack, account: Account) -> None:
    """The template's service role has AmazonEMRServicePolicy_v2: no subnet (the default VPC's, untagged)
    or one untagged security group, and the cluster ends TERMINATED_WITH_ERRORS naming what is untagged."""
    bare = ds.client("emr")  # without the template's network (tests/integration/conftest.py)
    default_vpc = ended(bare, new_cluster(bare))
    assert default_vpc["Status"]["State"] == "TERMINATED_WITH_ERRORS"
    reason = default_vpc["Status"]["StateChangeReason"]
    assert reason["Code"] == "VALIDATION_ERROR"
    assert "has insufficient EC2 permissions" in reason["Message"]
    assert "not tagged for-use-with-amazon-emr-managed-policies=true" in reason["Message"]

    network = network_of(account)
    ec2 = ds.client("ec2")
    vpc = ec2.describe_subnets(SubnetIds=[network["Ec2SubnetId"]])["Subnets"][0]["VpcId"]
    group = ec2.create_security_group(GroupName=f"untagged-{uuid.uuid4().hex[:6]}", Description="x", VpcId=vpc)[
        "GroupId"
    ]
    one_untagged = ended(bare, new_cluster(bare, Instances={
        "InstanceCount": 1, "MasterInstanceType": "m5.xlarge", "KeepJobFlowAliveWhenNoSteps": True,
        **network, "EmrManagedSlaveSecurityGroup": group,
    }))  # fmt: skip
    assert one_untagged["Status"]["StateChangeReason"]["Code"] == "VALIDATION_ERROR"
    message = one_untagged["Status"]["StateChangeReason"]["Message"]
    assert group in message and network["Ec2SubnetId"] not in message


def test_the_templates_network_is_accepted(emr: Any) -> None:
    cluster_id = new_cluster(emr)
    wait_until(lambda: cluster_state(emr, cluster_id), lambda s: s == "WAITING", timeout=60)
    emr.terminate_job_flows(JobFlowIds=[cluster_id])


def test_roles_may_be_given_as_arns(emr: Any) -> None:
    cluster_id = new_cluster(
        emr,
        ServiceRole="arn:aws:iam::123456789012:role/EMR_DefaultRole",
        JobFlowRole="arn:aws:iam::123456789012:instance-profile/EMR_EC2_DefaultRole",
    )
    emr.terminate_job_flows(JobFlowIds=[cluster_id])


# --------------------------------------------------------------------------- bootstrap actions


def test_bootstrap_actions_run_before_the_cluster_waits_with_node_paths_mapped(
    ds: Devstack, emr: Any, s3: Any, bucket: str
) -> None:
    marker = f"/opt/bank-test/{uuid.uuid4().hex[:8]}"
    script = put_script(s3, bucket, "boot/ok.sh", 'mkdir -p "$1" && echo "$2" > "$1/arg" && echo booted "$1"\n')
    cluster_id = new_cluster(
        emr,
        f"s3://{bucket}/bootlogs/",
        BootstrapActions=[{"Name": "ok", "ScriptBootstrapAction": {"Path": script, "Args": [marker, "hello"]}}],
    )
    _, seen = wait_until(lambda: cluster_state(emr, cluster_id), lambda s: s == "WAITING")
    assert seen[:3] == ["STARTING", "BOOTSTRAPPING", "WAITING"] or seen[:2] == ["BOOTSTRAPPING", "WAITING"]
    # /opt/... on the node is devstack's node directory here.
    assert (ds.state_dir / "node" / marker.lstrip("/") / "arg").read_text() == "hello\n"
    key = f"bootlogs/{cluster_id}/node/i-devstack0000001/bootstrap-actions/1/stdout.gz"
    assert b"booted" in gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    emr.terminate_job_flows(JobFlowIds=[cluster_id])


def test_a_failing_bootstrap_action_ends_the_cluster_with_errors(emr: Any, s3: Any, bucket: str) -> None:
    good = put_script(s3, bucket, "boot/good.sh", "true\n")
    bad = put_script(s3, bucket, "boot/bad.sh", "echo cannot install >&2; exit 3\n")
    cluster_id = new_cluster(
        emr,
        f"s3://{bucket}/bootlogs/",
        BootstrapActions=[
            {"Name": "good", "ScriptBootstrapAction": {"Path": good}},
            {"Name": "bad", "ScriptBootstrapAction": {"Path": bad}},
        ],
        Steps=[spark_step("never", "s3://x/job.py")],
    )
    cluster = ended(emr, cluster_id)
    status = cluster["Status"]
    assert status["State"] == "TERMINATED_WITH_ERRORS"
    assert status["StateChangeReason"]["Code"] == "BOOTSTRAP_FAILURE"
    assert "bootstrap action 2 returned a non-zero return code (3)" in status["StateChangeReason"]["Message"]
    (step,) = emr.list_steps(ClusterId=cluster_id)["Steps"]
    assert step["Status"]["State"] == "CANCELLED"
    key = f"bootlogs/{cluster_id}/node/i-devstack0000001/bootstrap-actions/2/stderr.gz"
    assert b"cannot install" in gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_a_bootstrap_script_that_cannot_be_downloaded_fails_the_cluster(emr: Any, bucket: str) -> None:
    cluster_id = new_cluster(
        emr, BootstrapActions=[{"Name": "gone", "ScriptBootstrapAction": {"Path": f"s3://{bucket}/boot/absent.sh"}}]
    )
    reason = ended(emr, cluster_id)["Status"]["StateChangeReason"]
    assert reason["Code"] == "BOOTSTRAP_FAILURE"
    assert (
        f"failed attempting to download bootstrap action 1 file from S3: s3://{bucket}/boot/absent.sh"
        in reason["Message"]
    )


# --------------------------------------------------------------------------- no package index on a node


def test_a_node_reaches_no_package_index(emr: Any, s3: Any, bucket: str) -> None:
    """A bootstrap action that tries to download a package fails, as on a node in a private subnet."""
    script = put_script(
        s3, bucket, "boot/pip-download.sh",
        '"$1" -m pip download --no-deps --retries 0 --timeout 5 --dest "$TMPDIR/w" six==1.17.0 >&2 || exit 3\n',
    )  # fmt: skip
    cluster_id = new_cluster(
        emr,
        f"s3://{bucket}/bootlogs/",
        BootstrapActions=[{"Name": "pip", "ScriptBootstrapAction": {"Path": script, "Args": [sys.executable]}}],
    )
    reason = ended(emr, cluster_id)["Status"]["StateChangeReason"]
    assert reason["Code"] == "BOOTSTRAP_FAILURE"
    assert "bootstrap action 1 returned a non-zero return code (3)" in reason["Message"]
    key = f"bootlogs/{cluster_id}/node/i-devstack0000001/bootstrap-actions/1/stderr.gz"
    stderr = gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).decode()
    assert "Looking in indexes: http://127.0.0.1:9/simple" in stderr, stderr[-2000:]
    assert "No matching distribution found for six==1.17.0" in stderr, stderr[-2000:]


def test_the_bundles_bootstrap_builds_the_nodes_python_from_the_staged_wheelhouse_offline(
    ds: Devstack, emr: Any, s3: Any, bucket: str
) -> None:
    """python_env.sh installs the wheelhouse `python -m bank_pipeline.wheelhouse` staged, with no index,
    and a step on that Python imports the model build's libraries."""
    from bank_pipeline import resources, wheelhouse
    from devstack.harness.airflow_env import seed_wheelhouse

    seed_wheelhouse(ds.env(), bucket)
    wheels = wheelhouse.wheelhouse_uri(f"s3://{bucket}/code/", "x86_64")
    boot = put_script(s3, bucket, "boot/python_env.sh", resources.bootstrap_script().decode())
    env_dir = f"/opt/bank-test-{uuid.uuid4().hex[:6]}/python"
    check = put_script(s3, bucket, "code/imports.py", IMPORTS)
    prefix = f"logs-{uuid.uuid4().hex[:6]}"
    cluster_id = new_cluster(
        emr,
        f"s3://{bucket}/{prefix}/",
        steps=[spark_step("imports", check)],
        BootstrapActions=[{"Name": "python", "ScriptBootstrapAction": {"Path": boot, "Args": [wheels, env_dir]}}],
        Configurations=[{"Classification": "spark-defaults", "Properties": {
            "spark.pyspark.python": f"{env_dir}/bin/python", "spark.pyspark.driver.python": f"{env_dir}/bin/python"}}],
    )  # fmt: skip
    try:
        out = step_stdout(emr, s3, cluster_id, bucket, prefix)
    finally:
        emr.terminate_job_flows(JobFlowIds=[cluster_id])
    line = next((x for x in out.splitlines() if x.startswith("IMPORTS ")), None)
    assert line, out[-3000:]
    seen = json.loads(line[len("IMPORTS ") :])
    assert seen["executable"] == str(ds.state_dir / "node" / env_dir.lstrip("/") / "bin" / "python")
    assert seen["sklearn"] == "1.9.1" and seen["index"].startswith("http://127.0.0.1:9")


IMPORTS = """\
import json, os, sys
import matplotlib, numpy, onnxruntime, pandas, pyarrow, skl2onnx, sklearn
print("IMPORTS " + json.dumps({"executable": sys.executable, "sklearn": sklearn.__version__,
                               "index": os.environ.get("PIP_INDEX_URL", "")}))
"""


# --------------------------------------------------------------------------- which Python a step runs on


def test_steps_run_on_the_system_python_unless_the_cluster_says_otherwise(emr: Any, s3: Any, bucket: str) -> None:
    seen = which_python(emr, s3, bucket)
    assert seen == {"driver": "/usr/bin/python3", "workers": ["/usr/bin/python3"], "driver_pyarrow": False}


def test_an_exported_pyspark_python_leaves_the_driver_on_the_system_python(emr: Any, s3: Any, bucket: str) -> None:
    # The review's finding: EMR's stock spark-env sets PYSPARK_DRIVER_PYTHON, so exporting only
    # PYSPARK_PYTHON moves the executors and leaves the client-mode driver without the job's libraries.
    export = [{"Classification": "spark-env", "Configurations": [
        {"Classification": "export", "Properties": {"PYSPARK_PYTHON": sys.executable}}]}]  # fmt: skip
    seen = which_python(emr, s3, bucket, Configurations=export)
    assert seen == {"driver": "/usr/bin/python3", "workers": [sys.executable], "driver_pyarrow": False}


def test_spark_defaults_choose_the_driver_and_executor_python(emr: Any, s3: Any, bucket: str) -> None:
    defaults = [{"Classification": "spark-defaults",
                 "Properties": {"spark.pyspark.python": sys.executable, "spark.pyspark.driver.python": sys.executable}}]  # fmt: skip
    seen = which_python(emr, s3, bucket, Configurations=defaults)
    assert seen == {"driver": sys.executable, "workers": [sys.executable], "driver_pyarrow": True}
