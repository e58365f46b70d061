"""Attach the storage face (database sessions and blobs) to the Flask app."""

from __future__ import annotations

import click
from flask import Flask, current_app

from storage import Settings, Storage
from storage.schema import apply_schema


def get_storage() -> Storage:
    return current_app.extensions["yolo_storage"]


@click.command("init-db")
def init_db_command() -> None:
    """Apply schema.sql to the configured database (idempotent)."""
    apply_schema(get_storage().engine)
    click.echo("schema applied")


def init_app(app: Flask, settings: Settings) -> None:
    storage = Storage(settings)
    storage.blobs.ensure_layout()
    app.extensions["yolo_storage"] = storage
    app.extensions["yolo_settings"] = settings
    app.cli.add_command(init_db_command)
