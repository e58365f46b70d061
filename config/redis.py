"""How long any Redis call of yolo-jobs waits: the result backend's (``celery_config``), and the API's rate limiters'.

A Redis that hangs (a network partition: the connection is accepted, nothing answers)
must cost what one that is down costs; Celery's defaults wait 120 s for a reply, and
redis-py's wait for ever. Redis answers in well under a millisecond; what waits on it is
best effort.
"""

from __future__ import annotations

# Seconds a Redis call waits to connect, and then for a reply.
REDIS_TIMEOUT_SECONDS = 0.5


def limiter_storage_options() -> dict[str, float]:
    """The Redis client's options for Flask-Limiter's storage (``app.quotas``, ``app.auth_throttle``): its timeouts."""
    return {"socket_timeout": REDIS_TIMEOUT_SECONDS, "socket_connect_timeout": REDIS_TIMEOUT_SECONDS}
