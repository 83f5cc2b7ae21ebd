"""The unit tests' handle on the Lambda handler over a model directory of their own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.handler_import import import_handler


@pytest.fixture
def load_handler() -> Callable[[Path], ModuleType]:
    """import_handler, for tests that need a handler over another model directory."""
    return import_handler
