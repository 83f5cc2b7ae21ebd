"""Lambda that runs container-image functions: a small patch to moto's Lambda models.

moto runs Zip functions in Docker and cannot invoke ``PackageType=Image``
functions at all. ``install()`` patches moto so that, for image functions
whose ImageUri is in devstack's registry (``devstack.registry``), Invoke runs
the image as Lambda does, as a container (``devstack.lambda_containers``):
pulled by digest, started by podman with AWS's Runtime Interface Emulator
serving the invoke, the function's Environment.Variables, MemorySize
(``--memory``), Timeout and EphemeralStorage, kept warm for the next invoke of
the same version and replaced when the version's code or configuration
changes. It answers as Lambda does: status 200 with the handler's result, or,
if the handler raised, its init failed, it timed out or its container died,
``X-Amz-Function-Error: Unhandled`` (boto3: ``FunctionError``) and Lambda's
error payload (``errorMessage``, ``errorType``...). ``X-Amz-Executed-Version``
names the version that ran; ``LogType=Tail`` gives the last 4 KB of the
container's output for the invoke (START ... REPORT); the output also goes to
moto's CloudWatch Logs. ``X-Devstack-Container-Image`` (devstack only) names
the image the container ran, ``repo@sha256:...`` as podman reports it.

The patch also fixes what the deploy path needs from moto 5.2.5:

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

Not faithful (see devstack/containers/README.md for the RIE's own
differences): more than ``max_per_version`` concurrent invokes of one version
wait for a container instead of scaling out; idle containers are not reclaimed
on a timer (only the two most recently invoked versions of a function keep
theirs); alias RoutingConfig weights and architectures are ignored; ``Event``
(async) invocations run synchronously before the 202, without retries or
destinations; the function gets devstack's credentials, not its execution
role's; images from other registries (ECR hosts with moto's stubbed ImageUri)
cannot be run: they answer a ``DevstackImageError`` function error. moto's
states are unchanged: State is Active and LastUpdateStatus Successful at once
(no Pending or InProgress).
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from moto.awslambda.exceptions import InvalidParameterValueException, LambdaClientError
from moto.awslambda.models import LambdaBackend, LambdaFunction, LambdaStorage
from moto.awslambda.responses import LambdaResponse

from bank_pipeline.utils import oci
from devstack.lambda_containers import Environments, FunctionSpec

log = logging.getLogger("devstack.lambda")

LOG_TAIL = 4096  # bytes of log in X-Amz-Log-Result, as on Lambda


@dataclass
class _Config:
    registry: str = ""  # host:port of devstack's registry
    endpoint_url: str = ""  # moto's endpoint, given to handlers as AWS_ENDPOINT_URL
    environments: Environments | None = None  # the functions' containers


CONFIG = _Config()
_ORIGINAL: dict[str, Any] = {}


def install(registry: str, environments: Environments, endpoint_url: str = "") -> None:
    """Patch moto's Lambda (idempotent); ``registry`` is devstack's ``host:port``, ``environments`` runs invokes."""
    CONFIG.registry, CONFIG.environments, CONFIG.endpoint_url = registry, environments, endpoint_url
    if _ORIGINAL:
        return
    _ORIGINAL.update(
        invoke=LambdaFunction.invoke,
        set_code=LambdaFunction._set_function_code,
        get_code=LambdaFunction.get_code,
        publish=LambdaStorage.publish_version,
        response_invoke=LambdaResponse.invoke,
        delete_function=LambdaBackend.delete_function,
    )
    LambdaFunction.invoke = _invoke  # type: ignore[method-assign]
    LambdaBackend.delete_function = _delete_function  # type: ignore[method-assign]
    LambdaFunction._set_function_code = _set_function_code  # type: ignore[method-assign]
    LambdaFunction.get_code = _get_code  # type: ignore[method-assign]
    LambdaStorage.publish_version = _publish_version  # type: ignore[method-assign]
    LambdaResponse.invoke = _response_invoke  # type: ignore[method-assign]


def set_endpoint(endpoint_url: str) -> None:
    """The moto endpoint handlers reach AWS through (known once the server listens)."""
    CONFIG.endpoint_url = endpoint_url
    if CONFIG.environments is not None:
        CONFIG.environments.extra_env["AWS_ENDPOINT_URL"] = endpoint_url


def _is_ours(registry: str) -> bool:
    return bool(CONFIG.registry) and registry.replace("localhost:", "127.0.0.1:") == CONFIG.registry


# -- the patched moto methods -------------------------------------------------


def _response_invoke(self: LambdaResponse) -> Any:
    # boto3 sends ?Qualifier=...; moto 5.2.5 looks for "qualifier".
    if "Qualifier" in self.querystring and "qualifier" not in self.querystring:
        self.querystring["qualifier"] = self.querystring["Qualifier"]
    return _ORIGINAL["response_invoke"](self)


def _set_function_code(self: LambdaFunction, updated_spec: dict[str, Any]) -> None:
    uri = updated_spec.get("ImageUri")
    dry_run = updated_spec is not self.code and updated_spec.get("DryRun")
    resolved = _resolve(uri) if uri and not dry_run else None
    _ORIGINAL["set_code"](self, updated_spec)
    if uri and not dry_run:
        self._ds_image = resolved
        if resolved:
            self.code_sha_256 = resolved.rsplit("@sha256:", 1)[1]


def _delete_function(self: LambdaBackend, function_name: str, qualifier: str | None = None) -> None:
    # Lambda retires a deleted function's (or version's) execution environments: so do its containers.
    fn = self.get_function(function_name, qualifier)
    arn = spec_of(fn, "").function_arn
    _ORIGINAL["delete_function"](self, function_name, qualifier)
    if CONFIG.environments is not None:
        CONFIG.environments.forget(arn, qualifier)


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


_NOT_COMPARED = ("FunctionArn", "Version", "LastModified", "LastUpdateStatus", "State", "Description")


def _fingerprint(fn: LambdaFunction) -> str:
    config = {k: v for k, v in fn.get_configuration().items() if k not in _NOT_COMPARED}
    return json.dumps(config, sort_keys=True, default=str)


def _publish_version(self: LambdaStorage, name_or_arn: str, description: str = "") -> LambdaFunction | None:
    latest = self.get_function_by_name_or_arn_forbid_qualifier(name_or_arn)
    versions: list[LambdaFunction] = self._functions[latest.function_name]["versions"]
    if versions and latest.code_or_config_updated and _fingerprint(latest) == _fingerprint(versions[-1]):
        latest.code_or_config_updated = False  # Lambda: unchanged since the last version -> that version
    count = len(versions)
    fn = _ORIGINAL["publish"](self, name_or_arn, description)
    if fn is not None and len(versions) > count:
        fn.code = copy.deepcopy(fn.code)  # its own ImageUri, untouched by later updates of $LATEST
        fn.environment_vars = dict(fn.environment_vars)
        latest.code_or_config_updated = False
    return fn


def _invoke(self: LambdaFunction, body: str, request_headers: Any, response_headers: Any) -> str | bytes:
    if self.package_type != "Image":
        return _ORIGINAL["invoke"](self, body, request_headers, response_headers)
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
    tail = request_headers.get("x-amz-log-type") == "Tail"
    ran = run(self, json.dumps(event).encode(), request_id, tail=tail)
    if ran.errored:
        response_headers["x-amz-function-error"] = "Unhandled"
    response_headers["x-amz-executed-version"] = str(self.version)
    if ran.container_image:
        response_headers["x-devstack-container-image"] = ran.container_image
    try:
        self.logs_backend.ensure_log_group(self.logs_group_name)
        self.save_logs(ran.log)
    except Exception:  # logs are a courtesy; never fail the invoke for them
        log.exception("cannot save logs of %s", self.function_name)
    if invocation_type == "Event":
        return b""
    response_headers["x-amz-log-result"] = base64.b64encode(ran.log.encode()[-LOG_TAIL:]).decode()
    return ran.payload


# -- running an invoke ----------------------------------------------------------


@dataclass(frozen=True)
class Ran:
    """One invoke as devstack ran it: Lambda's payload and error flag, the log, the container's image."""

    payload: bytes
    errored: bool
    log: str
    container_image: str = ""  # repo@sha256:... the container ran; empty when none ran


def _error_payload(message: str, kind: str, request_id: str) -> bytes:
    return json.dumps({"errorMessage": message, "errorType": kind, "requestId": request_id, "stackTrace": []}).encode()


def spec_of(fn: LambdaFunction, image: str) -> FunctionSpec:
    """The execution environment a function version asks for (``image``: registry/repo@sha256:...)."""
    return FunctionSpec(
        function_arn=fn.function_arn.split(":function:", 1)[0] + ":function:" + fn.function_name,
        function_name=fn.function_name,
        version=str(fn.version),
        image=image,
        memory_mb=int(fn.memory_size or 128),
        timeout_s=int(fn.timeout or 3),
        tmp_mb=int(fn.ephemeral_storage or 512),
        environment=tuple(sorted((str(k), str(v)) for k, v in (fn.environment_vars or {}).items())),
        entrypoint=tuple(fn.image_config.entry_point or ()),
        command=tuple(fn.image_config.cmd or ()),
        workdir=fn.image_config.working_directory or None,
        region=fn.region,
    )


def run(fn: LambdaFunction, event: bytes, request_id: str, tail: bool = False) -> Ran:
    """Run one invoke of an image function version in its container (see the module doc)."""
    uri = getattr(fn, "_ds_image", None) or fn.code.get("ImageUri", "")

    def failed(message: str) -> Ran:
        lines = f"START RequestId: {request_id} Version: {fn.version}\n{message}\nEND RequestId: {request_id}\n"
        return Ran(_error_payload(message, "DevstackImageError", request_id), True, lines)

    try:
        ref = oci.parse_image_ref(uri)
    except ValueError as exc:
        return failed(f"devstack: {exc}")
    if not _is_ours(ref.registry) or not ref.reference.startswith("sha256:"):
        return failed(f"devstack runs only images in its registry {CONFIG.registry}; this function's ImageUri is {uri}")
    if CONFIG.environments is None:
        return failed("devstack: Lambda's execution environments are not installed")
    try:
        result = CONFIG.environments.invoke(spec_of(fn, uri), event, request_id, tail=tail)
    except Exception as exc:  # noqa: BLE001 - podman or the registry failed: the invoke fails, devstack serves on
        log.exception("cannot run %s version %s", fn.function_name, fn.version)
        return failed(f"devstack: cannot run image {uri}: {type(exc).__name__}: {exc}")
    return Ran(result.payload, result.function_error is not None, result.log, result.image)
