"""Registers the release operators' extra links with Airflow (the API server needs them for serialized DAGs).

The links themselves live in ``bank_pipeline.links``; the EMR cluster link is
the Amazon provider's, already registered by the provider.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from bank_pipeline.links import KubernetesDeploymentLink, LambdaFunctionVersionLink, RegistryImageLink


class BankPipelinePlugin(AirflowPlugin):
    name = "bank_pipeline"
    operator_extra_links = [LambdaFunctionVersionLink(), RegistryImageLink(), KubernetesDeploymentLink()]
