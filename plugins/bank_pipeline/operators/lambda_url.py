"""An HTTP front door for the released alias: a Lambda function URL, smoke-tested through HTTP.

The book's chapter ends with curl against API Gateway; a function URL is the
same front door without an API to manage. ``LambdaFunctionUrlOperator`` runs
after the release moved the alias:

1. create the alias's URL config, or update it when its AuthType differs
   (``AWS_IAM`` by default: callers sign with SigV4; ``NONE`` only when asked);
2. ``NONE``: add the two resource-policy statements Lambda needs for public
   access, as the Lambda console adds them: ``lambda:InvokeFunctionUrl`` for
   ``*`` with FunctionUrlAuthType NONE, and ``lambda:InvokeFunction`` for ``*``
   only when invoked through a function URL (InvokedViaFunctionUrl). URLs
   created since October 2025 need both: with either missing, Lambda answers
   403. ``AWS_IAM``: remove both if an earlier release added them;
3. POST a known body to the URL (SigV4-signed with the connection's
   credentials for ``AWS_IAM``) until it answers, and check the answer. A new
   URL or permission can take a few seconds to reach Lambda's front end, so
   403/404/429/5xx and connection errors are retried until ``smoke_timeout``,
   after 0.5 s, 1 s, then every ``poll_interval`` (2 s); any other status fails
   at once.

It changes nothing about versions or aliases: a failure here fails the task
(the release is not recorded) and leaves the alias where the deploy put it;
the release DAG's ``revert_lambda`` then moves the alias back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from bank_pipeline.errors import BadInputError, DeployFailedError
from bank_pipeline.hooks.aws_lambda import LambdaReleaseHook
from bank_pipeline.plans.lambda_release import SmokeCheck, answer_problem, check_http_ok

if TYPE_CHECKING:
    from airflow.sdk import Context

AUTH_TYPES = ("AWS_IAM", "NONE")
RETRIED_STATUSES = {403, 404, 429, 500, 502, 503, 504}
FIRST_RETRY_SECONDS = 0.5


def retry_delays(interval: float) -> Iterator[float]:
    """Seconds to wait before each retry of the smoke POST: 0.5, 1, 2, ... doubling up to ``interval``, then ``interval``."""
    delay = min(FIRST_RETRY_SECONDS, interval)
    while True:
        yield delay
        delay = min(delay * 2, interval)


class UrlSmoke(TypedDict):
    """The smoke POST through the URL: status, the answer's body, seconds until it answered, attempts,
    and the seconds waited before each retry."""

    status: int
    answer: Any
    seconds: float
    attempts: int
    waits: list[float]


class FunctionUrl(TypedDict):
    """What LambdaFunctionUrlOperator returns (its XCom)."""

    url: str
    auth_type: str
    function_arn: str
    alias: str
    changed: bool  # the URL config was created or its AuthType changed
    smoke: UrlSmoke


def signed_request(
    method: str, url: str, body: bytes, credentials: Any, region: str, headers: dict[str, str] | None = None
) -> tuple[str, dict[str, str]]:
    """(url, headers) of a request signed with SigV4 for service ``lambda``, as the AWS SDKs sign function URL calls."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    SigV4Auth(credentials, "lambda", region).add_auth(request)
    return request.url, dict(request.headers.items())


def curl_command(url: str, body: str, auth_type: str, region: str) -> str:
    """The curl line that makes the same call (curl >= 7.75 signs with --aws-sigv4), for people to paste."""
    sign = (
        f"--aws-sigv4 'aws:amz:{region}:lambda' --user \"$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY\" "
        if auth_type == "AWS_IAM"
        else ""
    )
    return f"curl {sign}-H 'Content-Type: application/json' -d '{body}' {url}"


class LambdaFunctionUrlOperator(AwsBaseOperator[LambdaReleaseHook]):
    """Give ``function_name:alias`` a function URL with ``auth_type`` and smoke-test it with a POST.

    :param function_name: the Lambda function (it and the alias must exist).
    :param alias: the URL's qualifier: the alias the release moves.
    :param auth_type: ``AWS_IAM`` (SigV4-signed callers only) or ``NONE`` (public).
    :param smoke_body: the JSON body POSTed to the URL.
    :param smoke_expect: values the answer (``{"statusCode": ..., "body": <JSON answer>}``) must contain (templated).
    :param smoke_check: returns None if that answer is right, else what is wrong.
    :param smoke_timeout: seconds to keep retrying a URL that is not answering yet.
    :param poll_interval: the most seconds between those retries (the first come after 0.5 s and 1 s):
        a new URL or permission reaches Lambda's front end within seconds, so this is not the
        slow waiters' interval.
    :return: a FunctionUrl
    """

    # The smoke loop's clock; tests give the operator their own.
    monotonic: Callable[[], float] = staticmethod(time.monotonic)
    sleep: Callable[[float], None] = staticmethod(time.sleep)

    aws_hook_class = LambdaReleaseHook
    template_fields: Sequence[str] = aws_template_fields(
        "function_name", "alias", "auth_type", "smoke_body", "smoke_expect"
    )

    def __init__(
        self,
        *,
        function_name: str,
        smoke_body: dict[str, Any],
        alias: str = "live",
        auth_type: str = "AWS_IAM",
        smoke_expect: dict[str, Any] | None = None,
        smoke_check: SmokeCheck = check_http_ok,
        smoke_timeout: float = 60.0,
        poll_interval: float = 2.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.function_name = function_name
        self.smoke_body = smoke_body
        self.alias = alias
        self.auth_type = auth_type
        self.smoke_expect = smoke_expect or {}
        self.smoke_check = smoke_check
        self.smoke_timeout = smoke_timeout
        self.poll_interval = poll_interval

    def execute(self, context: Context) -> FunctionUrl:
        if self.auth_type not in AUTH_TYPES:
            raise BadInputError(f"auth_type={self.auth_type!r}: expected one of {', '.join(AUTH_TYPES)}")
        fn, alias = self.function_name, self.alias
        config, change = self.hook.url_config(fn, alias, self.auth_type)
        if change:
            self.log.info("Function URL of %s:%s: %s", fn, alias, change)
        for done in self.hook.public_url_access(fn, alias, self.auth_type == "NONE"):
            self.log.info("Resource policy of %s:%s: %s", fn, alias, done)
        url = config["FunctionUrl"]
        self.log.info("Function URL of %s:%s (%s): %s", self.function_name, self.alias, self.auth_type, url)
        body = json.dumps(self.smoke_body)
        self.log.info(
            "The same call with curl: %s", curl_command(url, body, self.auth_type, self.hook.conn_region_name)
        )
        smoke = self._smoke(url, body.encode())
        return {
            "url": url,
            "auth_type": self.auth_type,
            "function_arn": config["FunctionArn"],
            "alias": self.alias,
            "changed": change is not None,
            "smoke": smoke,
        }

    # -- the smoke test -----------------------------------------------------------------

    def _smoke(self, url: str, body: bytes) -> UrlSmoke:
        import requests

        headers = {"Content-Type": "application/json"}
        started = self.monotonic()
        deadline = started + self.smoke_timeout
        delays = retry_delays(self.poll_interval)
        attempts, waits = 0, []
        while True:
            attempts += 1
            send_headers = headers
            if self.auth_type == "AWS_IAM":  # signed afresh each time: a signature is valid for 15 minutes
                credentials = self.hook.get_credentials()
                _, send_headers = signed_request("POST", url, body, credentials, self.hook.conn_region_name, headers)
            try:
                resp = requests.post(url, data=body, headers=send_headers, timeout=60)
                status, text = resp.status_code, resp.text
            except requests.RequestException as exc:
                status, text = 0, f"{type(exc).__name__}: {exc}"
            if status not in RETRIED_STATUSES and status != 0:
                break
            left = deadline - self.monotonic()
            if left <= 0:
                raise DeployFailedError(
                    f"function URL {url} did not answer the smoke POST within {self.smoke_timeout:.0f} s "
                    f"({attempts} attempts); last: {status or 'no answer'} {text[:500]}"
                )
            wait = round(min(next(delays), left), 3)  # the last try at the deadline
            self.log.info("Function URL answered %s; trying again in %s s", status or text, wait)
            waits.append(wait)
            self.sleep(wait)  # the URL's front end learns of the config and permission within seconds
        seconds = round(self.monotonic() - started, 3)
        try:
            answer = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DeployFailedError(
                f"function URL {url} answered {status} with a body that is not JSON: {text[:500]!r}"
            ) from exc
        envelope = {"statusCode": status, "body": answer}
        problem = answer_problem(envelope, self.smoke_expect, self.smoke_check)
        if problem:
            raise DeployFailedError(f"function URL {url} failed its smoke POST: {problem}")
        self.log.info("Smoke POST through %s: %s in %.3f s", url, status, seconds)
        return {"status": status, "answer": answer, "seconds": seconds, "attempts": attempts, "waits": waits}
