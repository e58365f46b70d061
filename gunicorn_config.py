"""gunicorn settings for the API: ``gunicorn -c python:gunicorn_config "app:create_app()"``.

Every value comes from :class:`config.Settings` (``API_BIND``, ``WEB_CONCURRENCY``,
``API_THREADS``, ``API_TIMEOUT``, ``FORWARDED_ALLOW_IPS``, ``LOG_FORMAT``). gunicorn
serves behind nginx (``proxy/``, ``python -m proxy``), never to clients directly.
A module rather than a ``gunicorn.conf.py`` file: the wheel installs it (``py_modules`` in
setup.cfg), so the image runs the API with no source tree at hand.
"""

import os
import shutil
import tempfile
import time

from gunicorn.glogging import Logger
from gunicorn.http.errors import ParseException

from config import Settings
from proxy import UPSTREAM_IDLE_SECONDS

_settings = Settings.from_env()
_api = _settings.api

bind = _api.bind
workers = _api.processes
worker_class = "gthread"
threads = _api.threads
# Large uploads over slow links stream for a while; the limit still ends stuck requests.
timeout = _api.timeout
graceful_timeout = 30
# nginx drops a connection it kept to gunicorn after UPSTREAM_IDLE_SECONDS idle; gunicorn waits
# longer, so nginx never sends a request on a connection gunicorn is closing that moment.
keepalive = UPSTREAM_IDLE_SECONDS + 1
forwarded_allow_ips = _api.forwarded_allow_ips

# Clients reach gunicorn through nginx (proxy/nginx.conf.in), which reads each request
# whole before passing it on (slow clients never hold a thread here) and answers
# malformed or oversized requests itself, in JSON: a request line or a header over
# 4 KiB, or over 16 KiB of headers in all. gunicorn's own limits sit above anything
# nginx passes on, so its error pages (HTML, and they cannot be customised) never
# reach a client through the proxy: nginx joins repeated X-Forwarded-For headers into
# one (up to the whole 16 KiB), and 16 KiB holds at most 5,461 header lines ("a:" + LF).
PROXY_HEADER_BYTES = 4 * 4096
limit_request_line = 8190  # gunicorn's maximum; nginx's is 4 KiB
limit_request_field_size = PROXY_HEADER_BYTES + 64
limit_request_fields = PROXY_HEADER_BYTES // 3 + 16

# Requests are logged by the app itself (structured, one line each); gunicorn's own
# messages go through the same formatter.
accesslog = None
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"app": {"()": "config.logs.make_formatter", "log_format": _settings.log_format}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "app", "stream": "ext://sys.stderr"}},
    "root": {"level": "INFO", "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": [], "level": "INFO", "propagate": False},
    },
}


class RequestsLoggedByTheApp(Logger):
    """gunicorn's logger, without the access log that the configuration above silences.

    With ``logconfig_dict`` set, gunicorn counts its access log as on and builds every
    request's fields for it, which ``gunicorn.access`` then drops: CPU for nothing.
    """

    def access(self, resp, req, environ, request_time):  # type: ignore[no-untyped-def]
        """Nothing: the app logs each request itself."""


logger_class = RequestsLoggedByTheApp

# Every worker process records metrics into files here; /metrics adds them up. Set in the
# environment before the workers fork, so their Settings (and prometheus_client) see it.
metrics_dir = str(_api.metrics_dir or os.path.join(tempfile.gettempdir(), f"yolo-jobs-api-metrics-{os.getpid()}"))
os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir


def on_starting(server):  # type: ignore[no-untyped-def]
    shutil.rmtree(metrics_dir, ignore_errors=True)
    os.makedirs(metrics_dir)


def on_exit(server):  # type: ignore[no-untyped-def]
    """The folder is this server's alone (on_starting empties it): nothing of it outlives the server."""
    shutil.rmtree(metrics_dir, ignore_errors=True)


# How long the drain below waits for each read, and for the whole body: nginx sends a body it
# holds at loopback speed (64 MiB in well under a second), so a peer slower than that is no proxy.
DRAIN_READ_TIMEOUT = 5.0
DRAIN_DEADLINE = 10.0
DRAIN_BLOCK = 64 * 1024


def post_request(worker, req, environ, resp):  # type: ignore[no-untyped-def]
    """Read what is left of a body the app answered without reading (a 401, 415 or 429 comes first).

    gunicorn itself reads at most 64 KiB of an unread body, then closes a connection its
    answer said it would keep alive; nginx, which had already sent the whole body, sends
    the next request (any client's) on that connection and answers that one 502: it
    never retries a POST. A body through nginx is at most MAX_UPLOAD_BYTES and already
    whole in nginx's buffer, so reading it to the end costs little and keeps the
    connection good. A client talking to gunicorn directly cannot hold the thread long:
    each read waits at most DRAIN_READ_TIMEOUT and the whole drain DRAIN_DEADLINE; past
    either, gunicorn closes the connection as it would have.
    """
    if resp is None or resp.should_close() or req.body is None:
        return
    sock = environ.get("gunicorn.socket")
    previous_timeout = sock.gettimeout() if sock is not None else None
    left = _api.max_upload_bytes  # the most nginx passes on; past it gunicorn drains 64 KiB more, then closes
    deadline = time.monotonic() + DRAIN_DEADLINE
    try:
        while left > 0 and (remaining := deadline - time.monotonic()) > 0:
            if sock is not None:
                sock.settimeout(min(DRAIN_READ_TIMEOUT, remaining))
            if not (block := req.body.read(min(DRAIN_BLOCK, left))):
                break
            left -= len(block)
    except (OSError, ParseException):
        pass  # cut short, timed out or malformed: gunicorn's own drain fails too, and closes the connection
    finally:
        if sock is not None:
            sock.settimeout(previous_timeout)


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
