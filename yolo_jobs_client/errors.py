"""What can go wrong, as exceptions that carry the exit code the ``yolo-jobs`` command ends with.

Scripts test the codes: 0 done; 1 a job failed or was cancelled; 2 usage (bad
arguments, no images, a request the server rejected as invalid); 3 no or a refused
API key; 4 no such job; 5 the server or the network failed (after retries); 6 the
job is not in a state for that (cancel a finished job, export an unfinished one).
"""

from __future__ import annotations

import json
from typing import Any

import requests

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_UNAVAILABLE = 5
EXIT_CONFLICT = 6
EXIT_INTERRUPTED = 130


class ClientError(Exception):
    """A failure the caller should see: a sentence, the server's error code if any, and an exit code."""

    exit_code = EXIT_UNAVAILABLE

    def __init__(self, message: str, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


class UsageError(ClientError):
    exit_code = EXIT_USAGE


class AuthError(ClientError):
    exit_code = EXIT_AUTH


class NotFound(ClientError):
    exit_code = EXIT_NOT_FOUND


class Unavailable(ClientError):
    exit_code = EXIT_UNAVAILABLE


class Conflict(ClientError):
    exit_code = EXIT_CONFLICT


def _error_class(status: int) -> type[ClientError]:
    if status in (401, 403):
        return AuthError
    if status in (404, 410):
        return NotFound
    if status == 409:
        return Conflict
    if 400 <= status < 500 and status != 429:
        return UsageError
    return Unavailable


def error_of(status: int, content: bytes, fallback: str) -> ClientError:
    """The error an answer of ``status`` stands for, with the server's ``{"error": {"code", "message"}}`` when
    ``content`` is one, else ``fallback`` as its message."""
    code, message = None, fallback
    try:
        body: Any = json.loads(content)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        message = body["error"].get("message") or message
    return _error_class(status)(message, code, status)


def error_for(response: requests.Response) -> ClientError:
    """The error an answer stands for (see :func:`error_of`)."""
    fallback = f"HTTP {response.status_code} from {response.request.method} {response.url}"
    return error_of(response.status_code, response.content, fallback)
