"""The live dashboard on the sidecar's admin port, in both attach modes: headless Chromium loads
`/dashboard`, a request routed through Envoy appears in its feed with its decision, and the page
is kept as a screenshot in tests/e2e/artifacts/."""

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import requests

from harness import CLIENT_TOKEN

ARTIFACTS = Path(__file__).with_name("artifacts")
CHROMIUM = os.environ.get("CHROMIUM_BIN") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN") or shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (run `make deps`)"
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(path).exists():
            return f"{path} not found (apt-get install {pkg}, or `make deps` as root)"
    return None


@pytest.fixture(scope="module")
def browser():
    missing = _missing()
    if missing:
        # Like a missing Envoy: CI must not pass without having looked at the page.
        if os.environ.get("CI") == "true":
            pytest.fail(f"{missing}: the dashboard test cannot be skipped in CI")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="llmsoup-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # The network is closed: without these Chromium keeps trying to reach its own services.
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1500,950", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def admin_url(stack, path: str) -> str:
    return f"http://127.0.0.1:{stack.ports['metrics']}{path}"


def wait(predicate, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def js(driver, script: str, *args):
    return driver.execute_script(script, *args)


def feed_row(driver, request_id: str) -> list[str] | None:
    """The cells of the feed row for `request_id`, or None while it has not arrived."""
    return js(driver, """
        const row = [...document.querySelectorAll('#feed tbody tr')].find(r => r.dataset.requestId === arguments[0]);
        return row ? [...row.cells].map(c => c.textContent) : null;
    """, request_id)


def open_dashboard(driver, stack):
    # As a person would: HTTP Basic with a client token as the password. Chromium answers the
    # 401 challenge with the URL's credentials, then sends them on the page's own same-origin
    # fetch("/stats") and EventSource("/v1/events").
    driver.get(f"http://llmsoup:{CLIENT_TOKEN}@127.0.0.1:{stack.ports['metrics']}/dashboard")
    wait(lambda: js(driver, "return document.getElementById('status').dataset.state") == "live",
         "the feed to go live")


def test_a_routed_request_appears_in_the_live_feed(stack, browser):
    open_dashboard(browser, stack)
    tag = f"dash-{stack.mode}-{time.monotonic_ns()}"
    r = stack.chat("write a python function that sorts a list",
                   headers={"x-request-id": tag, "x-mock-usage": "120,30"})
    assert r.status_code == 200 and r.headers["x-llmsoup-decision"] == "coding"

    cells = wait(lambda: feed_row(browser, tag), f"request {tag} in the feed")
    # Time, request, outcome, status, decision, model, signals, confidence, route, TTFT, duration,
    # tokens, cost, saved, embedding cache.
    assert cells[1] == tag and cells[2] == "routed" and cells[3] == "200", cells
    assert cells[4] == "coding" and cells[5] == "coder", cells
    assert "keyword:code" in cells[6], cells
    assert cells[8].endswith("ms") and cells[10] != "–", cells
    assert cells[11] == "120 / 30", cells
    # coder: 120 × 10 $/1M + 30 × 30 $/1M = $0.0021.
    assert cells[12] == "$0.002100", cells

    # Per-model totals come from /stats and follow the feed.
    wait(lambda: js(browser, """
        const row = document.querySelector('#models tbody tr[data-model="coder"]');
        return row && Number(row.cells[1].textContent.replace(/,/g, '')) >= 1;
    """), "coder in the per-model totals")
    page = browser.page_source
    assert "write a python function" not in page, "prompts never reach the dashboard"

    # A little more traffic, so the kept screenshot shows what a person would see.
    more = [("compose a short poem about the sea", "auto"), ("Bonjour, quelle heure est-il à Paris ?", "auto"),
            ("hello there", "auto"), ("hello there", "small")]
    for i, (prompt, model) in enumerate(more):
        extra = f"{tag}-{i}"
        assert stack.chat(prompt, model=model, headers={"x-request-id": extra, "x-mock-usage": "40,80"}).ok
        wait(lambda t=extra: feed_row(browser, t), f"request {extra} in the feed")

    # ...and the totals have caught up with it.
    total = requests.get(admin_url(stack, "/stats"), headers=stack.headers(), timeout=5).json()["total"]["requests"]
    wait(lambda: js(browser, "return Number(document.getElementById('t-requests').textContent.replace(/,/g, ''))")
         >= total, "the totals to catch up")

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"dashboard-{stack.mode}.png"
    assert browser.save_screenshot(str(shot)), "screenshot"
    assert shot.stat().st_size > 10_000


def test_the_feed_shows_embedding_cache_and_local_replies(stack, browser):
    open_dashboard(browser, stack)
    # A prompt no other test sends: the first embedding is computed, the second is cached.
    prompt = f"please refund my order number {time.monotonic_ns()}"
    tags = [f"dash-emb-{stack.mode}-{i}-{time.monotonic_ns()}" for i in range(2)]
    for tag in tags:
        assert stack.chat(prompt, headers={"x-request-id": tag}).status_code == 200
    rows = [wait(lambda t=t: feed_row(browser, t), f"request {t}") for t in tags]
    assert [row[14] for row in rows] == ["miss", "hit"], rows

    tag = f"dash-unknown-{stack.mode}-{time.monotonic_ns()}"
    r = stack.chat("hi", model="gpt-nope", headers={"x-request-id": tag})
    assert r.status_code == 400
    cells = wait(lambda: feed_row(browser, tag), "the local reply in the feed")
    assert cells[2] == "local reply" and cells[3] == "400", cells


def test_without_credentials_the_page_asks_for_them(stack):
    for path in ("/dashboard", "/v1/events"):
        r = requests.get(admin_url(stack, path), timeout=5)
        assert r.status_code == 401, r.text
        # What makes a browser show its sign-in dialog.
        assert r.headers["www-authenticate"] == 'Basic realm="llmsoup", charset="UTF-8"'
        assert r.json()["error"]["code"] == "invalid_api_key"
    r = requests.get(admin_url(stack, "/dashboard"), auth=("anyone", "wrong"), timeout=5)
    assert r.status_code == 401
    r = requests.get(admin_url(stack, "/dashboard"), auth=("anyone", CLIENT_TOKEN), timeout=5)
    assert r.status_code == 200 and "<title>" in r.text


def test_event_stream_auth_and_format(stack):
    url = admin_url(stack, "/v1/events")
    assert requests.get(url, timeout=5).status_code == 401
    # Tokens never travel in URLs (they would end up in logs).
    assert requests.get(url, params={"access_token": CLIENT_TOKEN}, timeout=5).status_code == 401
    with requests.get(url, headers={"authorization": f"Bearer {CLIENT_TOKEN}"}, stream=True, timeout=10) as feed:
        assert feed.status_code == 200
        assert feed.headers["content-type"].startswith("text/event-stream")
        lines = feed.iter_lines(decode_unicode=True)
        assert next(lines) == "event: hello"
        gauge = [line for line in stack.metrics().text.splitlines()
                 if line.startswith("llmsoup_dashboard_subscribers")]
        assert gauge and float(gauge[0].rsplit(" ", 1)[1]) >= 1, gauge
        tag = f"dash-sse-{stack.mode}-{time.monotonic_ns()}"
        assert stack.chat("write me a haiku", headers={"x-request-id": tag}).status_code == 200
        for line in lines:
            if line.startswith("data: ") and tag in line:
                event = json.loads(line[len("data: "):])
                break
    assert event["decision"] == "poetry" and event["model"] == "writer" and event["status"] == 200
    assert "keyword:poem" in event["signals"].split(",") and event["outcome"] == "routed"
    assert "haiku" not in json.dumps(event)
