"""A fresh copy of the Lambda handler module over a given model directory, as each Lambda container's init loads it."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType


def import_handler(model_dir: Path) -> ModuleType:
    """A fresh copy of bank_serving.lambda_handler (its init loads the model) with BANK_MODEL_DIR=model_dir.

    A new module object each time, not registered in sys.modules: tests over different
    model directories do not disturb each other (Lambda runs one init per container).
    """
    previous = os.environ.get("BANK_MODEL_DIR")
    os.environ["BANK_MODEL_DIR"] = str(model_dir)
    try:
        spec = importlib.util.find_spec("bank_serving.lambda_handler")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        if previous is None:
            os.environ.pop("BANK_MODEL_DIR", None)
        else:
            os.environ["BANK_MODEL_DIR"] = previous
