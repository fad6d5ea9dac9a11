"""Debian's Chromium (which `make test` installs), driven headless by Playwright's Python package: never a
browser Playwright downloads. One browser per test module; a fresh profile (context) per test."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Records every Content-Security-Policy violation of the page, before any of its scripts runs.
CSP_WATCH = """
window.__cspViolations = [];
document.addEventListener(
  "securitypolicyviolation", (e) => window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`)
);
"""


def chromium_path() -> str:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} not found: install Debian's chromium package (make test does)"
    return CHROMIUM


def screenshot(page, out_dir: Path, name: str) -> Path:
    """Save a screenshot under the test's output; also under $ALIGNER_CONSOLE_SCREENSHOTS (the docs'
    images, `make console-screenshots`) when it is set."""
    path = out_dir / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    docs = os.environ.get("ALIGNER_CONSOLE_SCREENSHOTS")
    if docs:
        Path(docs).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(docs) / path.name)
    return path
