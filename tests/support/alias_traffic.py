"""Traffic on a Lambda alias for the canary tests: a client calling it, and a model that fails one call in five."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

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
