"""The console's routes (serve/console): the page at GET /console, its files under /console/, and the
strategies its search form is built from. No key is needed to load them: the page holds nothing
secret, and every call it makes to the API carries the key the user typed in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from aligner.errors import NotFound
from serve import console


async def console_page(request: Request) -> Response:
    """The console (docs/console.md)."""
    content, media_type = console.assets()["index.html"]
    return Response(content, media_type=media_type, headers=console.HEADERS)


async def console_file(path: str, request: Request) -> Response:
    """One of the console's own files; 404 for any other name."""
    if path in ("", "index.html"):  # the page's relative links (and its API root) need it at /console
        return RedirectResponse("../console", status_code=308, headers=console.HEADERS)
    if path == "strategies.json":
        return JSONResponse(console.strategies(), headers=console.HEADERS)
    found = console.asset(path)
    if found is None:
        raise NotFound(f"no console file {path!r}")
    content, media_type = found
    return Response(content, media_type=media_type, headers=console.HEADERS)


def routes() -> list[tuple[str, str, Callable[..., Awaitable[Response]], dict[str, Any]]]:
    hidden = {"include_in_schema": False}
    return [("GET", "/console", console_page, hidden), ("GET", "/console/{path:path}", console_file, hidden)]
