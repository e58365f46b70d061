"""Errors with the right 4xx/5xx status: ``{"error": {"code", "message"}}`` JSON on the API's paths
(:mod:`config.api_paths`), an HTML page with the same sentence everywhere else (never a stack trace)."""

from __future__ import annotations

import errno
import logging
import time

from flask import Flask, Response, jsonify, make_response, render_template, request
from gunicorn.http.errors import ParseException as MalformedHttp
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES

from app.refusals import REFUSALS, REFUSED
from config.api_paths import is_api_path
from jobs.errors import BrokerUnavailable

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
INTERNAL_ERROR = "internal_error"
INSUFFICIENT_STORAGE = "insufficient_storage"

HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    410: "gone",
    413: "too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


class ApiError(Exception):
    """An error the client should see, with its status, code and sentence."""

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


def service_unavailable(what: str) -> ApiError:
    return ApiError(503, f"{what}_unavailable", f"The {what} is unavailable; try again shortly.", RETRY_AFTER_SECONDS)


def retry_after_until(reset_at: float) -> int:
    """``Retry-After`` for a limit that resets at ``reset_at`` (a Unix time, as Flask-Limiter's): at least 1 s."""
    return max(1, int(reset_at - time.time()))


def error_response(error: ApiError) -> Response:
    return _with_status(jsonify({"error": {"code": error.code, "message": error.message}}), error)


def error_page(error: ApiError) -> Response:
    """The error as a page with a heading and the sentence, for people in a browser."""
    title = HTTP_STATUS_CODES.get(error.status, "Error")
    page = render_template("error.html", status=error.status, title=title, message=error.message)
    return _with_status(make_response(page), error)


def _with_status(response: Response, error: ApiError) -> Response:
    response.status_code = error.status
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def to_api_error(exc: Exception) -> ApiError:
    """The error a client should see for ``exc``; logs an unexpected one (and a full volume): call it once, where
    the error is answered, and :func:`api_error_of` where it is only counted."""
    error = api_error_of(exc)
    if error.code == INTERNAL_ERROR:
        log.exception("unhandled error", exc_info=exc)
    elif error.code == INSUFFICIENT_STORAGE:
        log.error("storage volume is full: %s", exc)
    return error


def api_error_of(exc: Exception) -> ApiError:
    """The error a client should see for ``exc``, logging nothing."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, REFUSED):
        refusal = REFUSALS[type(exc)]
        return ApiError(refusal.status, refusal.code, str(exc), refusal.retry_after)
    if isinstance(exc, RequestEntityTooLarge):
        return ApiError(413, "too_large", _too_large_message())
    if isinstance(exc, MalformedHttp):  # gunicorn's, raised as the app reads a body it cannot parse
        return ApiError(400, "bad_request", "The request body is malformed: its chunked encoding could not be read.")
    if isinstance(exc, HTTPException):
        status = exc.code or 500
        return ApiError(status, HTTP_CODES.get(status, "http_error"), exc.description or exc.name)
    if isinstance(exc, OperationalError | InterfaceError):
        return service_unavailable("database")
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        message = "The storage volume is full; try again later."
        return ApiError(507, INSUFFICIENT_STORAGE, message, RETRY_AFTER_SECONDS)
    if isinstance(exc, BrokerError | ConnectionError | BrokerUnavailable):
        return service_unavailable("broker")
    return ApiError(500, INTERNAL_ERROR, "An unexpected error occurred.")


def _too_large_message() -> str:
    """Which limit a 413 from Werkzeug hit: the whole body (MAX_UPLOAD_BYTES) or one plain form field."""
    body_limit = request.max_content_length
    length = request.content_length
    if body_limit is not None and (length is None or length > body_limit):
        return f"The request is larger than {body_limit} bytes, the most this server accepts."
    field_limit = request.max_form_memory_size
    return f"A form field is larger than {field_limit} bytes; send images as file parts."


def handle_error(exc: Exception) -> Response:
    error = to_api_error(exc)
    return error_response(error) if is_api_path(request.path) else error_page(error)


def init_app(app: Flask) -> None:
    """Answer every error as JSON on the API's paths, and as an HTML page elsewhere."""
    app.register_error_handler(Exception, handle_error)
