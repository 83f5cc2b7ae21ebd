"""A Lambda alias with two versions for the canary tests, a client calling it, and a model that fails one call in five."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from devstack import Devstack

# A model that fails one request in five (in each container), as a broken release might.
FLAKY_HANDLER = (
    "import itertools\n_calls = itertools.count(1)\n\n\ndef handler(event, context):\n"
    "    if next(_calls) % 5 == 0:\n        raise RuntimeError('bad model')\n    return {'ok': True}\n"
)


@contextmanager
def clients(ds: Devstack, name: str) -> Iterator[dict[str, int]]:
    """Calls to the alias in a thread until the block ends; counts the invokes each version served."""
    lam, served, stop = ds.client("lambda"), {"1": 0, "2": 0}, threading.Event()

    def call() -> None:
        while not stop.is_set():
            served[lam.invoke(FunctionName=name, Qualifier="live", Payload=json.dumps({}))["ExecutedVersion"]] += 1

    thread = threading.Thread(target=call)
    thread.start()
    try:
        yield served
    finally:
        stop.set()
        thread.join()


def two_versions(lam: Any, role: str, old: str, new: str) -> str:
    """A new function with version 1 running image ``old`` and version 2 ``new``, each Active; its name."""
    name = f"routed-{uuid.uuid4().hex[:8]}"
    lam.create_function(FunctionName=name, Role=role, PackageType="Image", Code={"ImageUri": old})
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.2})
    for image in (old, new):
        if image != old:
            lam.update_function_code(FunctionName=name, ImageUri=image)
            lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.2})
        version = lam.publish_version(FunctionName=name)["Version"]
        lam.get_waiter("published_version_active").wait(
            FunctionName=name, Qualifier=version, WaiterConfig={"Delay": 0.2}
        )
    return name


def weighted_alias(lam: Any, role: str, old: str, new: str, share: float) -> str:
    """``two_versions`` with alias ``live`` on version 1 sending ``share`` of its invokes to version 2."""
    name = two_versions(lam, role, old, new)
    lam.create_alias(
        FunctionName=name, Name="live", FunctionVersion="1", RoutingConfig={"AdditionalVersionWeights": {"2": share}}
    )
    return name
