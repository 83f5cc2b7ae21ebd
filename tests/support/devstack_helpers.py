"""Helpers for the tests that run against devstack (EMR clusters and steps, Lambda functions)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from devstack import Devstack, procs
from devstack.aws.infra import Account, cluster_network

SLEEPING = """\
import time
print("sleeping", flush=True)
time.sleep(300)
"""


def wait_until(probe: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 60.0) -> tuple[Any, list[Any]]:
    """Poll ``probe()`` until ``done(value)``; return the value and the distinct values seen, in order."""
    seen: list[Any] = []
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if not seen or seen[-1] != value:
            seen.append(value)
        if done(value):
            return value, seen
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s; seen: {seen}")
        time.sleep(0.1)


def put_script(s3: Any, bucket: str, key: str, text: str) -> str:
    s3.put_object(Bucket=bucket, Key=key, Body=text.encode())
    return f"s3://{bucket}/{key}"


def spark_step(name: str, *args: str, action: str = "CONTINUE") -> dict[str, Any]:
    """An EMR step as the Airflow DAGs write it (cluster deploy mode, command-runner)."""
    return {
        "Name": name,
        "ActionOnFailure": action,
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["spark-submit", "--deploy-mode", "cluster", *args]},
    }


def new_cluster(
    emr: Any,
    log_uri: str | None = None,
    steps: list[dict] | None = None,
    network: dict[str, str] | None = None,
    **extra: Any,
) -> str:
    """A cluster kept alive; ``network``: Instances keys of a subnet and groups (devstack.aws.infra.cluster_network)."""
    params: dict[str, Any] = {
        "Name": "devstack-test",
        "ReleaseLabel": "emr-7.12.0",
        "Instances": {
            "InstanceCount": 1,
            "MasterInstanceType": "m5.xlarge",
            "KeepJobFlowAliveWhenNoSteps": True,
            **(network or {}),
        },
        "JobFlowRole": "EMR_EC2_DefaultRole",
        "ServiceRole": "EMR_DefaultRole",
        "Steps": steps or [],
        **extra,
    }
    if log_uri:
        params["LogUri"] = log_uri
    return emr.run_job_flow(**params)["JobFlowId"]


def cluster_state(emr: Any, cluster_id: str) -> str:
    return emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"]


def step_states(emr: Any, cluster_id: str, step_ids: list[str]) -> tuple[str, ...]:
    by_id = {s["Id"]: s["Status"]["State"] for s in emr.list_steps(ClusterId=cluster_id)["Steps"]}
    return tuple(by_id[i] for i in step_ids)


def session_others(ds: Devstack) -> list[int]:
    """Live processes of the devstack's session other than the server itself and its image registry."""
    assert ds.pid is not None
    return [
        p for p in procs.session_pids(ds.pid) if p != ds.pid and "docker-registry" not in " ".join(procs.cmdline(p))
    ]


def step_processes(ds: Devstack, script: str) -> list[str]:
    """Which of spark-submit's JVM and the Python driver of ``script`` are running."""
    assert ds.pid is not None
    kinds = set()
    for pid in procs.session_pids(ds.pid):
        argv = " ".join(procs.cmdline(pid))
        if "SparkSubmit" in argv:
            kinds.add("java")
        elif script in argv:
            kinds.add("python")
    return sorted(kinds)


def live_function(lam: Any, prefix: str, image: str, role_arn: str) -> str:
    """A new image function ``<prefix>-<hex>`` with its version 1 behind the alias ``live``; its name."""
    import uuid

    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    lam.create_function(FunctionName=name, Role=role_arn, PackageType="Image", Code={"ImageUri": image},
                        MemorySize=512, Timeout=10)  # fmt: skip
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.2})
    lam.publish_version(FunctionName=name)
    lam.get_waiter("published_version_active").wait(FunctionName=name, Qualifier="1", WaiterConfig={"Delay": 0.2})
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    return name


def network_of(account: Account) -> dict[str, str]:
    """RunJobFlow's Instances keys of the template's network (its outputs)."""
    return cluster_network(account.outputs)
