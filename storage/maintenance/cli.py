"""The maintenance command line: ``python -m storage.maintenance schema|cleanup|fsck``.

Each command reads the settings once, works on the configured database and
storage volume, prints one line per finding and a JSON summary last. Like the beat
task (``tasks.maintenance``), ``cleanup`` runs storage's cleanup under the domain's
retention policy (``jobs.retention``): an entry point, above the layers it joins.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import click

from config import Settings
from jobs.retention import RetentionPolicy
from storage import Storage
from storage.locks import maintenance_lock
from storage.maintenance.fsck import run_fsck
from storage.maintenance.retention import BATCH_SIZE, run_cleanup
from storage.schema import apply_schema, ensure_database


@contextmanager
def _storage(settings: Settings) -> Iterator[Storage]:
    storage = Storage(settings.database_url, settings.storage_root)
    try:
        yield storage
    finally:
        storage.dispose()


@click.group()
@click.pass_context
def cli(context: click.Context) -> None:
    """Maintain yolo-jobs' database and storage volume."""
    context.obj = Settings.from_env()


@cli.command()
@click.pass_obj
def schema(settings: Settings) -> None:
    """Create the database when missing and apply schema.sql (idempotent)."""
    if ensure_database(settings.database_url):
        click.echo("database created")
    with _storage(settings) as storage:
        apply_schema(storage.database.engine)
        click.echo(f"schema applied to {storage.database.engine.url.render_as_string(hide_password=True)}")


@cli.command()
@click.option("--dry-run", is_flag=True, help="List what would be deleted, change nothing.")
@click.option(
    "--batch-size", type=click.IntRange(1), default=BATCH_SIZE, show_default=True, help="Rows per transaction."
)
@click.pass_obj
def cleanup(settings: Settings, dry_run: bool, batch_size: int) -> None:
    """Delete the bytes of expired files and leftovers now (the retention policy)."""
    with _storage(settings) as storage:
        report = run_cleanup(
            storage,
            RetentionPolicy(settings.retention.days),
            dry_run=dry_run,
            batch_size=batch_size,
            listener=lambda kind, what: click.echo(f"{kind}\t{what}"),
        )
    click.echo(json.dumps(report.as_dict()))


@cli.command()
@click.option("--repair", is_flag=True, help="Fix what is safe to fix (see storage/maintenance/fsck.py).")
@click.option("--no-hash", is_flag=True, help="Skip re-hashing every blob (faster).")
@click.pass_obj
def fsck(settings: Settings, repair: bool, no_hash: bool) -> None:
    """Check stored files against the bytes on disk; exit 1 when something is left to fix."""
    with (
        _storage(settings) as storage,
        maintenance_lock(storage.database.engine) if repair else nullcontext(True) as acquired,
    ):
        if not acquired:
            raise click.ClickException("another cleanup or repair is running; try again later")
        report = run_fsck(storage, repair=repair, check_hash=not no_hash)
    for finding in report.findings:
        click.echo(finding.line())
    click.echo(json.dumps(report.counts()))
    raise SystemExit(0 if report.clean else 1)
