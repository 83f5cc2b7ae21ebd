"""Pods that run: for the pods a label selector picks, the container kwok only pretends to run.

kwok moves every pod through its lifecycle and runs nothing. ``PodRunner`` watches the pods of one
namespace that match a label selector (the model server's) and, for each Running one with an IP,
runs its container with podman, on the host network, bound to the pod's IP, which it puts on the
loopback interface (``ip addr add <podIP>/32 dev lo``: root, CAP_NET_ADMIN). So what a cluster
network gives is real: the API server's pod proxy (``pods/<name>:<port>/proxy/...``) and a
client calling a pod's IP reach that pod's own server, and pods of the same Deployment listen on
the same ports side by side. When the pod is deleted (or gone), its preStop sleep runs, then the
container gets SIGTERM and, at the end of the pod's terminationGracePeriodSeconds, SIGKILL, as a
kubelet does; then the IP goes.

The container is the pod spec's (container_options: command, args, env, user, read-only root,
dropped capabilities, memory and CPU limits, emptyDir as tmpfs), pulled by podman
(``--tls-verify=false``: devstack's registry is plain HTTP), plus ``--host <podIP>``, the serving
server's own flag: a kubelet would give the pod a network namespace instead. Not faithful: the
pod's readiness is kwok's (Ready at once, not from its probe), and only its first container runs.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from devstack.containers import podman as pm
from devstack.containers.lambda_rie import container_options

log = logging.getLogger("devstack.kube.pods")

GROUP = "kube-pods"  # the podman label of these containers (pm.containers(GROUP) lists them)
POLL_SECONDS = 0.3  # how often the pods are listed: the kubelet's reaction time here

Request = Callable[..., tuple[int, Any]]  # KubeApi.request


@dataclass
class RunningPod:
    """One pod's container and the IP it listens on."""

    name: str
    ip: str
    container: pm.Container
    grace: int
    pre_stop: float = 0.0  # the container's preStop sleep, seconds
    stopping: bool = False
    exit_code: int | None = field(default=None)


class PodRunner:
    """Run the containers of the pods ``selector`` picks in ``namespace`` while the block lasts."""

    def __init__(self, request: Request, namespace: str, selector: str, store: pm.Store | None = None) -> None:
        self.request, self.namespace, self.selector = request, namespace, selector
        self.store = store or pm.default_store()
        self.pods: dict[str, RunningPod] = {}  # by pod UID
        self.errors: list[str] = []  # pods that could not start, with why
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kube-pods", daemon=True)
        self._stopper = ThreadPoolExecutor(4, thread_name_prefix="kube-pod-stop")
        self._lock = threading.Lock()

    def __enter__(self) -> PodRunner:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop watching; stop every container as a deletion would (SIGTERM, grace, SIGKILL) and drop its IP."""
        self._stop.set()
        self._thread.join(timeout=30)
        with self._lock:
            uids = list(self.pods)
        for uid in uids:
            self._begin_stop(uid, pre_stop=False)  # the whole "node" goes: no hooks
        self._stopper.shutdown(wait=True)

    def running(self) -> dict[str, RunningPod]:
        """The pods whose containers run (not being stopped), by pod name."""
        with self._lock:
            return {p.name: p for p in self.pods.values() if not p.stopping}

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception:  # noqa: BLE001 - a failed pass is logged and retried at the next
                log.exception("kube pods: reconcile failed")
            self._stop.wait(POLL_SECONDS)  # the watch's pace, not a wait for a condition

    def reconcile(self) -> None:
        """Start a container for each new Running pod with an IP; stop those of pods deleted or gone."""
        path = f"/api/v1/namespaces/{self.namespace}/pods?labelSelector={quote(self.selector)}"
        status, body = self.request("GET", path, timeout=10)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body}")
        seen: set[str] = set()
        for pod in body.get("items", []):
            uid, meta, pod_status = pod["metadata"]["uid"], pod["metadata"], pod.get("status") or {}
            seen.add(uid)
            if meta.get("deletionTimestamp"):
                self._begin_stop(uid)
            elif uid not in self.pods and pod_status.get("phase") == "Running" and pod_status.get("podIP"):
                self._start(pod)
        for uid in [u for u in self.pods if u not in seen]:
            self._begin_stop(uid)

    def _start(self, pod: dict[str, Any]) -> None:
        name, ip, spec = pod["metadata"]["name"], pod["status"]["podIP"], pod["spec"]
        first = spec["containers"][0]
        options, args, env = container_options(spec, first["name"])
        _ip("add", ip)
        container = pm.Container(
            first["image"], [*args, "--host", ip],
            options=["--network=host", "--tls-verify=false", *options], env=env, group=GROUP, store=self.store,
        )  # fmt: skip
        try:
            container.start()
        except pm.PodmanError as err:
            _ip("del", ip)
            self.errors.append(f"{name}: {err}")
            log.error("kube pods: %s did not start: %s", name, err)
            return
        grace = int(spec.get("terminationGracePeriodSeconds", 30))
        pre_stop = float((((first.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0))
        with self._lock:
            self.pods[pod["metadata"]["uid"]] = RunningPod(name, ip, container, grace, pre_stop)
        log.info("kube pods: %s runs %s on %s", name, first["image"], ip)

    def _begin_stop(self, uid: str, pre_stop: bool = True) -> None:
        with self._lock:
            running = self.pods.get(uid)
            if running is None or running.stopping:
                return
            running.stopping = True
        self._stopper.submit(self._stop_pod, uid, running, running.pre_stop if pre_stop else 0.0)

    def _stop_pod(self, uid: str, running: RunningPod, pre_stop: float) -> None:
        try:
            # The kubelet runs the preStop hook first (here only its sleep action), within the grace period:
            # the pod still serves while its endpoint leaves the Service, then gets SIGTERM.
            time.sleep(pre_stop)
            running.exit_code = running.container.stop(timeout=max(1, int(running.grace - pre_stop)))
            log.info("kube pods: %s stopped (exit %s)", running.name, running.exit_code)
        except pm.PodmanError as err:
            log.error("kube pods: stopping %s: %s", running.name, err)
        finally:
            with contextlib.suppress(pm.PodmanError):
                running.container.remove()
            _ip("del", running.ip)
            with self._lock:
                self.pods.pop(uid, None)


def _ip(action: str, ip: str) -> None:
    """Put ``ip`` on (add) or take it off (del) the loopback interface; already so is fine."""
    done = subprocess.run(["ip", "addr", action, f"{ip}/32", "dev", "lo"], capture_output=True, text=True, check=False)
    already = "File exists" in done.stderr or "Cannot assign requested address" in done.stderr
    if done.returncode != 0 and not already:
        raise RuntimeError(f"ip addr {action} {ip}/32 dev lo: {done.stderr.strip()} (devstack's pods need root)")
