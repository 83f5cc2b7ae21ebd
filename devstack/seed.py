"""``python -m devstack.seed --endpoint-url URL --registry HOST:PORT``: what an AWS account holds for the DAGs.

infra/bank-ml.cfn.yaml deployed with devstack's CloudFormation (the lake bucket, the
image repository, the EMR and Lambda roles, the worker policy), the raw CSV in the lake,
and the serving base image in the registry: what `make demo` and `make up` set up
in-process, for a devstack that runs elsewhere (docker-compose.yaml's devstack
service, which serves with --no-iam, so these default keys are accepted).

The serving base image is built with podman (devstack.lambda_image); where podman
cannot run (the compose devstack image has none), the rest is seeded and the
message says how to push the image instead.
"""

from __future__ import annotations

import argparse
import sys

from devstack import client_env, podman
from devstack.airflow_env import IMAGE_REPOSITORY, REPO, SERVING_BASE_TAG, seed_lake, seed_release, seed_wheelhouse
from devstack.infra import deploy_stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.seed", description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint-url", required=True, help="devstack's AWS endpoint, e.g. http://devstack:4566")
    parser.add_argument("--registry", required=True, help="devstack's registry as HOST:PORT")
    args = parser.parse_args(argv)
    import boto3

    env = client_env(args.endpoint_url)
    session = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    outputs, _ = deploy_stack(session.client("cloudformation", endpoint_url=args.endpoint_url))
    source = seed_lake(session.client("s3", endpoint_url=args.endpoint_url), REPO / "data" / "bank" / "bank-full.csv")
    print(f"deployed the stack (worker policy {outputs['AirflowWorkerPolicyArn']}); seeded {source}")
    print(f"wheelhouse: {seed_wheelhouse({**env, 'AWS_ENDPOINT_URL': args.endpoint_url})}")
    reason = podman.unavailable_reason()
    if reason is not None:
        print(f"no serving base image: podman cannot run here ({reason}); push one with "
              f"`docker buildx build --platform linux/amd64 --provenance=false -f serving/Dockerfile "
              f"-t {args.registry}/{IMAGE_REPOSITORY}:{SERVING_BASE_TAG} --push .`", file=sys.stderr)  # fmt: skip
        return 0
    print(f"seeded the serving base image {seed_release(args.registry)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
