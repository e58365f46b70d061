"""What Flower serves without credentials, and that OpenShift's Route never reaches it (issue 22, item 9).

Flower 2.x asks for ``FLOWER_BASIC_AUTH`` on every page but ``/metrics`` and
``/healthcheck``. Locally ``make flower`` binds it to 127.0.0.1; on OpenShift the Route
goes through the Flower pod's nginx sidecar, whose configuration (ConfigMap
``yolo-jobs-flower-proxy``) is run here, for real, in front of a real Flower.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import requests
import yaml

import proxy
from config.paths import PROJECT_ROOT
from harness.processes import VENV_BIN, ServiceProcess, free_port, wait_until

TEMPLATE = PROJECT_ROOT / "openshift" / "yolo-jobs-template.yaml"
MAKEFILE = PROJECT_ROOT / "Makefile"
AUTH = ("ops", "s3cret")
OPEN_PATHS = ("/metrics", "/healthcheck")


class Flower(NamedTuple):
    direct: str
    through_proxy: str


def flower_proxy_conf(listen: int, flower_port: int, temp_dir: Path) -> str:
    """The template's Flower sidecar configuration, its ports and temp folder moved onto this machine."""
    objects = yaml.safe_load(TEMPLATE.read_text())["objects"]
    (config_map,) = [
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "yolo-jobs-flower-proxy"
    ]
    conf = config_map["data"]["nginx.conf"]
    assert "listen 8080;" in conf and "http://127.0.0.1:5555;" in conf
    return (
        conf.replace("listen 8080;", f"listen 127.0.0.1:{listen};")
        .replace("http://127.0.0.1:5555;", f"http://127.0.0.1:{flower_port};")
        .replace("/tmp/nginx", str(temp_dir))
    )


def _status(url: str) -> int | None:
    try:
        return requests.get(url, timeout=1).status_code
    except requests.ConnectionError:
        return None


@pytest.fixture(scope="module")
def flower(services_env: dict[str, str], logs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flower]:
    flower_port, proxy_port = free_port(), free_port()
    flower_process = ServiceProcess(
        [str(VENV_BIN / "celery"), "-A", "tasks", "flower", f"--port={flower_port}", "--address=127.0.0.1"],
        {**services_env, "FLOWER_BASIC_AUTH": ":".join(AUTH)},
        logs_dir / f"flower-exposure-{flower_port}.log",
    ).start()
    directory = tmp_path_factory.mktemp("flower-proxy")
    conf = directory / "nginx.conf"
    conf.write_text(flower_proxy_conf(proxy_port, flower_port, directory))
    nginx = ServiceProcess(proxy.command(conf, directory), {}, logs_dir / f"flower-proxy-{proxy_port}.log").start()
    direct, through_proxy = f"http://127.0.0.1:{flower_port}", f"http://127.0.0.1:{proxy_port}"
    try:
        wait_until(lambda: _status(f"{direct}/healthcheck") == 200, 30, what="flower")
        wait_until(lambda: _status(f"{through_proxy}/healthcheck") is not None, 30, what="flower's proxy")
        yield Flower(direct, through_proxy)
    finally:
        nginx.stop()
        flower_process.stop()


@pytest.mark.parametrize("path", OPEN_PATHS)
def test_flower_serves_metrics_and_healthcheck_without_credentials(flower: Flower, path: str) -> None:
    """What is open on Flower's own port: only the probe and the Prometheus text, no task or argument."""
    response = requests.get(f"{flower.direct}{path}", timeout=5)
    assert response.status_code == 200
    assert "args" not in response.text


@pytest.mark.parametrize(
    "path", ["/", "/workers", "/tasks", "/broker", "/api/tasks", "/api/workers", "/api/queues/length"]
)
def test_every_other_flower_page_needs_its_basic_auth(flower: Flower, path: str) -> None:
    assert requests.get(f"{flower.direct}{path}", timeout=5).status_code == 401
    assert requests.get(f"{flower.through_proxy}{path}", timeout=5).status_code == 401


@pytest.mark.parametrize(
    "path", ["/metrics", "/healthcheck", "//metrics", "/%6Detrics", "/metrics?x=1", "/metrics/", "/./healthcheck"]
)
def test_the_route_never_reaches_the_open_paths(flower: Flower, path: str) -> None:
    response = requests.get(f"{flower.through_proxy}{path}", auth=AUTH, timeout=5)
    assert response.status_code == 404, path
    assert "flower_" not in response.text


def test_the_route_reaches_flower_with_its_credentials(flower: Flower) -> None:
    response = requests.get(f"{flower.through_proxy}/api/workers", auth=AUTH, timeout=5)
    assert response.status_code == 200
    assert isinstance(response.json(), dict)


def test_make_flower_binds_the_loopback_only() -> None:
    (command,) = [line for line in MAKEFILE.read_text().splitlines() if line.startswith("FLOWER_CMD :=")]
    assert "--address=127.0.0.1" in command
