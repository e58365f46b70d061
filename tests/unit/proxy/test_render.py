"""The proxy's configuration: whose X-Forwarded-For nginx believes, and the per-address limits from the settings."""

from __future__ import annotations

from pathlib import Path

import proxy
from config import Settings


def test_run_locally_nginx_believes_no_x_forwarded_for() -> None:
    """nginx faces its clients: a client's own X-Forwarded-For must not choose the address its limits count."""
    settings = Settings.from_env({"PROXY_CONNECTIONS_PER_ADDRESS": "7", "PROXY_REQUESTS_PER_SECOND": "9"})
    rendered = proxy.render(proxy.from_settings(settings.api, Path("/tmp/x")))
    assert "set_real_ip_from" not in rendered and "real_ip_header" not in rendered
    assert "limit_conn yolo_connections 7;" in rendered
    assert "rate=9r/s;" in rendered and "burst=18 nodelay;" in rendered


def test_on_openshift_the_client_is_the_address_the_router_put_last() -> None:
    rendered = proxy.render(proxy.openshift_config())
    assert "set_real_ip_from 0.0.0.0/0; set_real_ip_from ::/0; real_ip_header X-Forwarded-For;" in rendered
    assert "real_ip_recursive on" not in rendered  # the last address only: the one the router appended
