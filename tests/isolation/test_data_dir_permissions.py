"""The controller's data directory is private: the directory 0700, the database and its
WAL/SHM files, the CLI config and controller.toml 0600 — after `fleet cloud init` and after a
start on a data directory an older version left world-readable."""

from __future__ import annotations

import stat
from pathlib import Path

from typer.testing import CliRunner

from edgefleet.cloud.cli import app as fleet_cli
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_fleet_cloud_init_leaves_nothing_group_or_world_readable(tmp_path: Path) -> None:
    home = tmp_path / "home"
    res = CliRunner().invoke(fleet_cli, ["cloud", "init", "--data-dir", str(home), "--no-tls"], env={})
    assert res.exit_code == 0, res.output
    assert _mode(home) == 0o700
    db = home / "controller.db"
    assert db.exists() and _mode(db) & 0o077 == 0, oct(_mode(db))
    for sidecar in (home / "controller.db-wal", home / "controller.db-shm"):
        if sidecar.exists():
            assert _mode(sidecar) & 0o077 == 0, (sidecar, oct(_mode(sidecar)))
    for name in ("cli.toml", "controller.toml"):
        assert _mode(home / name) & 0o077 == 0, (name, oct(_mode(home / name)))
    private_keys = [p for p in (home / "keys").rglob("*") if p.is_file() and p.name != "keyring.json"]
    assert private_keys and all(_mode(p) & 0o077 == 0 for p in private_keys)


def test_a_world_readable_data_dir_from_before_is_tightened_on_start(tmp_path: Path) -> None:
    home = tmp_path / "old"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    (home / "controller.toml").write_text("[controller]\nhttp_port = 8089\n")
    (home / "controller.toml").chmod(0o644)
    c = Controller(load_settings(home, env={}))
    c.migrate()
    c.engine.dispose()
    (home / "controller.db").chmod(0o644)  # as an older release left it
    c = Controller(load_settings(home, env={}))
    with c.session() as s:
        s.connection()  # opens the database (and its WAL)
    c.engine.dispose()
    assert _mode(home) == 0o700
    assert _mode(home / "controller.toml") == 0o600
    assert _mode(home / "controller.db") == 0o600
