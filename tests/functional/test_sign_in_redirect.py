"""Where signing in sends a browser: only ever to a path on this site, judged as the browser reads ``next``.

A browser parses ``Location`` with the WHATWG URL parser: it strips C0 controls and spaces
from the ends, removes tabs and newlines anywhere and reads a backslash as a slash, so
``/<TAB>/evil.example`` and ``/\\evil.example`` start with one slash, yet lead to
evil.example. Every case goes through a real gunicorn: ``next`` in the sign-in page's URL
(percent-encoded there, so ``%2F%09%2F``, ``%2F%2F`` and ``%5C`` are what arrives), the hidden
field the page fills from it, and the redirect after a sign-in that posts it. Chromium signs
in through the form with a tab, a newline and a padded path in ``next`` and must land on the
page meant (its CSP's ``form-action 'self'`` would also refuse a redirect off the site after
the form's post: a refused navigation, but not where the person was going).
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import pytest
import requests

from tests.functional.browser import watched_page
from tests.helpers import TestKey

if TYPE_CHECKING:  # only the browser test needs Playwright
    from playwright.sync_api import Browser

# (next, where the browser is sent): legitimate paths survive with their queries, percent-encoded
# as they go into a header; anything a browser would read as leaving the site goes to /.
NEXT_AND_LOCATION = [
    ("/jobs", "/jobs"),
    ("/jobs?status=failed&page=2", "/jobs?status=failed&page=2"),
    ("/jobs/0b1c?file=2#boxes", "/jobs/0b1c?file=2#boxes"),
    ("/jobs?next=//evil.example", "/jobs?next=//evil.example"),
    ("/%2F%2Fevil.example/", "/%2F%2Fevil.example/"),  # a path here: a browser does not decode it
    ("/%5Cevil.example", "/%5Cevil.example"),
    ("/%09/evil.example", "/%09/evil.example"),
    ("/photos/été 1", "/photos/%C3%A9t%C3%A9%201"),
    (" \x00/jobs\x1f\n", "/jobs"),  # the browser strips the ends too
    ("/jobs\r\nSet-Cookie: session=x", "/jobsSet-Cookie:%20session=x"),  # newlines removed, as the browser does
    ("", "/"),
    ("jobs", "/"),
    ("evil.example", "/"),
    ("//evil.example", "/"),
    ("///evil.example", "/"),
    ("/\t/evil.example/", "/"),  # the issue's ?next=%2F%09%2Fevil.example%2F
    ("/\n/evil.example/", "/"),
    ("/\r/evil.example/", "/"),
    ("/\r\n/evil.example/", "/"),
    ("\t//evil.example", "/"),
    ("/\\evil.example", "/"),
    ("\\\\evil.example", "/"),
    ("\\/evil.example", "/"),
    ("/\\/evil.example", "/"),
    ("/\t\\evil.example", "/"),
    ("  //evil.example", "/"),
    ("\x01\x1f//evil.example", "/"),
    ("%2F%2Fevil.example", "/"),  # twice encoded: not a path at all once decoded
    ("javascript:alert(document.domain)", "/"),
    ("JaVaScRiPt:alert(1)", "/"),
    ("java\tscript:alert(1)", "/"),
    ("\x00javascript:alert(1)", "/"),
    ("http://evil.example/", "/"),
    ("https://evil.example", "/"),
    ("https:evil.example", "/"),
    ("http:/\\evil.example", "/"),
    ("data:text/html,<script>alert(1)</script>", "/"),
]


def sign_in_page(browser: requests.Session, api_url: str, next_value: str) -> tuple[str, str]:
    """The sign-in page reached with ``?next=``: its CSRF token and the ``next`` its form will post."""
    page = browser.get(f"{api_url}/sign-in?{urlencode({'next': next_value})}", timeout=10)
    assert page.status_code == 200, page.text
    token = re.search(r'name="csrf_token" value="([^"]*)"', page.text)
    hidden = re.search(r'name="next" value="([^"]*)"', page.text)
    assert token is not None and hidden is not None, page.text
    return token.group(1), html.unescape(hidden.group(1))


@pytest.mark.parametrize(("next_value", "location"), NEXT_AND_LOCATION, ids=[ascii(n) for n, _ in NEXT_AND_LOCATION])
def test_sign_in_leads_only_to_a_path_on_this_site(
    api_url: str, api_key: TestKey, next_value: str, location: str
) -> None:
    with requests.Session() as browser:
        token, hidden = sign_in_page(browser, api_url, next_value)
        # Posted as it came, not as the page put it: the form's field is the client's to change.
        form = {"key": api_key.key, "csrf_token": token, "next": next_value}
        answer = browser.post(f"{api_url}/sign-in", data=form, allow_redirects=False, timeout=10)
    assert answer.status_code == 303, answer.text
    assert (answer.headers["Location"], hidden) == (location, location), "the redirect, then the page's form"


def test_a_refused_sign_in_keeps_only_a_path_on_this_site(api_url: str) -> None:
    with requests.Session() as browser:
        token, _ = sign_in_page(browser, api_url, "")
        form = {"key": "yj_nope", "csrf_token": token, "next": "/\t/evil.example/"}
        answer = browser.post(f"{api_url}/sign-in", data=form, allow_redirects=False, timeout=10)
    assert answer.status_code == 401
    assert 'name="next" value="/"' in answer.text


@pytest.mark.browser
@pytest.mark.parametrize(
    ("next_value", "path"),
    [
        ("/\t/evil.example/", "/"),
        ("/\n/evil.example/", "/"),
        (" /jobs?status=failed\t", "/jobs?status=failed"),
    ],
    ids=["tab", "newline", "legit"],
)
def test_chromium_stays_on_the_site_after_signing_in(
    browser: Browser, api_url: str, api_key: TestKey, next_value: str, path: str
) -> None:
    with watched_page(browser, api_url) as watched:
        page = watched.page
        page.goto(f"/sign-in?{urlencode({'next': next_value})}")
        page.get_by_label("API key").fill(api_key.key)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{api_url}{path}", timeout=10_000)
        assert watched.outside == [], "the browser left the site"
