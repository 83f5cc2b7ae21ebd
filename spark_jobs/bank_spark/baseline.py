"""The pyspark.ml baseline the model is compared with: a logistic regression on the standardized features.

A sanity check, not the model: fitted by the model build (bank_spark.train_job) on its own seeded
random split of at most about ``max_rows`` rows, its ROC and PR AUC go into the model card
beside the model's. Built-in Spark ML only: it runs on the cluster's JVMs, not in Python.
"""

from __future__ import annotations

import math
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from bank_serving.schema import CATEGORICAL_COLUMNS

# What the baseline model sees: the derived columns stand in for balance and campaign.
MODEL_NUMERIC_COLUMNS: tuple[str, ...] = (
    "age", "default", "balance_slog", "housing", "loan", "day", "campaign_capped",
    "pdays", "was_contacted", "previous",
)  # fmt: skip


def _finite(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


def fit_baseline(features: DataFrame, holdout_fraction: float, seed: int) -> dict[str, Any]:
    """Fit a logistic regression (standardized features) on a seeded split of `features`; ROC/PR AUC on the holdout.

    Metrics are null (with a note) when either side of the split lacks one of the labels.
    """
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.ml.feature import OneHotEncoder, StringIndexer, VectorAssembler

    # Never-contacted rows have pdays null; was_contacted carries that signal, so 0 is a neutral fill.
    # Cached first: the split reads it once, not once per side (a full read of the
    # features when they are a sample of a large output).
    data = features.fillna({"pdays": 0}).cache()
    train, test = data.randomSplit([1.0 - holdout_fraction, holdout_fraction], seed=seed)
    train, test = train.cache(), test.cache()
    try:
        # Both sides' label counts in one Spark job (a cold cluster pays for every job it starts).
        sides = train.withColumn("_side", F.lit("train")).unionByName(test.withColumn("_side", F.lit("test")))
        counts = sides.groupBy("_side", "label").count().collect()
        train_labels = {r["label"]: r["count"] for r in counts if r["_side"] == "train"}
        test_labels = {r["label"]: r["count"] for r in counts if r["_side"] == "test"}
        result: dict[str, Any] = {
            "model": "pyspark.ml LogisticRegression",
            "roc_auc": None,
            "pr_auc": None,
            "holdout_fraction": holdout_fraction,
            "seed": seed,
            "train_rows": sum(train_labels.values()),
            "test_rows": sum(test_labels.values()),
        }
        if len(train_labels) < 2 or len(test_labels) < 2:
            result["note"] = "not fitted: the train and holdout sets each need both labels"
            return result

        indexed = [f"{c}_idx" for c in CATEGORICAL_COLUMNS]
        one_hot_in = indexed + ["month"]  # month 1..12 is seasonal, not ordinal
        one_hot = [f"{c}_ohe" for c in one_hot_in]
        pipeline = Pipeline(
            stages=[
                StringIndexer(inputCols=list(CATEGORICAL_COLUMNS), outputCols=indexed, handleInvalid="keep"),
                OneHotEncoder(inputCols=one_hot_in, outputCols=one_hot, handleInvalid="keep"),
                VectorAssembler(
                    inputCols=one_hot + list(MODEL_NUMERIC_COLUMNS), outputCol="features", handleInvalid="keep"
                ),
                # No StandardScaler: the regression standardizes internally (standardization=True), and a
                # scaler would cost the cold cluster another pass and fit for the same unregularized model.
                LogisticRegression(featuresCol="features", labelCol="label", maxIter=100),
            ]
        )
        predictions = pipeline.fit(train).transform(test).select("label", "rawPrediction").cache()
        try:
            evaluator = BinaryClassificationEvaluator(labelCol="label", rawPredictionCol="rawPrediction")
            result["roc_auc"] = _finite(evaluator.evaluate(predictions, {evaluator.metricName: "areaUnderROC"}))
            result["pr_auc"] = _finite(evaluator.evaluate(predictions, {evaluator.metricName: "areaUnderPR"}))
        finally:
            predictions.unpersist()
        return result
    finally:
        train.unpersist()
        test.unpersist()
        data.unpersist()


def baseline_sample(features: DataFrame, rows: int, max_rows: int, seed: int) -> DataFrame:
    """At most about `max_rows` of `features`, a seeded Bernoulli sample; all of them when they fit.

    The baseline is a sanity check against the model, not the model: beyond a
    few hundred thousand rows its AUC no longer moves, while its iterations
    over every row would cost more than the rest of the job.
    """
    if rows <= max_rows:
        return features
    return features.sample(fraction=max_rows / rows, seed=seed)
