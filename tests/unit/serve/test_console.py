"""The console's files and routes (serve/console, serve/ingress/console_routes.py) on a FastAPI app holding
only those routes: every answer under a strict Content-Security-Policy, only the shipped files served,
the search form read from the strategy registry, the vendored chart library as recorded, and scripts that
never turn text into markup."""

from __future__ import annotations

import hashlib
import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from aligner.search import registry
from serve import console
from serve.ingress import console_routes
from serve.ingress.http_routes import aligner_error, routing_error

ROOT = Path(__file__).resolve().parents[3]
# What would turn a string into markup or code, or keep the key beyond the tab.
MARKUP_OR_STORAGE = (
    r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|localStorage|document\.cookie"
)


@pytest.fixture(scope="module")
def client() -> TestClient:
    from starlette.exceptions import HTTPException

    from aligner.errors import AlignerError

    app = FastAPI()
    for method, path, endpoint, options in console_routes.routes():
        app.add_api_route(path, endpoint, methods=[method], **options)
    app.exception_handler(AlignerError)(aligner_error)
    app.exception_handler(HTTPException)(routing_error)
    return TestClient(app)


def test_the_page_and_every_file_come_with_the_security_headers(client):
    page = client.get("/console")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<title>Aligner console</title>" in page.text
    for name in ["", *(n for n in console.assets() if n != "index.html")]:
        reply = client.get(f"/console/{name}" if name else "/console", follow_redirects=False)
        assert reply.status_code == 200, name
        for header, value in console.HEADERS.items():
            assert reply.headers[header] == value, (name, header)
    csp = dict(part.strip().split(" ", 1) for part in console.CSP.split(";"))
    assert csp["default-src"] == "'none'" and csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
    assert "unsafe" not in console.CSP


def test_only_the_shipped_files_are_served(client):
    for name in [
        "../__init__.py",
        "..%2F__init__.py",
        "vendor/../../__init__.py",
        "nope.js",
        "/etc/passwd",
        "index.html/x",
    ]:
        reply = client.get(f"/console/{name}")
        assert reply.status_code == 404, name
        assert reply.json()["error"]["code"] == "not_found"
    for alias in ("/console/", "/console/index.html"):  # its relative links work only at /console
        moved = client.get(alias, follow_redirects=False)
        assert moved.status_code == 308 and moved.headers["location"] == "../console", alias
        assert client.get(alias).url.path == "/console", alias


def test_the_search_form_is_read_from_the_registry(client):
    strategies = client.get("/console/strategies.json").json()
    assert list(strategies) == list(registry.names())
    assert strategies["best_of_n"]["n"]["type"] == "integer" and strategies["best_of_n"]["n"]["minimum"] == 1
    assert strategies["best_of_n"]["adaptive"]["type"] == "boolean"
    assert all("strategy" not in fields for fields in strategies.values())
    assert strategies["sample"] == {}


def test_the_vendored_chart_library_is_the_recorded_one():
    vendored = (console.STATIC / "vendor" / "VENDORED.md").read_text()
    digest = hashlib.sha256((console.STATIC / "vendor" / "chart.umd.min.js").read_bytes()).hexdigest()
    assert f"`chart.umd.min.js` {digest}" in vendored
    assert "Chart.js v4.6.1" in (console.STATIC / "vendor" / "chart.umd.min.js").read_text()[:200]
    assert "MIT License" in (console.STATIC / "vendor" / "chart.js-LICENSE.md").read_text()


def test_no_inline_script_or_style_and_no_markup_from_strings():
    page = (console.STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page), "inline script"
    assert not re.search(r"<style|\sstyle=|\son\w+=", page), "inline style or handler"
    assert not re.search(r"https?://", page), "nothing is fetched from elsewhere"
    for script in console.STATIC.glob("*.js"):
        text = script.read_text()
        found = re.findall(MARKUP_OR_STORAGE, text)
        assert not found, f"{script.name}: {found}"


def test_the_package_ships_every_console_file():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["serve"]
    for name in console.assets():
        assert any(fnmatch(f"console/static/{name}", pattern) for pattern in globs), name
