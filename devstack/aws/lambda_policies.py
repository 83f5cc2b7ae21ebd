"""Lambda's resource policies as devstack keeps them: the function's, each version's and each
alias's own (AddPermission, GetPolicy, RemovePermission, patched into moto by devstack.aws.awslambda),
and the two client errors this module and devstack.aws.lambda_states answer with."""

from __future__ import annotations

import copy
import json
import logging
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from moto.awslambda.exceptions import InvalidParameterValueException, LambdaClientError, PreconditionFailedException
from moto.awslambda.models import LambdaBackend
from moto.awslambda.responses import LambdaResponse
from moto.awslambda.utils import make_function_arn

log = logging.getLogger("devstack.lambda")


class ResourceConflict(LambdaClientError):
    code = 409

    def __init__(self, message: str) -> None:
        super().__init__("ResourceConflictException", message)


class ResourceNotFound(LambdaClientError):
    code = 404

    def __init__(self, message: str) -> None:
        super().__init__("ResourceNotFoundException", message)


@dataclass
class _Policy:
    statements: list[dict[str, Any]]
    revision: str


POLICIES: dict[tuple[str, str, str, str], _Policy] = {}  # (account, region, function name, qualifier or "")
_POLICY_LOCK = threading.Lock()


def resource_policy(account_id: str, region: str, function_name: str, qualifier: str | None) -> list[dict[str, Any]]:
    """The statements of the function's (``qualifier`` None), a version's or an alias's resource policy."""
    with _POLICY_LOCK:
        policy = POLICIES.get((account_id, region, function_name, qualifier or ""))
        return copy.deepcopy(policy.statements) if policy else []


def drop_policies(account_id: str, region: str, function_name: str, qualifier: str | None) -> None:
    with _POLICY_LOCK:
        for key in [k for k in POLICIES if k[:3] == (account_id, region, function_name)]:
            if qualifier is None or key[3] == qualifier:
                del POLICIES[key]


def _policy_target(
    backend: LambdaBackend, function_name: str, qualifier: str | None
) -> tuple[tuple[str, str, str, str], str]:
    """(POLICIES key, the statements' Resource) of a policy request; a missing function, version or alias is refused."""
    name = function_name.split(":function:", 1)[-1]  # a name, name:qualifier, or an ARN
    if ":" in name:
        name, _, named = name.partition(":")
        qualifier = qualifier or named
    if qualifier == "$LATEST":
        raise InvalidParameterValueException("We currently do not support adding policies for $LATEST.")
    fn = backend.get_function(name, qualifier)  # ResourceNotFoundException if any part is missing
    arn = make_function_arn(backend.region_name, backend.account_id, fn.function_name)
    key = (backend.account_id, backend.region_name, fn.function_name, qualifier or "")
    return key, f"{arn}:{qualifier}" if qualifier else arn


def _principal(principal: str) -> Any:
    if principal == "*":
        return "*"
    if principal.endswith(".amazonaws.com"):
        return {"Service": principal}
    if principal.isdigit():
        return {"AWS": f"arn:aws:iam::{principal}:root"}
    return {"AWS": principal}


def statement_of(request: dict[str, Any], resource: str) -> dict[str, Any]:
    """The policy statement Lambda writes for an AddPermission request."""
    statement: dict[str, Any] = {
        "Sid": request["StatementId"], "Effect": "Allow", "Principal": _principal(str(request["Principal"])),
        "Action": request["Action"], "Resource": resource,
    }  # fmt: skip
    conditions: dict[str, dict[str, str]] = {}
    for field, operator, key in (
        ("SourceAccount", "StringEquals", "AWS:SourceAccount"),
        ("PrincipalOrgID", "StringEquals", "aws:PrincipalOrgID"),
        ("EventSourceToken", "StringEquals", "lambda:EventSourceToken"),
        ("FunctionUrlAuthType", "StringEquals", "lambda:FunctionUrlAuthType"),
        ("SourceArn", "ArnLike", "AWS:SourceArn"),
    ):
        if request.get(field):
            conditions.setdefault(operator, {})[key] = str(request[field])
    if request.get("InvokedViaFunctionUrl"):
        conditions.setdefault("Bool", {})["lambda:InvokedViaFunctionUrl"] = "true"
    if conditions:
        statement["Condition"] = conditions
    return statement


def add_permission(self: LambdaBackend, function_name: str, qualifier: str | None, raw: str) -> dict[str, Any]:
    request = json.loads(raw)
    key, resource = _policy_target(self, function_name, qualifier)
    statement = statement_of(request, resource)
    with _POLICY_LOCK:
        policy = POLICIES.setdefault(key, _Policy([], str(uuid.uuid4())))
        if request.get("RevisionId") and request["RevisionId"] != policy.revision:
            raise PreconditionFailedException("The Revision Id provided does not match the latest Revision Id. "
                                              "Call the GetPolicy API to retrieve the latest Revision Id")  # fmt: skip
        if any(s["Sid"] == statement["Sid"] for s in policy.statements):
            raise ResourceConflict(
                f"The statement id ({statement['Sid']}) provided already exists. Please provide a new statement id, "
                "or remove the existing statement."
            )
        policy.statements.append(statement)
        policy.revision = str(uuid.uuid4())
    return statement


def get_policy(self: LambdaBackend, function_name: str, qualifier: str | None = None) -> str:
    key, _resource = _policy_target(self, function_name, qualifier)
    with _POLICY_LOCK:
        policy = POLICIES.get(key)
        if policy is None or not policy.statements:
            raise ResourceNotFound("The resource you requested does not exist.")
        document = {"Version": "2012-10-17", "Id": "default", "Statement": policy.statements}
        return json.dumps({"Policy": json.dumps(document), "RevisionId": policy.revision})


def response_remove_permission(self: LambdaResponse) -> tuple[int, dict[str, Any], str]:
    from urllib.parse import unquote

    function_name = unquote(self.path.split("/")[-3])
    sid = unquote(self.path.split("/")[-1].split("?")[0])
    qualifier = self.querystring.get("Qualifier", [None])[0]
    revision = self.querystring.get("RevisionId", [""])[0]
    key, resource = _policy_target(self.backend, function_name, qualifier)
    with _POLICY_LOCK:
        policy = POLICIES.get(key)
        if policy is None or not policy.statements:
            raise ResourceNotFound("No policy is associated with the given resource.")
        if revision and revision != policy.revision:
            raise PreconditionFailedException("The Revision Id provided does not match the latest Revision Id. "
                                              "Call the GetPolicy API to retrieve the latest Revision Id")  # fmt: skip
        kept = [s for s in policy.statements if s["Sid"] != sid]
        if len(kept) == len(policy.statements):
            raise ResourceNotFound(f"Statement {sid} is not found in resource policy.")
        policy.statements = kept
        policy.revision = str(uuid.uuid4())
    log.info("removed statement %s from the resource policy of %s", sid, resource)
    return 204, {"status": 204}, ""
