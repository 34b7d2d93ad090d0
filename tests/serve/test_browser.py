"""The chat page in a real browser: Playwright driving the system Chromium (Debian package
`chromium`, installed by .ci/run). Types a message, sees tokens stream, presses Stop, reloads
mid-stream, then sends another message that is answered."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = os.environ.get("LMFORGE_CHROMIUM", "/usr/bin/chromium")
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)",
                allow_module_level=True)

from lmforge.serve.app import create_app

# slow: starting Chromium and a page costs 5-10 s on a loaded 2-core machine
pytestmark = pytest.mark.slow
STEP_DELAY_S = 0.03  # a slow model, so a person (and this test) can watch it stream


@pytest.fixture(scope="module")
def url(lm_run, live_server, slow_and_endless):
    app = slow_and_endless(create_app(lm_run, "cpu"), STEP_DELAY_S)
    served = app.state.lm
    served.stop_ids, served.stop_strings = [], []  # replies run to max_tokens: long enough to stop
    with live_server(app) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def last_reply(page):
    return page.locator(".msg.assistant .text").last


def send(page, text):
    page.fill("#chat-input", text)
    page.press("#chat-input", "Enter")


def test_chat_streams_stops_survives_a_reload(url, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(url)
    page.click("#settings summary")
    page.fill("#max-tokens", "60")
    page.dispatch_event("#max-tokens", "change")  # saved for the reload
    send(page, "hello")
    page.wait_for_function("document.querySelector('.msg.assistant .text')?.textContent.length >= 5")
    assert page.is_disabled("#send") and page.is_enabled("#stop")  # busy state
    page.click("#stop")
    page.wait_for_function("!document.querySelector('#send').disabled")
    stopped = last_reply(page).text_content()
    time.sleep(0.3)
    assert last_reply(page).text_content() == stopped and 5 <= len(stopped) < 60
    assert page.text_content("#status") == "stopped"
    assert page.locator(".msg.assistant .regenerate").count() == 1

    send(page, "and again")  # reload while this one streams
    page.wait_for_function("document.querySelectorAll('.msg.assistant .text')[1]?.textContent.length >= 3")
    page.reload()
    deadline = time.monotonic() + 3  # the closed stream frees its slot at once
    while httpx.get(url + "/health").json()["batch"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert httpx.get(url + "/health").json()["batch"] == 0

    send(page, "one more")
    page.wait_for_function("!document.querySelector('#send').disabled && "
                           "document.querySelector('#status').textContent.includes('tokens/s')",
                           timeout=20000)
    assert len(last_reply(page).text_content()) > 0
    assert page.locator(".msg.user").count() == 1  # the page started over after the reload
    shots = Path(os.environ.get("LMFORGE_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "chat-desktop.png"))
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(shots / "chat-phone.png"))
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # no sideways scrolling at phone width
    page.close()


def test_completion_tab_streams(url, browser):
    page = browser.new_page()
    page.goto(url)
    page.click("#tab-complete")
    page.fill("#prompt", "the ")
    page.click("#settings summary")
    page.fill("#max-tokens", "20")
    page.click("#complete-run")
    page.wait_for_function("document.querySelector('#status').textContent.includes('tokens/s')"
                           " && !document.querySelector('#complete-run').disabled")
    assert page.text_content("#completion").startswith("the ")
    assert len(page.text_content("#completion")) > len("the ")
    page.close()
