"""Send, then mark enqueued: the one implementation the API and the reaper share, with the sender as an argument."""

from __future__ import annotations

import uuid

import pytest

from harness.images import image_bytes
from jobs.dispatch import new_task_id, send_then_mark
from storage import Storage
from tests.helpers import create_queued_job, job_state


def test_a_sent_job_is_marked_enqueued_under_its_task_id(store: Storage) -> None:
    job_id = create_queued_job(store, image_bytes(seed=1))
    sent: list[tuple[uuid.UUID, str]] = []
    task_id = new_task_id(job_id)
    with store.database.transaction() as session:
        send_then_mark(session, job_id, lambda job, task: sent.append((job, task)), task_id)
    assert sent == [(job_id, task_id)]
    job = job_state(store, job_id)
    assert job.enqueued_at is not None and job.task_id == task_id and job.status == "queued"


def test_a_refused_send_marks_nothing(store: Storage) -> None:
    job_id = create_queued_job(store, image_bytes(seed=2))

    def refuse(_job_id: uuid.UUID, _task_id: str) -> None:
        raise ConnectionRefusedError("broker down")

    with pytest.raises(ConnectionRefusedError), store.database.transaction() as session:
        send_then_mark(session, job_id, refuse, str(job_id))
    job = job_state(store, job_id)
    assert job.enqueued_at is None and job.task_id == str(job_id)


def test_later_task_ids_start_with_the_job_id_and_never_repeat() -> None:
    job_id = uuid.uuid4()
    ids = {new_task_id(job_id) for _ in range(50)}
    assert len(ids) == 50 and all(task_id.startswith(f"{job_id}-") for task_id in ids)
