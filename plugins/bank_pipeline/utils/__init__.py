"""Libraries without Airflow: oci, oci_layer, oci_image (images through the registry API), rollout
(Kubernetes rollout logic)."""
