"""The Aligner console: a page served by the ingress at /console (playground and admin), built from the
static files beside this module and the public HTTP API; nothing is fetched from elsewhere at run time.

Every answer of these routes carries a strict Content-Security-Policy (scripts, styles and connections
from this origin only, no inline script or style, no framing, no forms posted elsewhere), so a model
answer or a config text that reaches the page as HTML could not run even if the page rendered it as
HTML, which it never does (it sets text, never markup). docs/console.md describes the page.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from aligner.search import registry

STATIC = Path(__file__).parent / "static"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


# What the form needs of each parameter's JSON schema.
FORM_KEYS = ("type", "default", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "description")


@cache
def assets() -> dict[str, tuple[bytes, str]]:
    """Every file the console serves, by its path under /console/: read once, so a request can name only
    these (no path is ever joined to the file system)."""
    return {
        path.relative_to(STATIC).as_posix(): (path.read_bytes(), CONTENT_TYPES[path.suffix])
        for path in sorted(STATIC.rglob("*"))
        if path.is_file() and path.suffix in CONTENT_TYPES
    }


def asset(name: str) -> tuple[bytes, str] | None:
    """(content, media type) of the console file `name` (a path under /console/), None for any other."""
    return assets().get(name)


def strategies() -> dict[str, Any]:
    """What the playground's search form is built from: every registered strategy and its parameters
    (type, default, bounds, description), read from the registry."""
    out: dict[str, Any] = {}
    for name in registry.names():
        properties = registry.params_of(name).model_json_schema()["properties"]
        out[name] = {
            field: {key: spec[key] for key in FORM_KEYS if key in spec}
            for field, spec in properties.items()
            if field != "strategy"
        }
    return out
