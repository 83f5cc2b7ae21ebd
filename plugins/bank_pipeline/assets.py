"""Assets shared between the producing and the consuming DAG."""

from __future__ import annotations

from airflow.sdk import Asset

from bank_pipeline import settings

_LAKE = settings.load().lake

FEATURES = Asset(name="bank_features", uri=_LAKE.features)
# Emitted by bank_model_release once live.json points at a newly released version
# (extra: version, image_uri); schedules bank_batch_score.
LIVE_MODEL = Asset(name="bank_live_model", uri=_LAKE.live_model)
# Emitted by bank_batch_score for committed, validated scores (extra: manifest_uri, scores_uri, rows, ...).
SCORES = Asset(name="bank_scores", uri=_LAKE.scores)
# Emitted by bank_batch_score when a feature's or the score's PSI crossed BANK_DRIFT_PSI_THRESHOLD (extra:
# crossed, max_psi, report_uri, model_version, ...); a release DAG can be scheduled on it to retrain.
DRIFT = Asset(name="bank_drift", uri=_LAKE.drift)
