"""Browser test: headless Chromium (Debian's `chromium`, driven by Playwright for Python; Playwright's own browser
download is never used) opens the Prefect UI of the local stack, starts the `index` deployment from its page as a
custom run with a changed chunk size, opens the run it created and sees it complete. The screenshot of the
finished run is kept as a test artifact (test-artifacts/, or $RAGTUNE_TEST_ARTIFACTS)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, patience
from tests.integration.helpers import api, runs_of, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CHROMIUM = Path(os.environ.get("RAGTUNE_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("RAGTUNE_TEST_ARTIFACTS", PROJECT_ROOT / "test-artifacts"))
# what a root user in a container needs, and no calls to Google's services (the network is closed)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TERMINAL_BADGE = re.compile(r"Completed|Failed|Crashed|Cancelled")


def _ensure_dataset(stack: dict) -> None:
    """The index deployment indexes the latest dataset version: ingest the stack's corpus when there is none yet
    (when this test runs on its own)."""
    from tasks.core.workspace import Workspace
    from tasks.ingest.publish import latest_version

    if latest_version(Workspace(Path(stack["home"]))):
        return
    env = {**os.environ, "PREFECT_API_URL": stack["api_url"], "RAGTUNE_HOME": stack["home"]}
    res = subprocess.run([sys.executable, "-m", "flows.cli", "ingest", "--source", stack["corpus"], "--json"],
                         cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=patience(120))
    assert res.returncode == 0, res.stderr[-2000:]


def _served_chunk_size(home: str) -> int:
    from tasks.core.workspace import Workspace, read_json
    from tasks.index.qdrant import alias_target, open_client

    ws = Workspace(Path(home))
    client = open_client(ws)
    try:
        collection = alias_target(client, "docs")
    finally:
        client.close()
    return read_json(ws.index_meta_path(collection))["config"]["chunk_size"]


def test_index_deployment_custom_run_from_the_ui_completes(stack):
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's `chromium` package (.ci/run does) or set "
                    "RAGTUNE_CHROMIUM to a Chromium binary")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python (the dev extra) is missing")
    _ensure_dataset(stack)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "ui-index-custom-run.png"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(patience(20) * 1000)  # every page action and wait
        sync_api.expect.set_options(timeout=patience(20) * 1000)  # every assertion (Playwright's default: 5 s)
        try:
            page.goto(f"{stack['ui_url']}/deployments", wait_until="networkidle")
            page.get_by_role("link", name="index", exact=True).first.click()
            page.wait_for_url("**/deployments/deployment/**")
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_text("Custom run", exact=True).click()
            # the parameter form Prefect renders from the flow's signature: config -> Chunk Size
            label = page.locator("label", has=page.get_by_text("Chunk Size (Optional)", exact=True))
            field = label.locator("xpath=ancestor::div[contains(@class,'schema-form-property')][1]//input")
            field.fill("128")
            with api(stack) as client:
                before = {r["id"] for r in runs_of(client, "index")}
                page.get_by_role("button", name="Submit", exact=True).click()
                # the run the form created (the toast that links to it can be gone before a loaded machine looks)
                new = wait_for(lambda: [r for r in runs_of(client, "index") if r["id"] not in before], patience(20),
                               "the run the Submit button creates")
            assert len(new) == 1, new
            run_id = new[0]["id"]
            page.goto(f"{stack['ui_url']}/runs/flow-run/{run_id}", wait_until="networkidle")
            badge = page.locator(".page-heading-flow-run__meta .state-badge")
            sync_api.expect(badge).to_have_text(TERMINAL_BADGE, timeout=patience(120) * 1000)
            state = badge.inner_text().strip()
        finally:
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
    assert state == "Completed", f"the run ended {state}; see {shot}"
    with api(stack) as client:
        run = client.get(f"/flow_runs/{run_id}").json()
    assert run["state_type"] == "COMPLETED" and run["parameters"]["config"]["chunk_size"] == 128
    assert _served_chunk_size(stack["home"]) == 128  # the custom parameter reached the flow: a new collection serves
    assert shot.stat().st_size > 10_000
