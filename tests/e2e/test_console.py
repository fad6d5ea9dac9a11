"""The console (/console) in a real headless Chromium against the e2e app: the playground streams an answer
with its candidates and scatter plot, a changed direction changes what the server receives, the code it
gives runs; the admin view creates and revokes a key, puts, diffs and rolls back safety configs and shows
the audit; a tenant key is refused the admin view; HTML in a model answer or a config is shown as text;
the key never reaches local storage, a cookie or the URL; no Content-Security-Policy violation."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from urllib.parse import urlsplit

import httpx
import pytest

from aligner.safety.config import SafetyConfig
from tests.browser import ARGS, CSP_WATCH, chromium_path, screenshot

GENERATION_MS = 300_000  # a search on two loaded CPU cores
HTML_PAYLOAD = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b>bold</b>'


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=chromium_path(), args=ARGS, headless=True)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.add_init_script(CSP_WATCH)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and page.errors.append(message.text))
    try:
        yield page
    finally:
        context.close()


def origin(url: str) -> str:
    """scheme://host:port of a URL; a data: URL's is "data:"."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else f"{parts.scheme}:"


def open_console(page, server, key: str) -> None:
    page.goto(f"{server.url}/console")
    page.wait_for_selector("body[data-ready=true]")
    page.fill("#key", key)
    page.click("#key-form button[type=submit]")


def set_slider(page, objective: str, value: float) -> None:
    page.locator(f'#sliders input[data-objective="{objective}"]').evaluate(
        "(input, value) => { input.value = value; input.dispatchEvent(new Event('input', {bubbles: true})); }", value
    )


def send_and_wait(page) -> None:
    page.evaluate("delete document.querySelector('#result').dataset.done")
    page.click("#send")
    page.wait_for_selector("#result[data-done=true]", timeout=GENERATION_MS)


def assert_key_kept_in_the_tab_only(page, key: str) -> None:
    assert page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []
    assert key not in page.url
    assert page.evaluate("sessionStorage.getItem('aligner.key')") == key
    assert key not in page.content()  # the input is cleared once the key is taken


def assert_clean(page, refused: int | None = None) -> None:
    """No CSP violation and no script error; the browser's own log line for an answer the test expects the
    server to refuse (`refused`: its status) is no error of the page."""
    assert page.evaluate("window.__cspViolations") == []
    expected = f"the server responded with a status of {refused}"
    assert [e for e in page.errors if refused is None or expected not in e] == []


def test_the_playground_streams_an_answer_its_candidates_and_a_direction_the_server_receives(server, page, tmp_path):
    with server.client() as client:
        served = {o["name"] for o in client.get("/v1/objectives", headers=server.headers()).json()["objectives"]}
    assert {"verbosity", "readability"} <= served
    open_console(page, server, server.key)
    page.wait_for_selector('#sliders input[data-objective="verbosity"]')
    set_slider(page, "verbosity", 0.6)
    set_slider(page, "readability", 0.8)
    assert page.text_content("#vector") == '{"verbosity":0.6,"readability":0.8}'  # the unit vector, as sent
    page.select_option("#strategy", "best_of_n")
    page.fill('#strategy-params input[data-param="n"]', "3")
    page.fill("#max_tokens", "16")
    page.fill("#seed", "7")
    send_and_wait(page)

    answer = page.text_content("#answer")
    assert answer.strip()
    rows = page.locator("#candidates tbody tr")
    assert rows.count() == 3
    chosen = page.locator("#candidates tbody tr.chosen pre").text_content()
    assert chosen == answer
    scatter = page.locator("#scatter")
    assert scatter.get_attribute("data-points") == "3"
    assert scatter.get_attribute("data-axes") == "verbosity,readability"
    assert scatter.get_attribute("data-chosen") != "" and scatter.get_attribute("data-front")
    assert scatter.get_attribute("data-direction") == "0.6,0.8"
    # best_of_n n=3: one round of three candidates, each scored once
    assert re.search(r"\b3 reward calls · 1 round · 3 candidates\b", page.text_content("#usage-numbers"))
    assert "generate=" in page.locator("#usage-chart").get_attribute("data-stages")
    scored = {row.split("\n")[0] for row in page.locator("#scores tbody tr td:first-child").all_text_contents()}
    assert {"verbosity", "readability"} <= scored
    screenshot(page, tmp_path, "console-playground")

    # The direction changed: the server now scores readability alone (it ranks by what it received).
    set_slider(page, "verbosity", 0)
    assert page.text_content("#vector") == '{"readability":1}'
    send_and_wait(page)
    scored = set(page.locator("#scores tbody tr td:first-child").all_text_contents())
    assert "readability" in scored and "verbosity" not in scored

    # The code the page gives is the request it sends: run the Python one.
    page.click("button.snippet[data-snippet=python]")
    code = page.text_content("#snippet")
    assert server.key not in code and "ALIGNER_API_KEY" in code
    ran = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "ALIGNER_API_KEY": server.key},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr
    assert '"type":"done"' in ran.stdout.replace(" ", "")
    page.click("button.snippet[data-snippet=grpc]")
    assert "GenerateStream" in page.text_content("#snippet")
    page.click("button.snippet[data-snippet=curl]")
    assert page.text_content("#snippet").startswith("curl ")
    assert_key_kept_in_the_tab_only(page, server.key)
    assert_clean(page)


def test_html_in_a_model_answer_is_shown_as_text_and_nothing_runs(server, page):
    _, key = server.store.create_key("console-xss")
    server.store.set_safety_config(
        "console-xss",
        SafetyConfig(text="Answer.", refusal_message=HTML_PAYLOAD, thresholds={"verbosity": 0.999}),
        expected_version=None,
    )
    time.sleep(1.0)  # a config is in force on every replica within a second
    open_console(page, server, key)
    page.wait_for_selector('#sliders input[data-objective="verbosity"]')
    page.fill("#max_tokens", "8")
    send_and_wait(page)
    assert page.text_content("#answer") == HTML_PAYLOAD  # the refusal, shown as the text it is
    assert "refused" in page.text_content("#verdict")
    assert page.locator("#answer img, #answer script, #answer b").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert_clean(page)


def test_the_admin_view_manages_keys_configs_rollbacks_and_shows_the_audit(server, page, tmp_path):
    open_console(page, server, server.admin_key)
    page.click(".tab[data-tab=admin]")
    page.wait_for_selector("#keys tbody tr")
    page.fill("#new-tenant", "console-made")
    page.click("#create-key button[type=submit]")
    page.wait_for_selector("#new-key:not([hidden])")
    made = page.text_content("#new-key-text")
    assert re.fullmatch(r"alk_[0-9a-f]{12}_\S+", made)
    assert httpx.get(f"{server.url}/v1/models", headers=server.headers(made), timeout=60).status_code == 200
    page.click("#hide-new-key")
    assert page.text_content("#new-key-text") == ""  # shown once
    key_id = "key_" + made.split("_")[1]
    row = page.locator(f'#keys tbody tr[data-key="{key_id}"]')
    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    row.locator("button").click()  # a revoke asks first: dismissed, the key stays
    page.wait_for_selector("#admin-state:text('Kept')")
    assert key_id in asked[0] and "console-made" in asked[0] and "cannot be undone" in asked[0]
    assert httpx.get(f"{server.url}/v1/models", headers=server.headers(made), timeout=60).status_code == 200
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator("button").click()
    page.wait_for_selector(f'#keys tbody tr[data-key="{key_id}"] button[disabled]')
    deadline = time.monotonic() + 30
    while httpx.get(f"{server.url}/v1/models", headers=server.headers(made), timeout=60).status_code != 401:
        assert time.monotonic() < deadline, "a revoked key is refused within a second"
        time.sleep(0.2)

    page.fill("#tenant-name", "console-made")
    page.click("#tenant-form button[type=submit]")
    page.wait_for_selector("#tenant-view:not([hidden])")
    first = '{"text": "Talk about colours only.", "thresholds": {}, "action": "refuse"}'
    second = '{"text": "Talk about shapes only.\\n' + HTML_PAYLOAD.replace('"', '\\"') + '", "action": "flag"}'
    for config, version in ((first, 1), (second, 2)):
        page.fill("#config-text", config)
        page.click("#put-config")
        page.wait_for_selector(f'#versions tbody tr[data-version="{version}"].chosen', timeout=120_000)
    page.select_option("#diff-a", "1")
    page.select_option("#diff-b", "2")
    diff = page.text_content("#diff")
    assert '- text: "Talk about colours only."' in diff and "+   Talk about shapes only." in diff
    assert '+ action: "flag"' in diff and HTML_PAYLOAD in diff  # config text shown as text
    assert page.locator("#diff img, #diff script, #diff b").count() == 0
    screenshot(page, tmp_path, "console-admin")

    page.locator('#versions tbody tr[data-version="1"] button').click()  # roll back, expecting version 2
    page.wait_for_selector('#versions tbody tr[data-version="1"].chosen', timeout=120_000)
    assert server.store.get_safety_config("console-made").version == 1  # the server rolled back
    page.wait_for_selector("#audit tbody tr[data-action=activate]")
    actions = page.locator("#audit tbody tr td:nth-child(3)").all_text_contents()
    assert actions == ["set", "set", "activate"]

    # The tenant's policy: two versions, then a rollback to the first, expecting the second.
    for policy, version in (('{"weight": 2}', 1), ('{"weight": 3, "max_concurrent_requests": 4}', 2)):
        page.fill("#policy-text", policy)
        page.click("#put-policy")
        page.wait_for_selector(f'#policy-versions tbody tr[data-version="{version}"].chosen', timeout=120_000)
    page.locator('#policy-versions tbody tr[data-version="1"] button:text("Roll back to this")').click()
    page.wait_for_selector('#policy-versions tbody tr[data-version="1"].chosen', timeout=120_000)
    assert server.store.get_tenant_policy("console-made").version == 1
    assert '"weight": 2' in page.input_value("#policy-text")
    # The usage chart follows the tenant opened (it is in the tenants' list: it has a key).
    page.wait_for_selector('#usage-over-time[data-tenant="console-made"]')
    assert page.input_value("#usage-tenant") == "console-made"
    page.select_option("#usage-tenant", "")
    page.wait_for_selector('#usage-over-time[data-tenant=""]')
    assert page.evaluate("window.__pwned") is None
    assert_key_kept_in_the_tab_only(page, server.admin_key)
    assert_clean(page)


def test_a_tenant_key_is_refused_the_admin_view(server, page):
    open_console(page, server, server.key)
    page.click(".tab[data-tab=admin]")
    page.wait_for_selector("#admin-state.bad")
    state = page.text_content("#admin-state")
    assert "not an admin key" in state and "403" in state
    assert page.locator("#admin-body").is_hidden()
    assert_clean(page, refused=403)


def test_a_stream_cut_short_and_a_bound_broken_are_said_so(server, page):
    """A stream that closes with no `done` event is a partial answer, never "Done"; a strategy parameter at
    its exclusive bound is refused in the form, before anything is sent."""
    sent = []
    page.on("request", lambda request: "/v1/generate" in request.url and sent.append(request.url))
    open_console(page, server, server.key)
    page.wait_for_selector('#sliders input[data-objective="verbosity"]')
    page.select_option("#strategy", "best_of_n")
    page.fill('#strategy-params input[data-param="stop_probability"]', "0")
    page.click("#send")
    page.wait_for_selector("#status.bad")
    assert page.text_content("#status") == "search.stop_probability must be greater than 0, got 0"
    assert sent == []
    page.fill('#strategy-params input[data-param="stop_probability"]', "")
    cut = 'event: delta\ndata: {"text": "Half an ans"}\n\n'
    page.route("**/v1/generate", lambda route: route.fulfill(status=200, content_type="text/event-stream", body=cut))
    page.click("#send")
    page.wait_for_selector("#status.bad:has-text('closed before the answer was complete')")
    assert page.text_content("#answer") == "Half an ans" and len(sent) == 1
    assert_clean(page)


def test_the_api_docs_page_loads_only_from_this_origin(server, page):
    """/docs shares the console's origin (and so its session storage): Swagger UI renders the operations
    from files of this server alone, under its policy, with no violation."""
    origins = set()
    page.on("request", lambda request: origins.add(origin(request.url)))
    page.goto(f"{server.url}/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=60_000)
    paths = page.locator(".opblock-summary-path").all_text_contents()
    assert any("/v1/generate" in p for p in paths) and any("/v1/chat/completions" in p for p in paths)
    assert origins - {"data:"} == {origin(server.url)}
    assert_clean(page)
