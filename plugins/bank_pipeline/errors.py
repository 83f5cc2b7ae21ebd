"""Exceptions that name what is wrong.

They subclass AirflowFailException as well as ValueError/RuntimeError: a bad
input or a failed Spark step will not get better on retry, so Airflow fails the
task at once instead of burning retries.
"""

from __future__ import annotations

from bank_pipeline.utils.compat import AirflowFailException


class BadInputError(AirflowFailException, ValueError):
    """A parameter or an input object is wrong; the message names it."""


class WheelhouseMissingError(BadInputError):
    """The EMR nodes' wheels for an architecture are not staged: a deploy step was skipped."""


class StepFailedError(AirflowFailException, RuntimeError):
    """An EMR step ended FAILED or CANCELLED; the message carries its FailureDetails."""


class FeaturesInvalidError(AirflowFailException, ValueError):
    """The features output contradicts its manifest or the run's limits."""


class ScoresInvalidError(AirflowFailException, ValueError):
    """The scores output contradicts its manifest or this run's inputs."""


class DeployFailedError(AirflowFailException, RuntimeError):
    """A release did not pass its checks; the message says what was rolled back."""


class RolloutFailedError(AirflowFailException, RuntimeError):
    """A Kubernetes rollout failed or the API refused it for good; the message says why and what was rolled back."""


class CandidateInvalidError(AirflowFailException, ValueError):
    """The model build's candidate record is missing, for another run, or names an unregistered version."""


class RegistryInvalidError(AirflowFailException, ValueError):
    """A model registry file (live.json, a version's model.json) is not the JSON object it should be."""


class PreflightFailedError(AirflowFailException, RuntimeError):
    """A precondition of the DAGs is missing; the message names each failed check and its fix."""
