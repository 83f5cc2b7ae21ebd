"""devstack's Lambda configuration, ``CONFIG``: set by ``devstack.aws.awslambda.install()`` and read by the
modules that prepare images (``lambda_images``), keep states (``lambda_states``) and run invokes
(``lambda_invoke``)."""

from __future__ import annotations

from dataclasses import dataclass

from devstack.containers.lambda_containers import Environments

PENDING_SECONDS_ENV = "DEVSTACK_LAMBDA_PENDING_SECONDS"


@dataclass
class _Config:
    registry: str = ""  # host:port of devstack's registry
    endpoint_url: str = ""  # moto's endpoint, given to handlers as AWS_ENDPOINT_URL
    pending_seconds: float = 0.5  # the least time a create, update or new version is in progress
    environments: Environments | None = None  # the functions' containers


CONFIG = _Config()


def is_ours(registry: str) -> bool:
    """``registry`` (host:port) is devstack's own, whose images Lambda runs."""
    return bool(CONFIG.registry) and registry.replace("localhost:", "127.0.0.1:") == CONFIG.registry
