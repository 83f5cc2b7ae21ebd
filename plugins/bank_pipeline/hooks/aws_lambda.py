"""AWS Lambda's calls for a release by alias: the Amazon provider's LambdaHook, with the reads and
writes the release makes named for what they do. The decisions over their answers are in
bank_pipeline.plans.lambda_release."""

from __future__ import annotations

import json
from typing import Any

from airflow.providers.amazon.aws.hooks.lambda_function import LambdaHook

from bank_pipeline.plans.lambda_release import Invocation

# The statements a function URL with auth NONE needs, with the ids the Lambda console gives them:
# AddPermission's arguments.
PUBLIC_STATEMENTS: dict[str, dict[str, Any]] = {
    "FunctionURLAllowPublicAccess": {"Action": "lambda:InvokeFunctionUrl", "FunctionUrlAuthType": "NONE"},
    # Only through the URL: without InvokedViaFunctionUrl anyone could call the Invoke API on the alias.
    "FunctionURLAllowInvokeAction": {"Action": "lambda:InvokeFunction", "InvokedViaFunctionUrl": True},
}


class LambdaReleaseHook(LambdaHook):
    """One function's configuration, versions and alias."""

    def configuration(self, function: str, qualifier: str | None = None) -> dict[str, Any] | None:
        """The function's (or a version's) configuration, or None if the function does not exist."""
        args = {"FunctionName": function, **({"Qualifier": qualifier} if qualifier else {})}
        try:
            config: dict[str, Any] = self.conn.get_function_configuration(**args)
            return config
        except self.conn.exceptions.ResourceNotFoundException:
            return None

    def alias_version(self, function: str, alias: str) -> str | None:
        """The version ``alias`` points at, or None if there is no such alias."""
        try:
            return str(self.conn.get_alias(FunctionName=function, Name=alias)["FunctionVersion"])
        except self.conn.exceptions.ResourceNotFoundException:
            return None

    def image_of(self, function: str, qualifier: str) -> str | None:
        """The image URI a version runs."""
        image: str | None = self.conn.get_function(FunctionName=function, Qualifier=qualifier)["Code"].get("ImageUri")
        return image

    def create_image_function(
        self,
        *,
        function: str,
        image_uri: str,
        role_arn: str,
        architecture: str,
        memory_size: int,
        timeout: int,
        environment: dict[str, str],
    ) -> None:
        """A container-image function, unpublished (the release publishes the version it tests)."""
        self.conn.create_function(
            FunctionName=function,
            PackageType="Image",
            Code={"ImageUri": image_uri},
            Role=role_arn,
            Architectures=[architecture],
            MemorySize=memory_size,
            Timeout=timeout,
            Environment={"Variables": environment},
            Publish=False,
        )

    def update_image(self, function: str, image_uri: str) -> None:
        self.conn.update_function_code(FunctionName=function, ImageUri=image_uri)

    def publish(self, function: str, description: str) -> str:
        """Publish $LATEST; the new version's number."""
        return str(self.conn.publish_version(FunctionName=function, Description=description)["Version"])

    def invoke_version(self, function: str, version: str, event: dict[str, Any]) -> Invocation:
        """Invoke one version (by Qualifier) synchronously with ``event``."""
        response = self.invoke_lambda(function_name=function, qualifier=version, payload=json.dumps(event))
        body = response["Payload"].read().decode("utf-8", "replace")
        return Invocation(function_error=response.get("FunctionError"), body=body)

    def point_alias(self, function: str, alias: str, version: str, *, exists: bool) -> None:
        """Create ``alias`` on ``version``, or move it there with all of the traffic (no routing left behind)."""
        if exists:
            self.route(function, alias, version, {})
        else:
            self.conn.create_alias(FunctionName=function, Name=alias, FunctionVersion=version)

    def route(self, function: str, alias: str, version: str, weights: dict[str, float]) -> None:
        """Keep ``alias`` on ``version`` and send each of ``weights``' versions its share (empty: none)."""
        self.conn.update_alias(
            FunctionName=function,
            Name=alias,
            FunctionVersion=version,
            RoutingConfig={"AdditionalVersionWeights": weights},
        )

    def delete_alias(self, function: str, alias: str) -> None:
        self.conn.delete_alias(FunctionName=function, Name=alias)

    def url_config(self, function: str, alias: str, auth_type: str) -> tuple[dict[str, Any], str | None]:
        """The alias's function URL config with ``auth_type``, created or updated if need be, and what
        changed (None: nothing)."""
        args = {"FunctionName": function, "Qualifier": alias}
        try:
            config: dict[str, Any] = self.conn.get_function_url_config(**args)
        except self.conn.exceptions.ResourceNotFoundException:
            return self.conn.create_function_url_config(**args, AuthType=auth_type), "created"
        if config["AuthType"] == auth_type:
            return config, None
        updated: dict[str, Any] = self.conn.update_function_url_config(**args, AuthType=auth_type)
        return updated, f"auth {config['AuthType']} -> {auth_type}"

    def public_url_access(self, function: str, alias: str, public: bool) -> list[str]:
        """Both PUBLIC_STATEMENTS in the alias's resource policy (``public``), or neither; what changed."""
        args = {"FunctionName": function, "Qualifier": alias}
        changes = []
        for sid, statement in PUBLIC_STATEMENTS.items():
            if public:
                try:
                    self.conn.add_permission(**args, StatementId=sid, Principal="*", **statement)
                    changes.append(f"added {sid} ({statement['Action']} for anyone, through the URL)")
                except self.conn.exceptions.ResourceConflictException:
                    pass  # already there
            else:
                try:
                    self.conn.remove_permission(**args, StatementId=sid)
                    changes.append(f"removed {sid}: the URL takes signed calls only")
                except self.conn.exceptions.ResourceNotFoundException:
                    pass  # never added
        return changes

    def wait_for(self, waiter: str, args: dict[str, Any], *, delay: int, attempts: int) -> str | None:
        """Run a botocore waiter in this process; None when it succeeded, else its error's text."""
        from botocore.exceptions import WaiterError

        try:
            self.conn.get_waiter(waiter).wait(**args, WaiterConfig={"Delay": delay, "MaxAttempts": attempts})
        except WaiterError as exc:
            return str(exc)
        return None
