"""One invoke of an image function version, run in its container as ``devstack.aws.awslambda`` describes:
the execution environment the version asks for (``spec_of``), and ``run``, which answers as Lambda does
(the handler's payload, or Lambda's error payload) with the invoke's log."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from moto.awslambda.models import LambdaFunction

from bank_pipeline.utils import oci, oci_image
from devstack.aws.lambda_config import CONFIG, is_ours
from devstack.aws.lambda_images import prepare_image
from devstack.aws.lambda_states import running_image
from devstack.containers import podman as pm
from devstack.containers.lambda_containers import FunctionSpec

log = logging.getLogger("devstack.lambda")


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
        role=fn.role,
    )


def run(fn: LambdaFunction, event: bytes, request_id: str, tail: bool = False) -> Ran:
    """Run one invoke of an image function version in its container (see ``devstack.aws.awslambda``'s doc)."""
    uri = running_image(fn)

    def failed(message: str, kind: str = "DevstackImageError") -> Ran:
        lines = f"START RequestId: {request_id} Version: {fn.version}\n{message}\nEND RequestId: {request_id}\n"
        return Ran(_error_payload(message, kind, request_id), True, lines)

    try:
        ref = oci.parse_image_ref(uri)
    except ValueError as exc:
        return failed(f"devstack: {exc}")
    if not is_ours(ref.registry):
        return failed(f"devstack runs only images in its registry {CONFIG.registry}; this function's ImageUri is {uri}")
    if CONFIG.environments is None:
        return failed("devstack: Lambda's execution environments are not installed")
    try:
        image = prepare_image(ref)
    except (oci.RegistryError, pm.PodmanError, pm.PodmanUnavailable, OSError) as exc:
        return failed(f"devstack: cannot get image {uri}: {exc}")
    arch = oci_image.LAMBDA_ARCHITECTURES.get(image.architecture)
    if arch not in fn.architectures:  # the kernel cannot run the image's binaries
        return failed(
            f"RequestId: {request_id} Error: fork/exec /lambda-entrypoint.sh: exec format error "
            f"(devstack: image {uri} is {image.architecture or 'of no architecture'}, "
            f"the function {'/'.join(fn.architectures)})",
            "Runtime.InvalidEntrypoint",
        )
    try:
        result = CONFIG.environments.invoke(spec_of(fn, image.ref), event, request_id, tail=tail)
    except Exception as exc:  # noqa: BLE001 - podman or the registry failed: the invoke fails, devstack serves on
        log.exception("cannot run %s version %s", fn.function_name, fn.version)
        return failed(f"devstack: cannot run image {uri}: {type(exc).__name__}: {exc}")
    return Ran(result.payload, result.function_error is not None, result.log, result.image)
