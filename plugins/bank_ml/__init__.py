"""Training side of the bank-marketing model: plain Python, no Airflow imports.

    data       read the features parquet (pyarrow, only the needed columns); seeded holdout
    train      the scikit-learn pipeline and its hyperparameters
    evaluate   ROC AUC, PR AUC, Brier; curves
    export     skl2onnx conversion per docs/interfaces.md; ONNX/scikit-learn parity
    scoring    score a holdout with an ONNX model through the serving scorer (the live model)
    gate       deploy or not, and why
    artifacts  the registry's version directory: model.onnx, model.json, metrics.json,
               model_card.md, roc.png, pr.png, profile.json
    drift      the training profile, and a scored batch's drift against it (PSI, ranges, new categories)
    release    the steps above chained for a DAG task

Heavy libraries are imported by the modules that need them, never here.
"""
