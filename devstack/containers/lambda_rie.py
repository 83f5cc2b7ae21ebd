"""Run the serving image as Lambda runs it (through AWS's Runtime Interface Emulator) and as Kubernetes does.

``LambdaContainer`` starts an image built on the local Lambda base
(``devstack.containers.lambda_image``) with podman on the host's network: its
``/lambda-entrypoint.sh`` finds no ``AWS_LAMBDA_RUNTIME_API`` and execs the RIE,
which serves ``POST /2015-03-31/functions/function/invocations`` on
127.0.0.1:<free port> (``RIE_ADDRESS``) and the Runtime API for awslambdaric on
another (``RIE_RUNTIME_API_ADDRESS``). As on Lambda: a memory limit
(``--memory``, also ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``), the function timeout
(``AWS_LAMBDA_FUNCTION_TIMEOUT``), a read-only root file system with a 512 MB
tmpfs at /tmp, a non-root user and no capabilities; the handler is the image's
CMD unless ``handler`` names another.

``invoke`` answers like boto3's Lambda ``invoke`` does (``Invocation``: the
payload and ``function_error``), translating what the RIE sends (checked with RIE
v0.0.0-20261030222936-bef5c4ba774d), which differs from Lambda's Invoke API:

- the handler raised: RIE 200 with ``{"errorMessage", "errorType", "requestId",
  "stackTrace"}`` and *no* ``X-Amz-Function-Error`` header (Lambda: 200, header
  ``Unhandled``, the same payload) -> ``function_error="Unhandled"``;
- init failed (the handler module raised at import, e.g. a bad model): RIE 502
  with the same kind of payload (``requestId`` empty) -> ``Unhandled``; the next
  invoke initialises again, as Lambda does;
- timeout: RIE 200 with the plain text ``Task timed out after N.00 seconds``
  (not JSON; the runtime is killed and the next invoke is a cold start) ->
  ``Unhandled`` with the payload ``{"errorType": "Sandbox.Timedout",
  "errorMessage": "<that text>"}``, the shape Lambda reports;
- concurrency: one invoke at a time. A second invoke while one runs crashes this
  RIE (nil pointer panic in rapidcore.Server.Invoke after "ReserveFailed:
  AlreadyReserved"; it is PID 1, so the container exits and the first invoke's
  connection drops). Lambda would start another execution environment;
  ``invoke`` serialises, and concurrent load needs one container per invoke.

``HttpContainer`` runs the Kubernetes command of the same image
(``python -m bank_serving.http``) with what the Deployment manifest
(plugins/bank_pipeline/manifests/deployment.yaml) asks, read from it: user
1000:1000, read-only root, the emptyDir /tmp as a tmpfs, all capabilities
dropped, no privilege escalation, the memory and CPU limits, its env.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack import procs
from devstack.containers import podman as pm

INVOKE_PATH = "/2015-03-31/functions/function/invocations"
INIT_SECONDS = 10  # Lambda's limit on the init phase (imports, model load)
LAMBDA_USER = "993:990"  # any unprivileged uid: Lambda runs images as a least-privileged user, not root
TIMEOUT_TEXT = re.compile(r"^Task timed out after [0-9.]+ seconds$")
ERROR_KEYS = {"errorMessage", "errorType"}
INIT_REPORT = re.compile(r"INIT REPORT\(durationMs: ([0-9.]+)\)")


@dataclass(frozen=True)
class Invocation:
    """One invoke, as boto3's ``invoke`` reports it: payload bytes and FunctionError (None if it succeeded)."""

    payload: bytes
    function_error: str | None
    rie_status: int  # the HTTP status the RIE answered (200, or 502 after an init error)
    seconds: float  # client-side wall time of the request

    def json(self) -> Any:
        return json.loads(self.payload)


def read_function_error(status: int, body: bytes, request_id: str = "") -> tuple[str | None, bytes]:
    """(FunctionError, payload) of a RIE answer: Lambda's Invoke API view of it (see the module doc)."""
    text = body.decode(errors="replace").strip()
    if status == 200 and TIMEOUT_TEXT.match(text):
        message = f"RequestId: {request_id} Error: {text}" if request_id else text
        return "Unhandled", json.dumps({"errorType": "Sandbox.Timedout", "errorMessage": message}).encode()
    try:
        value = json.loads(body) if body else None
    except ValueError:
        value = None
    # The runtime's error shape: errorMessage + errorType (+ requestId, stackTrace) and nothing else.
    is_error = isinstance(value, dict) and ERROR_KEYS <= set(value) <= ERROR_KEYS | {"requestId", "stackTrace"}
    if status != 200 or is_error:
        if not isinstance(value, dict):
            prefix = f"RequestId: {request_id} " if request_id else ""
            message = f"{prefix}Error: Runtime exited without providing a reason (RIE answered {status}: {text[:500]})"
            body = json.dumps({"errorType": "Runtime.Unknown", "errorMessage": message}).encode()
        return "Unhandled", body
    return None, body


def init_duration_ms(logs: str) -> float | None:
    """The init phase's duration the RIE logged (``INIT REPORT(durationMs: ...)``), the last one, if any."""
    found = INIT_REPORT.findall(logs)
    return float(found[-1]) if found else None


class LambdaContainer(pm.Container):
    """An image run as a Lambda function under the RIE, on 127.0.0.1 ports of its own.

    ``env`` is the function's environment (Lambda's own variables win over it,
    as Lambda reserves them); ``entrypoint``, ``handler`` and ``workdir`` are
    the function's ImageConfig (EntryPoint, Command, WorkingDirectory);
    ``tmp_mb`` its ephemeral storage (/tmp).
    """

    def __init__(
        self,
        image: str,
        *,
        memory_mb: int = 512,
        timeout_s: int = 30,
        handler: str | None = None,
        env: Mapping[str, str] | None = None,
        volumes: Sequence[str] = (),
        function_name: str = "bank-model",
        version: str = "$LATEST",
        region: str = "us-east-1",
        entrypoint: Sequence[str] = (),
        command: Sequence[str] = (),
        workdir: str | None = None,
        tmp_mb: int = 512,
        group: str = "lambda",
        store: pm.Store | None = None,
    ) -> None:
        self.port = procs.free_port()
        self.runtime_api_port = procs.free_port()
        self.timeout_s = timeout_s
        lambda_env = {
            **(env or {}),
            "RIE_ADDRESS": f"127.0.0.1:{self.port}",
            "RIE_RUNTIME_API_ADDRESS": f"127.0.0.1:{self.runtime_api_port}",
            "AWS_LAMBDA_FUNCTION_NAME": function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": version,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(timeout_s),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function_name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"devstack/[{version}]",
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
        }
        options = [
            "--network=host", f"--memory={memory_mb}m", "--memory-swap", f"{memory_mb}m",
            "--read-only", "--tmpfs", f"/tmp:rw,size={tmp_mb}m", "--user", LAMBDA_USER,
            "--cap-drop=ALL", "--security-opt", "no-new-privileges",
            *[flag for volume in volumes for flag in ("--volume", volume)],
            *(["--entrypoint", json.dumps(list(entrypoint))] if entrypoint else []),
            *(["--workdir", workdir] if workdir else []),
        ]  # fmt: skip
        args = list(command) or ([handler] if handler else [])
        super().__init__(image, args, options=options, env=lambda_env, group=group, store=store)
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll until the RIE accepts connections; RuntimeError with the container's log if it never does."""
        if not pm.wait_for_port(self.port, timeout, alive=self.running):
            raise RuntimeError(f"RIE of {self.name} did not listen on 127.0.0.1:{self.port}:\n{self.logs()[-3000:]}")

    def invoke(self, event: Any, timeout: float | None = None, request_id: str | None = None) -> Invocation:
        """POST the event (JSON-encoded unless bytes) to the RIE; the answer as Lambda's Invoke API gives it.

        Invokes are serialised: one execution environment runs one invoke at a
        time, as on Lambda, and this RIE crashes (nil pointer panic, the container
        exits) when a second invoke arrives while one runs. ``request_id`` becomes
        the invoke's id (the RIE reads ``X-Amzn-RequestId``: context.aws_request_id,
        the log's START/END/REPORT lines). ``timeout``: the client's, by default the
        function's timeout plus Lambda's 10 s init phase and a margin.
        """
        body = event if isinstance(event, bytes) else json.dumps(event).encode()
        timeout = timeout if timeout is not None else self.timeout_s + INIT_SECONDS + 5
        headers = {"Content-Type": "application/json", **({"X-Amzn-RequestId": request_id} if request_id else {})}
        with self._lock:
            started = time.perf_counter()
            while True:
                reused = self._conn is not None
                if self._conn is None:
                    self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
                try:
                    self._conn.timeout = timeout
                    if self._conn.sock is not None:
                        self._conn.sock.settimeout(timeout)
                    self._conn.request("POST", INVOKE_PATH, body=body, headers=headers)
                    resp = self._conn.getresponse()
                    data = resp.read()
                    break
                except (ConnectionError, http.client.HTTPException):
                    self._conn.close()
                    self._conn = None
                    if not reused:  # only an idle kept-alive connection the RIE closed is retried
                        raise
            seconds = time.perf_counter() - started
        function_error, payload = read_function_error(resp.status, data, request_id or "")
        return Invocation(payload=payload, function_error=function_error, rie_status=resp.status, seconds=seconds)

    def remove(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        super().remove()


DEPLOYMENT = Path(__file__).resolve().parents[2] / "plugins" / "bank_pipeline" / "manifests" / "deployment.yaml"


def _quantity_mb(value: str) -> int:
    """A Kubernetes memory quantity (512Mi, 64Mi, 1Gi, 500M) in MiB."""
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "K": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    match = re.fullmatch(r"([0-9.]+)([KMG]i?)?", str(value))
    if match is None:
        raise ValueError(f"unsupported quantity {value!r}")
    return max(1, int(float(match.group(1)) * units.get(match.group(2) or "", 1 / 2**20)))


def pod_options(manifest: Path = DEPLOYMENT) -> tuple[list[str], list[str], dict[str, str]]:
    """(podman run options, args, env) for the Deployment's serving container, as the kubelet would run it.

    From the manifest itself, so the container is what Kubernetes gets (container_options).
    """
    import yaml

    return container_options(yaml.safe_load(manifest.read_text())["spec"]["template"]["spec"])


def container_options(pod: dict[str, Any], name: str = "serving") -> tuple[list[str], list[str], dict[str, str]]:
    """(podman run options, args, env) for container ``name`` of a pod spec: command (as ENTRYPOINT), args,
    workingDir, env, the pod's runAsUser/runAsGroup, the container's readOnlyRootFilesystem, dropped
    capabilities and allowPrivilegeEscalation, its memory and CPU limits, and emptyDir volumes as tmpfs
    mounts of their sizeLimit.
    """
    [container] = [c for c in pod["containers"] if c["name"] == name]
    pod_sc, sc = pod.get("securityContext") or {}, container.get("securityContext") or {}
    limits = (container.get("resources") or {}).get("limits") or {}
    options = ["--entrypoint", json.dumps(container["command"])]
    if container.get("workingDir"):
        options += ["--workdir", container["workingDir"]]
    if "runAsUser" in pod_sc:
        options += ["--user", f"{pod_sc['runAsUser']}:{pod_sc.get('runAsGroup', pod_sc['runAsUser'])}"]
    if sc.get("readOnlyRootFilesystem"):
        options.append("--read-only")
    options += [f"--cap-drop={cap}" for cap in (sc.get("capabilities") or {}).get("drop", [])]
    if sc.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    if "memory" in limits:
        options += [f"--memory={_quantity_mb(limits['memory'])}m", f"--memory-swap={_quantity_mb(limits['memory'])}m"]
    if "cpu" in limits:
        cpu = str(limits["cpu"])
        options.append(f"--cpus={int(cpu[:-1]) / 1000 if cpu.endswith('m') else float(cpu)}")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        empty_dir = volumes[mount["name"]].get("emptyDir")
        if empty_dir is None:
            raise ValueError(f"volume {mount['name']}: only emptyDir volumes can be run here")
        size = f",size={_quantity_mb(empty_dir['sizeLimit'])}m" if "sizeLimit" in empty_dir else ""
        options += ["--tmpfs", f"{mount['mountPath']}:rw{size}"]
    env = {e["name"]: str(e["value"]) for e in container.get("env", [])}
    return options, list(container.get("args", [])), env


class HttpContainer(pm.Container):
    """The Kubernetes command of the image (``python -m bank_serving.http``), run as the Deployment says.

    ``pod_options()`` reads the settings from the Deployment manifest; the port
    and the metrics port are free ones on 127.0.0.1 (the host network), replacing the manifest's.
    """

    def __init__(
        self,
        image: str,
        *,
        volumes: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        options: Sequence[str] = (),
        group: str = "http",
        store: pm.Store | None = None,
    ) -> None:
        self.port, self.metrics_port = procs.free_port(), procs.free_port()
        pod, args, env = pod_options()
        for flag in ("--port", "--metrics-port"):  # the manifest's ports are the pod's own; here the host's are shared
            if flag in args:
                del args[args.index(flag) : args.index(flag) + 2]
        options = [
            "--network=host", *pod, *options,
            *[flag for volume in volumes for flag in ("--volume", volume)],
        ]  # fmt: skip
        args = [*args, "--host", "127.0.0.1", "--port", str(self.port), "--metrics-port", str(self.metrics_port),
                *extra_args]  # fmt: skip
        super().__init__(image, args, options=options, env=env, group=group, store=store)

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, Any]:
        """GET ``path``: (status, decoded JSON body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"null")
        finally:
            conn.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll /readyz until it answers 200; RuntimeError with the log if the server exits or never gets ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.get("/readyz", timeout=1.0)[0] == 200:
                    return
            except OSError:
                pass
            if not self.running():
                break
            time.sleep(0.02)
        raise RuntimeError(f"{self.name}: /readyz never answered 200:\n{self.logs()[-3000:]}")


def model_volume(model_dir: Path) -> str:
    """A read-only bind mount of a model directory at /opt/ml/model (quick runs; releases append a layer)."""
    return f"{Path(model_dir).resolve()}:/opt/ml/model:ro"
