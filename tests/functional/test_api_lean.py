"""What a job submission costs the API: its SQL statements, and no Redis subscription per POST.

The figures ``bench/api_post.py`` reports, held down here with the same counters
(``harness.costs``).
"""

from __future__ import annotations

import requests
from sqlalchemy import text

from app import extensions
from harness.costs import RedisMonitor, counting_statements
from harness.images import image_bytes
from tests.conftest import MakeApp
from tests.helpers import key_of, post_images, post_job

# Authentication 1 (its key's SELECT, in autocommit; the key's last use is written at most once a
# minute), the create transaction 13 (BEGIN, the tenant's lock and active jobs, the model's reported
# stride and size that the job's imgsz is rounded with, the digest's lock, which of the files are new
# to the tenant, the tenant's quota lock and the bytes it takes, the stored file, three INSERTs,
# COMMIT), enqueued_at 1 (an UPDATE in autocommit).
STATEMENTS_PER_POST = 15


def test_a_submission_is_one_transaction_and_two_statements_without_pings_or_read_back(
    make_app: MakeApp, isolated_env: dict[str, str]
) -> None:
    app = make_app(isolated_env)
    engine = app.extensions[extensions.EXTENSION].storage.database.engine
    client = app.test_client()
    assert post_images(client, ("a.png", image_bytes(seed=9100))).status_code == 202  # connects first
    with counting_statements(engine) as counts:
        response = post_images(client, ("b.png", image_bytes(seed=9101)))
    assert response.status_code == 202 and response.get_json()["status"] == "queued"
    assert counts["ping"] == 0, "no SELECT 1 on checkout"
    assert (counts["BEGIN"], counts["COMMIT"]) == (1, 1), counts
    assert counts["SELECT"] == 9 and counts["INSERT"] == 3 and counts["UPDATE"] == 1, counts
    assert sum(counts.values()) == STATEMENTS_PER_POST, counts


def test_a_keys_use_is_written_again_after_a_minute_in_autocommit(
    make_app: MakeApp, isolated_env: dict[str, str]
) -> None:
    """The lookup says whether the key's last use is a minute old; only then is it written, outside the job's
    transaction."""
    app = make_app(isolated_env)
    engine = app.extensions[extensions.EXTENSION].storage.database.engine
    client = app.test_client()
    assert post_images(client, ("a.png", image_bytes(seed=9102))).status_code == 202  # connects first
    last_used = text("SELECT last_used_at > now() - interval '1 minute' FROM api_keys WHERE prefix = :prefix")
    age = text("UPDATE api_keys SET last_used_at = now() - interval '2 minutes' WHERE prefix = :prefix")
    with engine.begin() as connection:
        connection.execute(age, {"prefix": key_of(app).prefix})
    with counting_statements(engine) as counts:
        assert post_images(client, ("b.png", image_bytes(seed=9103))).status_code == 202
    assert counts["UPDATE"] == 2 and (counts["BEGIN"], counts["COMMIT"]) == (1, 1), counts
    with engine.connect() as connection:
        assert connection.scalar(last_used, {"prefix": key_of(app).prefix}) is True


def test_posts_make_no_redis_subscription(api_url: str, api: requests.Session, services_env: dict[str, str]) -> None:
    """The API's Celery client has no result backend, though CELERY_RESULT_BACKEND names Redis."""
    post_job(api, api_url, [("warm.png", image_bytes(seed=9110))]).raise_for_status()
    monitor = RedisMonitor(services_env["CELERY_RESULT_BACKEND"])
    try:
        for seed in range(9111, 9116):
            assert post_job(api, api_url, [("a.png", image_bytes(seed=seed))]).status_code == 202
    finally:
        commands = monitor.stop()
    subscriptions = {name: n for name, n in commands.items() if name.endswith("SUBSCRIBE")}
    assert subscriptions == {}, commands
