"""The AirflowPlugin of the bundle: registers the release operators' extra links with Airflow.

The API server needs a plugin to show an operator's extra links for serialized DAGs.
The EMR cluster link needs none: the provider's EMR operators carry it and the
provider registers it. plugins/bank_pipeline_plugin.py exposes this class to
Airflow's plugin loader, which imports only that file (plugins/.airflowignore hides
the packages beside it).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from bank_pipeline.links import KubernetesDeploymentLink, LambdaFunctionVersionLink, RegistryImageLink


class BankPipelinePlugin(AirflowPlugin):
    name = "bank_pipeline"
    operator_extra_links = [LambdaFunctionVersionLink(), RegistryImageLink(), KubernetesDeploymentLink()]
