"""Lambda that runs container-image functions: a small patch to moto's Lambda models.

moto runs Zip functions in Docker and cannot invoke ``PackageType=Image``
functions at all. ``install()`` patches moto so that, for image functions
whose ImageUri is in devstack's registry (``devstack.registry``), Invoke:

1. resolves the ImageUri (``HOST:PORT/REPO@sha256:...`` or ``:TAG``) to a
   manifest (an index resolves to linux/amd64) and extracts its layers, in
   order, under ``<state-dir>/lambda-images/<digest>/rootfs`` (once per digest);
2. runs the handler named by the image config's Cmd (or the function's
   ImageConfig.Command) in a fresh process of the project's interpreter, with
   cwd and PYTHONPATH = ``rootfs/var/task`` (LAMBDA_TASK_ROOT), the event
   on stdin, and the environment of the image config's Env, Lambda's own
   variables and the function's Environment.Variables; any absolute path in
   those values that exists in the rootfs (e.g. BANK_MODEL_DIR=/opt/ml/model)
   is rewritten to the rootfs's copy;
3. answers as Lambda does: status 200 with the handler's JSON result, or, if
   the handler raised, timed out or could not be imported, the header
   ``X-Amz-Function-Error: Unhandled`` (boto3: ``FunctionError``) and the
   payload ``{"errorMessage", "errorType", "requestId", "stackTrace"}``;
   ``X-Amz-Executed-Version`` names the version that ran; ``LogType=Tail``
   gives the last 4 KB of the log; the log also goes to moto's CloudWatch Logs.

The patch also fixes what the deploy path needs from moto 5.2.5:

- UpdateAlias kept the alias's RevisionId; as on Lambda, each change gives a new one.
- Invoke with ``Qualifier=`` (the query parameter boto3 sends) ran $LATEST:
  moto reads ``qualifier`` in lower case. Now a version or alias runs that
  version (``FunctionName="f:live"`` already worked).
- A published version shared its ``Code`` dict with $LATEST, so
  UpdateFunctionCode changed the ImageUri of every version. Each version now
  keeps its own.
- PublishVersion published a new version after any UpdateFunctionCode, even
  to the same image, and once more after the first publish. As on Lambda, it
  now returns the latest version when code (CodeSha256) and configuration are
  unchanged since it.
- CodeSha256 of a devstack-registry image is its manifest digest (as on
  Lambda), resolved at CreateFunction/UpdateFunctionCode, so a version keeps
  running the image it was published with even if the tag moves; an ImageUri
  naming a missing image fails those calls with InvalidParameterValueException.
  ``ResolvedImageUri`` keeps the registry's port (moto cut it at the first ':').

States, as Lambda shows them (moto has State Active and LastUpdateStatus
Successful at once), for image functions in devstack's registry:

- CreateFunction answers State ``Pending`` (StateReasonCode ``Creating``) while
  devstack unpacks the image, as Lambda prepares it, for at least
  ``DEVSTACK_LAMBDA_PENDING_SECONDS`` (default 0.5; read when the server
  starts; a function tagged ``devstack:pending-seconds`` has its own); then
  ``Active``, or ``Failed`` with a StateReason and StateReasonCode
  ``InvalidImage`` (a layer that cannot be unpacked) or ``ImageDeleted`` (the
  image is gone from the registry).
- UpdateFunctionCode: LastUpdateStatus ``InProgress`` for as long, then
  ``Successful``, or ``Failed`` with LastUpdateStatusReason(Code); meanwhile and
  after a failed update, invokes of $LATEST run the previous image (Lambda
  keeps the previous code); State stays ``Active``.
- PublishVersion: the new version is ``Pending`` for as long, then ``Active``.
- Invoke of a Pending or Failed function or version, and UpdateFunctionCode,
  UpdateFunctionConfiguration or PublishVersion while the function is Pending,
  Failed or its update InProgress, answer ``ResourceConflictException`` (409)
  with Lambda's messages.
- Architectures: an image whose config's architecture is not the function's
  (amd64 <-> x86_64, arm64 <-> arm64) fails every invoke with
  ``Runtime.InvalidEntrypoint`` "exec format error", as Lambda does; Lambda
  itself accepts such an image at create and update.

Not faithful: every invoke is a cold start (a new process: imports and model
loading are paid each time; no execution environment is reused), with this
machine's Python and the venv's packages (the image's own runtime, libraries
and ENTRYPOINT are ignored: the local base image holds only the serving code);
MemorySize, concurrency limits and alias RoutingConfig weights are ignored;
``Event`` (async) invocations run synchronously before the 202, without
retries or destinations; whiteouts are applied simply (``.wh.NAME`` deletes,
``.wh..wh..opq`` empties the directory) and links that point outside the
rootfs are skipped; the rootfs is writable (Lambda's is read-only besides
/tmp); the init phase may take 10 s, then the handler has the function's
Timeout (enforced with SIGALRM, a hard kill 2 s later); images from other
registries (ECR hosts with moto's stubbed ImageUri) cannot be run: they answer
a ``DevstackImageError`` function error, and keep moto's instant states;
UpdateFunctionConfiguration is checked for conflicts but shows no
InProgress of its own; a failed update's GetFunction still shows the new
ImageUri; Lambda's own reasons for Failed (ImageAccessDenied for a missing
repository policy, KMS, VPC) cannot happen here.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import logging
import math
import os
import posixpath
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moto.awslambda.exceptions import InvalidParameterValueException, LambdaClientError
from moto.awslambda.models import LambdaAlias, LambdaBackend, LambdaFunction, LambdaStorage
from moto.awslambda.responses import LambdaResponse

from bank_pipeline.utils import oci
from devstack import procs
from devstack.iam import role_credentials

log = logging.getLogger("devstack.lambda")

INIT_TIMEOUT = 10.0  # Lambda's init phase limit
KILL_AFTER = 2.0  # past the handler's Timeout, the process is killed
LOG_TAIL = 4096  # bytes of log in X-Amz-Log-Result, as on Lambda


PENDING_SECONDS_ENV = "DEVSTACK_LAMBDA_PENDING_SECONDS"
PENDING_SECONDS_TAG = "devstack:pending-seconds"  # a function's own, for tests that watch a state
CREATING = "The function is being created."


@dataclass
class _Config:
    registry: str = ""  # host:port of devstack's registry
    cache_dir: Path = Path("/nonexistent")
    endpoint_url: str = ""  # moto's endpoint, given to handlers as AWS_ENDPOINT_URL
    pending_seconds: float = 0.5  # the least time a create, update or new version is in progress


CONFIG = _Config()
_ORIGINAL: dict[str, Any] = {}
_EXTRACT_LOCK = threading.Lock()


def install(registry: str, cache_dir: Path, endpoint_url: str = "") -> None:
    """Patch moto's Lambda (idempotent); ``registry`` is devstack's ``host:port``."""
    CONFIG.registry, CONFIG.cache_dir, CONFIG.endpoint_url = registry, Path(cache_dir), endpoint_url
    CONFIG.pending_seconds = float(os.environ.get(PENDING_SECONDS_ENV) or CONFIG.pending_seconds)
    CONFIG.cache_dir.mkdir(parents=True, exist_ok=True)
    if _ORIGINAL:
        return
    _ORIGINAL.update(
        invoke=LambdaFunction.invoke,
        set_code=LambdaFunction._set_function_code,
        get_code=LambdaFunction.get_code,
        get_configuration=LambdaFunction.get_configuration,
        publish=LambdaStorage.publish_version,
        update_code=LambdaBackend.update_function_code,
        update_configuration=LambdaBackend.update_function_configuration,
        update_alias=LambdaAlias.update,
        response_invoke=LambdaResponse.invoke,
    )
    LambdaFunction.invoke = _invoke  # type: ignore[method-assign]
    LambdaFunction._set_function_code = _set_function_code  # type: ignore[method-assign]
    LambdaFunction.get_code = _get_code  # type: ignore[method-assign]
    LambdaFunction.get_configuration = _get_configuration  # type: ignore[method-assign]
    LambdaStorage.publish_version = _publish_version  # type: ignore[method-assign]
    LambdaBackend.update_function_code = _update_function_code  # type: ignore[method-assign]
    LambdaBackend.update_function_configuration = _update_function_configuration  # type: ignore[method-assign]
    LambdaResponse.invoke = _response_invoke  # type: ignore[method-assign]
    LambdaAlias.update = _update_alias  # type: ignore[method-assign]


def set_endpoint(endpoint_url: str) -> None:
    """The moto endpoint handlers reach AWS through (known once the server listens)."""
    CONFIG.endpoint_url = endpoint_url


def _is_ours(registry: str) -> bool:
    return bool(CONFIG.registry) and registry.replace("localhost:", "127.0.0.1:") == CONFIG.registry


# -- the patched moto methods -------------------------------------------------


def _response_invoke(self: LambdaResponse) -> Any:
    # boto3 sends ?Qualifier=...; moto 5.2.5 looks for "qualifier".
    if "Qualifier" in self.querystring and "qualifier" not in self.querystring:
        self.querystring["qualifier"] = self.querystring["Qualifier"]
    return _ORIGINAL["response_invoke"](self)


def _update_alias(self: LambdaAlias, *args: Any, **kwargs: Any) -> None:
    # Lambda gives an alias a new RevisionId whenever it changes; moto kept the first one.
    _ORIGINAL["update_alias"](self, *args, **kwargs)
    self.revision_id = str(uuid.uuid4())


def _set_function_code(self: LambdaFunction, updated_spec: dict[str, Any]) -> None:
    uri = updated_spec.get("ImageUri")
    from_update = updated_spec is not self.code
    dry_run = from_update and updated_spec.get("DryRun")
    resolved = _resolve(uri) if uri and not dry_run else None
    previous = getattr(self, "_ds_image", None)
    _ORIGINAL["set_code"](self, updated_spec)
    if uri and not dry_run:
        self._ds_image = resolved
        if resolved:
            self.code_sha_256 = resolved.rsplit("@sha256:", 1)[1]
            _begin(self, "update" if from_update else "create", resolved, previous)


# -- states -------------------------------------------------------------------


class ResourceConflict(LambdaClientError):
    code = 409

    def __init__(self, message: str) -> None:
        super().__init__("ResourceConflictException", message)


@dataclass
class _Progress:
    """A create, update or publish under way: done when the image is prepared and the least time passed."""

    kind: str  # "create" | "update" | "publish"
    started: float
    prepared: threading.Event
    previous_image: str | None = None  # an update's: what $LATEST runs until the update succeeds
    failure: tuple[str, str] | None = None  # (reason code, reason)


def _begin(fn: LambdaFunction, kind: str, image: str | None, previous_image: str | None = None) -> None:
    """Start a phase; a create or update prepares (unpacks) ``image`` in a thread, as Lambda optimizes it."""
    progress = _Progress(kind, time.monotonic(), threading.Event(), previous_image)
    fn._ds_progress = progress
    if image is None:
        progress.prepared.set()
        return

    def prepare() -> None:
        try:
            fetch_image(oci.parse_image_ref(image))
        except oci.RegistryError as exc:
            code = "ImageDeleted" if exc.status == 404 else "InvalidImage"
            progress.failure = (code, f"devstack: cannot get image {image}: {exc}")
        except Exception as exc:  # noqa: BLE001 - tar, gzip, zlib, OS errors: the image is bad, the server is fine
            progress.failure = ("InvalidImage", f"devstack: cannot unpack image {image}: {type(exc).__name__}: {' '.join(str(exc).split())}")
        finally:
            progress.prepared.set()

    threading.Thread(target=prepare, name=f"lambda-prepare-{fn.function_name}", daemon=True).start()


def _phase(fn: LambdaFunction) -> tuple[str, _Progress | None]:
    """("done" | "pending" | "failed", the progress) of a function or version."""
    progress: _Progress | None = getattr(fn, "_ds_progress", None)
    if progress is None:
        return "done", None
    # The function's tags are set after its code (in moto's constructor): read them now.
    pending = float((getattr(fn, "tags", None) or {}).get(PENDING_SECONDS_TAG) or CONFIG.pending_seconds)
    if not progress.prepared.is_set() or time.monotonic() < progress.started + pending:
        return "pending", progress
    return ("failed" if progress.failure else "done"), progress


def _get_configuration(self: LambdaFunction, on_create: bool = False) -> dict[str, Any]:
    config: dict[str, Any] = _ORIGINAL["get_configuration"](self, on_create)
    phase, progress = _phase(self)
    if progress is None or phase == "done":
        return config
    code, reason = progress.failure or ("Creating", CREATING)
    if progress.kind in ("create", "publish"):
        config.update(State="Pending" if phase == "pending" else "Failed", StateReason=reason, StateReasonCode=code)
        if on_create:
            return config
    if phase == "pending":
        config["LastUpdateStatus"] = "InProgress"
        if progress.kind != "update":
            config.update(LastUpdateStatusReason=reason, LastUpdateStatusReasonCode=code)
    else:
        config.update(LastUpdateStatus="Failed", LastUpdateStatusReason=reason, LastUpdateStatusReasonCode=code)
    return config


def _check_invocable(fn: LambdaFunction) -> None:
    """Lambda refuses to invoke a function (or version) that is not Active."""
    phase, progress = _phase(fn)
    if progress is not None and progress.kind != "update" and phase != "done":
        state = "Pending" if phase == "pending" else "Failed"
        raise ResourceConflict(
            f"The operation cannot be performed at this time. The function is currently in the following state: {state}"
        )


def _check_not_busy(fn: LambdaFunction) -> None:
    """Lambda refuses to change or publish a function that is being created or updated (or failed to be created)."""
    _check_invocable(fn)
    phase, progress = _phase(fn)
    if progress is not None and progress.kind == "update" and phase == "pending":
        raise ResourceConflict(
            f"The operation cannot be performed at this time. An update is in progress for resource: {fn.function_arn}"
        )


def _update_function_code(self: LambdaBackend, function_name: str, qualifier: str, body: dict[str, Any]) -> Any:
    _check_not_busy(self.get_function(function_name, qualifier))
    if body.get("Publish"):  # moto updates, publishes and updates again: keep its way
        return _ORIGINAL["update_code"](self, function_name, qualifier, body)
    return self.get_function(function_name, qualifier).update_function_code(body)


def _update_function_configuration(
    self: LambdaBackend, function_name: str, qualifier: str, body: dict[str, Any]
) -> Any:
    _check_not_busy(self.get_function(function_name, qualifier))
    return _ORIGINAL["update_configuration"](self, function_name, qualifier, body)


def _resolve(uri: str) -> str | None:
    """``registry/repo@digest`` of an ImageUri in devstack's registry (None: not ours)."""
    try:
        ref = oci.parse_image_ref(uri)
    except ValueError:
        return None
    if not _is_ours(ref.registry):
        return None
    try:
        digest = oci.RegistryClient(ref.registry, timeout=10).manifest_digest(ref.repo, ref.reference)
    except oci.RegistryError as exc:
        raise InvalidParameterValueException(f"devstack: cannot check image {uri}: {exc}") from exc
    if digest is None:
        raise InvalidParameterValueException(f"Source image {uri} does not exist. Provide a valid source image.")
    return f"{ref.registry}/{ref.repo}@{digest}"


def _get_code(self: LambdaFunction) -> dict[str, Any]:
    resp = _ORIGINAL["get_code"](self)
    uri = self.code.get("ImageUri")
    if uri and "Code" in resp:
        try:
            ref = oci.parse_image_ref(uri)
        except ValueError:
            return resp
        resp["Code"]["ResolvedImageUri"] = f"{ref.registry}/{ref.repo}@sha256:{self.code_sha_256}"
    return resp


_NOT_COMPARED = (
    "FunctionArn", "Version", "LastModified", "Description", "State", "StateReason", "StateReasonCode",
    "LastUpdateStatus", "LastUpdateStatusReason", "LastUpdateStatusReasonCode",
)  # fmt: skip


def _fingerprint(fn: LambdaFunction) -> str:
    config = {k: v for k, v in fn.get_configuration().items() if k not in _NOT_COMPARED}
    return json.dumps(config, sort_keys=True, default=str)


def _publish_version(self: LambdaStorage, name_or_arn: str, description: str = "") -> LambdaFunction | None:
    latest = self.get_function_by_name_or_arn_forbid_qualifier(name_or_arn)
    _check_not_busy(latest)
    versions: list[LambdaFunction] = self._functions[latest.function_name]["versions"]
    if versions and latest.code_or_config_updated and _fingerprint(latest) == _fingerprint(versions[-1]):
        latest.code_or_config_updated = False  # Lambda: unchanged since the last version -> that version
    count = len(versions)
    fn = _ORIGINAL["publish"](self, name_or_arn, description)
    if fn is not None and len(versions) > count:
        fn.code = copy.deepcopy(fn.code)  # its own ImageUri, untouched by later updates of $LATEST
        fn.environment_vars = dict(fn.environment_vars)
        latest.code_or_config_updated = False
        if getattr(latest, "_ds_progress", None) is not None:
            _begin(fn, "publish", None)  # a new version is Pending a moment, then Active
    return fn


def _invoke(self: LambdaFunction, body: str, request_headers: Any, response_headers: Any) -> str | bytes:
    if self.package_type != "Image":
        return _ORIGINAL["invoke"](self, body, request_headers, response_headers)
    _check_invocable(self)
    try:
        event = json.loads(body) if body else {}
    except ValueError as exc:
        raise LambdaClientError(
            "InvalidRequestContentException", f"Could not parse request body into json: {exc}"
        ) from exc
    invocation_type = request_headers.get("x-amz-invocation-type", "RequestResponse")
    if invocation_type == "DryRun":
        return b""
    request_id = str(uuid.uuid4())
    payload, errored, log_text = run(self, json.dumps(event).encode(), request_id)
    if errored:
        response_headers["x-amz-function-error"] = "Unhandled"
    response_headers["x-amz-executed-version"] = str(self.version)
    try:
        self.logs_backend.ensure_log_group(self.logs_group_name)
        self.save_logs(log_text)
    except Exception:  # logs are a courtesy; never fail the invoke for them
        log.exception("cannot save logs of %s", self.function_name)
    if invocation_type == "Event":
        return b""
    response_headers["x-amz-log-result"] = base64.b64encode(log_text.encode()[-LOG_TAIL:]).decode()
    return payload


# -- images -------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """An extracted image: its manifest digest, rootfs, config (the config's "config" part) and architecture."""

    digest: str
    rootfs: Path
    config: dict[str, Any]
    architecture: str = ""


def fetch_image(ref: oci.ImageRef) -> Image:
    """Extract ``ref``'s layers under the cache (once per manifest digest)."""
    cache = CONFIG.cache_dir
    home = cache / ref.reference.replace(":", "-")
    if not (ref.reference.startswith("sha256:") and (home / "config.json").exists()):
        client = oci.RegistryClient(ref.registry)
        manifest, media_type, digest = client.get_manifest(ref.repo, ref.reference)
        if media_type in oci.INDEX_TYPES:
            manifest, media_type, digest = oci.select_platform(client, ref.repo, manifest, ref.reference)
        home = cache / digest.replace(":", "-")
        with _EXTRACT_LOCK:
            if not (home / "config.json").exists():
                _extract(client, ref.repo, manifest, home)
    config = json.loads((home / "config.json").read_text())
    digest = home.name.replace("-", ":", 1)
    return Image(digest, home / "rootfs", config.get("config") or {}, config.get("architecture") or "")


def _extract(client: oci.RegistryClient, repo: str, manifest: dict[str, Any], home: Path) -> None:
    tmp = home.with_name(f".{home.name}.{uuid.uuid4().hex[:8]}")
    try:
        (tmp / "rootfs").mkdir(parents=True)
        for desc in manifest.get("layers", []):
            if "zstd" in desc.get("mediaType", ""):
                raise ValueError(f"layer {desc['digest']}: zstd layers are not supported")
            apply_layer(tmp / "rootfs", client.get_blob(repo, desc["digest"]))
        (tmp / "config.json").write_bytes(client.get_blob(repo, manifest["config"]["digest"]))
        shutil.rmtree(home, ignore_errors=True)
        os.replace(tmp, home)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _inside(root: Path, name: str) -> Path | None:
    path = (root / name).resolve()
    return path if path.is_relative_to(root.resolve()) and path != root.resolve() else None


def apply_layer(rootfs: Path, blob: bytes) -> None:
    """Extract a (gzip'd) tar layer onto ``rootfs``, whiteouts first."""
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tar:
        members = tar.getmembers()
        for member in members:  # whiteouts hide what lower layers put there
            parent, base = posixpath.split(member.name)
            if base == ".wh..wh..opq":
                target = _inside(rootfs, parent) if parent else None
                if target is not None and target.is_dir():
                    for child in target.iterdir():
                        _remove(child)
            elif base.startswith(".wh."):
                target = _inside(rootfs, posixpath.join(parent, base[4:]))
                if target is not None:
                    _remove(target)
        keep = [m for m in members if not posixpath.basename(m.name).startswith(".wh.")]
        tar.extractall(rootfs, members=keep, filter=_safe_member)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _safe_member(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    try:
        return tarfile.data_filter(member, dest)
    except tarfile.FilterError as exc:  # e.g. an absolute symlink of a distro base image
        log.debug("skipping %s: %s", member.name, exc)
        return None


def rewrite_paths(value: str, rootfs: Path) -> str:
    """Rewrite each ':'-separated absolute path that exists in ``rootfs`` to the rootfs's copy."""

    def one(item: str) -> str:
        rel = item.lstrip("/")
        if item.startswith("/") and rel and (rootfs / rel).exists():
            return str(rootfs / rel)
        return item

    return ":".join(one(part) for part in value.split(":"))


# -- running a handler --------------------------------------------------------

# Runs in the function's process: python -c RUNNER TASK_ROOT HANDLER TIMEOUT REQUEST_ID ARN.
# Prints one JSON object on the original stdout, {"result": ...} or {"error": {...}};
# the handler's own stdout goes to stderr with its logs.
RUNNER = r"""
import importlib, json, os, signal, sys, time, traceback

task_root, spec, timeout, request_id, arn = sys.argv[1:6]
timeout = float(timeout)
result_out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)


def report(obj):
    result_out.write(json.dumps(obj))
    result_out.flush()


def error(message, kind, exc=None):
    # The user's frames only: not this runner's ("<string>"), not importlib's.
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not (f.filename.startswith("<") or f.filename.endswith("importlib/__init__.py"))] if exc else []
    return {"error": {"errorMessage": message, "errorType": kind, "requestId": request_id,
                      "stackTrace": traceback.format_list(frames)}}


class Context:
    def __init__(self, deadline):
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = arn
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.aws_request_id = request_id
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self._deadline = deadline

    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class TimedOut(BaseException):
    pass


def on_alarm(signum, frame):
    raise TimedOut()


def main():
    module_name, _, function_name = spec.rpartition(".")
    try:  # the init phase; errors typed as the Python runtime (awslambdaric) types them
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as exc:
        return report(error(f"Unable to import module '{module_name}': {exc}", "Runtime.ImportModuleError"))
    except SyntaxError as exc:
        return report(error(f"Syntax error in module '{module_name}': {exc}", "Runtime.UserCodeSyntaxError"))
    except Exception as exc:
        traceback.print_exc()
        return report(error(str(exc), type(exc).__name__, exc))
    handler = getattr(module, function_name, None)
    if not callable(handler):
        return report(error(f"Handler '{function_name}' missing on module '{module_name}'", "Runtime.HandlerNotFound"))
    event = json.loads(sys.stdin.read() or "{}")
    started = time.monotonic()
    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        result = handler(event, Context(started + timeout))
    except TimedOut:
        return report({"error": {"errorMessage": f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} "
                                 f"{request_id} Task timed out after {timeout:.2f} seconds",
                                 "errorType": "Sandbox.Timedout", "requestId": request_id, "stackTrace": []}})
    except Exception as exc:
        traceback.print_exc()
        return report(error(str(exc), type(exc).__name__, exc))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    try:
        json.dumps(result)
    except (TypeError, ValueError) as exc:
        return report(error(f"Unable to marshal response: {exc}", "Runtime.MarshalError"))
    report({"result": result})


main()
"""


def _error_payload(message: str, kind: str, request_id: str) -> bytes:
    return json.dumps({"errorMessage": message, "errorType": kind, "requestId": request_id, "stackTrace": []}).encode()


def _running_image(fn: LambdaFunction) -> str:
    """The image an invoke runs: an update's previous image until the update succeeds."""
    phase, progress = _phase(fn)
    if progress is not None and progress.kind == "update" and phase != "done" and progress.previous_image:
        return progress.previous_image
    return getattr(fn, "_ds_image", None) or fn.code.get("ImageUri", "")


def run(fn: LambdaFunction, event: bytes, request_id: str) -> tuple[bytes, bool, str]:
    """Run an image function's handler once: (payload, errored, log text)."""
    uri = _running_image(fn)
    lines = [f"START RequestId: {request_id} Version: {fn.version}"]

    def done(payload: bytes, errored: bool, duration_ms: float = 0.0) -> tuple[bytes, bool, str]:
        lines.append(f"END RequestId: {request_id}")
        lines.append(
            f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
            f"Billed Duration: {math.ceil(duration_ms)} ms\tMemory Size: {fn.memory_size} MB"
        )
        return payload, errored, "\n".join(lines) + "\n"

    try:
        ref = oci.parse_image_ref(uri)
    except ValueError as exc:
        return done(_error_payload(f"devstack: {exc}", "DevstackImageError", request_id), True)
    if not _is_ours(ref.registry):
        message = f"devstack runs only images in its registry {CONFIG.registry}; this function's ImageUri is {uri}"
        lines.append(message)
        return done(_error_payload(message, "DevstackImageError", request_id), True)
    try:
        image = fetch_image(ref)
    except (oci.RegistryError, ValueError, tarfile.TarError, OSError) as exc:
        message = f"devstack: cannot get image {uri}: {exc}"
        lines.append(message)
        return done(_error_payload(message, "DevstackImageError", request_id), True)

    arch = oci.LAMBDA_ARCHITECTURES.get(image.architecture)
    if arch not in fn.architectures:  # the kernel cannot run the image's binaries
        message = (
            f"RequestId: {request_id} Error: fork/exec /lambda-entrypoint.sh: exec format error "
            f"(devstack: image {uri} is {image.architecture or 'of no architecture'}, "
            f"the function {'/'.join(fn.architectures)})"
        )
        lines.append(message)
        return done(_error_payload(message, "Runtime.InvalidEntrypoint", request_id), True)
    rootfs = image.rootfs
    command = fn.image_config.cmd or image.config.get("Cmd") or []
    if not command:
        message = f"image {uri} has no Cmd and the function no ImageConfig.Command: no handler to run"
        return done(_error_payload(message, "Runtime.InvalidEntrypoint", request_id), True)
    env = _environment(fn, image, command[0], request_id)
    task_root = env["LAMBDA_TASK_ROOT"]
    env["PYTHONPATH"] = task_root  # the image's code first, as LAMBDA_TASK_ROOT is on Lambda
    workdir = rewrite_paths(fn.image_config.working_directory or image.config.get("WorkingDir") or "/var/task", rootfs)
    if not Path(workdir).is_dir():
        workdir = task_root
    timeout = float(fn.timeout or 3)
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", RUNNER, task_root, command[0], str(timeout), request_id, fn.function_arn],
        cwd=workdir,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        process_group=0,  # killed as a group on timeout or when devstack stops
    )
    timed_out = False
    try:
        out, err = proc.communicate(event, timeout=INIT_TIMEOUT + timeout + KILL_AFTER)
    except subprocess.TimeoutExpired:
        timed_out = True
        procs.terminate_group(proc.pid, 1.0)
        out, err = proc.communicate()
    if procs.group_pids(proc.pid):  # whatever the handler started dies with it
        procs.terminate_group(proc.pid, 1.0)
    duration_ms = (time.monotonic() - started) * 1000
    strip = str(rootfs)  # show image paths (/var/task/...), not the cache's
    lines.extend(err.decode(errors="replace").replace(strip, "").splitlines())
    try:
        answer = json.loads(out) if out.strip() else None
    except ValueError:
        answer = None
    if isinstance(answer, dict) and "result" in answer:
        return done(json.dumps(answer["result"]).encode(), False, duration_ms)
    if answer and "error" in answer:
        error = json.loads(json.dumps(answer["error"]).replace(json.dumps(strip)[1:-1], ""))
        return done(json.dumps(error).encode(), True, duration_ms)
    if timed_out:
        message = f"{request_id} Task timed out after {timeout:.2f} seconds (killed by devstack)"
        return done(_error_payload(message, "Sandbox.Timedout", request_id), True, duration_ms)
    message = f"RequestId: {request_id} Error: Runtime exited with error: exit status {proc.returncode}"
    return done(_error_payload(message, "Runtime.ExitError", request_id), True, duration_ms)


def _environment(fn: LambdaFunction, image: Image, handler: str, request_id: str) -> dict[str, str]:
    """Image Env, then Lambda's variables, then the function's; image paths point into the rootfs."""
    rootfs = image.rootfs
    env: dict[str, str] = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for item in image.config.get("Env") or []:
        key, _, value = item.partition("=")
        env[key] = rewrite_paths(value, rootfs)
    region = fn.region
    env.update(
        {
            "LAMBDA_TASK_ROOT": rewrite_paths(env.get("LAMBDA_TASK_ROOT", "/var/task"), rootfs),
            "_HANDLER": handler,
            "AWS_LAMBDA_FUNCTION_NAME": fn.function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": str(fn.version),
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_size),
            "AWS_LAMBDA_LOG_GROUP_NAME": fn.logs_group_name,
            "AWS_LAMBDA_LOG_STREAM_NAME": f"devstack/[{fn.version}]{request_id}",
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "PYTHONDONTWRITEBYTECODE": "1",  # /var/task is read-only on Lambda: keep the cache pristine
        }
    )
    # The execution role's temporary credentials, as on Lambda: calls the handler makes are
    # checked against the role's policies (devstack.iam).
    env.update(role_credentials(fn.role, fn.function_name, region))
    if CONFIG.endpoint_url:
        env["AWS_ENDPOINT_URL"] = CONFIG.endpoint_url
    for key, value in (fn.environment_vars or {}).items():
        env[str(key)] = rewrite_paths(str(value), rootfs)
    if not Path(env["LAMBDA_TASK_ROOT"]).is_dir():
        env["LAMBDA_TASK_ROOT"] = str(rootfs / "var" / "task")
    return env
