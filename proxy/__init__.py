"""nginx in front of gunicorn: its configuration, rendered from the settings, and the command that runs it.

Why a buffering proxy: gunicorn's gthread workers hold a thread per connection while
it sends its headers and body, so a few clients sending a byte a second starve the
API (``/healthz`` included). nginx reads every request whole before gunicorn sees it
and takes every response as fast as gunicorn writes it; see ``nginx.conf.in``. The
exception is a resumable upload's piece (``/api/v1/uploads``), streamed on as it
arrives: a file of GBs is written to the storage volume once, never to nginx's disk first.

``python -m proxy`` (``make proxy``, part of ``make run``) writes the configuration
under ``var/nginx/`` and runs nginx in the foreground on ``PROXY_BIND``, forwarding to
gunicorn on ``API_BIND``. On OpenShift the same file, rendered by
:func:`openshift_config`, is the API pod's nginx sidecar's ConfigMap.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from config.api_paths import API_PATH_PREFIXES
from config.settings import ApiSettings

TEMPLATE = Path(__file__).with_name("nginx.conf.in")
# How much longer nginx waits for a response than gunicorn lets a request run (API_TIMEOUT).
READ_TIMEOUT_MARGIN = 10
# How long nginx waits for the answer to a resumable upload's last piece, sent whole: the app stores the
# file first, hashing it from the volume when another replica took its earlier pieces (20 GiB at 100 MB/s).
UPLOAD_READ_TIMEOUT = 3600
# nginx drops an idle connection to gunicorn after this long; gunicorn's keep-alive is longer.
UPSTREAM_IDLE_SECONDS = 4
# The burst of requests a client address may send at once over its rate, in seconds of that rate.
BURST_SECONDS = 2
# The one body a client without a key may send, the sign-in form (a key and a CSRF token): kept in
# memory, under nginx's client_body_buffer_size (128 KiB).
SIGN_IN_BODY_BYTES = 64 * 1024
# Behind the OpenShift router, the only peer the API pods' NetworkPolicy lets reach nginx:
# every peer is the router, and the client is the address it put last in X-Forwarded-For.
ROUTER_PEERS = ("0.0.0.0/0", "::/0")
_PLACEHOLDER = re.compile(r"@[A-Z_]+@")


@dataclass(frozen=True)
class ProxyConfig:
    """What the template needs: nginx's address, gunicorn's, the body limit, the read timeout, a writable
    dir, the per-address limits, and the proxies in front of nginx whose X-Forwarded-For it believes."""

    listen: str
    upstream: str
    max_body_bytes: str
    read_timeout: int
    temp_dir: str
    connections_per_address: int
    requests_per_second: int
    trusted_proxies: tuple[str, ...] = ()


def upstream_of(bind: str) -> str:
    """gunicorn's bind address as nginx reaches it (a wildcard address becomes the loopback)."""
    if bind.startswith("unix:"):
        return bind
    host, _, port = bind.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "127.0.0.1"
    return f"{host}:{port}"


def from_settings(api: ApiSettings, temp_dir: Path) -> ProxyConfig:
    return ProxyConfig(
        listen=api.proxy_bind,
        upstream=upstream_of(api.bind),
        max_body_bytes=str(api.max_upload_bytes),
        read_timeout=api.timeout + READ_TIMEOUT_MARGIN,
        temp_dir=str(temp_dir),
        connections_per_address=api.proxy_connections_per_address,
        requests_per_second=api.proxy_requests_per_second,
    )


def openshift_config() -> ProxyConfig:
    """The API pod's sidecar: 8080 for the Service and probes, gunicorn on the loopback, temp files on /tmp,
    the default per-address limits, behind the router."""
    defaults = ApiSettings()
    return ProxyConfig(
        listen="8080",
        upstream="127.0.0.1:8081",
        max_body_bytes="${MAX_UPLOAD_BYTES}",
        read_timeout=defaults.timeout + READ_TIMEOUT_MARGIN,
        temp_dir="/tmp/nginx",
        connections_per_address=defaults.proxy_connections_per_address,
        requests_per_second=defaults.proxy_requests_per_second,
        trusted_proxies=ROUTER_PEERS,
    )


def real_ip(trusted_proxies: tuple[str, ...]) -> str:
    """The realip directives: the client is the last X-Forwarded-For address when a trusted proxy sends it."""
    if not trusted_proxies:
        return "# No proxy in front of nginx: the client is the connection's peer."
    trusted = " ".join(f"set_real_ip_from {address};" for address in trusted_proxies)
    return f"{trusted} real_ip_header X-Forwarded-For;"


def api_paths_pattern() -> str:
    """The API's path prefixes as the alternatives of a regular expression (nginx's PCRE reads Python's escapes)."""
    return "|".join(re.escape(prefix) for prefix in API_PATH_PREFIXES)


def render(config: ProxyConfig) -> str:
    """nginx.conf for ``config``."""
    values = {
        "LISTEN": config.listen,
        "UPSTREAM": config.upstream,
        "MAX_BODY_BYTES": config.max_body_bytes,
        "READ_TIMEOUT": str(config.read_timeout),
        "TEMP_DIR": config.temp_dir,
        "UPSTREAM_IDLE": str(UPSTREAM_IDLE_SECONDS),
        "CONNECTIONS_PER_ADDRESS": str(config.connections_per_address),
        "REQUESTS_PER_SECOND": str(config.requests_per_second),
        "REQUEST_BURST": str(config.requests_per_second * BURST_SECONDS),
        "REAL_IP": real_ip(config.trusted_proxies),
        "API_PATHS": api_paths_pattern(),
        "SIGN_IN_BODY_BYTES": str(SIGN_IN_BODY_BYTES),
        "UPLOAD_READ_TIMEOUT": str(UPLOAD_READ_TIMEOUT),
    }
    text = TEMPLATE.read_text()
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    leftover = _PLACEHOLDER.search(text)
    if leftover:
        raise ValueError(f"nginx.conf.in has an unknown placeholder {leftover.group()}")
    return text


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def command(conf: Path, prefix: Path) -> list[str]:
    """Run nginx in the foreground with ``conf``; as root, its workers stay root to reach ``prefix``."""
    directives = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
    return [nginx_binary(), "-p", str(prefix), "-c", str(conf), "-e", "stderr", "-g", directives]


def prepare(api: ApiSettings, directory: Path) -> list[str]:
    """Write ``directory``/nginx.conf for these settings; return the command that runs nginx with it."""
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "nginx.conf"
    conf.write_text(render(from_settings(api, directory)))
    return command(conf, directory)
