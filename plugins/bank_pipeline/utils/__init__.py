"""Libraries without Airflow: oci (images through the registry API), rollout (Kubernetes rollout logic)."""
