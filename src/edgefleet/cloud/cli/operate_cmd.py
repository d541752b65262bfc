"""``fleet cloud install-service|backup|restore``: run the controller as a service, back it up, restore it.

docs/production.md describes the whole production set-up; cloud/backup.py what a backup holds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ...service_units import (
    DEFAULT_DEST,
    UnitError,
    find_executable,
    install,
    next_steps,
    render_controller,
)
from .. import audit
from ..backup import BackupError, create_backup, restore_backup
from ..errors import CloudError
from ..settings import load_settings
from .common import DataDirOpt, console, fail

PgBinOpt = Annotated[Optional[Path], typer.Option("--pg-bin", help="directory with pg_dump/pg_restore [default: newest /usr/lib/postgresql/*/bin, else PATH]")]


def install_service(
    user: Annotated[str, typer.Option("--user", help="system account the controller runs as (created with useradd, see the printed steps)")] = "edgefleet",
    dynamic_user: Annotated[bool, typer.Option("--dynamic-user", help="DynamicUser=yes instead of --user (data dir must lie under /var/lib)")] = False,
    data_dir: Annotated[Path, typer.Option("--data-dir", help="controller data directory: the one writable path")] = Path("/var/lib/edgefleet"),
    dest: Annotated[Path, typer.Option("--dest", help="where the unit is written")] = DEFAULT_DEST,
    executable: Annotated[Optional[Path], typer.Option("--exec", help="fleet executable [default: the one beside this Python, else on PATH]")] = None,
    embedded_broker: Annotated[bool, typer.Option("--embedded-broker", help="the service also runs the MQTT broker (single host)")] = False,
    env_file: Annotated[Path, typer.Option("--env-file", help="optional environment file for DATABASE_URL, EDGEFLEET_STORE_URL, AWS_* (0600, root)")] = Path("/etc/edgefleet/controller.env"),
    writable: Annotated[Optional[list[Path]], typer.Option("--writable", help="one more writable path (repeatable), e.g. a broker_auth_dir an external mosquitto reads")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the unit, write nothing")] = False,
) -> None:
    """Write edgefleet-controller.service (sandboxed: ProtectSystem=strict, only the data dir writable, no capabilities).

    Prints the file written and the `systemctl enable --now` line; never runs systemctl.
    """
    try:
        exe = find_executable("fleet", executable)
        unit = render_controller(data_dir=data_dir, user=user, dynamic_user=dynamic_user, executable=exe,
                                 embedded_broker=embedded_broker, env_file=env_file, extra_rw=writable)
    except UnitError as exc:
        fail(str(exc), code=2)
    for warning in unit.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    if dry_run:
        typer.echo(unit.text, nl=False)
        return
    try:
        path = install(unit, dest)
    except (UnitError, OSError) as exc:
        fail(str(exc))
    console.print(f"wrote [bold]{path}[/]", highlight=False, soft_wrap=True)
    console.print("then, as root:", soft_wrap=True)
    steps = next_steps(unit)
    if not (data_dir / "controller.toml").exists():
        who = f"runuser -u {unit.user} -- " if unit.user else ""
        steps.insert(len(steps) - 1, f"{who}{exe} cloud init --data-dir {unit.data_dir}   # once, before the first start")
    for step in steps:
        typer.echo(f"  {step}")


def backup(
    out: Annotated[Path, typer.Argument(help="archive to write (.tar.gz; never overwritten)")],
    data_dir: DataDirOpt = None,
    with_blobs: Annotated[bool, typer.Option("--with-blobs", help="also copy the blobs of a local store (S3 blobs are only indexed)")] = False,
    pg_bin: PgBinOpt = None,
) -> None:
    """Back up the controller (database, keys, fleet CA, TUF metadata, blob index, controller.toml) while it runs.

    The archive holds secrets (signing keys, the CA key, tokens): it is written 0600.
    """
    try:
        settings = load_settings(data_dir)
    except CloudError as exc:
        fail(str(exc))
    if settings.database_url is None and not (settings.data_dir / "controller.db").exists():
        fail(f"no controller in {settings.data_dir}: pass --data-dir or set EDGEFLEET_HOME")
    with console.status("backing up…"):
        try:
            res = create_backup(settings, out, with_blobs=with_blobs, pg_bin=pg_bin)
        except BackupError as exc:
            fail(str(exc))
    audit.record_local(settings, "backup.create", res.path.name,
                       {"sha256": res.sha256, "files": res.files, "database": res.database, "blobs_copied": res.blobs_copied})
    console.print(f"backup [bold]{res.path}[/]: {res.files} files, {res.bytes:,} bytes, database {res.database}, "
                  f"{res.blobs_indexed} blob(s) indexed, {res.blobs_copied} copied", highlight=False, soft_wrap=True)
    console.print(f"sha256 {res.sha256}  (check it on restore with --sha256)", highlight=False, soft_wrap=True)
    console.print("[bold yellow]this archive holds secrets[/] (signing keys, the fleet CA key, tokens): "
                  "it is 0600; store it encrypted and off this host", soft_wrap=True)
    for note in res.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)


def restore(
    archive: Annotated[Path, typer.Argument(help="archive from `fleet cloud backup`")],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="new controller data directory (absent or empty)")],
    database_url: Annotated[Optional[str], typer.Option("--database-url", help="empty PostgreSQL database for a PostgreSQL backup [env: DATABASE_URL]")] = None,
    sha256: Annotated[Optional[str], typer.Option("--sha256", help="the archive's sha256 printed by `fleet cloud backup`: refuse any other")] = None,
    pg_bin: PgBinOpt = None,
) -> None:
    """Restore a backup into a fresh data directory; a tampered, truncated or damaged archive is refused and nothing is written."""
    url = database_url or os.environ.get("EDGEFLEET_DATABASE_URL") or os.environ.get("DATABASE_URL")
    with console.status("verifying and restoring…"):
        try:
            res = restore_backup(archive, data_dir, database_url=url, expect_sha256=sha256, pg_bin=pg_bin)
        except BackupError as exc:
            fail(str(exc))
    settings = load_settings(res.data_dir, database_url=url if res.database == "postgresql" else None)
    audit.record_local(settings, "backup.restore", archive.name, {"created": res.created, "database": res.database,
                                                                  "files": res.files})
    console.print(f"restored backup of {res.created} into [bold]{res.data_dir}[/] ({res.files} files, database {res.database})",
                  highlight=False, soft_wrap=True)
    for note in res.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    console.print(f"start it: fleet cloud serve --data-dir {res.data_dir}", highlight=False, soft_wrap=True)
