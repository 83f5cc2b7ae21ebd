"""Which version an invoke through an alias runs, and which alias an invoke names."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from devstack.aws import lambda_routing

pytestmark = pytest.mark.unit


def alias(version: str, extra: dict[str, float] | None) -> Any:
    return SimpleNamespace(
        function_version=version, routing_config={"AdditionalVersionWeights": extra} if extra else None
    )


@pytest.mark.parametrize(
    ("extra", "draw", "runs"),
    [
        (None, 0.0, "1"),
        ({"2": 0.3}, 0.29, "2"),
        ({"2": 0.3}, 0.3, "1"),
        ({"2": 0.0}, 0.0, "1"),
        ({"2": 1.0}, 0.999, "2"),
    ],
)
def test_the_additional_version_runs_when_the_draw_is_below_its_weight(
    extra: dict[str, float] | None, draw: float, runs: str
) -> None:
    assert lambda_routing.choose(alias("1", extra), lambda: draw) == runs


class Storage:
    def get_alias(self, name: str, function_name: str) -> tuple[str, str]:
        return (function_name, name)


@pytest.mark.parametrize(
    ("function_name", "qualifier", "named"),
    [
        ("f", "live", ("f", "live")),
        ("f:live", None, ("f", "live")),
        ("arn:aws:lambda:us-east-1:123456789012:function:f:live", None, ("f", "live")),
        ("arn:aws:lambda:us-east-1:123456789012:function:f", "live", ("f", "live")),
        ("f", None, None),
        ("f", "$LATEST", None),
        ("f", "3", None),
        ("f:3", None, None),
    ],
)
def test_the_alias_an_invoke_names(function_name: str, qualifier: str | None, named: Any) -> None:
    assert lambda_routing.alias_of(Storage(), *lambda_routing.target(function_name, qualifier)) == named  # type: ignore[arg-type]
