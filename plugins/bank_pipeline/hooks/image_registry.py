"""The image registry, ECR or devstack's: the only place its HTTP API is reached (through utils.oci)."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from bank_pipeline.errors import BadInputError
from bank_pipeline.utils.compat import BaseHook

if TYPE_CHECKING:
    from bank_pipeline.utils.oci import RegistryClient
    from bank_pipeline.utils.oci_image import Platform


def is_ecr_host(host: str) -> bool:
    """``ACCOUNT.dkr.ecr.REGION.amazonaws.com`` (or .com.cn)."""
    return ".dkr.ecr." in host and ".amazonaws.com" in host


class ImageRegistryHook(BaseHook):
    """One image registry: ECR with temporary credentials from EcrHook when ``registry`` is empty or an
    ECR host; a host in ``plain_http`` over plain HTTP without credentials (a local registry, named
    by the BANK_PLAIN_HTTP_REGISTRIES setting); any other over HTTPS, anonymously.

    :param registry: ``host[:port]``, or empty for the account's ECR.
    :param aws_conn_id: the AWS connection ECR's credentials come from.
    :param plain_http: the registries reached over plain HTTP.
    """

    def __init__(
        self, registry: str = "", aws_conn_id: str | None = "aws_default", plain_http: Collection[str] = ()
    ) -> None:
        super().__init__()
        self.registry = registry
        self.aws_conn_id = aws_conn_id
        self.plain_http = frozenset(plain_http)

    def get_conn(self) -> tuple[str, RegistryClient]:
        """(registry host, client)."""
        from bank_pipeline.utils import oci

        if self.registry in self.plain_http:
            return self.registry, oci.RegistryClient(f"http://{self.registry}")
        if self.registry and not is_ecr_host(self.registry):
            return self.registry, oci.RegistryClient(f"https://{self.registry}")
        from airflow.providers.amazon.aws.hooks.ecr import EcrHook

        registry_id = self.registry.split(".", 1)[0] if self.registry else None
        host, auth = oci.ecr_auth(EcrHook(aws_conn_id=self.aws_conn_id), registry_id)
        return host, oci.RegistryClient(f"https://{host}", auth=auth)

    @classmethod
    def image_platform(
        cls, image: str, aws_conn_id: str | None, plain_http: Collection[str] = (), *, given: str | None = None
    ) -> Platform:
        """The os/architecture in the config of ``image`` (``host/repo@sha256:…`` or ``host/repo:tag``),
        or ``given`` (``linux/amd64``: an operator's image_platform) without asking the registry.

        BadInputError if the registry has no such image or it is not one image (an index, another
        media type): what a release deploys must be one image of one platform.
        """
        from bank_pipeline.utils import oci, oci_image

        if given:
            return oci_image.Platform.parse(given)
        ref = oci.parse_image_ref(image)
        _host, client = cls(ref.registry, aws_conn_id, plain_http).get_conn()
        try:
            return oci_image.image_platform(client, ref.repo, ref.reference)
        except oci.NotOneImageError as exc:
            raise BadInputError(f"{image} cannot be released: {exc}") from exc
        except oci.RegistryError as exc:
            if exc.status == 404:
                raise BadInputError(f"{image} cannot be released: {exc}") from exc
            raise
