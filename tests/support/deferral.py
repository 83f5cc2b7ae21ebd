"""Run a deferrable operator as Airflow would, in one process: each trigger rebuilt from what it serialized
(as the triggerer does), run to its first event, and the task resumed with that event and the deferral's kwargs."""

from __future__ import annotations

import asyncio
import importlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from airflow.sdk.exceptions import TaskDeferred
from airflow.triggers.base import BaseTrigger


def first_event(trigger: BaseTrigger) -> dict[str, Any]:
    """The payload of the first event ``trigger.run()`` yields."""

    async def run() -> dict[str, Any]:
        async for event in trigger.run():
            payload: dict[str, Any] = event.payload
            return payload
        raise AssertionError(f"{type(trigger).__name__} yielded nothing")

    # A fresh thread: a Playwright sync session earlier in the run can leave an event
    # loop set on the main thread, where asyncio.run() then refuses to start.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, run()).result()


def rebuilt(trigger: BaseTrigger) -> BaseTrigger:
    """The trigger as the triggerer makes it: its class imported by path, built from its serialized kwargs."""
    path, kwargs = trigger.serialize()
    module, _, name = path.rpartition(".")
    made: BaseTrigger = getattr(importlib.import_module(module), name)(**kwargs)
    return made


def run_deferring(operator: Any, context: Any) -> tuple[Any, list[BaseTrigger]]:
    """``operator.execute(context)``, resumed after every deferral; its result and the triggers it deferred to."""
    triggers: list[BaseTrigger] = []
    method, kwargs = operator.execute, {}
    while True:
        try:
            return method(context, **kwargs), triggers
        except TaskDeferred as deferred:
            trigger = rebuilt(deferred.trigger)
            triggers.append(trigger)
            method = getattr(operator, deferred.method_name)
            kwargs = {"event": first_event(trigger), **(deferred.kwargs or {})}
