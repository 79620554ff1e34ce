"""The chat page at `/` in a real browser: Debian's headless Chromium driven by Selenium loads the
page, streams a reply (seen growing while the request runs; its text equals the API's greedy
answer), stops a reply mid-way (the server frees the slot), and shows the server's error for a
wrong API key; user and model text stay text. Without a browser, the page's HTTP side (files,
headers, --no-webui) is still checked.

.ci/run installs chromium and chromium-driver (apt-get, as root); the browser test is skipped,
saying why, only where they are not installed. BITNET_WEBUI_SCREENSHOT=docs/webui.png also
writes the page's screenshot there (how the README's image is made)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
import pytest

from bitnet.model import default_model_path
from bitnet.server.scheduler import Scheduler
from tests.test_server_support import FREED_WITHIN_S, LOADED_MACHINE_SLACK_S, all_idle, live_server, slowed

WEBUI = Path(__file__).resolve().parent.parent / "bitnet" / "server" / "webui"
KEY = "webui-test-key"
QUESTION = "Who is Mr. Darcy?"


@pytest.fixture(scope="module")
def demo_gguf() -> Path:
    return default_model_path()


# ---- the page over HTTP (no browser) ---------------------------------------------------------------------
def test_page_files_are_served_without_a_key_and_the_api_still_needs_one(demo_gguf):
    with live_server(demo_gguf, api_keys=(KEY,)) as s:
        page = httpx.get(s.url + "/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
        for name, ctype in (("chat.js", "text/javascript"), ("chat.css", "text/css")):
            r = httpx.get(f"{s.url}/webui/{name}")
            assert r.status_code == 200 and r.headers["content-type"].startswith(ctype)
            assert r.content == (WEBUI / name).read_bytes()
        assert httpx.get(s.url + "/webui/config.json").json() == {"api_key_required": True, "max_tokens": 256}
        assert httpx.get(s.url + "/v1/models").status_code == 401
        assert httpx.post(s.url + "/", json={}).status_code == 401  # only GET/HEAD reach the page


def test_no_webui_turns_the_page_off(demo_gguf):
    from bitnet.server.cli import build_parser

    assert build_parser().parse_args(["-m", "x.gguf", "--no-webui"]).no_webui is True
    with live_server(demo_gguf, n_predict=100) as s:  # no key: no key field, the model named
        config = httpx.get(s.url + "/webui/config.json").json()
        assert config == {"api_key_required": False, "max_tokens": 100, "model": demo_gguf.name}
    with live_server(demo_gguf, webui=False) as s:
        assert httpx.get(s.url + "/").status_code == 404
        assert httpx.get(s.url + "/webui/chat.js").status_code == 404
        assert httpx.get(s.url + "/health").status_code == 200


def test_page_loads_nothing_from_elsewhere_and_never_writes_html():
    html = (WEBUI / "index.html").read_text()
    script = (WEBUI / "chat.js").read_text()
    assert "http://" not in html + script and "https://" not in html + script and "//" not in html.replace("<!", "")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink


# ---- the page in Chromium --------------------------------------------------------------------------------
def _browser():
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("no headless browser: Debian's chromium and chromium-driver are not installed "
                    "(.ci/run installs them with apt-get when it runs as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1000,640", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def _set(browser, element_id: str, value: str) -> None:
    """Set an input's value as typing would (an 'input' event follows)."""
    browser.execute_script("const e = document.getElementById(arguments[0]); e.value = arguments[1];"
                           "e.dispatchEvent(new Event('input'));", element_id, value)


def _replies(browser):
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, ".message.assistant")


def _send(browser, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = browser.find_element(By.ID, "prompt")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def test_chat_page_in_chromium(demo_gguf, monkeypatch, tmp_path):
    monkeypatch.setenv("SE_OFFLINE", "true")  # the browser and driver are given: Selenium fetches nothing
    browser = _browser()
    from selenium.webdriver.common.by import By

    # A few ms per decode step: the demo model would otherwise answer before the page can be watched.
    monkeypatch.setattr(Scheduler, "_decode", slowed(Scheduler._decode, 0.03))
    try:
        with live_server(demo_gguf, api_keys=(KEY,), n_ctx=512, metrics=True) as s:
            browser.get(s.url + "/")
            _wait(lambda: browser.find_element(By.TAG_NAME, "body").get_attribute("data-ready"), 20, "the page")
            assert browser.find_element(By.ID, "api-key").is_displayed()  # the server has a key
            origins = browser.execute_script(
                "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)")
            assert origins and set(origins) == {s.url}  # the CSS, the script, its config: all from us

            # A streamed reply: its text grows while the request runs, then tokens/s is shown.
            browser.find_element(By.ID, "api-key").send_keys(KEY)
            _set(browser, "system", "You are a character in a Jane Austen novel.")
            _set(browser, "temperature", "0")
            _set(browser, "max-tokens", "48")
            _send(browser, QUESTION)
            reply = _wait(lambda: _replies(browser), 10, "the reply's box")[0]
            lengths = set()
            while browser.find_element(By.ID, "stop").is_enabled():
                text = reply.find_element(By.CLASS_NAME, "text").get_property("textContent")
                if text:
                    lengths.add(len(text))
                time.sleep(0.02)
            assert len(lengths) >= 3, f"the reply did not grow while streaming: lengths seen {sorted(lengths)}"
            meta = reply.find_element(By.CLASS_NAME, "meta").text
            assert "48 tokens in" in meta and "tokens/s" in meta, meta
            shown = reply.find_element(By.CLASS_NAME, "text").get_property("textContent")
            api = httpx.post(s.url + "/v1/chat/completions", headers=s.headers(), timeout=60, json={
                "messages": [{"role": "system", "content": "You are a character in a Jane Austen novel."},
                             {"role": "user", "content": QUESTION}], "temperature": 0, "max_tokens": 48})
            assert shown == api.json()["choices"][0]["message"]["content"]
            shot = tmp_path / "webui.png"
            assert browser.save_screenshot(str(shot)) and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            if os.environ.get("BITNET_WEBUI_SCREENSHOT"):
                shutil.copyfile(shot, os.environ["BITNET_WEBUI_SCREENSHOT"])

            # Stop mid-reply: the request is aborted, the server sees the client leave and frees the slot.
            _set(browser, "max-tokens", "400")
            _send(browser, "<b>Tell me</b> a long story & <script>alert(1)</script>")
            user = browser.find_elements(By.CSS_SELECTOR, ".message.user")[-1]
            assert user.get_property("childElementCount") == 2  # text and meta divs: no <b>, no <script>
            assert user.find_element(By.CLASS_NAME, "text").get_property("textContent").startswith("<b>Tell me</b>")
            reply = _wait(lambda: len(_replies(browser)) == 2 and _replies(browser)[1], 10, "the second reply")
            _wait(lambda: len(reply.find_element(By.CLASS_NAME, "text").get_property("textContent")) > 10, 20,
                  "the second reply's first words")
            browser.find_element(By.ID, "stop").click()
            _wait(lambda: "stopped after" in reply.find_element(By.CLASS_NAME, "meta").text, 10, "'stopped'")
            s.wait_slots(all_idle, FREED_WITHIN_S + LOADED_MACHINE_SLACK_S)
            assert s.app.state.metrics.registry.get_sample_value("bitnet_requests_cancelled_total") == 1
            assert browser.find_element(By.ID, "send").is_enabled()

            # A wrong key: the server's 401 message is shown, the reply marked failed.
            key = browser.find_element(By.ID, "api-key")
            key.clear()
            key.send_keys("not-the-key")
            _send(browser, "Hello?")
            error = _wait(lambda: browser.find_element(By.ID, "error").text, 10, "the error message")
            assert "401" in error and "invalid API key" in error, error
            assert "failed" in _replies(browser)[-1].get_attribute("class")
            assert browser.save_screenshot(str(tmp_path / "webui-error.png"))

            browser.find_element(By.ID, "new-chat").click()
            assert not browser.find_elements(By.CSS_SELECTOR, ".message")
            assert not browser.find_element(By.ID, "error").is_displayed()
    finally:
        browser.quit()
