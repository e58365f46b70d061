"""Owners and keys, in-process against the real database, broker and Redis: who may ask, and what each sees.

- API keys: 401 with a ``Bearer`` challenge without a valid key; the ``keys`` commands.
- Tenants: another tenant's job, file and annotated image are 404, lists show one's own,
  an admin key sees everything; deduplication never shows across tenants.
- Quotas: 429 with ``Retry-After`` past the creation rate or the active jobs, per tenant.
- Operator surfaces: ``/metrics`` for admins only, weights paths for admins only.
- Browsers: the signed session cookie authenticates the API's reads, never its writes.

Browser sign-in through chromium is in ``test_web.py``.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from accounts.keys import is_well_formed, new_key
from config.paths import BUNDLED_MODEL, PROJECT_ROOT
from harness.images import image_bytes
from harness.processes import VENV_BIN
from jobs.lifecycle import FileResult
from storage import Storage
from storage.tables import Job
from tests.conftest import MakeApp
from tests.helpers import TestKey, app_key, complete_job, key_of, multipart, post_images

SQUARE = {"name": "square", "class": 1, "confidence": 0.9, "box": {"x1": 2.0, "y1": 2.0, "x2": 20.0, "y2": 20.0}}


def unique(name: str) -> str:
    """A tenant name no other test uses (the run's database is shared, and lists are per tenant)."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def assert_error(response: TestResponse, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    assert body["error"]["code"] == code and body["error"]["message"], body
    return body


def assert_unauthorized(response: TestResponse) -> None:
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer"), response.headers


def status_of(client: FlaskClient, url: str) -> int:
    """The status of a GET, its response closed (a file's content holds the file open until then)."""
    with client.get(url) as response:
        return response.status_code


def get_file(client: FlaskClient, url: str) -> tuple[bytes, str]:
    """A downloaded file's bytes and Content-Disposition."""
    with client.get(url) as response:
        assert response.status_code == 200, response.status_code
        return response.data, response.headers["Content-Disposition"]


def job_count(storage: Storage) -> int:
    with storage.database.transaction() as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


def upload(client: FlaskClient, name: str, data: bytes) -> dict[str, Any]:
    """Create a job over one file; return the 202 body."""
    response = post_images(client, (name, data))
    assert response.status_code == 202, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    return body


# API keys


def test_no_key_a_malformed_key_and_an_unknown_key_are_401_with_a_challenge(app: Flask, storage: Storage) -> None:
    anonymous = app.test_client(key=None)
    before = job_count(storage)
    for method, path in [
        ("GET", "/api/v1/jobs"),
        ("GET", f"/api/v1/jobs/{uuid.uuid4()}"),
        ("POST", f"/api/v1/jobs/{uuid.uuid4()}/cancel"),
        ("GET", f"/api/v1/files/{uuid.uuid4()}/content"),
        ("GET", "/api/v1/models"),
        ("GET", "/metrics"),
    ]:
        assert_unauthorized(anonymous.open(path, method=method))
    assert_unauthorized(post_images(anonymous, ("a.png", image_bytes(seed=8001))))
    for header in (
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer   ",
        "Bearer not-a-key",
        f"Bearer {key_of(app).key}x",  # one character too many
        f"Bearer {new_key()}",  # well formed, but no such key
        key_of(app).key,  # the key without its scheme
    ):
        response = anonymous.get("/api/v1/jobs", headers={"Authorization": header})
        assert_unauthorized(response)
        assert key_of(app).key not in response.get_data(as_text=True)
    assert job_count(storage) == before, "nothing was created"
    # The probes, static files and the sign-in page need no key; pages send people to sign in.
    assert anonymous.get("/healthz").status_code == 200 and anonymous.get("/readyz").status_code == 200
    assert status_of(anonymous, "/static/style.css") == 200
    assert anonymous.get("/sign-in").status_code == 200
    for path in ("/", "/jobs?page=2", f"/jobs/{uuid.uuid4()}"):
        page = anonymous.get(path)
        assert page.status_code == 303, path
        target = urlsplit(page.headers["Location"])
        assert (target.path, parse_qs(target.query)) == ("/sign-in", {"next": [path]}), page.headers["Location"]
    assert app.test_client().get("/api/v1/jobs").status_code == 200


def test_keys_create_list_and_revoke(make_app: MakeApp, services_env: dict[str, str]) -> None:
    app = make_app()
    runner = app.test_cli_runner()
    tenant = unique("cli")
    # The real command line once: the key is printed on its last line.
    created = subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "app", "keys", "create", "--tenant", tenant, "--label", "laptop"],
        env=services_env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert is_well_formed(key) and "not shown again" in created.stdout
    prefix, secret = key.split("_")[1], key.split("_", 2)[2]
    client = app.test_client(key=key)
    assert client.get("/api/v1/jobs").status_code == 200

    admin = runner.invoke(args=["keys", "create", "--tenant", tenant, "--admin"])
    assert admin.exit_code == 0, admin.output
    admin_key = admin.output.strip().splitlines()[-1]
    assert is_well_formed(admin_key) and "(admin)" in admin.output

    listing = runner.invoke(args=["keys", "list"])
    assert listing.exit_code == 0, listing.output
    lines = listing.output.splitlines()
    assert lines[0].split("\t") == ["prefix", "tenant", "admin", "label", "created", "last_used", "revoked"]
    rows = {line.split("\t")[0]: line.split("\t") for line in lines[1:]}
    row = rows[prefix]
    assert row[1:4] == [tenant, "no", "laptop"] and row[6] == "-"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", row[4]), row
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", row[5]), "the key was used above"
    assert rows[admin_key.split("_")[1]][1:4] == [tenant, "yes", "-"]
    for secret_part in (secret, admin_key.split("_", 2)[2]):
        assert secret_part not in listing.output, "a listing never shows a key"

    revoked = runner.invoke(args=["keys", "revoke", prefix])
    assert revoked.exit_code == 0 and f"revoked {prefix}" in revoked.output
    assert_unauthorized(client.get("/api/v1/jobs"))
    assert_unauthorized(post_images(client, ("a.png", image_bytes(seed=8002))))
    again = runner.invoke(args=["keys", "revoke", prefix])
    assert again.exit_code != 0 and "no live key" in again.output
    after = runner.invoke(args=["keys", "list"]).output
    assert next(line for line in after.splitlines() if line.startswith(prefix)).split("\t")[6] != "-"
    assert app.test_client(key=admin_key).get("/metrics").status_code == 200, "the other key still works"


def test_local_admin_and_bootstrap_keys(make_app: MakeApp, tmp_path: Path) -> None:
    imported = new_key()
    app = make_app(ADMIN_API_KEY=imported)
    runner = app.test_cli_runner()
    path = tmp_path / "var" / "admin_key"
    first = runner.invoke(args=["keys", "local-admin", "--file", str(path)])
    assert first.exit_code == 0, first.output
    key = first.output.strip().splitlines()[-1]
    assert path.read_text().strip() == key and path.stat().st_mode & 0o777 == 0o600
    assert runner.invoke(args=["keys", "local-admin", "--file", str(path)]).output.strip() == key, "made once"
    assert app.test_client(key=key).get("/metrics").status_code == 200, "an admin key"

    assert "imported" in runner.invoke(args=["keys", "bootstrap"]).output
    assert "there already" in runner.invoke(args=["keys", "bootstrap"]).output
    assert app.test_client(key=imported).get("/metrics").status_code == 200


# Tenants


def test_another_tenants_job_file_and_annotated_image_are_404(
    make_app: MakeApp, isolated_env: dict[str, str], storage: Storage
) -> None:
    app = make_app(isolated_env, tenant=unique("alice"))
    alice = app.test_client()
    bob = app.test_client(key=app_key(app, unique("bob")))
    admin = app.test_client(key=app_key(app, "operators", admin=True))
    body = upload(alice, "alice.png", image_bytes(120, 90, seed=8010))
    job_id, file_id = body["job_id"], body["files"][0]["file_id"]
    complete_job(storage, job_id, lambda upload: FileResult(upload.id, 120, 90, [SQUARE]))
    urls = [
        f"/api/v1/jobs/{job_id}",
        f"/api/v1/files/{file_id}",
        f"/api/v1/files/{file_id}/content",
        f"/api/v1/jobs/{job_id}/files/{file_id}/annotated",
    ]
    for url in urls:
        assert status_of(alice, url) == 200, url
        assert status_of(admin, url) == 200, f"an admin sees every tenant's: {url}"
        assert_error(bob.get(url), 404, "not_found")  # not 403: bob learns nothing
    for action in ("cancel", "retry"):
        assert_error(bob.post(f"/api/v1/jobs/{job_id}/{action}"), 404, "not_found")
    page = bob.get(f"/jobs/{job_id}")
    assert page.status_code == 404 and "alice.png" not in page.get_data(as_text=True)
    assert "alice.png" in alice.get(f"/jobs/{job_id}").get_data(as_text=True)


def test_cancel_and_retry_of_another_tenants_job_change_nothing(
    make_app: MakeApp, isolated_env: dict[str, str]
) -> None:
    app = make_app(isolated_env, tenant=unique("alice"))
    alice = app.test_client()
    bob = app.test_client(key=app_key(app, unique("bob")))
    admin = app.test_client(key=app_key(app, "operators", admin=True))
    job_id = upload(alice, "queued.png", image_bytes(seed=8020))["job_id"]  # no worker takes it
    assert_error(bob.post(f"/api/v1/jobs/{job_id}/cancel"), 404, "not_found")
    assert alice.get(f"/api/v1/jobs/{job_id}").get_json()["status"] == "queued"
    assert admin.post(f"/api/v1/jobs/{job_id}/cancel").get_json()["status"] == "cancelled", "operators may cancel"
    assert_error(bob.post(f"/api/v1/jobs/{job_id}/retry"), 404, "not_found")
    assert alice.get(f"/api/v1/jobs/{job_id}").get_json()["status"] == "cancelled"
    retried = alice.post(f"/api/v1/jobs/{job_id}/retry")
    assert retried.status_code == 202 and retried.get_json()["status"] == "queued"


def test_lists_show_a_tenant_its_own_jobs_and_an_admin_all(make_app: MakeApp) -> None:
    app = make_app(tenant=unique("alice"))
    alice = app.test_client()
    bob_key = app_key(app, unique("bob"))
    bob = app.test_client(key=bob_key)
    admin = app.test_client(key=app_key(app, "operators", admin=True))
    alices = [upload(alice, f"alice-{i}.png", image_bytes(seed=8030 + i))["job_id"] for i in range(2)]
    bobs = upload(bob, "bob.png", image_bytes(seed=8032))["job_id"]

    mine = alice.get("/api/v1/jobs").get_json()
    assert mine["total"] == 2 and [j["job_id"] for j in mine["jobs"]] == alices[::-1]
    theirs = bob.get("/api/v1/jobs").get_json()
    assert theirs["total"] == 1 and [j["job_id"] for j in theirs["jobs"]] == [bobs]
    everyone = admin.get("/api/v1/jobs", query_string={"limit": 100}).get_json()
    assert everyone["total"] >= 3 and {*alices, bobs} <= {j["job_id"] for j in everyone["jobs"]}
    page = bob.get("/jobs").get_data(as_text=True)
    assert "bob.png" in page and "alice-0.png" not in page and "alice-1.png" not in page
    assert bob_key.tenant in page, "the page names the signed-in tenant"


def test_deduplication_is_private_to_a_tenant(make_app: MakeApp, services_env: dict[str, str]) -> None:
    app = make_app(tenant=unique("alice"))
    alice = app.test_client()
    bob = app.test_client(key=app_key(app, unique("bob")))
    data = image_bytes(70, 50, seed=uuid.uuid4().int % 10**6)
    first = upload(alice, "alice-secret.png", data)["files"][0]
    seen = upload(bob, "bob.png", data)["files"][0]
    assert first["deduplicated"] is False
    assert seen["deduplicated"] is False, "bob must not learn that someone sent these bytes before"
    assert upload(alice, "again.png", data)["files"][0]["deduplicated"] is True, "alice sent them before"
    assert upload(bob, "bob-again.png", data)["files"][0]["deduplicated"] is True

    assert bob.get(f"/api/v1/files/{seen['file_id']}").get_json()["filename"] == "bob.png"
    content, disposition = get_file(bob, f"/api/v1/files/{seen['file_id']}/content")
    assert content == data and "filename=bob.png" in disposition and "alice" not in disposition
    content, disposition = get_file(alice, f"/api/v1/files/{first['file_id']}/content")
    assert content == data and "filename=alice-secret.png" in disposition
    blobs = list(Path(services_env["STORAGE_ROOT"], "blobs").rglob(hashlib.sha256(data).hexdigest()))
    assert len(blobs) == 1, "storage stays deduplicated across tenants"


# Quotas


def test_past_the_creation_rate_is_429_per_tenant(make_app: MakeApp, isolated_env: dict[str, str]) -> None:
    app = make_app(isolated_env, tenant=unique("rate"), QUOTA_JOBS_PER_MINUTE="2")
    client = app.test_client()
    for seed in (8040, 8041):
        assert post_images(client, ("a.png", image_bytes(seed=seed))).status_code == 202
    refused = post_images(client, ("a.png", image_bytes(seed=8042)))
    assert_error(refused, 429, "too_many_requests")
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert client.get("/api/v1/jobs").status_code == 200, "reads are not limited"
    other = app.test_client(key=app_key(app, unique("other")))
    assert post_images(other, ("a.png", image_bytes(seed=8043))).status_code == 202, "another tenant's own limit"


def test_past_the_active_jobs_is_429_per_tenant(make_app: MakeApp, isolated_env: dict[str, str]) -> None:
    app = make_app(isolated_env, tenant=unique("busy"), QUOTA_ACTIVE_JOBS="2")  # no worker: jobs stay queued
    client = app.test_client()
    first, _second = (upload(client, "a.png", image_bytes(seed=8050 + i))["job_id"] for i in range(2))
    refused = post_images(client, ("a.png", image_bytes(seed=8052)))
    assert_error(refused, 429, "too_many_active_jobs")
    assert int(refused.headers["Retry-After"]) > 0
    other = app.test_client(key=app_key(app, unique("other")))
    assert post_images(other, ("a.png", image_bytes(seed=8053))).status_code == 202, "another tenant's own limit"
    assert client.post(f"/api/v1/jobs/{first}/cancel").status_code == 202
    assert post_images(client, ("a.png", image_bytes(seed=8054))).status_code == 202, "a finished job frees a slot"


# Operator surfaces


def test_metrics_are_for_admins_only(make_app: MakeApp) -> None:
    app = make_app()
    assert_unauthorized(app.test_client(key=None).get("/metrics"))
    assert_error(app.test_client().get("/metrics"), 403, "forbidden")
    admin = app.test_client(key=app_key(app, "operators", admin=True)).get("/metrics")
    assert admin.status_code == 200 and "yolo_api_requests_total" in admin.get_data(as_text=True)


def test_weights_paths_are_shown_to_admins_only(make_app: MakeApp) -> None:
    app = make_app()
    models = app.test_client().get("/api/v1/models").get_json()["models"]
    assert models and all(m["weights"] is None for m in models)
    assert all(isinstance(m["weights_present"], bool) for m in models)
    admin = app.test_client(key=app_key(app, "operators", admin=True)).get("/api/v1/models").get_json()
    assert next(m for m in admin["models"] if m["name"] == "shapes")["weights"] == str(BUNDLED_MODEL)


# Browsers: the session cookie


def csrf_token_of(response: TestResponse) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', response.get_data(as_text=True))
    assert match is not None, "no CSRF token on the page"
    return match.group(1)


def sign_in(app: Flask, key: TestKey, next_path: str = "") -> tuple[FlaskClient, TestResponse]:
    """An anonymous client signed in through the sign-in form (with its CSRF token), as a browser would."""
    browser = app.test_client(key=None)
    token = csrf_token_of(browser.get("/sign-in"))
    response = browser.post("/sign-in", data={"key": key.key, "csrf_token": token, "next": next_path})
    return browser, response


def test_sign_in_sets_a_signed_cookie_holding_only_the_key_id(make_app: MakeApp, storage: Storage) -> None:
    app = make_app()
    browser, response = sign_in(app, key_of(app), "/jobs")
    assert response.status_code == 303 and response.headers["Location"] == "/jobs"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie  # plain HTTP here
    stored = browser.get_cookie("session")
    assert stored is not None and key_of(app).key not in stored.value
    interface = app.session_interface
    assert isinstance(interface, SecureCookieSessionInterface)
    serializer = interface.get_signing_serializer(app)
    assert serializer is not None
    session = serializer.loads(stored.value)
    assert uuid.UUID(session["key_id"]) and set(session) <= {"key_id", "_permanent", "csrf_token"}, session
    assert "Expires=" in cookie, "a permanent session: it outlives the browser for its lifetime"
    assert browser.get("/jobs").status_code == 200
    assert key_of(app).tenant in browser.get("/").get_data(as_text=True)


def test_a_signed_in_browser_may_read_the_api_but_never_write_it(
    make_app: MakeApp, isolated_env: dict[str, str], storage: Storage
) -> None:
    app = make_app(isolated_env)
    job_id = upload(app.test_client(), "mine.png", image_bytes(seed=8060))["job_id"]
    browser, _ = sign_in(app, key_of(app))
    assert browser.get("/api/v1/jobs").status_code == 200, "the job page polls the JSON with the cookie"
    assert browser.get(f"/api/v1/jobs/{job_id}").get_json()["status"] == "queued"
    before = job_count(storage)
    assert_unauthorized(post_images(browser, ("a.png", image_bytes(seed=8061))))
    assert_unauthorized(browser.post(f"/api/v1/jobs/{job_id}/cancel"))
    assert browser.get(f"/api/v1/jobs/{job_id}").get_json()["status"] == "queued"
    # What another site's form would send: the cookie (SameSite=Lax keeps it home) or nothing, and no key.
    forged = app.test_client(key=None)
    headers = {"Origin": "https://evil.example", "Referer": "https://evil.example/form"}
    body, content_type = multipart([("a.png", image_bytes(seed=8062))])
    for client in (browser, forged):
        response = client.post("/api/v1/jobs", data=body, content_type=content_type, headers=headers)
        assert_unauthorized(response)
    assert job_count(storage) == before, "no job was made"


def test_sign_in_refusals_sign_out_and_revocation(make_app: MakeApp, storage: Storage) -> None:
    app = make_app()
    browser = app.test_client(key=None)
    token = csrf_token_of(browser.get("/sign-in"))
    wrong = browser.post("/sign-in", data={"key": new_key(), "csrf_token": token})
    assert wrong.status_code == 401 and "That API key is not valid, or was revoked." in wrong.get_data(as_text=True)
    assert browser.post("/sign-in", data={"key": key_of(app).key}).status_code == 400, "no CSRF token"
    assert browser.get("/jobs").status_code == 303, "still signed out"

    elsewhere = browser.post("/sign-in", data={"key": key_of(app).key, "csrf_token": token, "next": "//evil.example"})
    assert elsewhere.status_code == 303 and elsewhere.headers["Location"] == "/", "next stays on this site"
    page = browser.get("/jobs")
    assert page.status_code == 200
    signed_out = browser.post("/sign-out", data={"csrf_token": csrf_token_of(page)})
    assert signed_out.status_code == 303 and signed_out.headers["Location"] == "/sign-in"
    assert browser.get("/jobs").status_code == 303 and browser.get("/jobs").headers["Location"].startswith("/sign-in")
    assert_unauthorized(browser.get("/api/v1/jobs"))

    doomed = app_key(app, unique("doomed"))
    browser, _ = sign_in(app, doomed)
    assert browser.get("/jobs").status_code == 200
    assert app.test_cli_runner().invoke(args=["keys", "revoke", doomed.prefix]).exit_code == 0
    assert browser.get("/jobs").status_code == 303, "revoking the key signs the browser out"
    assert_unauthorized(browser.get("/api/v1/jobs"))
