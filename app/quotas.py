"""Per-tenant quotas on job submission: a creation rate, and jobs queued or running at once.

The rate is Flask-Limiter's (a moving window per tenant, its counters in Redis,
shared by every API process); a well-kept limiter beats counters of our own. The
active-jobs limit is counted in PostgreSQL, where the jobs are, under a per-tenant
lock so two submissions cannot both slip under it. Past either: 429 with
``Retry-After``.

The limiter's headers (``X-RateLimit-*``, and its ``Retry-After``: when its window
resets) go on its own 429s only. Flask-Limiter's ``headers_enabled`` writes them on
every answer, and its ``Retry-After`` (up to a minute) would replace the API's own on
a 503 or 507 (5 s), which clients obey.

When Redis is down or hangs (each call gives up after ``config.redis.REDIS_TIMEOUT_SECONDS``),
each API process counts the rate in its own memory (Flask-Limiter's in-memory
fallback) and asks Redis again after a growing pause (1 s, 2 s... 32 s): a hung
Redis costs a submission one timeout now and then, not one each. The active-jobs
limit is enforced all the same.
"""

from __future__ import annotations

from flask import Flask, Response, g, request
from flask_limiter import HeaderNames, Limiter

from app.auth import current_principal
from app.errors import retry_after_until
from app.extensions import get_settings
from config import Settings
from config.redis import limiter_storage_options


def _tenant() -> str:
    return str(current_principal().tenant_id) if "principal" in g else "anonymous"


def _submission_rate() -> str:
    return f"{get_settings().api.jobs_per_minute}/minute"


limiter = Limiter(key_func=_tenant, strategy="moving-window", in_memory_fallback_enabled=True)
# Applied to the views that create jobs (the API's POST and the upload form).
limit_submissions = limiter.limit(_submission_rate, key_func=_tenant, methods=["POST"])


@limiter.request_filter
def _not_a_post() -> bool:
    """Only POSTs can be limited: the limiter skips every other request, so ``/healthz`` never waits on
    its Redis (it asks whether Redis is back on whichever request comes when a pause ends)."""
    return request.method != "POST"


def _rate_limit_headers(response: Response) -> Response:
    """On a 429 of the limiter's, its limit, what remains of it, and when it resets (also as ``Retry-After``)."""
    limit = limiter.current_limit
    if response.status_code == 429 and limit is not None and limit.breached:
        reset_at = limit.reset_at
        response.headers[HeaderNames.LIMIT.value] = str(limit.limit.amount)
        response.headers[HeaderNames.REMAINING.value] = str(limit.remaining)
        response.headers[HeaderNames.RESET.value] = str(reset_at)
        response.headers[HeaderNames.RETRY_AFTER.value] = str(retry_after_until(reset_at))
    return response


def init_app(app: Flask, settings: Settings) -> None:
    """Register after authentication, so the limit's key is the request's tenant."""
    app.config["RATELIMIT_STORAGE_URI"] = settings.rate_limit_storage
    app.config["RATELIMIT_STORAGE_OPTIONS"] = limiter_storage_options()
    app.config["RATELIMIT_SWALLOW_ERRORS"] = True
    limiter.init_app(app)
    app.after_request(_rate_limit_headers)
