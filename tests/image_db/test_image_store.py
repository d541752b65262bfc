"""The image repository's metadata in the database (SQLite here; PostgreSQL and two replicas in
``test_postgres_replicas``): pushes sign rows, not files, served byte for byte at the same
URLs and verified by python-tuf; the file-based metadata of an older controller is imported
once and signing continues above it; tampered rows and half-done transactions change nothing
a client trusts."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import select
from tuf.api.exceptions import RepositoryError

from edgefleet.cloud.trust.image_tables import ImageHead, ImageMetadata
from edgefleet.registry.tuf import RepositoryStateError

from .conftest import Ctl, client


def _versions(c: Ctl, role: str) -> list[int]:
    with c.session() as s:
        return sorted(s.exec(select(ImageMetadata.version).where(ImageMetadata.role == role)).all())


def _files(c: Ctl) -> set[str]:
    return {p.name for p in (c.root / "tuf" / "image").iterdir()}


def test_a_push_is_signed_into_the_database_and_python_tuf_downloads_it(
        controllers: Callable[..., Ctl], tmp_path: Path) -> None:
    a = controllers("a")
    before = _files(a)
    target = a.push("1.0.0")
    assert target.name == "digits/1.0.0/r1.tar" and target.release_counter == 1
    assert _files(a) == before, "no metadata file is written once the database holds the repository"
    assert _versions(a, "snapshot") == [1, 2] and _versions(a, "timestamp") == [1, 2]  # imported v1, signed v2
    a.serve()
    up = client(a.url, tmp_path / "dev", a.trust.image.root_bytes(1))
    up.refresh()
    info = up.get_targetinfo(target.name)
    assert info is not None and info.custom["release_counter"] == 1
    got = Path(up.download_target(info))
    assert got.read_bytes() == b"bundle 1.0.0 " * 200
    with a.session() as s:
        head = s.get(ImageHead, "image")
        assert head is not None and (head.release_counter, head.snapshot_version, head.timestamp_version) == (1, 2, 2)


def test_old_timestamps_are_pruned_and_every_version_is_signed_once(controllers: Callable[..., Ctl]) -> None:
    a = controllers("a")
    for i in range(4):
        a.push(f"1.0.{i}")
    assert _versions(a, "timestamp") == [4, 5]  # the last two: a client that read the previous still finds it
    assert _versions(a, "snapshot") == [1, 2, 3, 4, 5]
    assert [a.trust.image.get_target(f"digits/1.0.{i}/r{i + 1}.tar") is not None for i in range(4)] == [True] * 4


def test_the_file_metadata_of_an_older_controller_is_imported_once_and_signed_above(
        controllers: Callable[..., Ctl], tmp_path: Path) -> None:
    old = controllers("a", attach=False)  # an older controller: metadata in files
    t1 = old.push("1.0.0")
    old.push("1.0.1")
    file_ts = json.loads((old.root / "tuf" / "image" / "timestamp.json").read_bytes())["signed"]["version"]
    assert file_ts == 3
    srv_old = controllers("srv-old", attach=False, keys_from=old.root)  # serve what the device trusts now
    srv_old.serve()
    up = client(srv_old.url, tmp_path / "dev", old.trust.image.root_bytes(1))
    up.refresh()  # the device trusts timestamp v3, snapshot v3
    assert up.get_targetinfo(t1.name) is not None

    old.trust.attach_database(old.engine)  # the upgraded controller: same data dir, now a database
    assert _versions(old, "timestamp") == []  # before the import: still served from the files
    assert old.trust.image.get_target(t1.name) is not None
    with old.session() as s:
        assert old.trust.import_image_files(s) is True
        assert old.trust.import_image_files(s) is False  # once
    assert _versions(old, "timestamp") == [3] and _versions(old, "snapshot") == [3]
    t3 = old.push("1.0.2")
    assert t3.release_counter == 3  # the counter continues too
    assert _versions(old, "timestamp") == [3, 4]
    old.serve()
    up = client(old.url, tmp_path / "dev", old.trust.image.root_bytes(1))  # same saved state: trusts v3
    up.refresh()
    assert up._trusted_set.timestamp.version == 4
    info = up.get_targetinfo(t3.name)
    assert info is not None and Path(up.download_target(info)).read_bytes() == b"bundle 1.0.2 " * 200
    assert up.get_targetinfo(t1.name) is not None


def test_a_tampered_metadata_row_is_refused_by_the_client(controllers: Callable[..., Ctl], tmp_path: Path) -> None:
    a = controllers("a")
    target = a.push("1.0.0")
    a.serve()
    bin_role = a.trust.image.bin_for(target.name)
    with a.session() as s:
        row = s.exec(select(ImageMetadata).where(ImageMetadata.role == bin_role)
                     .order_by(ImageMetadata.version.desc())).first()  # type: ignore[attr-defined]
        assert row is not None
        evil = "0" * 64 if target.digest != "0" * 64 else "1" * 64  # an attacker with database access:
        data = bytes(row.data).replace(target.digest.encode(), evil.encode())  # other bytes, same length
        assert data != row.data and len(data) == len(row.data)
        s.execute(update(ImageMetadata).where(ImageMetadata.role == bin_role)  # type: ignore[arg-type]
                  .where(ImageMetadata.version == row.version).values(data=data))
        s.commit()
    up = client(a.url, tmp_path / "dev", a.trust.image.root_bytes(1))
    up.refresh()  # timestamp and snapshot are intact
    with pytest.raises(RepositoryError):  # the bin's bytes do not match the snapshot's hash
        up.get_targetinfo(target.name)


def test_a_push_rolled_back_with_its_caller_leaves_nothing_signed_and_nothing_cached(
        controllers: Callable[..., Ctl], tmp_path: Path) -> None:
    a = controllers("a")
    a.push("1.0.0")
    digest = a.blobs.put(b"rolled back " * 100)
    with a.session() as s:  # the push's own transaction (catalog.push_model passes it)
        t = a.trust.release(digest, {"name": "digits", "version": "2.0.0"}, session=s)
        assert a.trust.image.get_target(t.name) is not None  # this thread signs on in the transaction
        elsewhere: list[object] = []
        reader = threading.Thread(target=lambda: elsewhere.append(a.trust.image.get_target(t.name)))
        reader.start()
        reader.join(timeout=30)
        assert elsewhere == [None]  # nothing is served before it commits
        assert ("snapshot", 3) in a.trust.image.repo._cache
        s.rollback()  # e.g. the model row lost a race: the signed metadata goes with it
    assert ("snapshot", 3) not in a.trust.image.repo._cache  # another replica may sign v3 otherwise
    assert a.trust.image.get_target(t.name) is None
    assert _versions(a, "snapshot") == [1, 2]
    again = a.push("2.0.1")
    assert again.release_counter == 2  # the rolled-back counter is handed out again, once
    a.serve()
    up = client(a.url, tmp_path / "dev", a.trust.image.root_bytes(1))
    up.refresh()
    assert up.get_targetinfo(again.name) is not None and up.get_targetinfo(t.name) is None


def test_image_metadata_is_written_only_inside_a_locked_transaction(controllers: Callable[..., Ctl]) -> None:
    a = controllers("a")
    a.push("1.0.0")
    store = a.trust.image_store
    assert store is not None
    with pytest.raises(RepositoryStateError, match="locked transaction"):
        store.write("image/9.snapshot.json", b"{}")
    with pytest.raises(RepositoryStateError):
        store.read("image/../keys/keyring.json")
    assert store.exists("image/2.snapshot.json") and not store.exists("image/9.snapshot.json")
