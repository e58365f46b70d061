"""Which request paths are the API's: the one list the app and nginx both follow.

A path that starts with one of :data:`API_PATH_PREFIXES` is answered as the API
answers: its errors as JSON (``app/errors.py``), a request without a key with 401
rather than the sign-in page (``app/auth.py``), and the errors nginx answers itself
as JSON too (``proxy/`` renders the prefixes into ``nginx.conf.in``'s
``$yolo_api_path``). Everything else is a page for people in a browser.
"""

from __future__ import annotations

API_PATH_PREFIXES = ("/api/", "/healthz", "/readyz", "/metrics")


def is_api_path(path: str) -> bool:
    """Whether ``path`` (without its query) is the API's rather than a page's."""
    return path.startswith(API_PATH_PREFIXES)
