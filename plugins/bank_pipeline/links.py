"""Extra links of the release operators: buttons on a task instance in the Airflow UI.

Each operator persists the values its link needs in XCom while it runs (as the
Amazon provider's links do); the API server builds the URL from them when the
UI asks, so a link appears as soon as the value is known, also when the task
fails afterwards (e.g. a published Lambda version whose smoke test failed).
The links are registered with Airflow by ``bank_pipeline.plugin`` (plugins/bank_pipeline_plugin.py),
which the API server needs to show them for serialized DAGs.

The EMR cluster link needs nothing here: the provider's EMR operators already
carry its ``EmrClusterLink`` (and the logs link).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from bank_pipeline.utils.compat import BaseOperatorLink, XCom

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context
    from airflow.sdk.types import TaskInstanceKey

AWS_DOMAINS = {"aws": "aws.amazon.com", "aws-cn": "amazonaws.cn", "aws-us-gov": "amazonaws-us-gov.com"}
ECR_HOST = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?P<cn>\.cn)?$")
DASHBOARD_ENV = "BANK_KUBERNETES_DASHBOARD_URL"
LAMBDA_CONSOLE_ENV = "BANK_LAMBDA_CONSOLE_URL"


class _PersistedLink(BaseOperatorLink):
    """A link whose values the operator stores in XCom under ``key``; ``format_link`` makes the URL ("" = none)."""

    name: ClassVar[str]
    key: ClassVar[str]

    @property
    def xcom_key(self) -> str:
        return self.key

    @classmethod
    def persist(cls, context: Context | dict[str, Any], operator: BaseOperator, **values: Any) -> None:
        """Store the link's values; a no-op outside a task run (no ``ti``, e.g. unit tests calling execute)."""
        ti = context.get("ti") if context else None
        if ti is None or not getattr(operator, "do_xcom_push", True):
            return
        ti.xcom_push(key=cls.key, value=values)

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        try:
            values = XCom.get_value(key=self.key, ti_key=ti_key)
        except Exception:  # noqa: BLE001 - a link must never break the task's page
            return ""
        return self.format_link(**values) if isinstance(values, dict) else ""

    def format_link(self, *args: Any, **values: Any) -> str:
        """The URL from the persisted values ("" when there is none)."""
        raise NotImplementedError


class LambdaFunctionVersionLink(_PersistedLink):
    """The published Lambda function version: its page in the AWS console, or the page the template in
    $BANK_LAMBDA_CONSOLE_URL names (read by the API server; ``{function}``, ``{version}``, ``{region}``),
    e.g. devstack's moto dashboard. Never inferred from the connection's endpoint: a VPC endpoint
    for Lambda is still AWS, with AWS's console."""

    name = "Lambda function version"
    key = "bank_lambda_function_version"

    def format_link(
        self,
        *,
        function_name: str,
        version: str,
        region_name: str | None = None,
        aws_partition: str = "aws",
        template: str | None = None,
        **_: Any,
    ) -> str:
        template = _template(template, LAMBDA_CONSOLE_ENV)
        if template:
            values = {"function": function_name, "version": str(version), "region": region_name or ""}
            return _fill(template, values)
        domain = AWS_DOMAINS.get(aws_partition)
        if not domain or not region_name:
            return ""
        return (
            f"https://console.{domain}/lambda/home?region={region_name}"
            f"#/functions/{quote(function_name, safe='')}/versions/{quote(str(version), safe='')}?tab=image"
        )


class RegistryImageLink(_PersistedLink):
    """The pushed image by digest: ECR's console page, or the manifest in another registry, over plain
    HTTP only if the push went so (a registry named in BANK_PLAIN_HTTP_REGISTRIES, as devstack's is)."""

    name = "Image in registry"
    key = "bank_registry_image"

    def format_link(self, *, registry: str, repository: str, digest: str, plain_http: bool = False, **_: Any) -> str:
        ecr = ECR_HOST.match(registry)
        if ecr:
            domain = AWS_DOMAINS["aws-cn" if ecr["cn"] else "aws"]
            return (
                f"https://console.{domain}/ecr/repositories/private/{ecr['account']}/{repository}"
                f"/_/image/{digest}/details?region={ecr['region']}"
            )
        return f"{'http' if plain_http else 'https'}://{registry}/v2/{repository}/manifests/{digest}"


class KubernetesDeploymentLink(_PersistedLink):
    """The Deployment in a Kubernetes dashboard, from the template in $BANK_KUBERNETES_DASHBOARD_URL.

    The template (read by the API server) may use ``{namespace}`` and ``{deployment}``, e.g.
    ``https://dashboard.example/#/deployment/{namespace}/{deployment}?namespace={namespace}``.
    Without it there is no URL: a cluster has no address a browser can open by itself.
    """

    name = "Kubernetes Deployment"
    key = "bank_kubernetes_deployment"

    def format_link(self, *, namespace: str, deployment: str, template: str | None = None, **_: Any) -> str:
        template = _template(template, DASHBOARD_ENV)
        return _fill(template, {"namespace": namespace, "deployment": deployment}) if template else ""


def _template(given: str | None, env: str) -> str:
    """The URL template a test gives, else the one in ``env`` (read by the API server), else ""."""
    return given if given is not None else os.environ.get(env, "")


def _fill(template: str, values: dict[str, str]) -> str:
    """``template`` with its placeholders filled from ``values`` (URL-quoted); "" if it names another."""
    try:
        return template.format(**{name: quote(value, safe="") for name, value in values.items()})
    except (KeyError, IndexError, ValueError):
        return ""


ALL_LINKS = (LambdaFunctionVersionLink, RegistryImageLink, KubernetesDeploymentLink)
