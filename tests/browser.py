"""One headless-Chromium harness for the browser tests (Debian's binary driven by Playwright; nothing downloaded).

``open_page(url)`` yields a :class:`PageState`: the page, plus every non-file request the page attempted (all
aborted: the pages must work offline), every dialog (dismissed: an injected ``alert`` would show up here) and the
console messages.
"""
from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--disable-quic"]


@dataclass
class PageState:
    page: Any = None
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)


@contextlib.contextmanager
def open_page(url: str, *, width: int = 1280, height: int = 900, allow: tuple[str, ...] = ()) -> Iterator[PageState]:
    """``allow``: URL prefixes that may be fetched besides ``file:`` (the submission server on 127.0.0.1)."""
    assert Path(CHROMIUM).exists(), "Chromium not found: `make browser` installs Debian's chromium"
    state = PageState()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": width, "height": height})

        def route(r):
            if r.request.url.startswith(("file:", *allow)):
                r.continue_()
            else:
                state.requests.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.on("dialog", lambda d: (state.dialogs.append(d.message), d.dismiss()))
        page.on("console", lambda m: state.console.append(m.text))
        page.goto(url)
        page.wait_for_load_state("load")
        state.page = page
        try:
            yield state
        finally:
            browser.close()


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path
