"""Load the ONNX model once and score features with ONNX Runtime.

Loading checks, in order, and raises ModelLoadError (or its subclass
ModelVersionError) with a message saying what to fix:

- model.onnx exists and its sha256 is the one model.json records (not truncated or swapped);
- ONNX Runtime accepts it;
- it was exported by the scikit-learn release this code was built for (TRAINED_WITH_SKLEARN);
- its inputs are exactly FEATURE_COLUMNS with the contract's types, and it has a
  `probabilities` output and a threshold in [0, 1].

Only ONNX bytes are ever parsed: nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from bank_serving.features import as_feeds
from bank_serving.schema import (
    FEATURE_COLUMNS,
    FEATURE_TYPES,
    META_FEATURE_COLUMNS,
    META_SKLEARN_VERSION,
    META_THRESHOLD,
    PROBABILITIES_OUTPUT,
    TRAINED_WITH_SKLEARN,
)

MODEL_FILE = "model.onnx"
MODEL_JSON = "model.json"


class ModelLoadError(RuntimeError):
    """The model is missing, corrupt or does not match the serving contract."""


class ModelVersionError(ModelLoadError):
    """The model was built with another scikit-learn release than this serving code."""


def _session(model_bytes: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # One thread: on a small container the default pool makes latency noisy, not lower.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def _check_inputs(session: ort.InferenceSession, where: str) -> None:
    got = [(i.name, i.type) for i in session.get_inputs()]
    expected = [(name, f"tensor({FEATURE_TYPES[name]})") for name in FEATURE_COLUMNS]
    if got != expected:
        raise ModelLoadError(
            f"{where}: model inputs do not match the serving contract: got "
            f"{', '.join(f'{n}:{t}' for n, t in got)}; expected {', '.join(f'{n}:{t}' for n, t in expected)}"
        )
    outputs = [o.name for o in session.get_outputs()]
    if PROBABILITIES_OUTPUT not in outputs:
        raise ModelLoadError(f"{where}: model has no {PROBABILITIES_OUTPUT!r} output (outputs: {outputs})")


def _threshold(meta: Mapping[str, str], where: str) -> float:
    try:
        threshold = float(meta[META_THRESHOLD])
    except (KeyError, ValueError) as err:
        raise ModelLoadError(f"{where}: metadata {META_THRESHOLD} missing or not a number: {err}") from err
    if not 0.0 <= threshold <= 1.0:
        raise ModelLoadError(f"{where}: metadata {META_THRESHOLD} must be within 0..1, got {threshold}")
    return threshold


@dataclass(frozen=True)
class OnnxModel:
    """A loaded model: its version (first 16 hex of sha256(model.onnx)), threshold and session."""

    version: str
    sha256: str
    sklearn_version: str
    threshold: float
    session: ort.InferenceSession

    @classmethod
    def from_bytes(
        cls, model_bytes: bytes, *, where: str = "model.onnx", require_sklearn_version: bool = True
    ) -> OnnxModel:
        """Load ONNX bytes; `where` names the source in errors.

        require_sklearn_version=False skips only the scikit-learn check, for scoring an
        older live model on a holdout (ONNX scores do not depend on scikit-learn).
        """
        digest = hashlib.sha256(model_bytes).hexdigest()
        try:
            session = _session(model_bytes)
        except Exception as err:  # noqa: BLE001 - ORT raises several private exception types
            raise ModelLoadError(f"{where}: not a valid ONNX model: {err}") from err
        meta = session.get_modelmeta().custom_metadata_map
        sklearn_version = meta.get(META_SKLEARN_VERSION, "")
        if require_sklearn_version and sklearn_version != TRAINED_WITH_SKLEARN:
            raise ModelVersionError(
                f"{where}: model was built with scikit-learn {sklearn_version or '(unrecorded)'}, but this "
                f"serving code is built for scikit-learn {TRAINED_WITH_SKLEARN}; retrain the model with "
                f"scikit-learn {TRAINED_WITH_SKLEARN} or rebuild the serving image for {sklearn_version}"
            )
        _check_inputs(session, where)
        if META_FEATURE_COLUMNS in meta:
            names = [c.get("name") for c in json.loads(meta[META_FEATURE_COLUMNS])]
            if names != list(FEATURE_COLUMNS):
                raise ModelLoadError(f"{where}: metadata {META_FEATURE_COLUMNS} {names} != {list(FEATURE_COLUMNS)}")
        return cls(
            version=digest[:16],
            sha256=digest,
            sklearn_version=sklearn_version,
            threshold=_threshold(meta, where),
            session=session,
        )

    def predict_proba(self, features: Mapping[str, Any]) -> np.ndarray:
        """P(subscribes) for each row of `features` (see as_feeds for what it accepts), as float32 [N]."""
        (probabilities,) = self.session.run([PROBABILITIES_OUTPUT], as_feeds(features))
        positive: np.ndarray = probabilities[:, 1]
        return positive

    def labels(self, probabilities: np.ndarray) -> np.ndarray:
        """1 where probability >= threshold, else 0 (the ONNX `label` output is argmax, i.e. 0.5)."""
        return (probabilities >= self.threshold).astype(np.int64)


def read_model_json(model_dir: Path) -> dict[str, Any]:
    """model.json of a model directory; ModelLoadError if it is missing or malformed."""
    path = model_dir / MODEL_JSON
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ModelLoadError(f"no model in {model_dir}: {MODEL_JSON} is missing") from err
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{path}: unreadable or not JSON: {err}") from err
    if not isinstance(info, dict) or not isinstance(info.get("sha256"), str):
        raise ModelLoadError(f"{path}: expected an object with a sha256 string")
    return info


def load_model_dir(model_dir: str | os.PathLike[str], *, require_sklearn_version: bool = True) -> OnnxModel:
    """Load model.onnx from a model directory, checked against its model.json (see module doc)."""
    directory = Path(model_dir)
    onnx_path = directory / MODEL_FILE
    try:
        model_bytes = onnx_path.read_bytes()
    except FileNotFoundError as err:
        raise ModelLoadError(
            f"no model in {directory}: {MODEL_FILE} is missing (BANK_MODEL_DIR names the model directory)"
        ) from err
    info = read_model_json(directory)
    digest = hashlib.sha256(model_bytes).hexdigest()
    if digest != info["sha256"]:
        raise ModelLoadError(
            f"{onnx_path}: corrupt or replaced: sha256 {digest} != {info['sha256']} recorded in {MODEL_JSON}"
        )
    return OnnxModel.from_bytes(model_bytes, where=str(onnx_path), require_sklearn_version=require_sklearn_version)
