"""A task instance that only records its XCom pushes: what operators and links push, for tests that call execute()."""

from __future__ import annotations


class RecordingTI:
    def __init__(self) -> None:
        self.pushed: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.pushed[key] = value
