"""serve/ingress/api_docs.py: /docs is Swagger UI from this origin only, under a strict policy, because every
page of the origin can read the console's key in session storage."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from serve.ingress import api_docs
from serve.ingress.http_routes import build_app


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(build_app(gateway=None))  # the docs routes never touch the gateway


def test_the_page_and_its_files_come_from_this_origin_with_the_policy(client):
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    linked = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert linked and not any(re.match(r"[a-z]+:|//", link) for link in linked), linked
    for link in linked:
        reply = client.get("/" + link)
        assert reply.status_code == 200 and reply.content, link
        assert reply.headers["content-security-policy"] == api_docs.CSP, link
    assert "SwaggerUIBundle" in client.get("/docs/swagger-ui-bundle.js").text
    assert 'url: "openapi.json"' in client.get("/docs/start.js").text
    for header, value in api_docs.HEADERS.items():
        assert page.headers[header] == value
    policy = dict(part.strip().split(" ", 1) for part in api_docs.CSP.split(";"))
    assert policy["script-src"] == "'self'" and policy["connect-src"] == "'self'"
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page.text), "no inline script"


def test_fastapis_cdn_pages_are_gone_and_other_names_are_404(client):
    assert client.get("/redoc").status_code == 404
    assert client.get("/docs/oauth2-redirect").status_code == 404
    for name in ("..%2Fopenapi.json", "nope.js", "redoc.standalone.js", "%2e%2e%2fconsole"):
        reply = client.get(f"/docs/{name}")
        assert reply.status_code == 404, name
    assert client.get("/openapi.json").json()["info"]["title"] == "Aligner"
    slash = client.get("/docs/", follow_redirects=False)
    assert slash.status_code == 308 and slash.headers["location"] == "../docs"
