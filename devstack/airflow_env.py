"""Run the bundle's DAGs with a local Airflow (SQLite) against devstack.

Used by `make demo` and the end-to-end tests. Each DAG run happens in a child
process (`dag.test()`: the real scheduler loop for one run, deferrable triggers
run inline) so that Airflow's process-wide settings never leak between runs and
the caller can watch progress in the metadata DB meanwhile.

    python -m devstack.airflow_env run DAG_ID --conf '{...}' --result out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devstack.infra import Account

REPO = Path(__file__).resolve().parents[1]
LAKE_BUCKET = "bank-lake"
RAW_KEY = "raw/bank/bank-full.csv"
LAMBDA_ROLE_NAME = "bank-model-lambda"  # infra/bank-ml.cfn.yaml's default LambdaRoleName
LAMBDA_ROLE_ARN = f"arn:aws:iam::123456789012:role/{LAMBDA_ROLE_NAME}"  # moto's default account
IMAGE_REPOSITORY = "bank-model"
SERVING_BASE_TAG = "serving-base"


def airflow_env(
    home: Path, aws_env: dict[str, str], account: Account, kubernetes_connection: str | None = None
) -> dict[str, str]:
    """Environment for an Airflow whose AWS connection points at devstack with the workers' credentials.

    ``aws_env`` gives the endpoint, region and registry (``Devstack.env()``);
    ``account`` (``devstack.infra.provision``) the worker user's key, which both the
    ``aws_default`` connection and the processes' AWS_* variables hold (nothing in
    Airflow can fall back to devstack's admin key), and the BANK_* settings its
    stack's outputs give: what README's "Pointing it at real AWS" sets on AWS.
    With ``kubernetes_connection`` (``devstack.kube.airflow_connection``) also
    ``kubernetes_default``; without it the release's rollout task skips, saying so.
    """
    aws_env = account.worker_env(aws_env)
    endpoint = aws_env["AWS_ENDPOINT_URL"]
    aws_conn = {
        "conn_type": "aws",
        "login": aws_env["AWS_ACCESS_KEY_ID"],
        "password": aws_env["AWS_SECRET_ACCESS_KEY"],
        "extra": {"endpoint_url": endpoint, "region_name": aws_env["AWS_DEFAULT_REGION"]},
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "BANK_", "AWS_"))}
    env.update(aws_env)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws_conn),
            # The provider merges this connection's extra under the job flow overrides;
            # on AWS it carries the account's subnet and security groups.
            "AIRFLOW_CONN_EMR_DEFAULT": json.dumps({"conn_type": "emr", "extra": {}}),
            **account.settings(),
            "BANK_POLL_SECONDS": "1",
            "BANK_IMAGE_REGISTRY": aws_env.get("BANK_REGISTRY", ""),
        }
    )
    if kubernetes_connection:
        env["AIRFLOW_CONN_KUBERNETES_DEFAULT"] = kubernetes_connection
    return env


def ensure_db(env: dict[str, str]) -> None:
    """Create (or upgrade) the SQLite metadata DB once; later calls cost one `stat`."""
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    marker = home / ".migrated"
    if marker.exists():
        return
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    marker.touch()


def seed_lake(s3: Any, csv_path: Path, bucket: str = LAKE_BUCKET, key: str = RAW_KEY) -> str:
    """Upload the raw CSV into the lake bucket (the template made it); returns its s3:// URI."""
    s3.upload_file(str(csv_path), bucket, key)
    return f"s3://{bucket}/{key}"


def seed_release(registry_url: str, tag: str = SERVING_BASE_TAG) -> str:
    """What a release needs that CI provides on AWS: the serving base image (the template made the Lambda role).

    The serving base image is serving/Dockerfile built with podman on the local
    Lambda base (devstack.lambda_image: both rebuilt only when their inputs
    change), pushed to ``registry_url`` as ``bank-model:<tag>``. Returns its digest.
    """
    from devstack.lambda_image import push_serving

    return push_serving(registry_url, IMAGE_REPOSITORY, tag).rsplit("@", 1)[1]


@dataclass
class DagRunResult:
    """What one `dag.test()` run ended with."""

    dag_id: str
    run_id: str
    state: str
    tasks: dict[str, str]
    asset_events: list[dict[str, Any]]
    xcom: dict[str, Any] = field(default_factory=dict)
    log_path: Path | None = None

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""


def start_dag_run(
    env: dict[str, str], dag_id: str, conf: dict[str, Any], workdir: Path, logical_date: str | None = None
) -> tuple[subprocess.Popen, Path, Path]:
    """Start `dag.test()` for ``dag_id`` in a child; returns (process, result file, log file)."""
    workdir.mkdir(parents=True, exist_ok=True)
    result = workdir / f"{dag_id}.result.json"
    log = workdir / f"{dag_id}.log"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "devstack.airflow_env", "run", dag_id,
           "--conf", json.dumps(conf), "--result", str(result)]  # fmt: skip
    if logical_date:
        cmd += ["--logical-date", logical_date]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    return proc, result, log


def finish_dag_run(proc: subprocess.Popen, result: Path, log: Path, timeout: float) -> DagRunResult:
    """Wait for a run started by start_dag_run and read what it ended with."""
    code = proc.wait(timeout=timeout)
    if not result.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"dag run process exited {code} without a result; log tail:\n{tail}")
    data = json.loads(result.read_text())
    return DagRunResult(**data, log_path=log)


def run_dag(
    env: dict[str, str],
    dag_id: str,
    conf: dict[str, Any],
    workdir: Path,
    logical_date: str | None = None,
    timeout: float = 900,
) -> DagRunResult:
    """Run one DAG run to its end and return its states, asset events and XComs."""
    ensure_db(env)
    return finish_dag_run(*start_dag_run(env, dag_id, conf, workdir, logical_date), timeout=timeout)


def newest_run_id(env: dict[str, str], dag_id: str) -> int:
    """The database id of ``dag_id``'s newest run (0 if none): task_states(after=...) shows only later runs."""
    db = Path(env["AIRFLOW_HOME"]) / "airflow.db"
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            row = con.execute("SELECT MAX(id) FROM dag_run WHERE dag_id = ?", (dag_id,)).fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0] or 0)


def task_states(env: dict[str, str], dag_id: str, after: int = 0) -> dict[str, str]:
    """Task states of the newest run of ``dag_id``, read straight from SQLite (cheap, for progress).

    ``after``: a newest_run_id() taken before the run started, so that the previous run's
    states are not shown as this one's while its run is being created.
    """
    db = Path(env["AIRFLOW_HOME"]) / "airflow.db"
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            rows = con.execute(
                "SELECT task_id, COALESCE(state, 'none') FROM task_instance WHERE dag_id = ? AND run_id ="
                " (SELECT run_id FROM dag_run WHERE dag_id = ? AND id > ? ORDER BY id DESC LIMIT 1)",
                (dag_id, dag_id, after),
            ).fetchall()
    except sqlite3.Error:
        return {}
    return dict(rows)


def _run_in_child(dag_id: str, conf: dict[str, Any], result_path: Path, logical_date: str | None) -> None:
    """Child side: one `dag.test()` run, then its outcome as JSON."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.asset import AssetEvent
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    bag = DagBag(dag_folder=str(REPO / "dags" / f"{dag_id}.py"))
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    dag = bag.dags[dag_id]
    from airflow.sdk import timezone

    # A fixed logical date gives the same run id: dag.test() then replaces that run (a rerun).
    when = timezone.parse(logical_date) if logical_date else timezone.utcnow()
    dr = dag.test(run_conf=conf, logical_date=when, run_after=when)
    with create_session() as session:
        tis = {ti.task_id: str(ti.state) for ti in dr.get_task_instances(session=session)}
        events = session.scalars(select(AssetEvent).where(AssetEvent.source_run_id == dr.run_id)).all()
        xcoms = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_id, XComModel.run_id == dr.run_id, XComModel.key == "return_value"
            )
        ).all()
        out = {
            "dag_id": dag_id,
            "run_id": dr.run_id,
            "state": str(dr.state),
            "tasks": tis,
            "asset_events": [
                {"uri": e.asset.uri, "name": e.asset.name, "extra": e.extra, "task_id": e.source_task_id}
                for e in events
            ],
            "xcom": {x.task_id: XComModel.deserialize_value(x) for x in xcoms},
        }
    partial = result_path.with_suffix(".partial")
    partial.write_text(json.dumps(out, default=str, indent=2))
    partial.replace(result_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.airflow_env")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run one DAG run with dag.test() and write its outcome as JSON")
    run.add_argument("dag_id")
    run.add_argument("--conf", default="{}")
    run.add_argument("--result", type=Path, required=True)
    run.add_argument("--logical-date", help="ISO date; the same date again reruns the same run id")
    args = parser.parse_args(argv)
    _run_in_child(args.dag_id, json.loads(args.conf), args.result, args.logical_date)
    # The run is over and its outcome written; Airflow's exit handlers take about 2 s
    # more and have nothing left to save (the database is committed, the log flushed).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
