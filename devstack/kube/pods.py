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
server's own flag: a kubelet would give the pod a network namespace instead.

Readiness is the probe's, as a kubelet's: a kwok Stage (``started_stage``, weight 1, for these pods
only) starts them Running but not Ready, and the runner sets the Ready and ContainersReady
conditions (the pod's status subresource) from the container's readinessProbe (httpGet), so the
Deployment's availability and the Service's endpoints follow the server, not kwok. Not faithful:
the probe runs every POLL_SECONDS, not at the probe's periodSeconds, with no failure threshold;
only the first container runs; no liveness or startup probe.

With ``report_usage``, the runner plays the kubelet's resource metrics too: every USAGE_SECONDS it
reads each container's CPU time and resident memory from /proc (its main process and the children it
waited for) and writes the CPU rate over that interval and the memory as the pod's
``kwok.x-k8s.io/usage-cpu`` / ``-memory`` annotations, which kwok's ClusterResourceUsage turns into
the ``/metrics/resource`` that metrics-server scrapes (devstack.kube.metrics). So requests served make
the HPA scale, with the lag of a sample, a scrape and the HPA's sync.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from devstack import procs
from devstack.containers import podman as pm
from devstack.containers.lambda_rie import container_options
from devstack.kube.metrics import USAGE_CPU, USAGE_MEMORY

log = logging.getLogger("devstack.kube.pods")

GROUP = "kube-pods"  # the podman label of these containers, + "-<namespace>" per runner (PodRunner.group)
POLL_SECONDS = 0.3  # how often the pods are listed: the kubelet's reaction time here
USAGE_SECONDS = 5.0  # how often each container's CPU and memory are sampled (report_usage)

Request = Callable[..., tuple[int, Any]]  # KubeApi.request
# kwok's own pod-ready template (kwok.d/stages/pod-ready.yaml), with Ready and ContainersReady False.
_STARTED = """\
{{ $now := Now }}
conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Initialized
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  type: Ready
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  type: ContainersReady
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: false
  restartCount: 0
  started: true
  state:
    running:
      startedAt: {{ $now | Quote }}
{{ end }}
{{ $hostIPs := NodeIPsWith .spec.nodeName }}
{{ with $hostIPs }}
hostIP: {{ index . 0 | Quote }}
hostIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
{{ $podIPs := PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
{{ with $podIPs }}
podIP: {{ index . 0 | Quote }}
podIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
phase: Running
startTime: {{ $now | Quote }}
"""


@dataclass
class RunningPod:
    """One pod's container and the IP it listens on."""

    name: str
    ip: str
    container: pm.Container
    grace: int
    pre_stop: float = 0.0  # the container's preStop sleep, seconds
    probe: tuple[str, int] | None = None  # the readinessProbe's httpGet path and port
    ready: bool = False
    container_name: str = ""
    stopping: bool = False
    exit_code: int | None = field(default=None)
    pid: int = 0  # the container's main process, on this host
    cpu: tuple[float, float] | None = None  # the last sample: (time.monotonic(), CPU seconds)
    usage: dict[str, str] = field(default_factory=dict)  # the annotations last written


class PodRunner:
    """Run the containers of the pods ``selector`` picks in ``namespace`` while the block lasts."""

    def __init__(
        self, request: Request, namespace: str, selector: str, store: pm.Store | None = None, report_usage: bool = False
    ) -> None:
        self.request, self.namespace, self.selector = request, namespace, selector
        self.report_usage = report_usage
        self._next_usage = 0.0
        self.store = store or pm.default_store()
        self.group = f"{GROUP}-{namespace}"  # pm.containers(runner.group): this runner's containers
        self.pods: dict[str, RunningPod] = {}  # by pod UID
        self.errors: list[str] = []  # pods that could not start, with why
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kube-pods", daemon=True)
        self._stopper = ThreadPoolExecutor(4, thread_name_prefix="kube-pod-stop")
        self._lock = threading.Lock()

    @property
    def stage_name(self) -> str:
        return f"devstack-pods-started-{self.namespace}"[:63]

    def __enter__(self) -> PodRunner:
        status, body = self.request("PATCH", f"/apis/kwok.x-k8s.io/v1alpha1/stages/{self.stage_name}"
                                    "?fieldManager=devstack&force=true", json.dumps(self.started_stage()),
                                    content_type="application/apply-patch+yaml")  # fmt: skip
        if status not in (200, 201):
            raise RuntimeError(f"apply Stage {self.stage_name}: {status} {body}")
        self._thread.start()
        return self

    def started_stage(self) -> dict[str, Any]:
        """kwok's pod-ready stage for these pods, but not Ready: Running, with an IP, containers started."""
        labels = dict(part.split("=", 1) for part in self.selector.split(","))
        match = " && ".join(
            [f"self.metadata.namespace == {json.dumps(self.namespace)}"]
            + [f"self.metadata.labels[{json.dumps(k)}] == {json.dumps(v)}" for k, v in labels.items()]
        )
        return {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "Stage",
            "metadata": {"name": self.stage_name},
            "spec": {
                "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
                "selector": {"matchExpressions": [
                    {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
                    {"key": ".status.phase", "operator": "In", "values": ["Pending"]},
                    {"cel": {"expression": f"has(self.metadata.labels) && {match}"}},
                ]},
                "weight": 1,
                "next": {"statusTemplate": _STARTED},
            },
        }  # fmt: skip

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
        self.request("DELETE", f"/apis/kwok.x-k8s.io/v1alpha1/stages/{self.stage_name}", timeout=10)

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
                # An IP kwok handed out again while the pod that had it still stops: start once it is free.
                if not any(p.ip == pod_status["podIP"] for p in self.pods.values()):
                    self._start(pod)
        for uid in [u for u in self.pods if u not in seen]:
            self._begin_stop(uid)
        with self._lock:
            probing = [p for p in self.pods.values() if not p.stopping and p.probe]
        for running in probing:
            self._probe(running)
        if self.report_usage and time.monotonic() >= self._next_usage:
            self._next_usage = time.monotonic() + USAGE_SECONDS
            for running in self.running().values():
                self._report_usage(running)

    def _report_usage(self, running: RunningPod) -> None:
        """Sample the container's CPU and memory; annotate the pod with the CPU rate since the last sample."""
        now, cpu = time.monotonic(), _cpu_seconds(running.pid)
        last, running.cpu = running.cpu, (now, cpu) if cpu is not None else None
        if last is None or cpu is None or now <= last[0]:
            return
        millicores = max(1, round((cpu - last[1]) / (now - last[0]) * 1000))
        usage = {USAGE_CPU: f"{millicores}m", USAGE_MEMORY: f"{max(1, (procs.rss_bytes(running.pid) or 0) >> 20)}Mi"}
        if usage == running.usage:
            return
        path = f"/api/v1/namespaces/{self.namespace}/pods/{running.name}"
        status, body = self.request(
            "PATCH", path, json.dumps({"metadata": {"annotations": usage}}), content_type="application/merge-patch+json"
        )
        if status == 200:
            running.usage = usage
        elif status != 404:  # 404: deleted meanwhile
            log.warning("kube pods: usage of %s not written: %s %s", running.name, status, body)

    def _probe(self, running: RunningPod) -> None:
        """The readiness probe: set the pod's Ready condition when its answer changes it."""
        assert running.probe is not None
        path, port = running.probe
        conn = http.client.HTTPConnection(running.ip, port, timeout=1)
        try:
            conn.request("GET", path)
            ready = conn.getresponse().status < 400  # as the kubelet's httpGet: 200-399 passes
        except OSError:
            ready = False
        finally:
            conn.close()
        if ready == running.ready:
            return
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        value = "True" if ready else "False"
        patch = {"status": {
            "conditions": [{"type": t, "status": value, "lastTransitionTime": now} for t in ("Ready", "ContainersReady")],
            "containerStatuses": [{"name": running.container_name, "ready": ready}],
        }}  # fmt: skip
        path = f"/api/v1/namespaces/{self.namespace}/pods/{running.name}/status"
        status, body = self.request(
            "PATCH", path, json.dumps(patch), content_type="application/strategic-merge-patch+json"
        )
        if status == 200:
            running.ready = ready
            log.info("kube pods: %s %s", running.name, "ready" if ready else "not ready")
        elif status != 404:  # 404: deleted meanwhile
            log.warning("kube pods: readiness of %s not set: %s %s", running.name, status, body)

    def _start(self, pod: dict[str, Any]) -> None:
        name, ip, spec = pod["metadata"]["name"], pod["status"]["podIP"], pod["spec"]
        first = spec["containers"][0]
        options, args, env = container_options(spec, first["name"])
        _ip("add", ip)
        container = pm.Container(
            first["image"], [*args, "--host", ip],
            options=["--network=host", "--tls-verify=false", *options], env=env, group=self.group, store=self.store,
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
        running = RunningPod(name, ip, container, grace, pre_stop, _http_probe(first), container_name=first["name"])
        if self.report_usage:
            running.pid = int(container.state().get("Pid") or 0)  # type: ignore[call-overload]
        with self._lock:
            self.pods[pod["metadata"]["uid"]] = running
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


def _http_probe(container: dict[str, Any]) -> tuple[str, int] | None:
    """The container's readinessProbe httpGet as (path, port number); a named port resolved; None without one."""
    get = (container.get("readinessProbe") or {}).get("httpGet")
    if not get:
        return None
    port = get["port"]
    if isinstance(port, str) and not port.isdigit():
        port = next(p["containerPort"] for p in container.get("ports", []) if p.get("name") == port)
    return str(get.get("path", "/")), int(port)


def _cpu_seconds(pid: int) -> float | None:
    """CPU time of process ``pid`` and of the children it waited for (/proc/<pid>/stat), or None if gone."""
    if pid <= 0:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command's name: state, ppid, ... utime, stime, cutime, cstime are fields 14-17 of the line.
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _ip(action: str, ip: str) -> None:
    """Put ``ip`` on (add) or take it off (del) the loopback interface; already so is fine."""
    done = subprocess.run(["ip", "addr", action, f"{ip}/32", "dev", "lo"], capture_output=True, text=True, check=False)
    already = any(
        text in done.stderr for text in ("File exists", "already assigned", "Cannot assign requested address")
    )
    if done.returncode != 0 and not already:
        raise RuntimeError(f"ip addr {action} {ip}/32 dev lo: {done.stderr.strip()} (devstack's pods need root)")
