"""Run the bundle's DAGs with a local Airflow (SQLite) against devstack.

Used by `make demo` and the end-to-end tests. Each DAG run happens in a child
process (`dag.test()`: the real scheduler loop for one run, deferrable triggers
run inline) so that Airflow's process-wide settings never leak between runs and
the caller can watch progress in the metadata DB meanwhile.

    python -m devstack.harness.airflow_env run DAG_ID --result out.json  < {"env": …, "conf": …}

The child warms up (imports Airflow, starts its in-process execution API) before
it reads its run from stdin, so a caller can start it while it does other work.

The children and ``airflow db migrate`` run on ``$BANK_AIRFLOW_PYTHON`` when it is set (an
interpreter with another Airflow and the bundle installed: ``make test-airflow-3.0`` sets MWAA
3.0.6's, devstack.harness.mwaa_env), else on this one; devstack itself always runs here. The child
needs only Airflow, the bundle and this module, imported from the checkout (its cwd).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devstack.aws.infra import Account

REPO = Path(__file__).resolve().parents[2]
LAKE_BUCKET = "bank-lake"
RAW_KEY = "raw/bank/bank-full.csv"
LAMBDA_ROLE_NAME = "bank-model-lambda"  # infra/bank-ml.cfn.yaml's default LambdaRoleName
LAMBDA_ROLE_ARN = f"arn:aws:iam::123456789012:role/{LAMBDA_ROLE_NAME}"  # moto's default account
IMAGE_REPOSITORY = "bank-model"
SERVING_BASE_TAG = "serving-base"
AIRFLOW_PYTHON = "BANK_AIRFLOW_PYTHON"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def airflow_python() -> str:
    """The interpreter of DAG-run children and their metadata DB: ``$BANK_AIRFLOW_PYTHON``, else this one."""
    return os.environ.get(AIRFLOW_PYTHON) or sys.executable


def airflow_settings(home: Path) -> dict[str, str]:
    """This process's environment without AIRFLOW*, BANK_* and AWS_*, plus the Airflow settings
    for ``home``: what Airflow reads when it is imported (the rest it reads when used)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "BANK_", "AWS_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        }
    )
    return env


def airflow_env(
    home: Path, aws_env: dict[str, str], account: Account, kubernetes_connection: str | None = None
) -> dict[str, str]:
    """Environment for an Airflow whose AWS connection points at devstack with the workers' credentials.

    ``aws_env`` gives the endpoint, region and registry (``Devstack.env()``);
    ``account`` (``devstack.aws.infra.provision``) the worker user's key, which both the
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
    env = airflow_settings(home)
    env.update(aws_env)
    env.update(
        {
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws_conn),
            # The provider merges this connection's extra under the job flow overrides;
            # on AWS it carries the account's subnet and security groups.
            "AIRFLOW_CONN_EMR_DEFAULT": json.dumps({"conn_type": "emr", "extra": {}}),
            **account.settings(),
            "BANK_POLL_SECONDS": "1",
            "BANK_IMAGE_REGISTRY": aws_env.get("BANK_REGISTRY", ""),
            # devstack's registry speaks plain HTTP: said explicitly, never inferred from its address.
            "BANK_PLAIN_HTTP_REGISTRIES": aws_env.get("BANK_REGISTRY", ""),
        }
    )
    env.pop("BANK_REGISTRY", None)  # devstack's own name for it; the product reads BANK_IMAGE_REGISTRY
    if kubernetes_connection:
        env["AIRFLOW_CONN_KUBERNETES_DEFAULT"] = kubernetes_connection
    return env


def airflow_version(python: str) -> str:
    """The apache-airflow version installed for ``python`` (read from its metadata: no Airflow import)."""
    code = "from importlib.metadata import version; print(version('apache-airflow'))"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def ensure_db(env: dict[str, str]) -> None:
    """Create (or upgrade) the SQLite metadata DB with the children's Airflow once; later calls read one small file.

    The marker names the interpreter that migrated it: another one (another Airflow) migrates again.
    """
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    marker = home / ".migrated"
    python = airflow_python()
    with contextlib.suppress(FileNotFoundError):
        if marker.read_text() == python:
            return
    subprocess.run(
        [python, "-m", "airflow", "db", "migrate"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    marker.write_text(python)


def seed_lake(s3: Any, csv_path: Path, bucket: str = LAKE_BUCKET, key: str = RAW_KEY) -> str:
    """Upload the raw CSV into the lake bucket (the template made it); returns its s3:// URI."""
    s3.upload_file(str(csv_path), bucket, key)
    return f"s3://{bucket}/{key}"


def seed_wheelhouse(aws_env: dict[str, str], bucket: str = LAKE_BUCKET) -> str:
    """Stage the EMR nodes' wheelhouse as a deployment does: the bundle's own deploy command.

    ``python -m bank_pipeline.wheelhouse`` for devstack's node architecture (x86_64 only: the
    local "node" is this machine), with ``aws_env``'s endpoint and credentials. The wheels are
    downloaded (hashes checked) once per machine into its cache; each devstack gets them uploaded.
    Returns the command's last line.
    """
    command = [sys.executable, "-m", "bank_pipeline.wheelhouse", "--bucket", bucket, "--arch", "x86_64"]
    result = subprocess.run(
        command, env={**os.environ, **aws_env}, capture_output=True, text=True, timeout=1800, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"staging the wheelhouse failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout.strip().splitlines()[-1]


def seed_release(registry_url: str, tag: str = SERVING_BASE_TAG) -> str:
    """What a release needs that CI provides on AWS: the serving base image (the template made the Lambda role).

    The serving base image is serving/Dockerfile built with podman on the local
    Lambda base (devstack.containers.lambda_image: both rebuilt only when their inputs
    change), pushed to ``registry_url`` as ``bank-model:<tag>``. Returns its digest.
    """
    from devstack.containers.lambda_image import push_serving

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
    airflow_version: str = ""  # the child's
    log_path: Path | None = None

    @property
    def log(self) -> str:
        """The child's log as text: Airflow 3.0 colours its tracebacks (rich), splitting messages with escapes."""
        return ANSI_ESCAPE.sub("", self.log_path.read_text(errors="replace")) if self.log_path else ""


@dataclass
class DagRunChild:
    """A child process for one `dag.test()` run, started before the run is known.

    It imports Airflow and starts Airflow's in-process execution API (about 5 s,
    half of it cadwyn building the API's versioned schemas) while the caller
    does other work, then runs what ``begin`` sends it: the DAG run's conf and
    the rest of its environment (connections, AWS_*, BANK_*: read when used).
    """

    dag_id: str
    proc: subprocess.Popen
    result: Path
    log: Path
    # The child's TMPDIR, removed by stop(): it ends with os._exit (below), so libraries' exit
    # handlers never delete their temp files (the Kubernetes client's copy of a kubeconfig's CA).
    tmp: Path

    def begin(self, env: dict[str, str], conf: dict[str, Any], logical_date: str | None = None) -> None:
        """Start the run. ``env``'s Airflow settings must be those the child started with."""
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it died warming up: finish() says why
            self.proc.stdin.write(json.dumps({"env": env, "conf": conf, "logical_date": logical_date}) + "\n")
            self.proc.stdin.close()

    def finish(self, timeout: float) -> DagRunResult:
        """Wait for the run to end and read what it ended with."""
        code = self.proc.wait(timeout=timeout)
        if not self.result.exists():
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])
            raise RuntimeError(f"dag run process exited {code} without a result; log tail:\n{tail}")
        data = json.loads(self.result.read_text())
        return DagRunResult(**data, log_path=self.log)

    def stop(self) -> None:
        """End a child that will get no run (it exits when its stdin closes), or kill one that hangs."""
        if self.proc.stdin and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


def start_child(env: dict[str, str], dag_id: str, workdir: Path) -> DagRunChild:
    """Start a child for a run of ``dag_id``; ``env`` needs only airflow_settings() (ensure_db first)."""
    workdir.mkdir(parents=True, exist_ok=True)
    result = workdir / f"{dag_id}.result.json"
    log = workdir / f"{dag_id}.log"
    result.unlink(missing_ok=True)
    tmp = workdir / f"{dag_id}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    cmd = [airflow_python(), "-m", "devstack.harness.airflow_env", "run", dag_id, "--result", str(result)]
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd,
            env={**env, "TMPDIR": str(tmp)},
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    return DagRunChild(dag_id, proc, result, log, tmp)


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
    child = start_child(env, dag_id, workdir)
    try:
        child.begin(env, conf, logical_date)
        return child.finish(timeout=timeout)
    finally:
        child.stop()


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


def _dagbag_class() -> type:
    """Airflow's DagBag: airflow.dag_processing.dagbag since 3.1, airflow.models.dagbag in 3.0."""
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.0
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]
    return DagBag


def _warm_up() -> None:
    """Child side, before the run is known: import Airflow and start the in-process execution API.

    dag.test() talks to the API through supervisor.in_process_api_server(), which is cached:
    its first request here pays the API's start (cadwyn's schemas) for the run. The bundle
    must not be imported yet: its modules read BANK_* settings when imported.
    """
    import httpx
    from airflow.sdk.execution_time.supervisor import in_process_api_server

    _dagbag_class()  # the import is the point

    api = in_process_api_server()
    httpx.Client(transport=api.transport, base_url="http://in-process.invalid./").get("/execution/")
    early = sorted(m for m in sys.modules if m.split(".")[0] in ("bank_pipeline", "bank_ml", "bank_spark"))
    if early:
        raise RuntimeError(f"warming up imported the bundle before its settings arrived: {early[:5]}")


def _take_env(env: dict[str, str]) -> None:
    """Child side: make ``env`` this process's environment; Airflow's own settings cannot change now."""
    changed = sorted(
        k for k in {*env, *os.environ}
        if (k == "AIRFLOW_HOME" or k.startswith("AIRFLOW__")) and env.get(k) != os.environ.get(k)
    )  # fmt: skip
    if changed:
        raise SystemExit(f"the run's Airflow settings differ from those the child started with: {', '.join(changed)}")
    own_tmp = os.environ.get("TMPDIR")  # start_child's, which DagRunChild.stop removes
    for key in set(os.environ) - set(env):
        del os.environ[key]
    os.environ.update(env)
    if own_tmp:
        os.environ["TMPDIR"] = own_tmp


def _write_dags_to_db(bag: Any) -> None:
    """Airflow 3.0: what its DAG processor does with a parsed file, which 3.1+'s dag.test() does itself.

    3.0's dag.test() leaves the DAG and its assets out of the DB: every task with an outlet then
    fails with AirflowInactiveAssetInInletOrOutletException, and the run has no DAG version.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager

    DagBundlesManager().sync_bundles_to_db()
    bag.sync_to_db("dags-folder", None)  # the default bundle, which AIRFLOW__CORE__DAGS_FOLDER configures


def _run_in_child(dag_id: str, conf: dict[str, Any], result_path: Path, logical_date: str | None) -> None:
    """Child side: one `dag.test()` run, then its outcome as JSON."""
    import airflow
    from airflow.models.asset import AssetEvent
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from packaging.version import Version
    from sqlalchemy import select

    bag = _dagbag_class()(dag_folder=str(REPO / "dags" / f"{dag_id}.py"))
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    dag = bag.dags[dag_id]
    if Version(Version(airflow.__version__).base_version) < Version("3.1"):
        _write_dags_to_db(bag)
    try:
        from airflow.sdk import timezone
    except ImportError:  # Airflow 3.0
        from airflow.utils import timezone  # type: ignore[no-redef,attr-defined]

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
            "airflow_version": airflow.__version__,
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
    parser = argparse.ArgumentParser(prog="python -m devstack.harness.airflow_env")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser(
        "run",
        help="warm up, read the run from stdin (one JSON line: env, conf, logical_date), run it with "
        "dag.test() and write its outcome as JSON; exit 0 doing nothing if stdin closes first",
    )
    run.add_argument("dag_id")
    run.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    _warm_up()
    line = sys.stdin.readline()
    if line:
        order = json.loads(line)
        _take_env(order["env"])
        _run_in_child(args.dag_id, order["conf"], args.result, order.get("logical_date"))
    # The run is over and its outcome written; Airflow's exit handlers take about 2 s
    # more and have nothing left to save (the database is committed, the log flushed).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
