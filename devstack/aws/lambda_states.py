"""The states of devstack's Lambda functions and versions (Pending, Active, Failed; an update InProgress), as
``devstack.aws.awslambda`` describes them: a create, update or publish is a ``Progress`` on the function,
done when its image is prepared (pulled in a thread) and the least pending time has passed; until then
invokes and changes are refused as Lambda refuses them."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from moto.awslambda.models import LambdaFunction

from bank_pipeline.utils import oci
from devstack.aws.lambda_config import CONFIG
from devstack.aws.lambda_images import prepare_image
from devstack.aws.lambda_policies import ResourceConflict

PENDING_SECONDS_TAG = "devstack:pending-seconds"  # a function's own, for tests that watch a state
CREATING = "The function is being created."


@dataclass
class Progress:
    """A create, update or publish under way: done when the image is prepared and the least time passed."""

    kind: str  # "create" | "update" | "publish"
    started: float
    prepared: threading.Event
    previous_image: str | None = None  # an update's: what $LATEST runs until the update succeeds
    failure: tuple[str, str] | None = None  # (reason code, reason)


def begin(fn: LambdaFunction, kind: str, image: str | None, previous_image: str | None = None) -> None:
    """Start a phase; a create or update prepares (pulls) ``image`` in a thread, as Lambda optimizes it."""
    progress = Progress(kind, time.monotonic(), threading.Event(), previous_image)
    fn._ds_progress = progress
    if image is None:
        progress.prepared.set()
        return

    def prepare() -> None:
        try:
            prepare_image(oci.parse_image_ref(image))
        except oci.RegistryError as exc:
            code = "ImageDeleted" if exc.status == 404 else "InvalidImage"
            progress.failure = (code, f"devstack: cannot get image {image}: {exc}")
        except Exception as exc:  # noqa: BLE001 - podman could not pull it: the image is bad, the server is fine
            progress.failure = (
                "InvalidImage",
                f"devstack: cannot pull image {image}: {type(exc).__name__}: {' '.join(str(exc).split())[-1500:]}",
            )
        finally:
            progress.prepared.set()

    threading.Thread(target=prepare, name=f"lambda-prepare-{fn.function_name}", daemon=True).start()


def phase_of(fn: LambdaFunction) -> tuple[str, Progress | None]:
    """("done" | "pending" | "failed", the progress) of a function or version."""
    progress: Progress | None = getattr(fn, "_ds_progress", None)
    if progress is None:
        return "done", None
    # The function's tags are set after its code (in moto's constructor): read them now.
    pending = float((getattr(fn, "tags", None) or {}).get(PENDING_SECONDS_TAG) or CONFIG.pending_seconds)
    if not progress.prepared.is_set() or time.monotonic() < progress.started + pending:
        return "pending", progress
    return ("failed" if progress.failure else "done"), progress


def check_invocable(fn: LambdaFunction) -> None:
    """Lambda refuses to invoke a function (or version) that is not Active."""
    phase, progress = phase_of(fn)
    if progress is not None and progress.kind != "update" and phase != "done":
        state = "Pending" if phase == "pending" else "Failed"
        raise ResourceConflict(
            f"The operation cannot be performed at this time. The function is currently in the following state: {state}"
        )


def check_not_busy(fn: LambdaFunction) -> None:
    """Lambda refuses to change or publish a function that is being created or updated (or failed to be created)."""
    check_invocable(fn)
    phase, progress = phase_of(fn)
    if progress is not None and progress.kind == "update" and phase == "pending":
        raise ResourceConflict(
            f"The operation cannot be performed at this time. An update is in progress for resource: {fn.function_arn}"
        )


def running_image(fn: LambdaFunction) -> str:
    """The image an invoke runs: an update's previous image until the update succeeds."""
    phase, progress = phase_of(fn)
    if progress is not None and progress.kind == "update" and phase != "done" and progress.previous_image:
        return progress.previous_image
    return getattr(fn, "_ds_image", None) or fn.code.get("ImageUri", "")
