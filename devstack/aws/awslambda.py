"""Lambda that runs container-image functions: a small patch to moto's Lambda models.

moto runs Zip functions in Docker and cannot invoke ``PackageType=Image``
functions at all. ``install()`` patches moto so that, for image functions whose
ImageUri is in devstack's registry (``devstack.aws.registry``), Invoke runs the
image as Lambda does (``devstack.aws.lambda_invoke``), as a container
(``devstack.containers.lambda_containers``): pulled by digest, started by podman
with AWS's Runtime Interface Emulator serving the invoke, the function's
Environment.Variables, MemorySize (``--memory``), Timeout and EphemeralStorage,
kept warm for the next invoke of the same version and replaced when the
version's code or configuration changes. It answers as Lambda does: status 200
with the handler's result, or, if the handler raised, its init failed, it timed
out or its container died, ``X-Amz-Function-Error: Unhandled`` (boto3:
``FunctionError``) and Lambda's error payload (``errorMessage``,
``errorType``...). ``X-Amz-Executed-Version`` names the version that ran (through an alias with
a RoutingConfig, its additional version with its weight's probability, as Lambda
routes: ``devstack.aws.lambda_routing``, which also refuses what Lambda refuses);
``LogType=Tail`` gives the last 4 KB of the container's output for the invoke
(START ... REPORT); the output also goes to moto's CloudWatch Logs.
``X-Devstack-Container-Image`` (devstack only) names the image the container
ran, ``repo@sha256:...`` as podman reports it.

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
  Lambda; ``devstack.aws.lambda_images``), resolved at CreateFunction/UpdateFunctionCode, so a version keeps
  running the image it was published with even if the tag moves; an ImageUri
  naming a missing image fails those calls with InvalidParameterValueException.
  ``ResolvedImageUri`` keeps the registry's port (moto cut it at the first ':').
- Resource policies (AddPermission, RemovePermission, GetPolicy): moto kept
  one per function object (a version shared $LATEST's), took the same
  StatementId twice, ignored RemovePermission's Qualifier and returned
  FunctionUrlAuthType and InvokedViaFunctionUrl as they were sent. As on Lambda,
  the function, each version and each alias now has a policy of its own
  (``lambda_policies.resource_policy()``; deleting the function, version or alias deletes it);
  a StatementId already in it is ``ResourceConflictException``; removing one
  that is not is ``ResourceNotFoundException``; Qualifier ``$LATEST`` is
  refused; a RevisionId that is not the policy's is
  ``PreconditionFailedException``; statements read as Lambda writes them
  (Principal ``*``, ``{"AWS": "arn:aws:iam::<account>:root"}`` or
  ``{"Service": ...}``; SourceArn, SourceAccount, PrincipalOrgID,
  EventSourceToken, FunctionUrlAuthType and InvokedViaFunctionUrl as Conditions:
  ``{"StringEquals": {"lambda:FunctionUrlAuthType": "NONE"}}``,
  ``{"Bool": {"lambda:InvokedViaFunctionUrl": "true"}}``).

States, as Lambda shows them (``devstack.aws.lambda_states``; moto has State
Active and LastUpdateStatus Successful at once), for image functions in
devstack's registry:

- CreateFunction answers State ``Pending`` (StateReasonCode ``Creating``) while
  devstack pulls the image into podman's store, as Lambda prepares it, for at least
  ``DEVSTACK_LAMBDA_PENDING_SECONDS`` (default 0.5; read when the server
  starts; a function tagged ``devstack:pending-seconds`` has its own); then
  ``Active``, or ``Failed`` with a StateReason and StateReasonCode
  ``InvalidImage`` (an image podman cannot pull) or ``ImageDeleted`` (the
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

Not faithful (devstack/containers/README.md has the RIE's own differences):
more than ``max_per_version`` concurrent invokes of one version wait for a
container instead of scaling out; idle containers are not reclaimed on a timer
(only the two most recently invoked versions of a function keep theirs); a
container's role credentials are minted when it starts and not refreshed
(they last an hour); ``Event``
(async) invocations run synchronously before the 202, without retries or
destinations; images from other registries (ECR hosts with moto's stubbed
ImageUri) cannot be run: they answer a ``DevstackImageError`` function error,
and keep moto's instant states; UpdateFunctionConfiguration is checked for
conflicts but shows no InProgress of its own; a failed update's GetFunction
still shows the new ImageUri; Lambda's own reasons for Failed
(ImageAccessDenied for a missing repository policy, KMS, VPC) cannot happen here.
"""

from __future__ import annotations

import base64
import contextvars
import copy
import json
import logging
import os
import uuid
from typing import Any

from moto.awslambda.exceptions import LambdaClientError
from moto.awslambda.models import LambdaAlias, LambdaBackend, LambdaFunction, LambdaStorage
from moto.awslambda.responses import LambdaResponse

from bank_pipeline.utils import oci
from devstack.aws import lambda_metrics, lambda_routing
from devstack.aws.lambda_config import CONFIG, PENDING_SECONDS_ENV
from devstack.aws.lambda_images import resolve_image_uri
from devstack.aws.lambda_invoke import run, spec_of
from devstack.aws.lambda_policies import add_permission, drop_policies, get_policy, response_remove_permission
from devstack.aws.lambda_states import CREATING, begin, check_invocable, check_not_busy, phase_of
from devstack.containers.lambda_containers import Environments

log = logging.getLogger("devstack.lambda")

LOG_TAIL = 4096  # bytes of log in X-Amz-Log-Result, as on Lambda

_ORIGINAL: dict[str, Any] = {}
# The qualifier the invoke request named (an alias, a version or None): its metrics' Resource.
_NAMED: contextvars.ContextVar[str | None] = contextvars.ContextVar("devstack_lambda_named", default=None)


def install(registry: str, environments: Environments, endpoint_url: str = "") -> None:
    """Patch moto's Lambda (idempotent); ``registry`` is devstack's ``host:port``, ``environments`` runs invokes."""
    CONFIG.registry, CONFIG.environments, CONFIG.endpoint_url = registry, environments, endpoint_url
    CONFIG.pending_seconds = float(os.environ.get(PENDING_SECONDS_ENV) or CONFIG.pending_seconds)
    lambda_metrics.install()
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
        delete_function=LambdaBackend.delete_function,
        delete_alias=LambdaStorage.delete_alias,
        put_alias=LambdaStorage.put_alias,
        storage_update_alias=LambdaStorage.update_alias,
        backend_invoke=LambdaBackend.invoke,
    )
    LambdaFunction.invoke = _invoke  # type: ignore[method-assign]
    LambdaBackend.delete_function = _delete_function  # type: ignore[method-assign]
    LambdaFunction._set_function_code = _set_function_code  # type: ignore[method-assign]
    LambdaFunction.get_code = _get_code  # type: ignore[method-assign]
    LambdaFunction.get_configuration = _get_configuration  # type: ignore[method-assign]
    LambdaStorage.publish_version = _publish_version  # type: ignore[method-assign]
    LambdaBackend.update_function_code = _update_function_code  # type: ignore[method-assign]
    LambdaBackend.update_function_configuration = _update_function_configuration  # type: ignore[method-assign]
    LambdaResponse.invoke = _response_invoke  # type: ignore[method-assign]
    LambdaAlias.update = _update_alias  # type: ignore[method-assign]
    LambdaBackend.add_permission = add_permission  # type: ignore[method-assign]
    LambdaBackend.get_policy = get_policy  # type: ignore[method-assign]
    LambdaResponse.remove_permission = response_remove_permission  # type: ignore[method-assign]
    LambdaStorage.delete_alias = _delete_alias  # type: ignore[method-assign]
    LambdaStorage.put_alias = _put_alias  # type: ignore[method-assign]
    LambdaStorage.update_alias = _storage_update_alias  # type: ignore[method-assign]
    LambdaBackend.invoke = _backend_invoke  # type: ignore[method-assign]


def set_endpoint(endpoint_url: str) -> None:
    """The moto endpoint handlers reach AWS through (known once the server listens)."""
    CONFIG.endpoint_url = endpoint_url
    if CONFIG.environments is not None:
        CONFIG.environments.extra_env["AWS_ENDPOINT_URL"] = endpoint_url


# -- the patched moto methods -------------------------------------------------


def _response_invoke(self: LambdaResponse) -> Any:
    # boto3 sends ?Qualifier=...; moto 5.2.5 looks for "qualifier".
    if "Qualifier" in self.querystring and "qualifier" not in self.querystring:
        self.querystring["qualifier"] = self.querystring["Qualifier"]
    return _ORIGINAL["response_invoke"](self)


def _put_alias(
    self: LambdaStorage, name: str, function_name: str, function_version: str, description: str, routing_config: Any
) -> LambdaAlias:
    lambda_routing.check(self, function_name, function_version, routing_config)
    alias: LambdaAlias = _ORIGINAL["put_alias"](
        self, name, function_name, function_version, description, routing_config
    )
    return alias


def _storage_update_alias(
    self: LambdaStorage, name: str, function_name: str, function_version: str, description: str, routing_config: Any
) -> LambdaAlias:
    # What the alias will be: a field the request leaves out keeps its value.
    alias = self.get_alias(name, function_name)
    lambda_routing.check(
        self,
        function_name,
        function_version or alias.function_version,
        alias.routing_config if routing_config is None else routing_config,
    )
    updated: LambdaAlias = _ORIGINAL["storage_update_alias"](
        self, name, function_name, function_version, description, routing_config
    )
    return updated


def _backend_invoke(
    self: LambdaBackend, function_name: str, qualifier: str | None, body: Any, headers: Any, response_headers: Any
) -> Any:
    # Through a weighted alias, one of its two versions runs, chosen per invoke as Lambda does.
    name, named = lambda_routing.target(function_name, qualifier)
    alias = lambda_routing.alias_of(self._lambdas, name, named)
    if alias is not None and lambda_routing.weights(alias.routing_config):
        function_name, qualifier = name, lambda_routing.choose(alias)
    token = _NAMED.set(named)
    try:
        return _ORIGINAL["backend_invoke"](self, function_name, qualifier, body, headers, response_headers)
    finally:
        _NAMED.reset(token)


def _update_alias(self: LambdaAlias, *args: Any, **kwargs: Any) -> None:
    # Lambda gives an alias a new RevisionId whenever it changes; moto kept the first one.
    _ORIGINAL["update_alias"](self, *args, **kwargs)
    self.revision_id = str(uuid.uuid4())


def _set_function_code(self: LambdaFunction, updated_spec: dict[str, Any]) -> None:
    uri = updated_spec.get("ImageUri")
    from_update = updated_spec is not self.code
    dry_run = from_update and updated_spec.get("DryRun")
    resolved = resolve_image_uri(uri) if uri and not dry_run else None
    previous = getattr(self, "_ds_image", None)
    _ORIGINAL["set_code"](self, updated_spec)
    if uri and not dry_run:
        self._ds_image = resolved
        if resolved:
            self.code_sha_256 = resolved.rsplit("@sha256:", 1)[1]
            begin(self, "update" if from_update else "create", resolved, previous)


# -- states -------------------------------------------------------------------


def _get_configuration(self: LambdaFunction, on_create: bool = False) -> dict[str, Any]:
    config: dict[str, Any] = _ORIGINAL["get_configuration"](self, on_create)
    phase, progress = phase_of(self)
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


def _update_function_code(self: LambdaBackend, function_name: str, qualifier: str, body: dict[str, Any]) -> Any:
    check_not_busy(self.get_function(function_name, qualifier))
    if body.get("Publish"):  # moto updates, publishes and updates again: keep its way
        return _ORIGINAL["update_code"](self, function_name, qualifier, body)
    return self.get_function(function_name, qualifier).update_function_code(body)


def _update_function_configuration(
    self: LambdaBackend, function_name: str, qualifier: str, body: dict[str, Any]
) -> Any:
    check_not_busy(self.get_function(function_name, qualifier))
    return _ORIGINAL["update_configuration"](self, function_name, qualifier, body)


def _delete_function(self: LambdaBackend, function_name: str, qualifier: str | None = None) -> None:
    # Lambda retires a deleted function's (or version's) execution environments: so do its containers.
    fn = self.get_function(function_name, qualifier)
    arn = spec_of(fn, "").function_arn
    _ORIGINAL["delete_function"](self, function_name, qualifier)
    drop_policies(self.account_id, self.region_name, fn.function_name, qualifier)
    if CONFIG.environments is not None:
        CONFIG.environments.forget(arn, qualifier)


def _delete_alias(self: LambdaStorage, name: str, function_name: str) -> None:
    _ORIGINAL["delete_alias"](self, name, function_name)
    drop_policies(self.account_id, self.region_name, function_name.split(":function:", 1)[-1].split(":", 1)[0], name)


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
    check_not_busy(latest)
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
            begin(fn, "publish", None)  # a new version is Pending a moment, then Active
    return fn


def _invoke(self: LambdaFunction, body: str, request_headers: Any, response_headers: Any) -> str | bytes:
    if self.package_type != "Image":
        return _ORIGINAL["invoke"](self, body, request_headers, response_headers)
    check_invocable(self)
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
    try:
        lambda_metrics.publish(self, _NAMED.get(), ran.errored, lambda_metrics.duration_ms(ran.log))
    except Exception:  # metrics are a courtesy too
        log.exception("cannot publish the metrics of %s", self.function_name)
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
