"""What an EMR node is to devstack: its file system, its Spark configuration, its bootstrap actions.

devstack has no instances: steps and bootstrap actions run on this machine. Three
things an EMR node has are made explicit so that what differs on EMR fails here too:

- **The node's own directories.** Paths a cluster writes to on its nodes (``/opt``,
  ``/mnt``, ``/home/hadoop``) are mapped to one directory per devstack (``<state>/node``;
  under the machine's cache for a state dir inside the checkout: ``devstack.aws.server.node_root``)
  wherever they appear in bootstrap action arguments and in Spark configuration
  values, as the Lambda runner maps image paths. Unlike EMR, whose nodes start empty
  for every cluster, that directory outlives a cluster: an idempotent bootstrap action
  (the bundle's is) finds its work done on the next cluster and skips it.
- **Spark's configuration.** Each cluster gets a ``SPARK_CONF_DIR`` as EMR writes it:
  ``spark-env.sh`` with EMR's stock interpreter lines (``PYSPARK_PYTHON`` and
  ``PYSPARK_DRIVER_PYTHON`` = ``/usr/bin/python3``, the machine's bare system Python,
  standing in for EMR's) followed by the ``spark-env`` classification's ``export``
  properties, and ``spark-defaults.conf`` from the ``spark-defaults`` classification.
  spark-submit reads both, with their precedence (``--conf`` over spark-defaults; the
  ``spark.pyspark.*`` properties over the environment).
- **Bootstrap actions.** Each ``ScriptBootstrapAction`` is downloaded from S3 and run
  with bash, in order, before the cluster is WAITING; a non-zero exit ends the cluster
  TERMINATED_WITH_ERRORS with EMR's BOOTSTRAP_FAILURE reason. Their output is uploaded
  to ``<LogUri>/<cluster>/node/<instance>/bootstrap-actions/<n>/{stdout,stderr}.gz`` as EMR does.

- **No package index.** Bootstrap actions and steps run with pip's and uv's index and the
  HTTP(S) proxies pointed at a closed port (loopback, where devstack's S3 listens, excepted),
  as a node in a private subnet with only an S3 endpoint has no route to PyPI.

Not faithful: one "node" (this machine: x86_64, Debian's Python), actions run once
rather than on every node, as devstack's user rather than ``hadoop``; the network is closed
by environment, not by a firewall (a program that ignores proxy settings is not stopped).
"""

from __future__ import annotations

import gzip
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack import procs

log = logging.getLogger("devstack.aws.emr")

# What EMR's stock spark-env.sh says about Python, before the classification's exports.
SYSTEM_PYTHON = "/usr/bin/python3"
STOCK_SPARK_ENV = (
    f"export PYSPARK_PYTHON={SYSTEM_PYTHON}",
    f"export PYSPARK_DRIVER_PYTHON={SYSTEM_PYTHON}",
)
# Where a cluster writes on its nodes: mapped under the node directory here.
NODE_PREFIXES = ("/opt/", "/mnt/", "/home/hadoop/")
BOOTSTRAP_TIMEOUT = 1800.0  # seconds; EMR has none short of the cluster's own start-up limits
INSTANCE_ID = "i-devstack0000001"  # the one "node" every log path names


def node_path(value: str, node_root: Path) -> str:
    """``value`` with each node-local absolute path (``/opt/...``) moved under ``node_root``."""
    parts = []
    for part in value.split(":"):
        if part.startswith(NODE_PREFIXES):
            part = str(node_root / part.lstrip("/"))
        parts.append(part)
    return ":".join(parts)


def _get(obj: Mapping[str, Any], key: str) -> Any:
    """A field of a configuration as moto stores it (original or snake case)."""
    for name in (key, key[:1].lower() + key[1:], key.lower()):
        try:
            value = obj[name]
        except (KeyError, TypeError):
            continue
        if value is not None:
            return value
    return None


def classification(configurations: Iterable[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    """The configurations of classification ``name`` (EMR applies every one, in order)."""
    return [c for c in configurations if _get(c, "Classification") == name]


def spark_defaults(configurations: Iterable[Mapping[str, Any]], node_root: Path) -> dict[str, str]:
    """spark-defaults.conf's properties: the ``spark-defaults`` classification, node paths mapped."""
    props: dict[str, str] = {}
    for conf in classification(configurations, "spark-defaults"):
        for key, value in (_get(conf, "Properties") or {}).items():
            props[str(key)] = node_path(str(value), node_root)
    return props


def spark_env_exports(configurations: Iterable[Mapping[str, Any]], node_root: Path) -> dict[str, str]:
    """The ``export`` properties nested in the ``spark-env`` classification, node paths mapped."""
    exports: dict[str, str] = {}
    for conf in classification(configurations, "spark-env"):
        for inner in classification(_get(conf, "Configurations") or [], "export"):
            for key, value in (_get(inner, "Properties") or {}).items():
                exports[str(key)] = node_path(str(value), node_root)
    return exports


def write_spark_conf(
    conf_dir: Path,
    configurations: Iterable[Mapping[str, Any]],
    node_root: Path,
    stock_defaults: Mapping[str, str] | None = None,
) -> Path:
    """A SPARK_CONF_DIR as EMR writes it for a cluster; returns ``conf_dir``.

    ``stock_defaults``: what the platform itself puts in spark-defaults.conf (EMR: EMRFS for
    s3://; devstack: S3A against its endpoint), under the cluster's own classification.
    """
    configurations = list(configurations)
    conf_dir.mkdir(parents=True, exist_ok=True)
    env_lines = [
        "# Written by devstack as EMR writes it: the stock interpreter lines, then the",
        "# spark-env classification's exports.",
        *STOCK_SPARK_ENV,
        *(f"export {key}={shlex.quote(value)}" for key, value in spark_env_exports(configurations, node_root).items()),
    ]
    (conf_dir / "spark-env.sh").write_text("\n".join(env_lines) + "\n")
    defaults = {**(stock_defaults or {}), **spark_defaults(configurations, node_root)}
    (conf_dir / "spark-defaults.conf").write_text("".join(f"{key} {value}\n" for key, value in defaults.items()))
    return conf_dir


@dataclass(frozen=True)
class BootstrapFailure:
    """Why a bootstrap action failed, as EMR words the cluster's StateChangeReason."""

    number: int
    message: str


def run_bootstrap_actions(
    actions: Iterable[Any],
    *,
    s3: Any,
    work: Path,
    node_root: Path,
    env: Mapping[str, str],
    log_uri: str | None,
    cluster_id: str,
    cancelled: Any,
) -> BootstrapFailure | None:
    """Run each action's script in order; the first failure, or None when all exited 0.

    ``actions`` are moto's BootstrapAction objects (``name``, ``script_path``, ``args``);
    ``cancelled`` is a threading.Event that stops a running action (cluster terminated).
    """
    for number, action in enumerate(actions, start=1):
        directory = work / f"bootstrap-{number}"
        directory.mkdir(parents=True, exist_ok=True)
        script = directory / "script"
        try:
            bucket, _, key = str(action.script_path).removeprefix("s3://").partition("/")
            s3.download_file(bucket, key, str(script))
        except Exception as exc:  # noqa: BLE001 - any download failure is EMR's "failed attempting to download"
            return BootstrapFailure(
                number,
                f"Master instance ({INSTANCE_ID}) failed attempting to download bootstrap action {number} file "
                f"from S3: {action.script_path}: {exc}",
            )
        args = [node_path(str(a), node_root) for a in action.args]
        log.info("cluster %s: bootstrap action %d (%s): %s", cluster_id, number, action.name, shlex.join(args))
        code = _run(["bash", str(script), *args], directory, env, cancelled)
        _upload_logs(s3, log_uri, cluster_id, number, directory)
        if code != 0:
            return BootstrapFailure(
                number,
                f"On the master instance ({INSTANCE_ID}), bootstrap action {number} returned a non-zero "
                f"return code ({code})",
            )
    return None


def _run(command: list[str], directory: Path, env: Mapping[str, str], cancelled: Any) -> int:
    tmp = directory / "tmp"
    tmp.mkdir(exist_ok=True)
    with (directory / "stdout").open("wb") as out, (directory / "stderr").open("wb") as err:
        proc = subprocess.Popen(
            command, cwd=directory, env={**env, "TMPDIR": str(tmp)}, stdin=subprocess.DEVNULL,
            stdout=out, stderr=err, process_group=0,
        )  # fmt: skip
        deadline = time.monotonic() + BOOTSTRAP_TIMEOUT
        while proc.poll() is None:
            if cancelled.wait(0.2) or time.monotonic() > deadline:
                procs.terminate_group(proc.pid, 5.0)
                break
        code = proc.wait()
    if procs.group_pids(proc.pid):
        procs.terminate_group(proc.pid, 1.0)
    return code


def _upload_logs(s3: Any, log_uri: str | None, cluster_id: str, number: int, directory: Path) -> None:
    if not log_uri or not log_uri.startswith(("s3://", "s3n://", "s3a://")):
        return
    bucket, _, prefix = log_uri.split("://", 1)[1].partition("/")
    base = "/".join(
        p for p in (prefix.strip("/"), cluster_id, "node", INSTANCE_ID, "bootstrap-actions", str(number)) if p
    )
    for name in ("stdout", "stderr"):
        try:
            s3.put_object(Bucket=bucket, Key=f"{base}/{name}.gz", Body=gzip.compress((directory / name).read_bytes()))
        except Exception as exc:  # noqa: BLE001 - logs are a courtesy (EMR loses them too without a bucket)
            log.warning("cannot upload bootstrap logs of %s to %s: %s", cluster_id, log_uri, exc)


# EMR nodes in a private subnet reach S3 (a gateway endpoint) and nothing else: no package index.
# Every process of devstack's node gets an index and proxies that refuse all connections (loopback,
# where devstack's S3 is, excepted), so a bootstrap action or a step that would download a package
# fails here as it would there.
UNREACHABLE = "http://127.0.0.1:9"
NO_INDEX_ENV = {
    "PIP_INDEX_URL": f"{UNREACHABLE}/simple",
    "PIP_EXTRA_INDEX_URL": "",
    "PIP_FIND_LINKS": "",
    "UV_INDEX_URL": f"{UNREACHABLE}/simple",
    "UV_DEFAULT_INDEX": f"{UNREACHABLE}/simple",
    **{name: UNREACHABLE for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY")},
    **{name: "127.0.0.1,localhost" for name in ("NO_PROXY", "no_proxy")},
}


def offline(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` as a node's process sees it: no package index reachable."""
    return {**env, **NO_INDEX_ENV}


def bootstrap_env(base: Mapping[str, str]) -> dict[str, str]:
    """The environment a bootstrap action runs in: ``base`` (AWS endpoint and keys), a PATH with the
    AWS CLI (EMR nodes have it; here the venv's, from PyPI), the system's tools, and no package index."""
    venv_bin = str(Path(sys.executable).parent)  # last: python3.11 must be the system's, not the venv's
    return offline(
        {
            **base,
            "PATH": os.pathsep.join(["/usr/local/bin", "/usr/bin", "/bin", venv_bin]),
            "HOME": base.get("HOME", os.environ.get("HOME", "/root")),
            "LANG": "C.UTF-8",
        }
    )
