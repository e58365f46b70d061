"""Label Studio's image URLs against a real gunicorn and worker: a URL from a real export fetches the image with no
key, in a browser on another origin too; a tampered, borrowed or expired one is refused (403); once its tenant
deleted the file it is gone (404), though another tenant still holds the same bytes; ``EXPORT_IMAGE_URL_BASE``
points them at the user's own copy instead."""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import requests
from PIL import Image

from files.signing import FileSigner
from harness.processes import ServiceProcess
from tests.conftest import MakeApp, open_storage
from tests.helpers import TestKey, add_key
from training.shapes import render_sample
from yolo_jobs_client import Client

if TYPE_CHECKING:
    from playwright.sync_api import Browser

WEEK = 7 * 24 * 3600  # SIGNED_URL_SECONDS' default


@dataclass(frozen=True)
class Exported:
    """A tenant's finished job over one image, and the URL of its image in the job's Label Studio export."""

    key: TestKey
    job_id: str
    file_id: str
    url: str
    exported_at: float


@dataclass(frozen=True)
class Tenants:
    """Two tenants that uploaded the same image (one stored file), each with its export; and the image's bytes."""

    owner: Exported
    other: Exported
    image: bytes


def label_studio_export(api_url: str, key: TestKey, image: Path) -> Exported:
    with Client(api_url, key.key) as client:
        (job,) = client.submit([image])
        (finished,) = client.wait([job.job_id], interval=0.2)
        assert finished["status"] == "succeeded", finished
        exported_at = time.time()
        (task,) = json.loads(client.export(job.job_id, "labelstudio"))
    return Exported(key, job.job_id, task["data"]["file_id"], task["data"]["image"], exported_at)


@pytest.fixture(scope="module")
def tenants(
    api_url: str, worker: ServiceProcess, services_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Tenants:
    image = tmp_path_factory.mktemp("signed") / "shapes 27.png"  # a name to quote in a URL
    render_sample(seed=27, index=0)[0].save(image)
    store = open_storage(services_env)
    try:
        owner, other = (add_key(store, f"signed-{uuid.uuid4().hex[:8]}") for _ in range(2))
    finally:
        store.dispose()
    tenants = Tenants(
        label_studio_export(api_url, owner, image), label_studio_export(api_url, other, image), image.read_bytes()
    )
    assert tenants.owner.file_id == tenants.other.file_id, "the same bytes are one stored file"
    return tenants


def with_query(url: str, **changed: str) -> str:
    """``url`` with some of its query parameters changed."""
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()} | changed
    return urlunsplit(parts._replace(query=urlencode(query)))


def refusal(url: str) -> tuple[int, str]:
    answer = requests.get(url, timeout=10)
    return answer.status_code, answer.json()["error"]["code"]


def test_an_exported_url_fetches_the_image_with_no_key_as_the_content_route_serves_it(
    api_url: str, tenants: Tenants
) -> None:
    owner = tenants.owner
    query = parse_qs(urlsplit(owner.url).query)
    assert owner.url.startswith(f"{api_url}/api/v1/signed-files/{owner.file_id}?")
    assert query["tenant"] == [str(owner.key.tenant_id)]
    assert owner.exported_at + WEEK - 60 <= int(query["expires"][0]) <= owner.exported_at + WEEK + 1
    signed = requests.get(owner.url, timeout=10)
    assert signed.status_code == 200 and signed.content == tenants.image
    keyed = requests.get(f"{api_url}/api/v1/files/{owner.file_id}/content", headers=owner.key.headers, timeout=10)
    for header in ("Content-Type", "Content-Disposition", "Content-Length", "ETag"):
        assert signed.headers[header] == keyed.headers[header], header
    assert signed.headers["Access-Control-Allow-Origin"] == "*"
    assert requests.head(owner.url, timeout=10).status_code == 200


def test_a_tampered_borrowed_or_expired_url_is_refused(
    api_url: str, tenants: Tenants, services_env: dict[str, str]
) -> None:
    owner, other = tenants.owner, tenants.other
    signature = parse_qs(urlsplit(owner.url).query)["signature"][0]
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    expires = int(parse_qs(urlsplit(owner.url).query)["expires"][0])
    assert refusal(with_query(owner.url, signature=flipped)) == (403, "bad_signature")
    assert refusal(with_query(owner.url, expires=str(expires + 3600))) == (403, "bad_signature")
    assert refusal(with_query(owner.url, tenant=str(other.key.tenant_id))) == (403, "bad_signature")
    another_file = owner.url.replace(owner.file_id, str(uuid.uuid4()))
    assert refusal(another_file) == (403, "bad_signature"), "a signature is for its one file"
    assert refusal(with_query(owner.url, signature="")) == (403, "bad_signature")
    assert requests.get(owner.url.split("?")[0], timeout=10).status_code == 400, "no signature at all"

    # The server's own signer (SECRET_KEY is the test run's): a URL it signed, good a minute more, and one past.
    signer = FileSigner(services_env["SECRET_KEY"])
    tenant_id, file_id = owner.key.tenant_id, uuid.UUID(owner.file_id)

    def signed_for(seconds: int) -> str:
        made = signer.sign(tenant_id, file_id, int(time.time()) + seconds)
        return with_query(owner.url, expires=str(made.expires), signature=made.signature)

    assert requests.get(signed_for(60), timeout=10).status_code == 200, "the test signs as the server does"
    assert refusal(signed_for(-1)) == (403, "url_expired")


def test_a_url_for_a_tenant_without_the_file_is_not_found(
    api_url: str, tenants: Tenants, services_env: dict[str, str]
) -> None:
    """Correctly signed, for a tenant that holds no such file: the tenant's files alone are served."""
    stranger = uuid.uuid4()
    made = FileSigner(services_env["SECRET_KEY"]).sign(
        stranger, uuid.UUID(tenants.owner.file_id), int(time.time()) + 60
    )
    url = with_query(tenants.owner.url, tenant=str(stranger), expires=str(made.expires), signature=made.signature)
    assert refusal(url) == (404, "not_found")


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>Label Studio</title><p>tasks"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def other_origin() -> Iterator[str]:
    """A page served from another origin than the API's (another port), as Label Studio's is: a real server, since
    Chromium lets a page reach a loopback address only from another one (Private Network Access)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/projects/1/data"
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_browser_on_another_origin_loads_it_as_label_studio_does(
    browser: Browser, tenants: Tenants, other_origin: str
) -> None:
    """A page of another origin (as Label Studio's is) shows the image, and with crossOrigin="anonymous" (Label
    Studio's setting for tools that read pixels) may read its pixels: the URL needs no cookie and allows CORS."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(other_origin)
        size, pixels = page.evaluate(
            """async (url) => {
                const load = (crossOrigin) => new Promise((resolve, reject) => {
                    const image = new Image();
                    if (crossOrigin) image.crossOrigin = crossOrigin;
                    image.onload = () => resolve(image);
                    image.onerror = () => reject(new Error(`not loaded (crossOrigin ${crossOrigin})`));
                    image.src = url;
                });
                const plain = await load(null);
                const anonymous = await load("anonymous");
                const canvas = document.createElement("canvas");
                canvas.width = anonymous.naturalWidth;
                canvas.height = anonymous.naturalHeight;
                const context = canvas.getContext("2d");
                context.drawImage(anonymous, 0, 0);
                const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;  // throws if tainted
                return [[plain.naturalWidth, plain.naturalHeight], pixels.length];
            }""",
            tenants.owner.url,
        )
    finally:
        context.close()
    expected = Image.open(io.BytesIO(tenants.image)).size
    assert tuple(size) == expected and pixels == expected[0] * expected[1] * 4


def test_export_image_url_base_points_at_the_users_copy(make_app: MakeApp, tenants: Tenants) -> None:
    owner = tenants.owner
    app = make_app(tenant=owner.key.tenant, EXPORT_IMAGE_URL_BASE="https://images.example/set-1/")
    with app.test_client().get(f"/api/v1/jobs/{owner.job_id}/export?format=labelstudio") as answer:
        assert answer.status_code == 200, answer.get_data(as_text=True)
        (task,) = answer.get_json()
    assert task["data"]["image"] == "https://images.example/set-1/shapes%2027.png"


def test_once_the_tenant_deleted_the_file_its_url_is_gone_though_another_tenant_holds_the_bytes(
    api_url: str, tenants: Tenants
) -> None:
    """Run last in the module: it deletes the owner's file."""
    owner, other = tenants.owner, tenants.other
    deleted = requests.delete(f"{api_url}/api/v1/files/{owner.file_id}", headers=owner.key.headers, timeout=10)
    assert deleted.status_code == 204, deleted.text
    assert refusal(owner.url) == (404, "not_found")
    still = requests.get(other.url, timeout=10)
    assert still.status_code == 200 and still.content == tenants.image, "the other tenant's URL still serves"
