"""Weighted aliases (``RoutingConfig``) as Lambda applies them, for ``devstack.aws.awslambda``.

moto 5.2.5 stores an alias's RoutingConfig as sent and ignores it: it accepts a weight of 1.5,
the alias's own version as the additional one, a version that does not exist, two additional
versions and $LATEST beside one, and every invoke through the alias runs its FunctionVersion.
Here CreateAlias and UpdateAlias refuse what Lambda refuses (``check``), and an invoke through a
weighted alias runs the additional version with its weight's probability (``choose``), which
``X-Amz-Executed-Version`` then names, as Lambda routes a canary's share.

Lambda's rules (the API reference's AliasRoutingConfiguration and "Alias routing configuration"):
at most one additional version, named by its number, weighted 0.0 to 1.0; a published version
other than the alias's own, which must not be $LATEST. The wording of ValidationException is
Lambda's request validation; the other messages are devstack's own, naming what is wrong.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

from moto.awslambda.exceptions import InvalidParameterValueException, ValidationException
from moto.awslambda.models import LambdaAlias, LambdaStorage

_FIELD = "routingConfig.additionalVersionWeights"


def weights(routing_config: Any) -> dict[str, float]:
    """The additional versions and their weights of a RoutingConfig as moto stores it, the request's
    dict (its annotations say str); empty: no routing."""
    return dict((routing_config or {}).get("AdditionalVersionWeights") or {})


def check(storage: LambdaStorage, function_name: str, function_version: str, routing_config: Any) -> None:
    """Refuse a RoutingConfig Lambda refuses for an alias of ``function_version`` (raises moto's Lambda errors)."""
    extra = weights(routing_config)
    if not extra:
        return
    shown = "{" + ", ".join(f"{k}={v}" for k, v in extra.items()) + "}"
    if len(extra) > 1:
        raise ValidationException(shown, _FIELD, "Member must have length less than or equal to 1")
    [(version, weight)] = extra.items()
    if not re.fullmatch(r"[0-9]+", version):
        raise ValidationException(
            shown, _FIELD, "Map keys must satisfy constraint: [Member must satisfy regular expression pattern: [0-9]+]"
        )
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0.0 <= weight <= 1.0:
        raise ValidationException(
            shown, _FIELD, "Map value must satisfy constraint: [Member must have value less than or equal to 1.0, "
            "Member must have value greater than or equal to 0.0]"
        )  # fmt: skip
    if function_version == "$LATEST":
        raise InvalidParameterValueException("$LATEST is not supported for an alias pointing to more than 1 version")
    if version == function_version:
        raise InvalidParameterValueException(
            f"Invalid function version {version}. Function version {version} is already included in routing configuration."
        )
    storage.get_function_by_name_or_arn_with_qualifier(function_name, version)  # ResourceNotFoundException if none


def choose(alias: LambdaAlias, draw: Callable[[], float] = random.random) -> str:
    """The version one invoke through ``alias`` runs: the additional one with its weight's probability."""
    for version, weight in weights(alias.routing_config).items():
        if draw() < float(weight):
            return str(version)
    return str(alias.function_version)


def target(function_name: str, qualifier: str | None) -> tuple[str, str | None]:
    """The function's bare name and the qualifier an invoke names: ``Qualifier``, else the one in
    ``name:qualifier`` or a qualified ARN (None: $LATEST, unnamed)."""
    name, _, in_name = function_name.split(":function:", 1)[-1].partition(":")
    return name, qualifier or in_name or None


def alias_of(storage: LambdaStorage, name: str, named: str | None) -> LambdaAlias | None:
    """The alias ``named`` (``target``'s), None for a version or $LATEST."""
    if named is None or named == "$LATEST" or named.isdigit():
        return None
    return storage.get_alias(named, name)
