"""
### Preflight: what this deployment lacks before the first run

Run it by hand after deploying `infra/bank-ml.cfn.yaml` and setting the `BANK_*`
variables, and again whenever a run fails on something outside the code. Every
check is read-only; each says what it checked and, on failure, what to change.

* **Airflow**: the settings parse and none is misspelt; the AWS connection has a
  region; `emr_default` holds none of Airflow's placeholders (`mykey`,
  `somesubnet`); the Kubernetes connection names a cluster.
* **IAM**: the worker's identity may make every call the DAGs make
  (`SimulatePrincipalPolicy` over `bank_pipeline.permissions.CALLS`); the EMR
  service role, the nodes' instance profile and the Lambda role exist and trust
  their services.
* **EMR**: the release label is offered; the subnet and security groups carry
  `for-use-with-amazon-emr-managed-policies=true` (AmazonEMRServicePolicy_v2);
  the instance types are offered in the subnet's zone; the nodes' wheelhouse is
  staged for their architecture.
* **S3, ECR, Lambda**: the lake is encrypted and private and holds the raw CSV;
  the repository's tags are immutable and Lambda may pull; the serving base image
  is pushed; the function, if it exists, runs the image's architecture.
* **Kubernetes** (when a target): the API server answers (no `aws` CLI in the
  kubeconfig); `SelfSubjectAccessReview` allows every verb of the shipped Role;
  the Deployment, if it exists, selects the image's architecture.

The log shows the table; the task's XCom holds the rows. The run fails if any
check fails (warnings do not fail it).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

DAG_ID = "bank_preflight"


@task
def preflight() -> list[dict[str, str]]:
    """Run every check, log the table, fail naming the failed checks and their fixes."""
    from bank_pipeline.preflight import report

    return report()


with DAG(
    dag_id=DAG_ID,
    description="Checks the account, the cluster and this Airflow before the first run",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["bank", "preflight"],
    doc_md=__doc__,
    # A check's answer does not change on retry within minutes: fix, then trigger again.
    default_args={"owner": "ml-platform", "retries": 0},
):
    preflight()
