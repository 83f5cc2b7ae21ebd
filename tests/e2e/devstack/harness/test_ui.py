"""The Airflow UI in a browser: Playwright driving Debian's chromium against `devstack.harness.stack`.

Logs in through the simple auth manager's form, triggers bank_features_emr from
its form with a changed Param, follows the run to success in the UI, sees
bank_model_release started by the Asset event and run to success, follows the
rollout task's "Kubernetes Deployment" link to the Deployment on the stack's local
cluster, and checks that the form refuses an invalid Param. The final grid is
saved as build/ui/final_grid.png.

Needs the Debian package chromium (`make test` installs it); `playwright install`
is not used (it downloads browsers, which this machine cannot).
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack import kube
from devstack.harness import stack
from devstack.harness.airflow_env import REPO
from tests.e2e.devstack.harness.conftest import StackUp

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("BANK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOTS = REPO / "build" / "ui"
FEATURES, RELEASE = "bank_features_emr", "bank_model_release"
RUN_TIMEOUT_MS = 240_000  # the Spark step is ~40 s alone; slower when the machine is shared


class Api:
    """The REST API with a JWT of the stack's user: for what the test sets up and double-checks."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.base = state["api_url"]
        self.token = stack.api_token(self.base, state["user"], state["password"])

    def get(self, path: str, **query: Any) -> Any:
        url = f"{self.base}/api/v2/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=15) as resp:
            return json.loads(resp.read())

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self.get(f"dags/{dag_id}/dagRuns", limit=100, order_by="-run_after")["dag_runs"]


@pytest.fixture(scope="session")
def ui_stack(stack_up: StackUp) -> dict[str, Any]:
    """The session's stack (conftest.py), which test_stack.py checks and takes down."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (make test does)")
    return stack_up.state


@pytest.fixture(scope="session")
def api(ui_stack: dict[str, Any]) -> Api:
    return Api(ui_stack)


# Module scope: while Playwright's sync API is open, the thread has a running event loop, and a
# test after this module calling asyncio.run() would fail on it.
@pytest.fixture(scope="module")
def browser_context(ui_stack: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh --user-data-dir
            executable_path=CHROMIUM,
            args=CHROMIUM_FLAGS,
            headless=True,
            viewport={"width": 1600, "height": 1000},
        )
        context.set_default_timeout(30_000)
        # expect()'s own default is 5 s: a page of a run just started can take longer to render
        # while make test's other worker keeps both cores busy.
        expect.set_options(timeout=30_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser_context: Any, ui_stack: dict[str, Any]) -> Iterator[Any]:
    page = browser_context.new_page()
    try:
        yield page
    finally:
        page.close()


def log_in(page: Any, state: dict[str, Any]) -> None:
    """Through the simple auth manager's login form (skipped when the session cookie is still valid)."""
    from playwright.sync_api import expect

    page.goto(f"{state['api_url']}/")
    username = page.get_by_label("Username")
    home = page.get_by_role("link", name=re.compile("^Dags$", re.I)).first
    expect(username.or_(home)).to_be_visible()
    if username.is_visible():
        username.fill(state["user"])
        page.get_by_label("Password").fill(state["password"])
        page.get_by_role("button", name="Sign in").click()
    expect(home).to_be_visible()


def open_trigger_form(page: Any, state: dict[str, Any], dag_id: str) -> Any:
    from playwright.sync_api import expect

    page.goto(f"{state['api_url']}/dags/{dag_id}")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text(f"Trigger Dag - {dag_id}")).to_be_visible()
    expect(dialog.locator("#element_source_uri")).to_be_visible()
    return dialog


def test_trigger_from_the_form_runs_to_success_and_the_asset_starts_the_release(
    page: Any, ui_stack: dict[str, Any], api: Api
) -> None:
    from playwright.sync_api import expect

    log_in(page, ui_stack)
    before = {r["dag_run_id"] for r in api.runs(FEATURES)}
    dialog = open_trigger_form(page, ui_stack, FEATURES)
    ratio = dialog.get_by_label("Max quarantined share")
    ratio.fill("0.02")
    expect(ratio).to_have_value("0.02")
    dialog.get_by_test_id("trigger-dag-submit").click()
    expect(page.get_by_text("Dag Run Triggered").first).to_be_visible()

    # The run the form created, with the changed Param in its conf.
    deadline = time.monotonic() + 30
    while not (mine := [r for r in api.runs(FEATURES) if r["dag_run_id"] not in before and r["run_type"] == "manual"]):
        assert time.monotonic() < deadline, "the trigger form created no run"
        time.sleep(0.5)
    run = mine[0]
    assert run["conf"]["max_quarantine_ratio"] == 0.02

    # Its page in the UI refreshes by itself while the run is active: wait for its state in the header.
    run_id = run["dag_run_id"]
    quoted = urllib.parse.quote(run_id, safe="")
    page.goto(f"{ui_stack['api_url']}/dags/{FEATURES}/runs/{quoted}")
    header = page.get_by_test_id("header-card").first
    expect(header).to_contain_text(run_id)
    expect(header).to_contain_text(re.compile(r"(Success|Failed)"), timeout=RUN_TIMEOUT_MS)
    final = api.get(f"dags/{FEATURES}/dagRuns/{quoted}")
    assert final["state"] == "success", final
    expect(header).to_contain_text("Success")

    # The grid of the DAG shows the run's task cells; saved for people to look at.
    page.goto(f"{ui_stack['api_url']}/dags/{FEATURES}")
    for task_id in ("prepare_step", "create_cluster", "run_features", "wait_for_features", "validate_features"):
        expect(page.get_by_test_id(f"grid-{run_id}-{task_id}")).to_be_visible()
    page.wait_for_load_state("networkidle")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "final_grid.png"), full_page=True)

    # bank_model_release started from the Asset event this run emitted.
    deadline = time.monotonic() + 120
    triggered = None
    while triggered is None:
        for rel in api.runs(RELEASE):
            if rel["run_type"] != "asset_triggered":
                continue
            events = api.get(
                f"dags/{RELEASE}/dagRuns/{urllib.parse.quote(rel['dag_run_id'], safe='')}/upstreamAssetEvents"
            )
            if any(e.get("source_run_id") == run_id for e in events["asset_events"]):
                triggered = rel
                break
        else:
            assert time.monotonic() < deadline, f"no asset-triggered {RELEASE} run consumed {run_id}'s event"
            time.sleep(1)
    page.goto(f"{ui_stack['api_url']}/dags/{RELEASE}/runs/{urllib.parse.quote(triggered['dag_run_id'], safe='')}")
    release_header = page.get_by_test_id("header-card").first
    expect(release_header).to_contain_text(triggered["dag_run_id"])
    expect(release_header).to_contain_text(re.compile("Asset Triggered", re.I))
    page.screenshot(path=str(SCREENSHOTS / "release_runs.png"), full_page=True)

    # The release rolls the image out to the stack's Kubernetes; the task's link opens that Deployment.
    expect(release_header).to_contain_text(re.compile(r"(Success|Failed)"), timeout=RUN_TIMEOUT_MS)
    release_run = urllib.parse.quote(triggered["dag_run_id"], safe="")
    assert api.get(f"dags/{RELEASE}/dagRuns/{release_run}")["state"] == "success"
    links = api.get(f"dags/{RELEASE}/dagRuns/{release_run}/taskInstances/rollout_kubernetes/links")["extra_links"]
    assert links["Kubernetes Deployment"] == f"{ui_stack['kube_view_url']}/deployments/bank/bank-model"
    # The Lambda version's link is the page the stack names (moto's dashboard), said by a setting.
    version_links = api.get(f"dags/{RELEASE}/dagRuns/{release_run}/taskInstances/deploy_lambda/links")
    assert (
        version_links["extra_links"]["Lambda function version"] == f"{ui_stack['endpoint_url'].rstrip('/')}/moto-api/"
    )
    cluster = kube.KubeCluster.attach(Path(ui_stack["kube_dir"]))
    deployment = cluster.get("/apis/apps/v1/namespaces/bank/deployments/bank-model")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith(f"{ui_stack['registry_url']}/bank-model@sha256:")  # the pushed image, by digest
    assert deployment["status"]["readyReplicas"] == 2
    page.goto(links["Kubernetes Deployment"])
    expect(page.get_by_role("heading", name="Deployment bank/bank-model")).to_be_visible()
    expect(page.get_by_text(image).first).to_be_visible()
    expect(page.get_by_text("NewReplicaSetAvailable")).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "kubernetes_deployment.png"), full_page=True)


def test_the_form_refuses_an_invalid_param(page: Any, ui_stack: dict[str, Any], api: Api) -> None:
    from playwright.sync_api import expect

    log_in(page, ui_stack)
    before = {r["dag_run_id"] for r in api.runs(FEATURES)}
    dialog = open_trigger_form(page, ui_stack, FEATURES)
    dialog.locator("#element_source_uri").fill("http://not-a-bucket/bank.csv")
    dialog.get_by_test_id("trigger-dag-submit").click()
    expect(page.get_by_text("Failed to Trigger Dag").first).to_be_visible()
    expect(dialog.get_by_text(re.compile("Invalid input for param source_uri"))).to_be_visible()
    expect(dialog).to_be_visible()  # the form stays open with the error
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "invalid_param.png"))
    assert {r["dag_run_id"] for r in api.runs(FEATURES)} == before, "an invalid Param created a run"
