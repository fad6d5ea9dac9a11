"""Per-tenant safety configs over HTTP: admin-only routes, versions, conflicts, audit, propagation, privacy."""

from __future__ import annotations

import concurrent.futures
import time

import httpx

from aligner.safety.config import SafetyConfig

SMALL = {"prompt": "Name a colour.", "max_tokens": 4, "temperature": 0}
KIDS = {
    "text": "Users are children aged 8-12. Never discuss violence, dating or gambling.",
    "thresholds": {"harmlessness": 0.5},
    "disallowed": ["violence", "dating", "gambling"],
}
ROUTE = "/v1/admin/tenants/umbrella/safety-config"


def put(client, server, config, expected, key=None):
    return client.put(
        ROUTE, json={"config": config, "expected_version": expected}, headers=server.headers(key or server.admin_key)
    )


def test_admin_sets_a_tenant_config_and_only_that_tenant_is_served_under_it(app):
    _, tenant_key = app.store.create_key("umbrella")
    _, tenant_admin = app.store.create_key("umbrella", admin=True)
    with app.client() as client:
        stored = put(client, app, KIDS, None)
        assert stored.status_code == 200, stored.text
        version = stored.json()["version"]
        time.sleep(1.0)  # in force on every replica within a second

        plain = client.post("/v1/generate", json={**SMALL, "return_prompt": True}, headers=app.headers(tenant_key))
        assert plain.status_code == 200 and plain.headers["x-aligner-safety-version"] == str(version)
        body = plain.json()
        assert body["safety"]["version"] == version and body["safety"]["verdict"] == "passed"
        system = body["prompt"][0]
        assert system["role"] == "system" and system["content"].startswith(
            "[operator section (secret marker)] Safety policy set by the operator"
        )  # the marker is never shown
        # A tenant key sees a placeholder, never the config's text.
        assert f"[tenant safety config, version {version}]" in system["content"]
        assert "children aged 8-12" not in plain.text

        shown = client.post("/v1/generate", json={**SMALL, "return_prompt": True}, headers=app.headers(tenant_admin))
        assert "children aged 8-12" in shown.json()["prompt"][0]["content"]  # an admin sees it all

        chat = client.post(
            "/v1/chat/completions",
            headers=app.headers(tenant_key),
            json={"model": app.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        )
        assert chat.status_code == 200 and chat.json()["alignment"]["safety"]["version"] == version

        other = client.post("/v1/generate", json={**SMALL, "return_prompt": True}, headers=app.headers(app.other_key))
        assert other.status_code == 200 and "x-aligner-safety-version" not in other.headers
        assert "safety" not in other.json() and "Safety policy" not in other.text

        for method, path in (
            ("GET", ROUTE),
            ("GET", f"{ROUTE}/versions"),
            ("PUT", ROUTE),
            ("DELETE", ROUTE),
            ("POST", f"{ROUTE}/activate"),
            ("GET", "/v1/admin/audit"),
        ):
            for key in (tenant_key, app.other_key):  # the tenant itself, and another tenant
                denied = client.request(
                    method,
                    path,
                    headers=app.headers(key),
                    params={"expected_version": 1},
                    json={"config": KIDS, "expected_version": None, "version": 1},
                )
                assert denied.status_code == 403, (method, path, denied.text)
                assert "children aged 8-12" not in denied.text


def test_versions_conflicts_rollback_delete_and_audit(app):
    with app.client() as client:
        current = client.get(ROUTE, headers=app.headers(app.admin_key))
        base = current.json()["version"] if current.status_code == 200 else None
        first = put(client, app, {**KIDS, "action": "flag"}, base)
        assert first.status_code == 200
        v1 = first.json()["version"]

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            replies = list(
                pool.map(
                    lambda i: httpx.put(
                        f"{app.url}{ROUTE}",
                        headers=app.headers(app.admin_key),
                        timeout=60,
                        json={"config": {**KIDS, "text": f"writer {i}"}, "expected_version": v1},
                    ),
                    range(4),
                )
            )
        codes = sorted(r.status_code for r in replies)
        assert codes == [200, 409, 409, 409], [r.text for r in replies]
        assert all(r.json()["error"]["code"] == "version_conflict" for r in replies if r.status_code == 409)
        v2 = v1 + 1

        bad = put(client, app, {**KIDS, "thresholds": {"harmlessness": 7}}, v2)
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "thresholds.harmlessness"
        unknown = put(client, app, {**KIDS, "thresholds": {"nonsense": 0.1}}, v2)
        assert unknown.status_code == 400 and unknown.json()["error"]["field"] == "thresholds.nonsense"

        back = client.post(
            f"{ROUTE}/activate", json={"version": v1, "expected_version": v2}, headers=app.headers(app.admin_key)
        )
        assert back.status_code == 200 and client.get(ROUTE, headers=app.headers(app.admin_key)).json()["version"] == v1
        versions = client.get(f"{ROUTE}/versions", headers=app.headers(app.admin_key)).json()
        assert versions["active"] == v1 and [v["version"] for v in versions["versions"]][-2:] == [v1, v2]

        stale = client.delete(ROUTE, params={"expected_version": v2}, headers=app.headers(app.admin_key))
        assert stale.status_code == 409
        gone = client.delete(ROUTE, params={"expected_version": v1}, headers=app.headers(app.admin_key))
        assert gone.status_code == 200
        assert client.get(ROUTE, headers=app.headers(app.admin_key)).status_code == 404

        audit = client.get("/v1/admin/audit", params={"tenant": "umbrella"}, headers=app.headers(app.admin_key))
        entries = audit.json()["entries"]
        assert [(e["action"], e["new_version"]) for e in entries[-4:]] == [
            ("set", v1),
            ("set", v2),
            ("activate", v1),
            ("delete", None),
        ]
        assert all(e["actor"].startswith("key_") for e in entries)
        bad_since = client.get("/v1/admin/audit", params={"since": "yesterday"}, headers=app.headers(app.admin_key))
        assert bad_since.status_code == 400 and bad_since.json()["error"]["field"] == "since"


def test_a_change_reaches_both_replicas_within_a_second(server):
    """Measured: after a PUT returns, requests keep flowing to both replicas; none sent a second or
    more after it may be served under the old version, and both replicas serve the new one."""
    import threading

    _, tenant_key = server.store.create_key("umbrella")
    with server.client() as client:
        current = client.get(ROUTE, headers=server.headers(server.admin_key))
        base = current.json()["version"] if current.status_code == 200 else None
        old = put(client, server, {**KIDS, "text": "Only talk about colours."}, base).json()["version"]
        time.sleep(1.2)
        new = put(client, server, {**KIDS, "text": "Only talk about shapes."}, old)
        changed_at = time.monotonic()
        assert new.status_code == 200
        new = new.json()["version"]

    seen: list[tuple[float, str, int]] = []  # (sent, seconds after the change; replica; version)

    def probe():
        with httpx.Client(base_url=server.url, timeout=60) as http:
            while time.monotonic() - changed_at < 1.6:
                sent = time.monotonic() - changed_at
                reply = http.post("/v1/generate", json={**SMALL, "max_tokens": 1}, headers=server.headers(tenant_key))
                assert reply.status_code == 200, reply.text
                seen.append((sent, reply.headers["x-aligner-replica"], int(reply.headers["x-aligner-safety-version"])))

    threads = [threading.Thread(target=probe) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stale = [sent for sent, _, version in seen if version == old]
    assert max(stale, default=0.0) < 1.0, f"old version served {max(stale):.2f}s after the change"
    assert {version for _, _, version in seen} <= {old, new}
    assert len({replica for _, replica, version in seen if version == new}) == 2, seen


def test_a_tenant_whose_config_refuses_gets_the_refusal_on_every_route_and_it_is_counted(app):
    import json

    route = "/v1/admin/tenants/hooli/safety-config"
    _, key = app.store.create_key("hooli")
    refusal = "This assistant cannot help with that."
    strict = {
        "text": "Answer only questions about our products.",
        "refusal_message": refusal,
        "thresholds": {"verbosity": 0.999},
    }  # unreachable for short answers: every answer is refused
    with app.client() as client:
        current = client.get(route, headers=app.headers(app.admin_key))
        base = current.json()["version"] if current.status_code == 200 else None
        version = client.put(
            route, json={"config": strict, "expected_version": base}, headers=app.headers(app.admin_key)
        ).json()["version"]
        time.sleep(1.0)
        native = client.post(
            "/v1/generate", json={**SMALL, "max_tokens": 8, "temperature": 0.7, "seed": 1}, headers=app.headers(key)
        )
        chat = client.post(
            "/v1/chat/completions",
            headers=app.headers(key),
            json={"model": app.model, "messages": [{"role": "user", "content": "Tell me a joke."}], "max_tokens": 8},
        )
        with client.stream(
            "POST",
            "/v1/chat/completions",
            headers=app.headers(key),
            json={
                "model": app.model,
                "messages": [{"role": "user", "content": "Tell me a joke."}],
                "max_tokens": 8,
                "stream": True,
            },
        ) as stream:
            chunks = [
                json.loads(line[6:])
                for line in stream.iter_lines()
                if line.startswith("data: ") and line != "data: [DONE]"
            ]
    assert native.status_code == 200 and native.json()["text"] == refusal
    assert native.json()["finish_reason"] == "content_filter"
    assert native.json()["safety"] == {"version": version, "verdict": "refused"}
    assert native.headers["x-aligner-safety-version"] == str(version)
    choice = chat.json()["choices"][0]
    assert choice["message"]["content"] == refusal and choice["finish_reason"] == "content_filter"
    assert chat.json()["alignment"]["safety"]["verdict"] == "refused"
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert streamed == refusal  # nothing the verdict refused was ever sent
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "content_filter"
    assert app.wait_metric("aligner_safety_actions_total", lambda v: v >= 3, tenant="hooli", action="refused") == 3
    assert app.wait_metric("aligner_safety_config_version", lambda v: v == version, tenant="hooli") == version


def test_the_safety_cli_manages_configs_through_a_running_server(server, tmp_path):
    # On one store: the CLI speaks only HTTP, and the routes it calls are tested on both stores.
    app = server
    import json
    import subprocess
    import sys

    def cli(*args, key=None):
        return subprocess.run(
            [sys.executable, "-m", "serve.cli", "safety", *args, "--server", app.url, "--key", key or app.admin_key],
            capture_output=True,
            text=True,
            timeout=120,
        )

    config = tmp_path / "shop.yaml"
    config.write_text("text: Only discuss our shop.\nthresholds: {harmlessness: 0.5}\naction: flag\n")
    first = cli("set", "initrode", "--file", str(config), "--expected-version", "none")
    assert first.returncode == 0, first.stderr
    config.write_text("text: Only discuss our shop and its opening hours.\n")
    assert cli("set", "initrode", "--file", str(config)).returncode == 0  # expects the version active now: 1
    shown = json.loads(cli("get", "initrode", "--json").stdout)
    assert shown["version"] == 2 and shown["config"]["text"].endswith("opening hours.")
    assert cli("activate", "initrode", "1").returncode == 0
    versions = cli("versions", "initrode").stdout.splitlines()
    assert [line.split()[0] for line in versions] == ["*", "2"] and versions[0].split()[1] == "1"
    stale = cli("delete", "initrode", "--expected-version", "2")
    assert stale.returncode == 1 and "version" in stale.stderr
    assert cli("delete", "initrode").returncode == 0
    assert cli("get", "initrode").returncode == 1
    audit = [json.loads(line) for line in cli("audit", "--tenant", "initrode").stdout.splitlines()]
    assert [e["action"] for e in audit] == ["set", "set", "activate", "delete"]
    assert all(e["actor"].startswith("key_") for e in audit)  # the admin key's id, through the app

    denied = cli("get", "initrode", key=app.key)  # a tenant key
    assert denied.returncode == 1 and "admin" in denied.stderr
    config.write_text("text: Be nice.\nthresholds: {wit: 0.5}\n")
    bad = cli("set", "initrode", "--file", str(config), "--expected-version", "none")
    assert bad.returncode == 2 and "thresholds.wit" in bad.stderr  # checked against the served objectives


def test_a_config_too_long_for_the_model_is_refused_and_a_stored_one_is_invalid_config(app):
    """Issue 19, item 6, through the server. Failed before this fix: the PUT stored the 20,000-character
    config, and every request of the tenant was then 400 `prompt_too_long` naming its own `prompt`."""
    huge = {"text": ("Never discuss the weather, sports or any competitor's products. " * 400)[:20_000]}
    _, key = app.store.create_key("longwinded")
    route = "/v1/admin/tenants/longwinded/safety-config"
    with app.client() as client:
        refused = client.put(route, json={"config": huge, "expected_version": None}, headers=app.headers(app.admin_key))
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["code"] == "invalid_argument" and error["field"] == "text" and "max_model_len" in error["message"]
        assert client.get(route, headers=app.headers(app.admin_key)).status_code == 404  # nothing was stored
        # One stored before the check (written to the store directly): the operator's fault, not the client's.
        version = app.store.set_safety_config("longwinded", SafetyConfig(**huge), expected_version=None).version
        time.sleep(1.0)  # in force on every replica within a second
        answer = client.post("/v1/generate", json=SMALL, headers=app.headers(key))
        assert answer.status_code == 500 and answer.json()["error"]["code"] == "invalid_config"
        assert f"version {version}" in answer.json()["error"]["message"]
        body = {"version": version, "expected_version": version}
        rollback = client.post(f"{route}/activate", json=body, headers=app.headers(app.admin_key))
        assert rollback.status_code == 400 and rollback.json()["error"]["field"] == "text"
