"""Browser test of the chat page `ragtune serve` serves at /: headless Chromium (Debian's `chromium`, driven by
Playwright for Python, as in test_ui.py) asks a question, sees the answer with its citation, opens the cited passage,
sends a correction and finds it in the feedback log; an off-topic question gets the rendered "not found" answer. The
page must log no JavaScript error. The screenshot is kept as a test artifact (test-artifacts/chat-page.png, or under
$RAGTUNE_TEST_ARTIFACTS)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.conftest import patience
from tests.integration.test_ui import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.slow, pytest.mark.integration]

LEAVE = "How many days of paid annual leave do employees get?"
OFF_TOPIC = "Who painted the ceiling of the Sistine Chapel?"
CORRECTION = "Employees get 28 days of paid annual leave a year (sent from the chat page)"
REQUEST_ID = re.compile(r"request (\S+)\s*$")


def feedback_logged(home: Path) -> list[dict]:
    from tasks.core.workspace import Workspace
    from tasks.serve.requestlog import FEEDBACK, read_records

    return list(read_records(Workspace(Path(home)), FEEDBACK))


def test_chat_page_asks_cites_takes_a_correction_and_refuses_off_topic(served):
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's `chromium` package (.ci/run does) or set "
                    "RAGTUNE_CHROMIUM to a Chromium binary")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python (the dev extra) is missing")
    expect = sync_api.expect
    url, home = served["url"], served["home"]
    ready = httpx.get(f"{url}/readyz", timeout=patience(10)).json()
    assert ready["ready"], ready
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "chat-page.png"
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1000, "height": 1200})
        page.set_default_timeout(patience(30) * 1000)  # every page action and wait: a CPU model answers slowly
        expect.set_options(timeout=patience(30) * 1000)  # every assertion too (Playwright's default is 5 s)
        page.on("console", lambda msg: errors.append(f"console: {msg.text} ({msg.location.get('url')})")
                if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
        try:
            page.goto(url + "/", wait_until="networkidle")
            expect(page).to_have_title("ragtune")
            expect(page.locator("#status")).to_have_text(
                f"model {ready['model']} · index {ready['index_version']}")

            # ask: the answer, the meta line with the request id, the citation [1] and its passage
            page.get_by_label("Question").fill(LEAVE)
            page.get_by_role("button", name="Ask", exact=True).click()
            turn = page.locator("#turns > .turn").filter(has=page.locator(".q", has_text=LEAVE))
            meta = turn.locator(":scope > .meta")
            expect(meta).to_contain_text(re.compile(r"model \S+ · request \S+"))
            expect(page.get_by_role("button", name="Ask", exact=True)).to_be_enabled()
            answer = turn.locator(":scope > .a")
            assert answer.inner_text().strip() not in ("", "…")
            expect(answer).not_to_have_class(re.compile(r"\b(refused|error)\b"))
            request_id = REQUEST_ID.search(meta.inner_text()).group(1)
            first = turn.locator("details.source").first
            expect(first.locator("summary")).to_have_text(re.compile(r"^\[1\] \S"))
            passage = first.locator(".passage")
            expect(passage).to_be_hidden()  # collapsed until opened
            first.locator("summary").click()
            expect(first).to_have_attribute("open", "")
            expect(passage).to_be_visible()
            expect(passage).to_contain_text("28 days")
            expect(first.locator(".meta")).to_contain_text("leave-policy.md")

            # the correction: recorded, and the buttons of this answer are disabled afterwards
            turn.get_by_label("Correction").fill(CORRECTION)
            turn.get_by_role("button", name="Send correction", exact=True).click()
            expect(turn.locator(".thanks")).to_contain_text(re.compile(r"feedback [0-9a-f]{8} recorded"))
            expect(turn.get_by_role("button", name="Send correction", exact=True)).to_be_disabled()
            expect(turn.get_by_role("button", name="Not helpful", exact=True)).to_be_disabled()

            # off-topic: the "not found" answer, marked as refused
            page.get_by_label("Question").fill(OFF_TOPIC)
            page.get_by_role("button", name="Ask", exact=True).click()
            off = page.locator("#turns > .turn").filter(has=page.locator(".q", has_text=OFF_TOPIC))
            expect(off.locator(":scope > .meta")).to_contain_text("request ")
            refused = off.locator(":scope > .a")
            expect(refused).to_have_class(re.compile(r"\brefused\b"))
            expect(refused).to_have_text("I could not find this in the documents.")
            expect(page.locator("#turns > .turn").first).to_contain_text(OFF_TOPIC)  # the newest turn on top
        finally:
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
    assert not errors, errors
    assert shot.stat().st_size > 10_000

    mine = [f for f in feedback_logged(home) if f["request_id"] == request_id]
    assert len(mine) == 1, mine
    assert mine[0]["rating"] == "down" and mine[0]["correction"] == CORRECTION
