"""Director metadata signed in bulk into the database, served over HTTP, verified by
python-tuf on the device side (``DeviceVerifier``: the agent's own verification code)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlmodel import Session, func, select

from edgefleet.cloud.devices.history import DeviceHistory
from edgefleet.cloud.tables import Device
from edgefleet.cloud.trust import director_store, signing
from edgefleet.cloud.trust.director_tables import KEEP_VERSIONS, DirectorHead, DirectorMetadata
from edgefleet.registry.tuf import ExpiredMetadata, TufError

from .conftest import HW, DirEnv


def _rows(env: DirEnv, device_id: str) -> dict[str, list[int]]:
    with env.session() as s:
        rows = s.exec(select(DirectorMetadata.role, DirectorMetadata.version)
                      .where(DirectorMetadata.device_id == device_id)).all()
    out: dict[str, list[int]] = {}
    for role, version in rows:
        out.setdefault(role, []).append(version)
    return {k: sorted(v) for k, v in out.items()}


def test_a_batch_is_signed_in_the_database_and_each_device_verifies_its_own(dir_env: DirEnv) -> None:
    mv = dir_env.model()
    ids = [f"cam-{i:02d}" for i in range(40)]
    dir_env.deploy(mv, ids)
    result = dir_env.sign(ids)
    assert sorted(result.signed) == ids and not result.failed
    assert set(result.versions.values()) == {1}
    per_device = dir_env.root / "tuf" / "director" / "devices"
    assert not per_device.exists() or not any(per_device.iterdir()), "no per-device files are written"
    for device_id in ("cam-00", "cam-17", "cam-39"):
        got = dir_env.device(device_id).check(hint=1)
        assert got.director_version == 1 and got.hint_error is None
        assert [t.name for t in got.targets] == ["digits/1.0.0/r1.tar"]
        assert got.targets[0].device_id == device_id and got.generation == 1
    with dir_env.session() as s:
        devices = {d.id: d for d in s.exec(select(Device)).all()}
        assert {(d.director_version, d.director_generation) for d in devices.values()} == {(1, 1)}
        assert s.exec(select(func.count()).select_from(DeviceHistory).where(DeviceHistory.kind == "signed")).one() == 40


def test_devices_already_current_are_not_signed_again(dir_env: DirEnv) -> None:
    mv = dir_env.model()
    dir_env.deploy(mv, ["a", "b"])
    dir_env.sign(["a", "b"])
    again = dir_env.sign(["a", "b"])
    assert again.signed == [] and again.versions == {"a": 1, "b": 1}
    assert _rows(dir_env, "a") == {"targets": [1], "snapshot": [1], "timestamp": [1]}


def test_a_new_assignment_signs_higher_versions_and_old_ones_are_pruned(dir_env: DirEnv) -> None:
    v1, v2 = dir_env.model("1.0.0"), dir_env.model("2.0.0")
    dir_env.deploy(v1, ["cam"])
    dir_env.sign(["cam"])
    dev = dir_env.device("cam")
    assert dev.check().director_version == 1
    for i in range(4):
        dir_env.deploy(v2 if i % 2 == 0 else v1, ["cam"])
        assert dir_env.sign(["cam"]).versions == {"cam": i + 2}
    got = dev.check(hint=5)
    assert got.director_version == 5 and got.hint_error is None
    assert got.targets[0].model == "digits" and got.targets[0].version == "1.0.0"
    assert _rows(dir_env, "cam") == {r: list(range(6 - KEEP_VERSIONS, 6)) for r in ("targets", "snapshot", "timestamp")}


def test_served_bytes_are_the_stored_documents_and_another_device_is_not_served_them(dir_env: DirEnv) -> None:
    mv = dir_env.model()
    dir_env.deploy(mv, ["a"])
    dir_env.sign(["a"])
    resolver = dir_env.trust.resolver()
    with dir_env.session() as s:
        stored = s.get(DirectorMetadata, ("a", "targets", 1))
    assert stored is not None
    assert resolver.resolve("director/a/1.targets.json").data == stored.data  # type: ignore[union-attr]
    assert resolver.resolve("director/b/1.targets.json") is None
    assert resolver.resolve("director/a/9.targets.json") is None
    assert resolver.resolve("director/../a/1.targets.json") is None
    assert resolver.resolve("director/a/timestamp.json").cache_control == "no-cache"  # type: ignore[union-attr]
    assert resolver.resolve("director/a/1.root.json").data == dir_env.trust.director.root_bytes(1)  # type: ignore[union-attr]


def test_a_device_whose_target_does_not_fit_fails_alone(dir_env: DirEnv) -> None:
    mv = dir_env.model()
    dir_env.deploy(mv, ["good-1", "good-2"])
    dir_env.deploy(mv, ["odd"])
    with dir_env.session() as s:
        odd = s.get(Device, "odd")
        assert odd is not None
        odd.hardware_id = "jetson-xavier-nx"
        s.add(odd)
        s.commit()
    result = dir_env.sign(["good-1", "odd", "good-2"])
    assert sorted(result.signed) == ["good-1", "good-2"]
    assert "not 'jetson-xavier-nx'" in result.failed["odd"]
    assert _rows(dir_env, "odd") == {}


def test_revoked_device_metadata_is_withdrawn_and_verifies_empty(dir_env: DirEnv) -> None:
    mv = dir_env.model()
    dir_env.deploy(mv, ["cam"])
    dir_env.sign(["cam"])
    dev = dir_env.device("cam")
    assert dev.check().targets
    with dir_env.session() as s:
        device = s.get(Device, "cam")
        assert device is not None
        assert signing.withdraw(s, dir_env.trust, device) == 2
    got = dev.check()
    assert got.targets == [] and got.director_version == 2 and got.generation is None


def test_expiring_metadata_is_re_signed_in_the_database(dir_env: DirEnv) -> None:
    mv = dir_env.model()
    dir_env.deploy(mv, ["a", "b"])
    dir_env.sign(["a", "b"])
    with dir_env.session() as s:
        assert signing.refresh_expiring(s, dir_env.trust) == 0  # all fresh
        soon = datetime.now(timezone.utc) + timedelta(hours=13)  # timestamps live 1 day, renewed at half
        assert signing.refresh_expiring(s, dir_env.trust, now=soon) == 2
        assert signing.refresh_expiring(s, dir_env.trust, now=soon) == 0  # renewed: no longer due
        head = s.get(DirectorHead, "a")
        assert head is not None and (head.targets_version, head.snapshot_version, head.timestamp_version) == (1, 2, 2)
        late = datetime.now(timezone.utc) + timedelta(days=4)  # targets (7 days) now due as well
        assert signing.refresh_expiring(s, dir_env.trust, now=late) == 2
        s.refresh(head)
        assert (head.targets_version, head.snapshot_version, head.timestamp_version) == (2, 3, 3)
    got = dir_env.device("a").check()
    assert got.director_version == 2 and got.targets[0].name == "digits/1.0.0/r1.tar"


def test_expired_metadata_in_the_database_is_refused_by_the_device(dir_env: DirEnv) -> None:
    from edgefleet.registry.tuf import Expiry

    dir_env.trust.director.expiry = Expiry(targets=timedelta(seconds=-60))
    mv = dir_env.model()
    dir_env.deploy(mv, ["a"])
    dir_env.sign(["a"])
    with pytest.raises(ExpiredMetadata):
        dir_env.device("a").check()


def test_a_director_key_rotation_re_signs_devices_in_the_database(dir_env: DirEnv) -> None:
    mv = dir_env.model()
    dir_env.deploy(mv, ["a", "b"])
    dir_env.sign(["a", "b"])
    dev = dir_env.device("a")
    assert dev.check().director_version == 1
    dir_env.trust.rotate("targets", "director")
    got = dev.check()
    assert got.director_version == 2 and got.targets[0].name == "digits/1.0.0/r1.tar"
    dir_env.trust.rotate("timestamp", "director")
    assert dev.check().director_version == 2  # snapshot and timestamp re-signed, targets kept
    assert _rows(dir_env, "b")["timestamp"][-1] == 3


def test_a_forged_document_in_the_database_is_refused(dir_env: DirEnv) -> None:
    mv = dir_env.model()
    dir_env.deploy(mv, ["a"])
    dir_env.sign(["a"])
    with dir_env.session() as s:
        row = s.get(DirectorMetadata, ("a", "targets", 1))
        assert row is not None
        row.data = row.data.replace(b'"generation":1', b'"generation":9')
        s.add(row)
        s.commit()
    with pytest.raises(TufError):
        dir_env.device("a").check()


def test_nothing_signs_on_an_mqtt_bridge_thread(dir_env: DirEnv) -> None:
    mv = dir_env.model()
    dir_env.deploy(mv, ["a"])
    caught: list[BaseException] = []

    def on_bridge() -> None:
        try:
            dir_env.sign(["a"])
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            caught.append(exc)

    t = threading.Thread(target=on_bridge, name="bridge-ingest")
    t.start()
    t.join()
    assert len(caught) == 1 and isinstance(caught[0], signing.SigningOnBridgeThread)
    assert _rows(dir_env, "a") == {}
    assert dir_env.sign(["a"]).signed == ["a"]  # the same call off the bridge signs


def test_an_upgraded_controller_serves_file_metadata_then_continues_above_it(dir_env: DirEnv, tmp_path: Path) -> None:
    t = dir_env.trust.release(dir_env.model().digest, {"name": "digits", "version": "1.0.0", "hardware_ids": [HW]})
    for _ in range(3):  # an older controller signed files: v3 targets, snapshot, timestamp
        dir_env.trust.director.assign("old", HW, {"control": t.name}, generation=0)
    dev = dir_env.device("old")
    assert dev.check().director_version == 3  # read through to the files
    mv = dir_env.model("2.0.0")
    dir_env.deploy(mv, ["old"])  # desired generation 1: the database signs v4 above the files' v3
    assert dir_env.sign(["old"]).versions == {"old": 4}
    got = dev.check(hint=4)
    assert got.director_version == 4 and got.targets[0].version == "2.0.0"


def test_upgrade_imports_file_metadata_into_the_database_once(dir_env: DirEnv) -> None:
    t = dir_env.trust.release(dir_env.model().digest, {"name": "digits", "version": "1.0.0", "hardware_ids": [HW]})
    for d in ("f1", "f2"):
        dir_env.trust.director.assign(d, HW, {"control": t.name}, generation=0)
        dir_env.trust.director.assign(d, HW, {"control": t.name}, generation=0)
    before = dir_env.trust.resolver().resolve("director/f1/timestamp.json")
    with dir_env.session() as s:
        assert signing.import_files(s, dir_env.trust) == 2
        assert signing.import_files(s, dir_env.trust) == 0
        assert director_store.count(s) == 2
    assert not (dir_env.root / "tuf" / "director" / "devices").exists()
    after = dir_env.trust.resolver().resolve("director/f1/timestamp.json")
    assert before is not None and after is not None and after.data == before.data
    got = dir_env.device("f2").check()
    assert got.director_version == 2 and got.targets[0].name == t.name
    with Session(dir_env.engine) as s:
        assert s.get(DirectorHead, "f1").slots == {"control": t.name}  # type: ignore[union-attr]


def test_key_status_counts_devices_kept_in_the_database(dir_env: DirEnv) -> None:
    from edgefleet.cloud.trust.key_status import key_status

    mv = dir_env.model()
    dir_env.deploy(mv, ["a", "b", "c"])
    dir_env.sign(["a", "b", "c"])
    with dir_env.session() as s:
        summary = director_store.expiry_summary(s)
    doc = key_status(dir_env.root, now=datetime.now(timezone.utc), director_db=summary)
    rows = {(r["repo"], r["role"]): r["metadata"] for r in doc["roles"]}
    for role in ("targets", "snapshot", "timestamp"):
        md = rows[("director", role)]
        assert md["devices"] == 3 and md["expires"] and md["expired"] is False, (role, md)
    late = datetime.now(timezone.utc) + timedelta(days=2)  # past the 1-day timestamps
    assert key_status(dir_env.root, now=late, director_db=summary)["roles"][-1]["metadata"]["expired"] is True
