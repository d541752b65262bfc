"""``fleet cloud backup`` / ``restore`` on a running controller: what is kept, and what is refused.

A refused archive (a member changed, added or missing, truncated, a path outside the target,
another archive's digest) leaves nothing: the target directory does not appear.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefleet.cloud.backup import MANIFEST, BackupError, create_backup, restore_backup
from edgefleet.cloud.broker import EmbeddedBroker
from edgefleet.cloud.cli import app as fleet_app
from edgefleet.cloud.settings import load_settings

from ..conftest import Stack, push, start_stack
from ..rollout_e2e import candidates

NO_PG = {"DATABASE_URL": "", "EDGEFLEET_DATABASE_URL": "", "EDGEFLEET_STORE_URL": ""}


@pytest.fixture(scope="module")
def made(digit_models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:  # type: ignore[no-untyped-def]
    """One running controller with a pushed model, and a backup of it (shared by the module: starting costs seconds)."""
    root = tmp_path_factory.mktemp("operate-backup")
    broker = EmbeddedBroker(auth_dir=root / "broker-auth")
    broker.start()
    stack = start_stack(root / "controller", broker)
    try:
        push(stack, candidates.retag(digit_models[0], "1.0"))
        out = root / "b.tar.gz"
        res = CliRunner(env=NO_PG).invoke(fleet_app, ["cloud", "backup", str(out), "--data-dir", str(stack.data_dir), "--with-blobs"])
        assert res.exit_code == 0, res.output
        yield stack, out
    finally:
        stack.stop()
        broker.stop()


@pytest.fixture
def archive(made: tuple[Stack, Path]) -> Path:
    return made[1]


def _members(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path) as tar:
        return [(m, tar.extractfile(m).read()) for m in tar if m.isreg()]  # type: ignore[union-attr]


def _rewrite(src: Path, dst: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    with tarfile.open(dst, "w:gz") as tar:
        for m, data in edit(_members(src)):
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    return dst


def _refused(archive: Path, target: Path, match: str) -> None:
    res = CliRunner(env=NO_PG).invoke(fleet_app, ["cloud", "restore", str(archive), "--data-dir", str(target)])
    assert res.exit_code == 1, res.output
    assert match in " ".join(res.output.split()), res.output
    assert not target.exists()
    assert not [p for p in target.parent.iterdir() if ".restore-" in p.name]  # no staging left behind


def test_backup_of_a_running_controller_restores_everything_it_needs(made: tuple[Stack, Path], tmp_path: Path) -> None:
    stack, archive = made
    assert (archive.stat().st_mode & 0o777) == 0o600
    names = {m.name for m, _ in _members(archive)}
    manifest = json.loads(dict((m.name, d) for m, d in _members(archive))[MANIFEST])
    assert manifest["database"]["kind"] == "sqlite" and manifest["created"].endswith("Z")
    assert {e["path"] for e in manifest["files"]} == names - {MANIFEST}
    assert all(len(e["sha256"]) == 64 for e in manifest["files"])
    assert "database/controller.db" in names and "blob-index.json" in names
    assert any(n.startswith("data/keys/") and n.endswith(".pem") for n in names)
    assert "data/tuf/image/timestamp.json" in names and "data/secrets/mqtt-controller.json" in names
    assert not any(n.startswith("data/broker-auth") for n in names)  # regenerated from the database
    blobs = [n for n in names if n.startswith("blobs/sha256/")]
    assert len(blobs) == len(json.loads(dict((m.name, d) for m, d in _members(archive))["blob-index.json"])["digests"]) >= 1

    target = tmp_path / "restored"
    res = CliRunner(env=NO_PG).invoke(fleet_app, ["cloud", "restore", str(archive), "--data-dir", str(target)])
    assert res.exit_code == 0, res.output
    old = stack.data_dir
    for p in (old / "keys").iterdir():  # key files as they were, mode kept
        q = target / "keys" / p.name
        assert q.read_bytes() == p.read_bytes() and q.stat().st_mode == p.stat().st_mode
    assert (target / "tuf" / "image" / "timestamp.json").read_bytes() == (old / "tuf" / "image" / "timestamp.json").read_bytes()
    assert (target.stat().st_mode & 0o777) == 0o700 and ((target / "controller.db").stat().st_mode & 0o777) == 0o600
    with sqlite3.connect(target / "controller.db") as db:
        models = db.execute("SELECT name, version FROM model_version").fetchall()
        actions = [a for (a,) in db.execute("SELECT action FROM audit_entry ORDER BY seq")]
    assert ("digits", "1.0") in models
    assert actions[-1] == "backup.restore" and "model.push" in actions
    digest = next(iter(json.loads(dict((m.name, d) for m, d in _members(archive))["blob-index.json"])["digests"]))
    assert (target / "blobs" / "sha256" / digest[:2] / digest).is_file()
    with sqlite3.connect(old / "controller.db") as db:  # the running controller's own log
        assert db.execute("SELECT action FROM audit_entry ORDER BY seq DESC LIMIT 1").fetchone()[0] == "backup.create"


def test_a_changed_file_is_refused_and_nothing_is_restored(archive: Path, tmp_path: Path) -> None:
    def flip(members):  # type: ignore[no-untyped-def]
        return [(m, (b"X" + d[1:]) if m.name == "database/controller.db" else d) for m, d in members]

    _refused(_rewrite(archive, tmp_path / "t.tar.gz", flip), tmp_path / "t", "database/controller.db does not match")


def test_an_added_or_missing_file_is_refused(archive: Path, tmp_path: Path) -> None:
    def add(members):  # type: ignore[no-untyped-def]
        return [(tarfile.TarInfo("data/keys/extra.pem"), b"evil"), *members]

    def drop(members):  # type: ignore[no-untyped-def]
        return [(m, d) for m, d in members if not m.name.startswith("data/keys/")]

    _refused(_rewrite(archive, tmp_path / "a.tar.gz", add), tmp_path / "a", "not in the manifest")
    _refused(_rewrite(archive, tmp_path / "d.tar.gz", drop), tmp_path / "d", "are missing")


def test_a_truncated_archive_is_refused(archive: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size * 2 // 3])
    _refused(cut, tmp_path / "c", "damaged or truncated")


def test_a_member_outside_the_target_is_refused(archive: Path, tmp_path: Path) -> None:
    def escape(members):  # type: ignore[no-untyped-def]
        return [(tarfile.TarInfo("data/../../escaped"), b"x"), *members]

    _refused(_rewrite(archive, tmp_path / "e.tar.gz", escape), tmp_path / "e", "unsafe member name")
    assert not (tmp_path.parent / "escaped").exists()


def test_wrong_digest_and_non_empty_target_are_refused(archive: Path, tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="sha256"):
        restore_backup(archive, tmp_path / "x", expect_sha256="0" * 64)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(BackupError, match="not an empty directory"):
        restore_backup(archive, busy)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]


def test_backup_never_overwrites_and_notes_offline_root_keys(made: tuple[Stack, Path], tmp_path: Path) -> None:
    restore_backup(made[1], tmp_path / "copy")  # a controller of its own, whose image root key goes offline
    ring = tmp_path / "copy" / "keys" / "keyring.json"
    doc = json.loads(ring.read_text())
    for k in doc["repos"]["image"]["root"]["keys"]:
        os.remove(ring.parent / k["uri"].split(":", 1)[1])
        k["uri"] = None
    ring.write_text(json.dumps(doc))
    settings = load_settings(tmp_path / "copy", env={})
    res = create_backup(settings, tmp_path / "o.tar.gz")
    assert any("offline, therefore not in this backup: image/root" in n for n in res.notes), res.notes
    assert not [m for m, _ in _members(tmp_path / "o.tar.gz") if m.name.startswith("data/keys/image-root")]
    with pytest.raises(BackupError, match="exists"):
        create_backup(settings, tmp_path / "o.tar.gz")
