"""Which registry is reached how: said by settings, never guessed from its address."""

from __future__ import annotations

import pytest

from bank_pipeline.hooks.image_registry import ImageRegistryHook, is_ecr_host

pytestmark = pytest.mark.unit


def test_a_registry_named_plain_http_is_reached_over_http_without_credentials() -> None:
    host, client = ImageRegistryHook("127.0.0.1:5000", None, plain_http=["127.0.0.1:5000"]).get_conn()
    assert (host, client.base_url) == ("127.0.0.1:5000", "http://127.0.0.1:5000")


@pytest.mark.parametrize("registry", ["127.0.0.1:5000", "ghcr.io", "registry.example.com:8443"])
def test_any_other_registry_that_is_not_ecr_is_reached_over_https(registry: str) -> None:
    host, client = ImageRegistryHook(registry, None, plain_http=["devstack:5000"]).get_conn()
    assert (host, client.base_url) == (registry, f"https://{registry}")


def test_ecr_hosts() -> None:
    assert is_ecr_host("123456789012.dkr.ecr.eu-west-1.amazonaws.com")
    assert is_ecr_host("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn")
    assert not is_ecr_host("ghcr.io")


def test_a_platform_the_operator_was_given_is_taken_without_asking_the_registry() -> None:
    # An unreachable registry: reading the image's config would fail with a connection error.
    image = "127.0.0.1:1/bank-model@sha256:" + "0" * 64
    platform = ImageRegistryHook.image_platform(image, None, ["127.0.0.1:1"], given="linux/arm64/v8")
    assert (platform.os, platform.architecture, platform.variant) == ("linux", "arm64", "v8")
    assert str(platform) == "linux/arm64/v8"
