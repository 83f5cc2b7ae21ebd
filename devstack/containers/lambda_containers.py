"""devstack's Lambda execution environments: the function's image run by podman, kept warm per version.

``Environments.invoke(spec, payload, request_id)`` runs one invoke of a
function version in a container of its image (``devstack.containers.lambda_rie.LambdaContainer``:
AWS's Runtime Interface Emulator + awslambdaric inside, on the host network),
as Lambda runs it:

- the image is pulled by digest from devstack's registry (once per digest);
- the container gets the function's Environment.Variables, Lambda's own
  variables, its execution role's temporary credentials (minted when the
  container starts: ``credentials``), ``--memory`` = MemorySize, the RIE's
  timeout = Timeout, a read-only root with EphemeralStorage as a tmpfs /tmp, a
  non-root user, no capabilities, the ImageConfig's EntryPoint, Command and
  WorkingDirectory;
- a container serves one invoke at a time and stays warm for the next invoke of
  the same version: the second invoke pays no start, no imports, no model load.
  Concurrent invokes of one version get one container each, up to
  ``max_per_version``; more wait for one to free (Lambda would start more);
- a version whose spec changed (``$LATEST`` after UpdateFunctionCode or a
  configuration change) gets new containers, the old ones are removed; per
  function, only the ``keep_versions`` most recently invoked versions keep
  their containers (Lambda reclaims idle environments too, later);
- the answer is Lambda's: the payload, and FunctionError ``Unhandled`` for a
  handler error, an init error (the RIE answers 502; the next invoke
  initialises again), a timeout (``Sandbox.Timedout``; the RIE kills the
  runtime and the next invoke is a cold start) or a container that died
  (``Runtime.ExitError``, e.g. the memory limit's OOM kill; the container is
  replaced).

Every container carries the label ``org.bank-ml.devstack=<label>``, one label
per devstack (derived from its state directory), so ``close()`` and a later
``remove_all(label)`` (``python -m devstack down`` after a crash) find them all.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from devstack.containers import podman as pm
from devstack.containers.lambda_rie import LambdaContainer

log = logging.getLogger("devstack.lambda")

START_TIMEOUT = 60.0  # podman run -> the RIE listening; generous on a loaded 2-core machine
TAIL_WAIT = 1.0  # LogType=Tail waits this long at most for the RIE's REPORT line to reach the log file
# A k8s-file log line: "<RFC 3339 time> stdout|stderr F|P <text>" (P: a partial line continues).
_K8S_LINE = re.compile(r"^\S+ (?:stdout|stderr) ([FP]) ?(.*)$")


def label_for(state_dir: Path) -> str:
    """The container label value of the devstack whose state is in ``state_dir``."""
    return "lambda-" + hashlib.sha256(str(Path(state_dir).resolve()).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class FunctionSpec:
    """What decides a function version's execution environment; a changed spec gets new containers."""

    function_arn: str  # unqualified
    function_name: str
    version: str  # "$LATEST" or "N"
    image: str  # host:port/repo@sha256:..., pulled by digest
    memory_mb: int = 128
    timeout_s: int = 3
    tmp_mb: int = 512
    environment: tuple[tuple[str, str], ...] = ()
    entrypoint: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    workdir: str | None = None
    region: str = "us-east-1"
    role: str = ""  # the execution role: its temporary credentials are the container's

    @property
    def key(self) -> tuple[str, str]:
        return self.function_arn, self.version


_RETIRED = FunctionSpec(function_arn="", function_name="", version="", image="")  # a deleted function's


@dataclass(frozen=True)
class Result:
    """One invoke's outcome, as Lambda's Invoke API reports it, plus what devstack saw."""

    payload: bytes
    function_error: str | None
    log: str  # the container's output during the invoke (START ... REPORT)
    image: str  # repo@sha256:... of the image the container ran (podman's ImageDigest)
    container: str
    cold: bool  # a container was started for this invoke
    seconds: float  # wall time of the invoke, container start included when cold


class _LogFile:
    """Reads a container's k8s-file log from where it last stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self._partial = ""

    def read(self) -> list[str]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        cut = data.rfind(b"\n") + 1  # a line still being written stays for the next read
        self.offset += cut
        lines = []
        for raw in data[:cut].decode(errors="replace").splitlines():
            match = _K8S_LINE.match(raw)
            if match is None:
                continue
            self._partial += match.group(2)
            if match.group(1) == "F":
                lines.append(self._partial)
                self._partial = ""
        return lines


@dataclass
class _Env:
    """One container of a function version, idle or serving one invoke."""

    spec: FunctionSpec
    container: LambdaContainer
    logfile: _LogFile
    image: str
    busy: bool = False
    last_used: float = field(default_factory=time.monotonic)


class Environments:
    """Warm containers per function version (see the module doc); thread-safe."""

    def __init__(
        self,
        label: str,
        store: pm.Store | None = None,
        max_per_version: int = 4,
        keep_versions: int = 2,
        extra_env: Mapping[str, str] | None = None,
        credentials: Callable[[FunctionSpec], Mapping[str, str]] | None = None,
    ) -> None:
        self.label = label
        self.store = store
        self.max_per_version = max_per_version
        self.keep_versions = keep_versions
        self.extra_env = dict(extra_env or {})  # e.g. AWS_ENDPOINT_URL: the handler reaches devstack
        self.credentials = credentials  # AWS_ACCESS_KEY_ID... of a container, minted when it starts
        self._envs: dict[tuple[str, str], list[_Env]] = {}
        self._recent: dict[str, OrderedDict[str, None]] = {}  # function ARN -> versions, least recent first
        self._starting: dict[tuple[str, str], int] = {}  # containers being started, per version
        self._cond = threading.Condition()
        self._pulled: set[str] = set()
        self._pull_lock = threading.Lock()
        self._closed = False

    # -- the invoke -----------------------------------------------------------------

    def invoke(self, spec: FunctionSpec, payload: bytes, request_id: str, tail: bool = False) -> Result:
        """Run one invoke of ``spec``'s version in a warm container (started if none is idle)."""
        started = time.monotonic()
        env, cold = self._acquire(spec)
        healthy = True
        try:
            if not cold:
                env.logfile.read()  # what an earlier invoke left in the log belongs to that one
            try:
                answer = env.container.invoke(payload, request_id=request_id)
                function_error, body = answer.function_error, answer.payload
            except (OSError, http.client.HTTPException) as exc:
                # The RIE is PID 1: the connection drops only if the container died (OOM kill, crash).
                healthy = False
                function_error, body = "Unhandled", self._exit_error(env, request_id, exc)
            lines = self._log_lines(env, request_id, wait=tail and healthy)
            return Result(
                payload=body,
                function_error=function_error,
                log="\n".join(lines) + ("\n" if lines else ""),
                image=env.image,
                container=env.container.name,
                cold=cold,
                seconds=time.monotonic() - started,
            )
        finally:
            self._release(env, healthy)

    def _exit_error(self, env: _Env, request_id: str, exc: Exception) -> bytes:
        state: dict[str, object] = {}
        try:
            state = env.container.state()
        except pm.PodmanError:
            pass
        reason = "signal: killed" if state.get("OOMKilled") else f"exit status {state.get('ExitCode', '?')}"
        log.warning("container %s of %s died during an invoke (%s): %s", env.container.name, env.spec.key, reason, exc)
        message = f"RequestId: {request_id} Error: Runtime exited with error: {reason}"
        return json.dumps({"errorType": "Runtime.ExitError", "errorMessage": message}).encode()

    def _log_lines(self, env: _Env, request_id: str, wait: bool) -> list[str]:
        """The container's output since the last read; with ``wait``, until the RIE's REPORT line for the invoke."""
        lines = env.logfile.read()
        deadline = time.monotonic() + TAIL_WAIT
        marker = f"REPORT RequestId: {request_id}"
        while wait and not any(line.startswith(marker) for line in lines) and time.monotonic() < deadline:
            time.sleep(0.005)  # conmon writes the log asynchronously: poll for the line
            lines += env.logfile.read()
        return lines

    # -- containers ---------------------------------------------------------------------

    def _acquire(self, spec: FunctionSpec) -> tuple[_Env, bool]:
        """An idle container of ``spec`` (marked busy), else a new one once there is room; (env, started)."""
        stale: list[_Env] = []
        env: _Env | None = None
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("devstack's Lambda is shutting down")
                envs = self._envs.setdefault(spec.key, [])
                # A changed spec (new image, environment, memory...): its idle containers go.
                for old in [e for e in envs if e.spec != spec and not e.busy]:
                    envs.remove(old)
                    stale.append(old)
                idle = [e for e in envs if e.spec == spec and not e.busy]
                if idle:
                    env = idle[-1]
                    env.busy = True
                    break
                if len(envs) + self._starting.get(spec.key, 0) < self.max_per_version:
                    self._starting[spec.key] = self._starting.get(spec.key, 0) + 1
                    break
                self._cond.wait()
            self._touch(spec)
            stale += self._evict_versions(spec)
        self._remove(stale)
        if env is not None:
            return env, False
        try:
            env = self._start(spec)
        finally:
            with self._cond:
                self._starting[spec.key] -= 1
                self._cond.notify_all()
        with self._cond:
            if self._closed:
                self._remove([env])
                raise RuntimeError("devstack's Lambda is shutting down")
            self._envs.setdefault(spec.key, []).append(env)
        return env, True

    def _touch(self, spec: FunctionSpec) -> None:
        recent = self._recent.setdefault(spec.function_arn, OrderedDict())
        recent.pop(spec.version, None)
        recent[spec.version] = None

    def _evict_versions(self, spec: FunctionSpec) -> list[_Env]:
        """Idle containers of the function's versions beyond the ``keep_versions`` most recent."""
        recent = self._recent.get(spec.function_arn, OrderedDict())
        gone: list[_Env] = []
        for version in list(recent)[: max(0, len(recent) - self.keep_versions)]:
            envs = self._envs.get((spec.function_arn, version), [])
            for env in [e for e in envs if not e.busy]:
                envs.remove(env)
                gone.append(env)
            if not envs and not self._starting.get((spec.function_arn, version)):
                recent.pop(version)
                self._envs.pop((spec.function_arn, version), None)
        return gone

    def _release(self, env: _Env, healthy: bool) -> None:
        with self._cond:
            env.busy = False
            env.last_used = time.monotonic()
            retire = not healthy or env.spec is _RETIRED
            if retire:
                for envs in self._envs.values():
                    if env in envs:
                        envs.remove(env)
            self._cond.notify_all()
        if retire:
            self._remove([env])

    def pull(self, image: str) -> None:
        """``podman pull`` of ``image`` (by digest) unless the store has it; once per image."""
        with self._pull_lock:
            if image in self._pulled:
                return
            if not pm.image_exists(image, self.store):
                pm.podman("pull", "--tls-verify=false", "-q", image, store=self.store, timeout=600)
            self._pulled.add(image)

    def _start(self, spec: FunctionSpec) -> _Env:
        self.pull(spec.image)
        container = LambdaContainer(
            spec.image,
            memory_mb=spec.memory_mb,
            timeout_s=spec.timeout_s,
            env={**dict(spec.environment), **self.extra_env, **(self.credentials(spec) if self.credentials else {})},
            function_name=spec.function_name,
            version=spec.version,
            region=spec.region,
            entrypoint=spec.entrypoint,
            command=spec.command,
            workdir=spec.workdir,
            tmp_mb=spec.tmp_mb,
            group=self.label,
            store=self.store,
        )
        container.start()
        try:
            inspected = pm.podman(
                "inspect", "--format", "{{.ImageDigest}}|{{.HostConfig.LogConfig.Path}}", container.name,
                store=self.store,
            ).strip()  # fmt: skip
            digest, _, log_path = inspected.partition("|")
            container.wait_ready(START_TIMEOUT)
        except BaseException:
            container.remove()
            raise
        repo = spec.image.split("@", 1)[0]
        log.info("started %s for %s version %s (%s@%s)", container.name, spec.function_name, spec.version, repo, digest)
        return _Env(
            spec=spec, container=container, logfile=_LogFile(Path(log_path)), image=f"{repo}@{digest}", busy=True
        )

    def _remove(self, envs: list[_Env]) -> None:
        for env in envs:
            try:
                env.container.remove()
            except pm.PodmanError as exc:
                log.warning("cannot remove %s: %s", env.container.name, exc)

    # -- lifecycle ------------------------------------------------------------------------

    def forget(self, function_arn: str, version: str | None = None) -> None:
        """Remove the containers of a deleted function (or one deleted version); busy ones go when released."""
        with self._cond:
            keys = [k for k in self._envs if k[0] == function_arn and (version is None or k[1] == version)]
            gone = []
            for key in keys:
                envs = self._envs[key]
                gone += [e for e in envs if not e.busy]
                for env in envs:
                    env.spec = _RETIRED  # a busy one no longer matches any spec: released, then replaced
                envs[:] = [e for e in envs if e.busy]
                if not envs:
                    del self._envs[key]
            if version is None:
                self._recent.pop(function_arn, None)
        self._remove(gone)

    def containers(self) -> list[str]:
        """Names of this devstack's Lambda containers, as podman lists them."""
        return pm.containers(self.label, self.store)

    def close(self) -> None:
        """Remove every container (busy ones too: their invokes fail); later invokes are refused."""
        with self._cond:
            self._closed = True
            envs = [env for group in self._envs.values() for env in group]
            self._envs.clear()
            self._cond.notify_all()
        for env in envs:
            env.container.id = None  # removed below, all in one podman call
        remove_leftovers(self.label, self.store)


def remove_all(label: str, store: pm.Store | None = None) -> list[str]:
    """Remove every container labelled ``label`` (running or not); their names."""
    names = pm.containers(label, store)
    if names:
        pm.podman("rm", "-f", "--ignore", "-t", "0", *names, store=store, timeout=120)
    return names


def remove_leftovers(label: str, store: pm.Store | None = None) -> None:
    """``remove_all``, logged; without podman (devstack in compose) there is nothing to remove."""
    if pm.unavailable_reason(store) is not None:
        log.warning("podman cannot run here: devstack's Lambda cannot run images (%s)", pm.unavailable_reason(store))
        return
    left = remove_all(label, store)
    if left:
        log.info("removed %d Lambda containers: %s", len(left), ", ".join(left))
