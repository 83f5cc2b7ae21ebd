"""Serving code of the bank-marketing model: request validation, feature derivation, ONNX scoring.

Light on purpose (numpy and onnxruntime only; no pandas, scikit-learn or scipy),
so that a Lambda cold start stays near 0.1 s. The training side (plugins/bank_ml)
reuses the scorer to compare a new model with the live one.
"""

from bank_serving.schema import FEATURE_COLUMNS, MAX_RECORDS, TRAINED_WITH_SKLEARN

__all__ = ["FEATURE_COLUMNS", "MAX_RECORDS", "TRAINED_WITH_SKLEARN"]
