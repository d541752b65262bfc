"""Backup and restore with PostgreSQL: ``pg_dump --format=custom`` of the live database, ``pg_restore``
in one transaction into an empty one; a database that is not empty is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from edgefleet.cloud import audit
from edgefleet.cloud.backup import BackupError, create_backup, find_pg_tool, restore_backup
from edgefleet.cloud.cli import app as fleet_app
from edgefleet.cloud.cli.cloud_cmd import create_admin_token
from edgefleet.cloud.db import make_engine
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings

pytestmark = pytest.mark.postgres


def _second_database(url: str, name: str) -> str:
    engine = make_engine(url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return url.rsplit("/", 1)[0] + f"/{name}"


def _rows(url: str, sql: str) -> list[tuple]:
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(text(sql))]
    engine.dispose()
    return rows


def test_postgres_backup_restores_into_an_empty_database(postgres: str, tmp_path: Path) -> None:
    try:
        find_pg_tool("pg_dump"), find_pg_tool("pg_restore")
    except BackupError as exc:
        pytest.skip(str(exc))
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "controller.toml").write_text(f'[controller]\ndatabase_url = "{postgres}"\n')
    settings = load_settings(tmp_path / "old", env={})
    assert settings.database_url == postgres
    controller = Controller(settings)
    controller.migrate()
    create_admin_token(controller, name="ops")
    audit.record_local(settings, "token.create", "ops", {"role": "admin"}, engine=controller.engine)
    roots = controller.trust.roots()  # keys and TUF metadata are made on first use
    controller.engine.dispose()

    out = tmp_path / "pg.tar.gz"
    res = create_backup(settings, out)
    assert res.database == "postgresql" and (out.stat().st_mode & 0o777) == 0o600

    target_url = _second_database(postgres, "edgefleet_restored")
    cli = CliRunner(env={"DATABASE_URL": target_url, "EDGEFLEET_DATABASE_URL": "", "EDGEFLEET_STORE_URL": ""})
    done = cli.invoke(fleet_app, ["cloud", "restore", str(out), "--data-dir", str(tmp_path / "new")])
    assert done.exit_code == 0, done.output
    assert _rows(target_url, "SELECT name, role FROM api_token") == _rows(postgres, "SELECT name, role FROM api_token")
    actions = [a for (a,) in _rows(target_url, "SELECT action FROM audit_entry ORDER BY seq")]
    assert actions[-2:] == ["token.create", "backup.restore"]
    assert (tmp_path / "new" / "keys" / "keyring.json").is_file()
    assert load_settings(tmp_path / "new", env={}).database_url == target_url  # not the old database
    restored = Controller(load_settings(tmp_path / "new", env={}))
    restored.migrate()  # at the newest revision already: a no-op
    assert restored.trust.roots() == roots  # the same trust: provisioned devices keep verifying
    restored.engine.dispose()

    with pytest.raises(BackupError, match="not empty"):  # never merged into a database with data
        restore_backup(out, tmp_path / "again", database_url=target_url)
    assert not (tmp_path / "again").exists()
    with pytest.raises(BackupError, match="set DATABASE_URL"):
        restore_backup(out, tmp_path / "again")
