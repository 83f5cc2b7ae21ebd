"""``python -m devstack.aws.seed --endpoint-url URL --registry HOST:PORT``: what an AWS account holds for the DAGs.

infra/bank-ml.cfn.yaml deployed with devstack's CloudFormation (the lake bucket, the
image repository, the EMR and Lambda roles, the worker policy), the raw CSV in the lake,
and the serving base image in the registry: what `make demo` and `make up` set up
in-process, for a devstack that runs elsewhere (docker-compose.yaml's devstack
service, which serves with --no-iam, so these default keys are accepted).

The serving base image is built with podman (devstack.containers.lambda_image); where podman
cannot run (the compose devstack image has none), the rest is seeded and the
message says plainly, first, what the release needs instead: the image pushed
from the host (``--host-registry``, the registry's name there), and a target other
than Lambda, whose images devstack cannot run without podman.

``--connections-file``: where to write the Airflow connection ``emr_default`` holding
the stack's network (subnet and security groups: their ids exist only once the stack
does), for an Airflow reading connections from that file (LocalFilesystemBackend).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from devstack import client_env
from devstack.aws.infra import cluster_network, deploy_stack
from devstack.containers import podman
from devstack.harness.airflow_env import (
    IMAGE_REPOSITORY,
    REPO,
    SERVING_BASE_TAG,
    seed_lake,
    seed_release,
    seed_wheelhouse,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.aws.seed", description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint-url", required=True, help="devstack's AWS endpoint, e.g. http://devstack:4566")
    parser.add_argument("--registry", required=True, help="devstack's registry as HOST:PORT")
    parser.add_argument("--host-registry", help="the registry as the host reaches it (compose: localhost:5000)")
    parser.add_argument("--connections-file", type=Path, help="write emr_default with the stack's network here")
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
    if args.connections_file:
        write_connections(args.connections_file, outputs)
        print(f"wrote emr_default with the stack's network to {args.connections_file}")
    print(f"wheelhouse: {seed_wheelhouse({**env, 'AWS_ENDPOINT_URL': args.endpoint_url})}")
    reason = podman.unavailable_reason()
    if reason is not None:
        print(no_podman_message(reason, args.host_registry or args.registry), file=sys.stderr)
        return 0
    print(f"seeded the serving base image {seed_release(args.registry)}")
    return 0


def write_connections(path: Path, outputs: dict[str, str]) -> None:
    """``emr_default`` with the stack's network, in LocalFilesystemBackend's JSON form (written whole, then renamed)."""
    connections = {"emr_default": {"conn_type": "emr", "extra": {"Instances": cluster_network(outputs)}}}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(connections, indent=2) + "\n")
    partial.replace(path)


def no_podman_message(reason: str, host_registry: str) -> str:
    """What a user must do for the release path where podman cannot run, in commands that work from the host."""
    image = f"{host_registry}/{IMAGE_REPOSITORY}:{SERVING_BASE_TAG}"
    return (
        f"NOTE: podman cannot run here ({reason}), so devstack built no serving base image and its Lambda "
        "cannot run images (a release to the lambda target would fail its smoke test). For the release path:\n"
        f"  1. from the repository on the host: docker buildx build --platform linux/amd64 --provenance=false "
        f"-f serving/Dockerfile -t {image} --push .\n"
        "  2. BANK_RELEASE_TARGETS=kubernetes docker compose --profile k3s up -d\n"
        "  3. trigger bank_preflight, then bank_model_release"
    )


if __name__ == "__main__":
    sys.exit(main())
