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


def test_resumable_upload_pieces_stream_through_after_the_key_check() -> None:
    """/api/v1/uploads: no body limit or temp file in nginx (the app holds MAX_FILE_BYTES), the same key check,
    and time for the last piece's answer while the file is stored."""
    rendered = proxy.render(proxy.from_settings(Settings.from_env({}).api, Path("/tmp/x")))
    block = re.search(r"location \^~ /api/v1/uploads \{(.*?)\n        \}", rendered, re.DOTALL)
    assert block is not None
    directives = {line.strip() for line in block.group(1).splitlines()}
    assert {
        "auth_request /_proxy/key-check;",
        "client_max_body_size 0;",
        "proxy_request_buffering off;",
        f"proxy_read_timeout {proxy.UPLOAD_READ_TIMEOUT}s;",
        "proxy_pass http://gunicorn;",
    } <= directives
    assert "proxy_request_buffering on;" in rendered, "every other body is still read whole first"
