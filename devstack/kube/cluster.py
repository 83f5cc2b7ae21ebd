"""KubeCluster: start etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok
(components.py says how each is run), wait until the cluster can run a Deployment, record it
(state.py) and stop it, leaving no process behind. The package's docstring says what is faithful.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devstack import procs
from devstack.kube import components, metrics
from devstack.kube.api import KubeApi, KubeError, condition
from devstack.kube.binaries import default_bin_dir, missing_binaries
from devstack.kube.pki import ensure_pki, kubeconfig, write_json
from devstack.kube.state import STATE_FILE, STOP_GRACE, STOP_ORDER, running, stop_recorded

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STATE_DIR = REPO_ROOT / "build" / "kube"
START_TIMEOUT = 180.0  # a cold start on a loaded 2-core machine takes well under a minute


def port_open(port: int) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class KubeCluster(KubeApi):
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok on 127.0.0.1.

    ``state_dir`` None means a temporary directory, removed by ``stop()``. ``nodes`` fake
    Nodes (``kwok-node-0``...) are created and kept Ready by kwok. ``etcd_binary``
    overrides the built etcd (e.g. Debian's ``/usr/bin/etcd``). ``reset`` wipes the
    etcd data of an earlier run first. ``metrics`` adds metrics-server and kwok's simulated
    resource usage (devstack.kube.metrics): the metrics API and the HPA work.
    """

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        bin_dir: Path | None = None,
        etcd_binary: Path | None = None,
        nodes: int = 2,
        reset: bool = False,
        view: bool = False,
        metrics: bool = False,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self._temporary = state_dir is None
        # A temporary state directory is only named here: start() makes it, stop() removes it.
        temporary = Path(tempfile.gettempdir()) / f"bank-kube-{uuid.uuid4().hex[:12]}"
        self.state_dir = Path(state_dir) if state_dir else temporary
        self.bin_dir = Path(bin_dir) if bin_dir else default_bin_dir()
        self.etcd_binary = Path(etcd_binary) if etcd_binary else self.bin_dir / "etcd"
        self.nodes = nodes
        self.reset = reset
        self.view = view
        self.metrics = metrics
        self.view_url = ""
        self.start_timeout = start_timeout
        self.pki = self.state_dir / "pki"
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.logs = self.state_dir / "logs"
        self.ports: dict[str, int] = {}
        self.pod_cidr = ""  # kwok's, chosen at start (components.pod_cidr)
        self.server = ""
        self.version: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._binaries: dict[str, str] = {}
        self._ssl: ssl.SSLContext | None = None
        self._t0 = time.monotonic()

    @classmethod
    def attach(cls, state_dir: Path) -> KubeCluster:
        """API access (as admin) to the cluster another object or process started in ``state_dir``;
        ``stop()`` on it stops that cluster too."""
        state = running(state_dir)
        if state is None:
            raise KubeError(f"no running cluster recorded in {state_dir}")
        cluster = cls(state_dir)
        cluster.server, cluster.view_url, cluster.ports = state["server"], state.get("view_url", ""), state["ports"]
        cluster.version = cluster.get("/version")
        return cluster

    # -- context manager --

    def __enter__(self) -> KubeCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- start --

    def start(self) -> KubeCluster:
        """Start every component and return when the cluster can run a Deployment:
        API ready, controllers and scheduler healthy, every Node Ready and schedulable."""
        missing = [m for m in missing_binaries(self.bin_dir) if m != "etcd"]
        if not os.access(self.etcd_binary, os.X_OK):
            missing.append(str(self.etcd_binary))
        if missing:
            raise KubeError(
                f"not built in {self.bin_dir}: {', '.join(missing)}; run `make kube` (devstack/kube/build.sh)"
            )
        t0 = self._t0 = time.monotonic()
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=not self._temporary)
        stop_recorded(self.state_dir)  # a cluster an earlier run left behind
        self.logs.mkdir(exist_ok=True)
        if self.reset:
            shutil.rmtree(self.state_dir / "etcd", ignore_errors=True)
        ensure_pki(self.pki)
        self.timings["pki"] = round(time.monotonic() - t0, 3)
        self.ports = {
            "etcd": procs.free_port(),
            "etcd-peer": procs.free_port(),
            "apiserver": procs.free_port(),
            "controller-manager": procs.free_port(),
            "scheduler": procs.free_port(),
            **({"view": procs.free_port()} if self.view else {}),
            **({"kwok": procs.free_port(), "metrics-server": procs.free_port()} if self.metrics else {}),
        }
        self.server = f"https://127.0.0.1:{self.ports['apiserver']}"
        for user in ("admin", "kube-controller-manager", "kube-scheduler", "kwok"):
            path = self.kubeconfig if user == "admin" else self.pki / f"{user}.kubeconfig"
            write_json(path, kubeconfig(self.server, self.pki, user), private=True)
        try:
            self._start_etcd()
            self._wait("etcd /health", self._etcd_healthy)
            self._start_apiserver()
            self._wait("kube-apiserver /readyz", lambda: self._get_status("/readyz") == 200)
            self._start_controller_manager()
            self._start_scheduler()
            self._install_kwok_stages()
            if self.metrics:
                self._install_kwok_metrics()
            self._create_nodes()
            self._start_kwok()
            if self.metrics:
                self._start_metrics_server()
            if self.view:
                self._start_view()
            self._write_state()
            self._wait("kube-controller-manager /healthz", lambda: self._component_healthy("controller-manager"))
            self._wait("kube-scheduler /healthz", lambda: self._component_healthy("scheduler"))
            self._wait(f"{self.nodes} kwok Node(s) Ready and untainted", self._nodes_ready)
            if self.metrics:
                self._wait(f"APIService {metrics.APISERVICE} Available", lambda: metrics.available(self))
            default_sa = "/api/v1/namespaces/default/serviceaccounts/default"
            self._wait("ServiceAccount default/default", lambda: self._get_status(default_sa) == 200)
            self.version = self.get("/version")
        except BaseException as exc:
            # A temporary state directory goes with stop(): keep what its logs said.
            tails = (
                "".join(f"\n--- {name}.log ---\n{self.log_tail(name, 15)}" for name in self._procs)
                if self._temporary
                else ""
            )
            self.stop()
            if tails and isinstance(exc, Exception):
                raise KubeError(f"{exc}{tails}") from exc
            raise
        self.timings["ready"] = round(time.monotonic() - t0, 3)
        self._write_state()
        return self

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd or self.state_dir,
                env=env,
                start_new_session=True,  # own session and process group
            )
        finally:
            log.close()
        self._procs[name] = proc
        self._binaries[name] = argv[0]
        self._write_state()

    def _start_etcd(self) -> None:
        self._spawn("etcd", components.etcd_argv(self.etcd_binary, self.state_dir, self.ports))

    def _start_apiserver(self) -> None:
        self._spawn("kube-apiserver", components.apiserver_argv(self.bin_dir, self.state_dir, self.pki, self.ports))

    def _start_controller_manager(self) -> None:
        self._spawn("kube-controller-manager", components.controller_manager_argv(self.bin_dir, self.pki, self.ports))

    def _start_scheduler(self) -> None:
        self._spawn("kube-scheduler", components.scheduler_argv(self.bin_dir, self.pki, self.ports))

    def _start_kwok(self) -> None:
        # kwok reads ~/.kwok/kwok.yaml if there is one: give it a home of its own.
        home = self.state_dir / "kwok-home"
        home.mkdir(exist_ok=True)
        env = {**os.environ, "HOME": str(home), "KWOK_WORKDIR": str(home / ".kwok")}
        self.pod_cidr = components.pod_cidr()
        port = self.ports["kwok"] if self.metrics else None
        self._spawn("kwok", components.kwok_argv(self.bin_dir, self.pki, self.pod_cidr, port), env=env)

    def _start_metrics_server(self) -> None:
        """Its API objects, a token of its ServiceAccount (a week: outlives `make up`), then the process."""
        metrics.install_metrics_server(self, self.bin_dir / "metrics-server.d", self.ports["metrics-server"])
        kubeconfig = self.pki / "metrics-server.kubeconfig"
        write_json(kubeconfig, self.token_kubeconfig("kube-system", "metrics-server", 7 * 86400), private=True)
        self._spawn(
            "metrics-server",
            metrics.metrics_server_argv(self.bin_dir, self.pki, kubeconfig, self.ports["metrics-server"]),
        )

    def _start_view(self) -> None:
        """devstack.kube.view: the read-only page per Deployment that links point at (make up)."""
        self.view_url = f"http://127.0.0.1:{self.ports['view']}"
        self._spawn(
            "view",
            [sys.executable, "-m", "devstack.kube.view", "--server", self.server,
             "--state-dir", str(self.state_dir), "--port", str(self.ports["view"])],
            cwd=REPO_ROOT,  # `python -m devstack...` imports devstack from the checkout
        )  # fmt: skip
        self._wait("the view answers", lambda: _http_ok(self.view_url + "/"))

    def _install_kwok_crd(self, path: Path, plural: str) -> None:
        """One of kwok's CRDs (kwok.x-k8s.io), then wait until it is established and its API answers."""
        crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        self.create(crds, path.read_text(), exist_ok=True)
        self._wait(f"CRD {plural}.kwok.x-k8s.io established",
                   lambda: condition(self.get(f"{crds}/{plural}.kwok.x-k8s.io"), "Established"))  # fmt: skip
        self._wait(f"{plural}.kwok.x-k8s.io served",
                   lambda: self._get_status(f"/apis/kwok.x-k8s.io/v1alpha1/{plural}") == 200)  # fmt: skip

    def _install_kwok_stages(self) -> None:
        """kwok's Stage CRD, then its default node and pod stages (kwokctl's defaults:
        node-initialize, node-heartbeat-with-lease, pod-ready, pod-complete, pod-delete)."""
        kwok_d = self.bin_dir / "kwok.d"
        self._install_kwok_crd(kwok_d / "stage-crd.yaml", "stages")
        for path in sorted((kwok_d / "stages").glob("*.yaml")):
            for doc in re.split(r"^---\s*$", path.read_text(), flags=re.MULTILINE):
                if doc.strip():
                    self.create("/apis/kwok.x-k8s.io/v1alpha1/stages", doc, exist_ok=True)

    def _install_kwok_metrics(self) -> None:
        """kwok's Metric and ClusterResourceUsage CRDs, then its resource-usage objects (devstack.kube.metrics)."""
        metrics_d = self.bin_dir / "kwok.d" / "metrics"
        for plural in metrics.KWOK_CRDS:
            self._install_kwok_crd(metrics_d / f"{plural}-crd.yaml", plural)
        for file, plural in metrics.KWOK_OBJECTS.items():
            self.create(f"/apis/kwok.x-k8s.io/v1alpha1/{plural}", (metrics_d / file).read_text(), exist_ok=True)

    def _create_nodes(self) -> None:
        for i in range(self.nodes):
            self.create("/api/v1/nodes", components.kwok_node(f"kwok-node-{i}"), exist_ok=True)

    # -- readiness --

    def _wait(self, what: str, ready: Callable[[], bool], timeout: float | None = None) -> None:
        """Poll ``ready`` until true; fail at once if a started process died."""
        deadline = self._t0 + (timeout or self.start_timeout)  # one budget for all of start()
        delay = 0.05
        while True:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise KubeError(
                        f"{name} exited with {proc.returncode} while waiting for {what}:\n{self.log_tail(name)}"
                    )
            try:
                if ready():
                    self.timings[what] = round(time.monotonic() - self._t0, 3)
                    return
            except (OSError, urllib.error.URLError, KubeError, ValueError):
                pass
            if time.monotonic() > deadline:
                elapsed = time.monotonic() - self._t0
                raise KubeError(f"timed out after {elapsed:.0f} s waiting for {what}; logs in {self.logs}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _etcd_healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.ports['etcd']}/health"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return json.loads(resp.read()).get("health") == "true"

    def _component_healthy(self, name: str) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        url = f"https://127.0.0.1:{self.ports[name]}/healthz"
        with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
            return resp.status == 200

    def _nodes_ready(self) -> bool:
        items = self.get("/api/v1/nodes?labelSelector=type%3Dkwok")["items"]
        ready = [
            n
            for n in items
            if condition(n, "Ready")
            and not any(t.get("key") == "node.kubernetes.io/not-ready" for t in n["spec"].get("taints", []))
        ]
        return len(ready) >= self.nodes

    # -- bookkeeping --

    def pids(self) -> dict[str, int]:
        """Process id of each component started by this object."""
        return {name: proc.pid for name, proc in self._procs.items()}

    def rss(self) -> dict[str, int | None]:
        """Resident memory (bytes) of each component, from /proc."""
        return {name: procs.rss_bytes(pid) for name, pid in self.pids().items()}

    def log_tail(self, name: str, lines: int = 30) -> str:
        """The last lines of a component's log."""
        try:
            return "\n".join((self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def _write_state(self) -> None:
        write_json(
            self.state_dir / STATE_FILE,
            {
                "server": self.server,
                "view_url": self.view_url,
                "kubeconfig": str(self.kubeconfig),
                "ports": self.ports,
                "version": self.version.get("gitVersion", ""),
                "timings": self.timings,
                "processes": {
                    name: {"pid": proc.pid, "binary": self._binaries[name]} for name, proc in self._procs.items()
                },
            },
        )

    # -- stop --

    def stop(self) -> None:
        """Stop every component (clients first, etcd last): SIGTERM to its process group,
        SIGKILL after a grace period. Removes the state directory if it was temporary."""
        groups = [[n for n in STOP_ORDER[:-2] if n in self._procs], ["kube-apiserver"], ["etcd"]]
        for group in groups:
            live = [self._procs[n] for n in group if n in self._procs]
            for proc in live:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
            for proc in live:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            for proc in live:
                # Whatever is left of the group (the component or anything it started).
                if procs.group_pids(proc.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._procs.clear()
        stop_recorded(self.state_dir)  # processes recorded by another object (e.g. the CLI)
        (self.state_dir / STATE_FILE).unlink(missing_ok=True)
        if self._temporary:
            shutil.rmtree(self.state_dir, ignore_errors=True)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.status == 200


def start_in_background(cluster: KubeCluster) -> Callable[[], KubeCluster]:
    """Start ``cluster`` in a thread (start() mostly waits on its processes), so that other
    work overlaps its ~7 s; the function returned waits for it and returns it, or raises what
    start() raised. Call it before stopping the cluster, also when other work failed."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            cluster.start()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by join()
            failure.append(exc)

    thread = threading.Thread(target=run, name="kube-start", daemon=True)
    thread.start()

    def join() -> KubeCluster:
        thread.join()
        if failure:
            raise failure[0]
        return cluster

    return join
