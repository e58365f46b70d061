"""``flask --app app keys …``: make, list and revoke API keys; and the two bootstrap paths for the first admin.

- ``keys create --tenant NAME [--admin] [--label TEXT]`` prints the new key once, on the last line;
- ``keys list`` shows prefix, tenant, label, created and last used, never a key;
- ``keys revoke PREFIX``;
- ``keys local-admin`` (``make run``): the admin key kept in ``var/admin_key``, made on first use;
- ``keys bootstrap`` (OpenShift): imports ``ADMIN_API_KEY`` from a generated Secret, once.
"""

from __future__ import annotations

import os
from pathlib import Path

import click
from flask import Flask
from flask.cli import AppGroup

from accounts.keys import create_key, find_principal, list_keys, revoke_key
from app.extensions import get_settings, get_storage
from config.paths import VAR_DIR

keys = AppGroup("keys", help="Make, list and revoke API keys.")
LOCAL_ADMIN_KEY = VAR_DIR / "admin_key"
LOCAL_ADMIN_TENANT = "local"
BOOTSTRAP_TENANT = "operators"


@keys.command("create")
@click.option("--tenant", required=True, help="The tenant the key acts for (created when new).")
@click.option("--admin", is_flag=True, help="An admin key sees every tenant's jobs, and /metrics.")
@click.option("--label", default=None, help="A note shown in 'keys list'.")
def create_command(tenant: str, admin: bool, label: str | None) -> None:
    """Make a key; it is printed once, on the last line."""
    with get_storage().database.transaction() as session:
        key = create_key(session, tenant.strip(), admin=admin, label=label)
    click.echo(f"Key for tenant {tenant.strip()!r}{' (admin)' if admin else ''}; it is not shown again:")
    click.echo(key)


@keys.command("list")
def list_command() -> None:
    """Every key: prefix, tenant, admin, label, created, last used, revoked."""
    with get_storage().database.transaction() as session:
        listing = list_keys(session)
    click.echo("prefix\ttenant\tadmin\tlabel\tcreated\tlast_used\trevoked")
    for key in listing:
        times = [
            t.isoformat(timespec="seconds") if t else "-" for t in (key.created_at, key.last_used_at, key.revoked_at)
        ]
        click.echo("\t".join([key.prefix, key.tenant, "yes" if key.admin else "no", key.label or "-", *times]))


@keys.command("revoke")
@click.argument("prefix")
def revoke_command(prefix: str) -> None:
    """Revoke the key with this prefix (the 8 hex digits after 'yj_')."""
    with get_storage().database.transaction() as session:
        revoked = revoke_key(session, prefix)
    if not revoked:
        raise click.ClickException(f"no live key with prefix {prefix!r}")
    click.echo(f"revoked {prefix}")


@keys.command("local-admin")
@click.option("--file", "path", type=click.Path(path_type=Path), default=LOCAL_ADMIN_KEY, show_default=True)
def local_admin_command(path: Path) -> None:
    """The local admin key kept in a file (mode 0600), made on first use; prints it."""
    with get_storage().database.transaction() as session:
        key = path.read_text().strip() if path.exists() else ""
        if not key or find_principal(session, key) is None:
            key = create_key(session, LOCAL_ADMIN_TENANT, admin=True, label="make run")
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(key + "\n")
    click.echo(key)


@keys.command("bootstrap")
def bootstrap_command() -> None:
    """Import the admin key from ADMIN_API_KEY (a generated Secret on OpenShift) unless it is there already."""
    key = get_settings().api.bootstrap_admin_key
    if not key:
        click.echo("no ADMIN_API_KEY set; nothing to import")
        return
    with get_storage().database.transaction() as session:
        if find_principal(session, key) is None:
            create_key(session, BOOTSTRAP_TENANT, admin=True, label="bootstrap", key=key)
            click.echo(f"imported the admin key of tenant {BOOTSTRAP_TENANT!r}")
        else:
            click.echo("the admin key is there already")


def init_app(app: Flask) -> None:
    app.cli.add_command(keys)
