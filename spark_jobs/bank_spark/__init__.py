"""The PySpark jobs submitted to EMR, and the runtime they share.

    features     raw bank CSV -> features parquet + quarantine + baseline (bank_features)
    batch_score  committed features + a registered ONNX model -> scores parquet
    storage      files through the Hadoop FileSystem API (EMRFS / S3A / local)
    commit       the manifest commit protocol of docs/interfaces.md
    cli          the `<prog>: error: <message>` command-line contract

Neither job imports the other. Both import bank_serving: the features job for
the serving contract it writes, the scoring job for the scorer the Lambda runs.
The entry points spark-submit runs are package data (entrypoints/), and the
DAGs ship bank_spark and bank_serving to the cluster in one --py-files zip
(bank_pipeline.resources).
"""
