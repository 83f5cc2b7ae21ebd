"""The bundle's plugin registration: the one file Airflow's plugin loader imports from plugins/.

The code lives in the installed package bank_pipeline (pip install the bundle's
wheel); .airflowignore keeps the loader out of the package folders beside this file.
"""

from bank_pipeline.plugin import BankPipelinePlugin

__all__ = ["BankPipelinePlugin"]
