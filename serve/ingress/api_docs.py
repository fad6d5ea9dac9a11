"""GET /docs: Swagger UI over /openapi.json, every file from this origin under a strict Content-Security-Policy.

FastAPI's own /docs loads Swagger UI from a CDN with no policy. The console keeps the user's key in the
tab's session storage, which every page of this origin can read, so a script fetched from elsewhere
would be one tampered CDN file away from every key typed into the console. Here Swagger UI's files come
from the pinned `fastapi-offline` package, read once; the page and its start script are this module's;
and the policy lets scripts and connections come from this origin only (Swagger UI sets inline styles,
so styles may be inline; styles cannot read storage).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from aligner.errors import NotFound

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # a server upgraded is never shown beside an older page's files
}
# Relative links: the page is <root>docs, its files <root>docs/..., the document <root>openapi.json.
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Aligner API</title>
<link rel="icon" href="docs/favicon.png">
<link rel="stylesheet" href="docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script src="docs/start.js"></script>
</body>
</html>
"""
START = """window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
"""
SWAGGER_FILES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}


@cache
def docs_files() -> dict[str, tuple[bytes, str]]:
    """Every file of the page by its name under docs/ (read once; no name is joined to a path)."""
    static = files("fastapi_offline") / "static"
    out = {name: (static.joinpath(name).read_bytes(), media) for name, media in SWAGGER_FILES.items()}
    out["start.js"] = (START.encode(), "text/javascript; charset=utf-8")
    return out


async def docs_page(request: Request) -> Response:
    """Swagger UI for this server's OpenAPI document."""
    return Response(PAGE, media_type="text/html; charset=utf-8", headers=HEADERS)


async def docs_file(name: str, request: Request) -> Response:
    """One of the page's files; 404 for any other name."""
    found = docs_files().get(name)
    if found is None:
        raise NotFound(f"no docs file {name!r}")
    content, media_type = found
    return Response(content, media_type=media_type, headers=HEADERS)


async def docs_slash(request: Request) -> Response:
    """/docs/ to /docs, relative (Starlette's own redirect would name a scheme a TLS proxy may not use)."""
    return RedirectResponse("../docs", status_code=308, headers=HEADERS)


def routes() -> list:
    hidden = {"include_in_schema": False}
    return [
        ("GET", "/docs", docs_page, hidden),
        ("GET", "/docs/", docs_slash, hidden),
        ("GET", "/docs/{name}", docs_file, hidden),
    ]
