"""What the app holds for its requests, with a typed accessor for each: settings, storage, the
task dispatcher, the job service, and the request's database session.

One session per request (flaskr's ``get_db``): opened on first use, closed by
``teardown_appcontext`` whatever happened, so templates and serializers read
attached objects. Commits are explicit where the job service (``jobs.service``) needs one.
"""

from __future__ import annotations

from dataclasses import dataclass

import click
from flask import Flask, current_app, g
from sqlalchemy.orm import Session

from app.dispatcher import TaskDispatcher
from config import Settings
from jobs.service import JobService
from storage import Storage
from storage.schema import apply_schema
from webhooks.outbox import publish_after_commit

EXTENSION = "yolo_jobs"


@dataclass(frozen=True)
class YoloJobs:
    """Everything the app built from its settings at start-up."""

    settings: Settings
    storage: Storage
    dispatcher: TaskDispatcher
    job_service: JobService


def _extension() -> YoloJobs:
    return current_app.extensions[EXTENSION]


def get_settings() -> Settings:
    return _extension().settings


def get_storage() -> Storage:
    return _extension().storage


def get_dispatcher() -> TaskDispatcher:
    return _extension().dispatcher


def get_job_service() -> JobService:
    return _extension().job_service


def db_session() -> Session:
    """This request's session, opened on first use and closed when the request ends."""
    if "db_session" not in g:
        g.db_session = get_storage().database.session()
    return g.db_session


def _close_session(_exc: BaseException | None = None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()


def dispose(app: Flask) -> None:
    """Close the app's database connections (tests, and anything else that builds apps)."""
    app.extensions[EXTENSION].storage.dispose()


@click.command("init-db")
def init_db_command() -> None:
    """Apply schema.sql to the configured database (idempotent)."""
    apply_schema(get_storage().database.engine)
    click.echo("schema applied")


def init_app(app: Flask, settings: Settings) -> None:
    # No SELECT 1 per checkout: a request opens two or three transactions (storage.db says how a
    # closed connection is still replaced).
    storage = Storage(settings.database_url, settings.storage_root, pre_ping=False)
    storage.blobs.ensure_layout()
    dispatcher = TaskDispatcher(settings)
    publish_after_commit(storage.database.sessions, dispatcher.send_webhook_delivery)  # a cancel ends a job
    app.extensions[EXTENSION] = YoloJobs(settings, storage, dispatcher, JobService(settings, storage, dispatcher))
    app.teardown_appcontext(_close_session)
    app.cli.add_command(init_db_command)
