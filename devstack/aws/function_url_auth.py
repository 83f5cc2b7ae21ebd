"""Who may call a function URL, as Lambda decides it: ``AWS_IAM``, a SigV4 signature by a key devstack knows
(and, when moto enforces IAM, the caller's policies); ``NONE``, the public statements of the target's resource
policy (``devstack.aws.lambda_policies``). See ``devstack.aws.function_urls``."""

from __future__ import annotations

import hmac
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devstack.aws.function_url_server import UrlConfig

log = logging.getLogger("devstack.aws.function_urls")

SIGNATURE_MAX_AGE = 15 * 60  # seconds a SigV4 signature is valid, as on AWS
DEFAULT_KEYS = {"testing": "testing"}  # devstack's own client credentials (devstack.client_env)


def authorize(config: UrlConfig, method: str, path: str, headers: dict[str, str], body: bytes) -> dict[str, Any] | None:
    """Who is calling (the event's requestContext parts), or None: 403."""
    if config.auth_type == "NONE":
        return {} if public_access_allowed(config) else None
    return verify_sigv4(config, method, path, headers, body)


# What an unauthenticated request through a NONE URL presents to its function's resource policy.
URL_REQUEST_CONTEXT = {"lambda:FunctionUrlAuthType": "NONE", "lambda:InvokedViaFunctionUrl": "true"}
PUBLIC_ACTIONS = ("lambda:InvokeFunctionUrl", "lambda:InvokeFunction")


def public_access_allowed(config: UrlConfig) -> bool:
    """The resource policy of the URL's target allows ``*`` both PUBLIC_ACTIONS for a request through the URL.

    lambda:InvokeFunctionUrl must be the NONE auth type's (its FunctionUrlAuthType
    condition); lambda:InvokeFunction may carry only conditions such a request meets.
    """
    from devstack.aws.lambda_policies import resource_policy

    statements = resource_policy(config.account_id, config.region, config.function_name, config.qualifier)
    missing = [action for action in PUBLIC_ACTIONS if not any(_allows_public(s, action, config) for s in statements)]
    if missing:
        log.info(
            "function URL %s (NONE): 403, its resource policy does not allow * %s", config.url, " nor ".join(missing)
        )
    return not missing


def _allows_public(statement: dict[str, Any], action: str, config: UrlConfig) -> bool:
    actions = statement.get("Action")
    conditions = statement.get("Condition") or {}
    if (
        action == "lambda:InvokeFunctionUrl"
        and (conditions.get("StringEquals") or {}).get("lambda:FunctionUrlAuthType") != "NONE"
    ):
        return False  # the public URL statement names the auth type it opens
    return (
        statement.get("Effect", "Allow") == "Allow"
        and any(a in (action, "lambda:*", "*") for a in (actions if isinstance(actions, list) else [actions]))
        and statement.get("Principal") in ("*", {"AWS": "*"})
        and statement.get("Resource") == config.function_arn
        and _conditions_met(conditions, URL_REQUEST_CONTEXT)
    )


def _conditions_met(conditions: dict[str, dict[str, Any]], context: dict[str, str]) -> bool:
    """Every condition holds in ``context`` (StringEquals and Bool; any other operator or key does not)."""
    for operator, tests in conditions.items():
        for key, wanted in tests.items():
            values = [str(v) for v in (wanted if isinstance(wanted, list) else [wanted])]
            have = context.get(key)
            if operator == "Bool":
                values, have = [v.lower() for v in values], (have or "").lower()
            elif operator != "StringEquals":
                return False
            if have is None or have not in values:
                return False
    return True


def _secret_of(access_key: str) -> tuple[str, str, str] | None:
    """(secret, account id, user ARN) of an access key devstack knows."""
    from moto.iam.models import iam_backends

    for account_id, partitions in list(iam_backends.items()):
        for backend in partitions.values():
            key = backend.access_keys.get(access_key)
            if key is not None and key.status == "Active":
                who = key.role_arn or f"arn:aws:iam::{account_id}:user/{key.user_name}"
                return key.secret_access_key, account_id, who
    if access_key in DEFAULT_KEYS:
        return DEFAULT_KEYS[access_key], "123456789012", "arn:aws:iam::123456789012:root"
    return None


def verify_sigv4(
    config: UrlConfig, method: str, path: str, headers: dict[str, str], body: bytes
) -> dict[str, Any] | None:
    """The caller of a request signed with SigV4 for this URL, or None (unsigned, unknown key, bad signature...)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    lower = {k.lower(): v for k, v in headers.items()}
    auth = lower.get("authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return None
    fields = dict(part.strip().split("=", 1) for part in auth[len("AWS4-HMAC-SHA256 ") :].split(",") if "=" in part)
    try:
        access_key, _date, region, service, _term = fields["Credential"].split("/")
        signed = fields["SignedHeaders"].split(";")
        signature = fields["Signature"]
        stamp = datetime.strptime(lower["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except (KeyError, ValueError):
        return None
    if service != "lambda" or region != config.region or "host" not in signed:
        return None
    if abs((datetime.now(UTC) - stamp).total_seconds()) > SIGNATURE_MAX_AGE:
        return None
    known = _secret_of(access_key)
    if known is None:
        return None
    secret, account_id, who = known
    token = lower.get("x-amz-security-token")
    signer = SigV4Auth(Credentials(access_key, secret, token), "lambda", region)
    request = AWSRequest(method=method, url=f"http://{lower['host']}{path}", data=body,
                         headers={k: v for k, v in headers.items() if k.lower() in signed})  # fmt: skip
    request.context["timestamp"] = lower["x-amz-date"]
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, signature):
        return None
    if not _iam_allows(access_key, headers, config, method, path, body):
        return None
    return {
        "accountId": account_id,
        "iam": {
            "accessKey": access_key,
            "accountId": account_id,
            "callerId": access_key,
            "cognitoIdentity": None,
            "principalOrgId": None,
            "userArn": who,
            "userId": access_key,
        },  # fmt: skip
    }


def _iam_allows(
    access_key: str, headers: dict[str, str], config: UrlConfig, method: str, path: str, body: bytes
) -> bool:
    """When moto enforces IAM, the caller's policies must allow lambda:InvokeFunctionUrl and lambda:InvokeFunction
    on the function (both, for URLs created since October 2025)."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.iam.access_control import IAMRequest
    from werkzeug.exceptions import HTTPException  # moto's errors (AccessDenied and devstack.aws.iam's JSON one)

    if ActionAuthenticatorMixin.request_count < settings.INITIAL_NO_AUTH_ACTION_COUNT:
        return True
    if access_key in DEFAULT_KEYS:
        return False  # not an IAM identity: moto would refuse it too
    for action in ("InvokeFunctionUrl", "InvokeFunction"):
        try:
            request = IAMRequest(account_id=config.account_id, method=method, path=path, data={}, body=body,
                                 headers=headers, action=action)  # fmt: skip
            request.check_action_permitted(config.function_arn)
        except HTTPException as exc:
            log.info("function URL %s: lambda:%s: %s", config.url, action, exc)
            return False
    return True
