"""Headless Chromium (Debian's /usr/bin/chromium, driven by Playwright; no browser download)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from playwright.sync_api import Browser, Page, sync_playwright

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("Debian chromium is not installed: `make test` installs it (apt-get)")
    return path


def dismiss_nux(ui: str) -> None:
    """Mark the 'Join the Dagster community' pop-up as seen on this instance."""
    resp = httpx.post(f"{ui}/graphql", json={"query": "mutation { setNuxSeen }"}, timeout=10)
    resp.raise_for_status()


@contextmanager
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chrome = pw.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chrome
        finally:
            chrome.close()


def open_and_capture(page: Page, url: str, expect: list[str], shot: str, timeout_ms: int) -> str:
    """Open ``url``, wait until every expected text is on the page, save a screenshot."""
    page.goto(url, wait_until="domcontentloaded", timeout=timeout_ms)
    for text in expect:
        page.get_by_text(text, exact=False).first.wait_for(state="attached", timeout=timeout_ms)
    page.wait_for_timeout(1500)  # let the graph finish laying out before the screenshot
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / shot), full_page=True)
    return page.content()
