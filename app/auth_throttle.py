"""Failed authentications per client address: past AUTH_FAILURES_PER_MINUTE, 429 before any key is looked up.

A 256-bit key cannot be guessed, but every wrong one costs a database lookup and a log
line. Flask-Limiter counts each address's refused credentials (a moving minute, kept
with the submission quota's counters in Redis, and in each process's memory while
Redis is down or hangs): a 401 to a request that presented credentials, a malformed,
unknown or revoked ``Authorization`` or a wrong key at sign-in. A request without any
(a script without a key, a browser polling the API after its session ended) failed
nothing, and is not counted. An address over the limit gets 429 with ``Retry-After``
on every request that would check credentials, before they are checked: its checks
run before :mod:`app.auth`'s, which registers them first.

The address is the client's. Behind nginx it is the last ``X-Forwarded-For`` entry,
which nginx appends (its peer, or the client the OpenShift router named:
``proxy/nginx.conf.in``), when the connection comes from an address
``FORWARDED_ALLOW_IPS`` trusts (``ApiSettings.forwarded_allow_networks``); otherwise
the connection's own peer.
"""

from __future__ import annotations

import ipaddress

from flask import Flask, Response, request
from flask_limiter import ApplicationLimit, Limiter, RateLimitExceeded, RequestLimit

from app.auth import KEY_CHECK_ENDPOINT, checks_credentials, for_nginx, refused_credentials
from app.errors import ApiError, error_response, handle_error, retry_after_until
from app.extensions import EXTENSION, get_settings
from app.metrics import AUTH_FAILURES
from config.redis import limiter_storage_options

KEY_PREFIX = "auth-failures"


def client_address() -> str:
    """The client's address: the last X-Forwarded-For entry from a trusted proxy, else the peer's."""
    peer = request.remote_addr or ""
    if "X-Forwarded-For" in request.headers and _trusted_proxy(peer):
        return request.access_route[-1]
    return peer


def _trusted_proxy(peer: str) -> bool:
    """Whether ``peer`` is in FORWARDED_ALLOW_IPS, as gunicorn reads it."""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in get_settings().api.forwarded_allow_networks)


def _failures_allowed() -> str:
    return f"{get_settings().api.auth_failures_per_minute}/minute"


def _too_many_failures(limit: RequestLimit) -> Response:
    """429 with the seconds until the address's oldest failure leaves the window (for nginx's key check too)."""
    AUTH_FAILURES.labels("throttled").inc()
    message = "Too many failed authentications from this address; try again later."
    error = ApiError(429, "too_many_failed_authentications", message, retry_after_until(limit.reset_at))
    return for_nginx(error_response(error)) if request.endpoint == KEY_CHECK_ENDPOINT else handle_error(error)


def _answer(exc: RateLimitExceeded) -> Response:
    """A limit breached: the answer its ``on_breach`` prepared, else the API's error for a 429."""
    return exc.response if exc.response is not None else handle_error(exc)


def init_app(app: Flask) -> None:
    """Check each request's address against its failures (before authentication: register this first)."""
    settings = app.extensions[EXTENSION].settings
    limiter = Limiter(
        key_func=client_address,
        strategy="moving-window",
        key_prefix=KEY_PREFIX,
        storage_uri=settings.rate_limit_storage,
        storage_options=limiter_storage_options(),
        in_memory_fallback_enabled=True,
        swallow_errors=True,
        application_limits=[
            ApplicationLimit(
                _failures_allowed,
                exempt_when=lambda: not checks_credentials(),
                deduct_when=refused_credentials,
                on_breach=_too_many_failures,
            )
        ],
    )
    limiter.init_app(app)
    app.register_error_handler(RateLimitExceeded, _answer)
