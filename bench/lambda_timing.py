"""A handler that times the serving handler inside the container: mounted at /var/task/lambda_timing.py.

bench/serving_image_bench.py runs the image with ``lambda_timing.handler`` as
its Command, so the answer carries ``handler_ms``: the time of
``bank_serving.lambda_handler.handler`` alone, on the image's interpreter,
without the runtime interface client's event fetch, JSON and response post.
Plain Python: it runs on the image's interpreter, not the venv's.
"""

from __future__ import annotations

import time
from typing import Any

import bank_serving.lambda_handler as serving


def handler(event: Any, context: Any) -> dict[str, Any]:
    """The serving handler's answer plus ``handler_ms``, its own wall time."""
    started = time.perf_counter()
    answer = serving.handler(event, context)
    return {**answer, "handler_ms": (time.perf_counter() - started) * 1000}
