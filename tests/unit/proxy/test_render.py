"""The proxy's configuration: whose X-Forwarded-For nginx believes, the per-address limits from the settings,
and the API's paths (answered as JSON) from the app's own list."""

from __future__ import annotations

import re
from pathlib import Path

import proxy
from config import Settings
from config.api_paths import API_PATH_PREFIXES, is_api_path


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


def test_nginx_answers_json_on_exactly_the_paths_the_app_does() -> None:
    """nginx's $yolo_api_path is rendered from the app's list, so the two never disagree on a path."""
    rendered = proxy.render(proxy.openshift_config())
    pattern = re.search(r"map \$request_uri \$yolo_api_path \{\s*~(\S+) 1;", rendered)
    assert pattern is not None
    nginx_api_path = re.compile(pattern.group(1))
    paths = [*API_PATH_PREFIXES, "/api/v1/jobs?limit=5", "/metrics/", "/", "/jobs", "/sign-in", "/apix", "/docs/"]
    assert [bool(nginx_api_path.match(p)) for p in paths] == [is_api_path(p) for p in paths]
    assert [is_api_path(p) for p in paths[-5:]] == [False] * 5
