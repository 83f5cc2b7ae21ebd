"""Operators, sensors, triggers, links, settings and task bodies of the bank-marketing DAGs.

Arranged like the Amazon provider, by kind and service:

    operators/  emr (none yet), lambda_function, images, kubernetes
    sensors/    emr
    triggers/   lambda_function, kubernetes
    utils/      oci, oci_layer, oci_image (the image library), rollout (what a Kubernetes rollout means)
    links.py    the UI's extra links; plugin.py registers them (AirflowPlugin)

and by DAG, what a DAG's @task bodies do: features (bank_features_emr), release
(bank_model_release), batch_score (bank_batch_score); with their shared pieces:
emr (the transient cluster and a staged Spark step), lake (S3 and committed
outputs), registry (the model registry), resources (files shipped with a run),
settings, assets, errors.

DAG files import this package at parse time: no module here imports pandas,
pyarrow, scikit-learn, onnxruntime, kubernetes or boto3 at module level."""
