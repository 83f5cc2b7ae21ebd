"""Run the serving image as Lambda runs it (through AWS's Runtime Interface Emulator) and as Kubernetes does.

``LambdaContainer`` starts an image built on the local Lambda base
(``devstack.lambda_image``) with podman on the host's network: its
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
(``python -m bank_serving.http --port P``, k8s/deployment.yaml) with the pod's
security settings: user 1000:1000, read-only root, tmpfs /tmp, all capabilities
dropped, no privilege escalation, HOME=/tmp, PYTHONDONTWRITEBYTECODE=1.
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

from devstack import podman as pm

INVOKE_PATH = "/2015-03-31/functions/function/invocations"
LAMBDA_USER = "993:990"  # any unprivileged uid: Lambda runs images as a least-privileged user, not root
TIMEOUT_TEXT = re.compile(r"^Task timed out after [0-9.]+ seconds$")
ERROR_KEYS = {"errorMessage", "errorType"}
INIT_REPORT = re.compile(r"INIT REPORT\(durationMs: ([0-9.]+)\)")
# Kubernetes' pod and container securityContext of k8s/deployment.yaml, as podman options.
K8S_SECURITY = ("--user", "1000:1000", "--read-only", "--tmpfs", "/tmp:rw,size=64m",
                "--cap-drop=ALL", "--security-opt", "no-new-privileges")  # fmt: skip


@dataclass(frozen=True)
class Invocation:
    """One invoke, as boto3's ``invoke`` reports it: payload bytes and FunctionError (None if it succeeded)."""

    payload: bytes
    function_error: str | None
    rie_status: int  # the HTTP status the RIE answered (200, or 502 after an init error)
    seconds: float  # client-side wall time of the request

    def json(self) -> Any:
        return json.loads(self.payload)


def read_function_error(status: int, body: bytes) -> tuple[str | None, bytes]:
    """(FunctionError, payload) of a RIE answer: Lambda's Invoke API view of it (see the module doc)."""
    text = body.decode(errors="replace").strip()
    if status == 200 and TIMEOUT_TEXT.match(text):
        return "Unhandled", json.dumps({"errorType": "Sandbox.Timedout", "errorMessage": text}).encode()
    try:
        value = json.loads(body) if body else None
    except ValueError:
        value = None
    # The runtime's error shape: errorMessage + errorType (+ requestId, stackTrace) and nothing else.
    is_error = isinstance(value, dict) and ERROR_KEYS <= set(value) <= ERROR_KEYS | {"requestId", "stackTrace"}
    if status != 200 or is_error:
        if not isinstance(value, dict):
            message = f"RIE answered {status}: {text}"
            body = json.dumps({"errorType": "Runtime.Unknown", "errorMessage": message}).encode()
        return "Unhandled", body
    return None, body


def init_duration_ms(logs: str) -> float | None:
    """The init phase's duration the RIE logged (``INIT REPORT(durationMs: ...)``), the last one, if any."""
    found = INIT_REPORT.findall(logs)
    return float(found[-1]) if found else None


class LambdaContainer(pm.Container):
    """An image run as a Lambda function under the RIE, on 127.0.0.1 ports of its own."""

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
        group: str = "lambda",
        store: pm.Store | None = None,
    ) -> None:
        self.port = pm.free_port()
        self.runtime_api_port = pm.free_port()
        lambda_env = {
            "RIE_ADDRESS": f"127.0.0.1:{self.port}",
            "RIE_RUNTIME_API_ADDRESS": f"127.0.0.1:{self.runtime_api_port}",
            "AWS_LAMBDA_FUNCTION_NAME": function_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(timeout_s),
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            **(env or {}),
        }
        options = [
            "--network=host", f"--memory={memory_mb}m", "--memory-swap", f"{memory_mb}m",
            "--read-only", "--tmpfs", "/tmp:rw,size=512m", "--user", LAMBDA_USER,
            "--cap-drop=ALL", "--security-opt", "no-new-privileges",
            *[flag for volume in volumes for flag in ("--volume", volume)],
        ]  # fmt: skip
        super().__init__(image, [handler] if handler else [], options=options, env=lambda_env, group=group,
                         store=store)  # fmt: skip
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll until the RIE accepts connections; RuntimeError with the container's log if it never does."""
        if not pm.wait_for_port(self.port, timeout, alive=self.running):
            raise RuntimeError(f"RIE of {self.name} did not listen on 127.0.0.1:{self.port}:\n{self.logs()[-3000:]}")

    def invoke(self, event: Any, timeout: float = 60.0) -> Invocation:
        """POST the event (JSON-encoded unless bytes) to the RIE; the answer as Lambda's Invoke API gives it.

        Invokes are serialised: one execution environment runs one invoke at a
        time, as on Lambda, and this RIE crashes (nil pointer panic, the container
        exits) when a second invoke arrives while one runs.
        """
        body = event if isinstance(event, bytes) else json.dumps(event).encode()
        with self._lock:
            started = time.perf_counter()
            while True:
                reused = self._conn is not None
                if self._conn is None:
                    self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
                try:
                    self._conn.request("POST", INVOKE_PATH, body=body, headers={"Content-Type": "application/json"})
                    resp = self._conn.getresponse()
                    data = resp.read()
                    break
                except (ConnectionError, http.client.HTTPException):
                    self._conn.close()
                    self._conn = None
                    if not reused:  # only an idle kept-alive connection the RIE closed is retried
                        raise
            seconds = time.perf_counter() - started
        function_error, payload = read_function_error(resp.status, data)
        return Invocation(payload=payload, function_error=function_error, rie_status=resp.status, seconds=seconds)

    def remove(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        super().remove()


class HttpContainer(pm.Container):
    """The Kubernetes command of the image (``python -m bank_serving.http``) under the pod's security settings."""

    def __init__(
        self,
        image: str,
        *,
        memory_mb: int = 512,
        volumes: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        group: str = "http",
        store: pm.Store | None = None,
    ) -> None:
        self.port = pm.free_port()
        options = [
            "--network=host", f"--memory={memory_mb}m", *K8S_SECURITY, "--workdir", "/var/task",
            # command: replaces the image's ENTRYPOINT, as a container's `command` does in Kubernetes.
            "--entrypoint", json.dumps(["python", "-m", "bank_serving.http"]),
            *[flag for volume in volumes for flag in ("--volume", volume)],
        ]  # fmt: skip
        env = {"BANK_MODEL_DIR": "/opt/ml/model", "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/tmp"}
        args = ["--host", "127.0.0.1", "--port", str(self.port), *extra_args]
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
