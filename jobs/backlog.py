"""The jobs waiting for an inference worker, per model, as PostgreSQL has them.

The broker's queue counts task messages (``storage.queue_depths``): a video's segments are a message each, and
no message says which model it wants. An operator sizing GPU workers per model, or an autoscaler starting the
workers a model needs, asks the jobs table instead. Every model a new job may ask for is listed, at 0 when none
waits, so its series never vanishes from a scrape; a retired model is listed while jobs still wait for it.

One query on the partial index of unfinished jobs (``jobs_unfinished`` in schema.sql): it reads the unfinished
jobs only, however many have ever run.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jobs.catalog import active_names
from storage.tables import Job


def queued_jobs_by_model(session: Session) -> dict[str, int]:
    """Queued jobs by the model they run on: every active model (0 when none waits), then any other with jobs."""
    statement = (
        select(Job.model, func.count())
        .where(Job.status == "queued", Job.finished_at.is_(None))
        .group_by(Job.model)
        .order_by(Job.model)
    )
    waiting: dict[str, int] = {model: count for model, count in session.execute(statement)}
    return {**dict.fromkeys(active_names(session), 0), **waiting}
