"""Handlers that fail on purpose, mounted into the serving image at /var/task/lambda_faults.py.

The serving handler never raises (a bug answers 500 JSON), so the Lambda error
paths of the image's runtime (awslambdaric under AWS's RIE) are exercised with
these: ``lambda_faults.raise_error`` raises, ``lambda_faults.sleep`` outlives a
short function timeout. Plain Python: runs on the image's interpreter alone.
"""

from __future__ import annotations

import time
from typing import Any


class BankFault(Exception):
    """The exception ``raise_error`` raises."""


def raise_error(event: Any, context: Any) -> None:
    """Raise BankFault: Lambda reports it as an Unhandled function error."""
    raise BankFault(f"raised on purpose for {event!r}")


def sleep(event: Any, context: Any) -> dict[str, Any]:
    """Sleep ``event["seconds"]`` seconds, then answer them back."""
    seconds = float(event.get("seconds", 5))
    time.sleep(seconds)
    return {"slept": seconds}
