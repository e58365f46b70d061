"""Per-tenant quotas on job submission: a creation rate, and jobs queued or running at once.

The rate is Flask-Limiter's (a moving window per tenant, its counters in Redis,
shared by every API process); a well-kept limiter beats counters of our own. The
active-jobs limit is counted in PostgreSQL, where the jobs are, under a per-tenant
lock so two submissions cannot both slip under it. Past either: 429 with
``Retry-After``. When Redis is down the rate is not enforced (jobs still flow);
the active-jobs limit still is.
"""

from __future__ import annotations

from flask import Flask, g
from flask_limiter import Limiter

from app.auth import current_principal
from app.extensions import get_settings
from config import Settings


def _tenant() -> str:
    return str(current_principal().tenant_id) if "principal" in g else "anonymous"


def _submission_rate() -> str:
    return f"{get_settings().api.jobs_per_minute}/minute"


limiter = Limiter(key_func=_tenant, strategy="moving-window", headers_enabled=True)
# Applied to the views that create jobs (the API's POST and the upload form).
limit_submissions = limiter.limit(_submission_rate, key_func=_tenant, methods=["POST"])


def init_app(app: Flask, settings: Settings) -> None:
    """Register after authentication, so the limit's key is the request's tenant."""
    app.config["RATELIMIT_STORAGE_URI"] = settings.api.rate_limit_storage_url or settings.result_backend
    app.config["RATELIMIT_SWALLOW_ERRORS"] = True
    limiter.init_app(app)
