"""Driving Debian's chromium through Playwright: a page that records what is worth failing on, and signing in.

The ``browser`` fixture itself is in ``tests/functional/conftest.py``: one chromium for the whole session.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tests.helpers import TestKey

if TYPE_CHECKING:  # imported where used: only the browser tests need Playwright
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class Watched:
    """A page with everything worth failing on recorded: dialogs, console errors, requests leaving the site."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.outside: list[str] = []
        page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("request", lambda request: request.url.startswith(base_url) or self.outside.append(request.url))


@contextmanager
def watched_page(
    browser: Browser, base_url: str, key: TestKey | None = None, javascript: bool = True
) -> Iterator[Watched]:
    """A fresh browser (no cookies), signed in through the sign-in page with ``key`` when given."""
    context = browser.new_context(
        base_url=base_url, java_script_enabled=javascript, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(30_000)
    try:
        watched = Watched(context.new_page(), base_url)
        if key is not None:
            sign_in(watched.page, key)
        yield watched
    finally:
        context.close()


def sign_in(page: Page, key: TestKey) -> None:
    """Sign in as a person would: the key typed into the sign-in page's password field."""
    page.goto("/sign-in")
    field = page.get_by_label("API key")
    assert field.get_attribute("type") == "password"
    field.fill(key.key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/sign-in" not in url)
