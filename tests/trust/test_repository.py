"""The cloud side: keys, write-once consistent snapshots, timestamp renewal, key rotation."""

from __future__ import annotations

import json
import stat
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
from tuf.api.metadata import Metadata

from edgefleet.registry import LocalBlobStore, VersionConflict
from edgefleet.registry.tuf import (
    Director,
    ImageRepository,
    KeyRing,
    KeyringError,
    LocalMetadataStore,
    RepositoryStateError,
)

from .conftest import HW, TrustEnv, payload


def test_keys_init_creates_every_role_with_k_of_n_root_in_private_files(tmp_path) -> None:  # noqa: ANN001
    ring = KeyRing.init(tmp_path / "k", root_threshold=2, root_keys=3)
    for repo in ("image", "director"):
        assert ring.role(repo, "root").threshold == 2 and len(ring.public(repo, "root")) == 3
        for role in ("targets", "snapshot", "timestamp"):
            assert len(ring.signers(repo, role)) == 1
    pems = list((tmp_path / "k").glob("*.pem"))
    assert len(pems) == 2 * (3 + 3)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in pems)
    again = KeyRing.load(tmp_path / "k")
    assert [k.keyid for k in again.role("image", "root").keys] == [k.keyid for k in ring.role("image", "root").keys]
    with pytest.raises(KeyringError):
        KeyRing.init(tmp_path / "k")
    with pytest.raises(KeyringError):
        KeyRing.init(tmp_path / "k2", root_threshold=3, root_keys=2)


def test_root_metadata_carries_configured_threshold_and_consistent_snapshots(tmp_path) -> None:  # noqa: ANN001
    ring = KeyRing.init(tmp_path / "k", root_threshold=2, root_keys=3)
    image = ImageRepository.create(LocalMetadataStore(tmp_path / "m"), LocalBlobStore(tmp_path / "b"), ring, bins_bits=2)
    root = Metadata.from_bytes(image.root_bytes()).signed
    assert root.consistent_snapshot and root.roles["root"].threshold == 2 and len(root.roles["root"].keyids) == 3
    assert len(Metadata.from_bytes(image.root_bytes()).signatures) == 3


def test_offline_root_keys_cannot_sign_below_threshold(tmp_path) -> None:  # noqa: ANN001
    ring = KeyRing.init(tmp_path / "k", root_threshold=2, root_keys=2)
    entry = ring.role("image", "root").keys[0]
    entry.uri = None  # that key lives on an offline token
    with pytest.raises(KeyringError):
        ring.signers("image", "root")


def test_targets_are_write_once_and_served_only_under_their_hash(env: TrustEnv) -> None:
    t = env.release(b"bundle one")
    assert t.custom["model"] == "digits" and t.custom["release_counter"] == 1
    assert set(t.custom) == {"model", "version", "release_counter", "hardware_ids", "manifest_digest", "provenance"}
    env.image.add_target(t.name, t.digest, t.custom)  # same bytes: no-op
    with pytest.raises(VersionConflict):
        env.image.add_target(t.name, env.blobs.put(b"other bytes"), t.custom)
    with urllib.request.urlopen(env.url + env.target_path(t)) as r:
        assert r.read() == b"bundle one"
        assert "immutable" in r.headers["Cache-Control"]
    for bad in (f"/tuf/image/targets/{t.name}", env.target_path(t).replace(t.digest, "0" * 64)):
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(env.url + bad)
        assert ei.value.code == 404


def test_release_counters_increase_and_are_never_reused(env: TrustEnv) -> None:
    counters = [env.release(payload(10, seed=i + 1), version=f"1.{i}.0").release_counter for i in range(3)]
    assert counters == [1, 2, 3]
    again = ImageRepository(env.store, env.blobs, env.keyring)  # a restarted controller
    assert again.next_release_counter() == 4


def test_publish_touches_one_bin_snapshot_and_timestamp(env: TrustEnv) -> None:
    env.release(b"a")
    before = set(env.store.list("image"))
    t = env.release(b"b", version="2.0.0")
    new = sorted(set(env.store.list("image")) - before)
    bin_name = env.image.bin_for(t.name)
    assert [n.split(".", 1)[1] for n in new if n.endswith(".json")] == [f"{bin_name}.json", "snapshot.json"]


def test_timestamp_is_resigned_before_it_expires(tmp_path) -> None:  # noqa: ANN001
    now = [datetime.now(timezone.utc)]
    ring = KeyRing.init(tmp_path / "k")
    store = LocalMetadataStore(tmp_path / "m", fsync=False)
    image = ImageRepository.create(store, LocalBlobStore(tmp_path / "b"), ring, bins_bits=1, clock=lambda: now[0])
    ts = lambda: Metadata.from_bytes(store.read("image/timestamp.json")).signed  # noqa: E731
    first = ts()
    now[0] += timedelta(hours=2)
    assert image.refresh_expiring() == []
    now[0] += timedelta(hours=11)  # past half of the 1-day lifetime
    assert image.refresh_expiring() == ["timestamp"]
    assert ts().version == first.version + 1 and ts().expires > first.expires
    now[0] += timedelta(days=4)  # snapshot (7 days) due as well
    assert "snapshot" in image.refresh_expiring()


@pytest.mark.parametrize("repo", ["image", "director"])
@pytest.mark.parametrize("role", ["root", "targets", "snapshot", "timestamp"])
def test_existing_agents_follow_a_key_rotation(env: TrustEnv, repo: str, role: str) -> None:
    t = env.release(payload(1000, seed=3))
    env.director.assign("dev-1", HW, {"control": t.name})
    dev = env.device()  # provisioned with version-1 roots
    assert dev.check().targets[0].name == t.name
    old = {k.keyid for k in env.keyring.role(repo, role).keys}
    (env.image if repo == "image" else env.director).rotate(role)
    assert {k.keyid for k in env.keyring.role(repo, role).keys}.isdisjoint(old)
    t2 = env.release(payload(1000, seed=5), version="2.0.0")
    env.director.assign("dev-1", HW, {"control": t2.name})
    res = dev.check()
    assert res.for_slot("control").name == t2.name
    assert dev.download(res.targets[0], env.root / "x").read_bytes() == payload(1000, seed=5)


def test_director_refuses_unknown_targets_and_wrong_hardware(env: TrustEnv) -> None:
    t = env.release(b"orin build", hardware_ids=("jetson-orin-nano",))
    with pytest.raises(RepositoryStateError):
        env.director.assign("dev-1", "jetson-xavier-nx", {"control": t.name})
    with pytest.raises(RepositoryStateError):
        env.director.assign("dev-1", HW, {"control": "digits/9.9.9/r99.tar"})
    with pytest.raises(RepositoryStateError):
        env.director.assign("../evil", HW, {"control": t.name})
    assert env.director.version("dev-1") == 0
    assert env.director.assign("dev-1", HW, {"control": t.name, "shadow": t.name}) == 1
    assert env.director.assignment("dev-1") == {"control": t.name, "shadow": t.name}
    assert env.director.assign("dev-1", HW, {"control": t.name}) == 2
    assert env.director.devices() == ["dev-1"]
    doc = json.loads(env.director.metadata("dev-1", "2.targets.json"))
    assert doc["signed"]["x-edgefleet"] == {"device_id": "dev-1", "hardware_id": HW}


def test_director_resigns_expiring_device_metadata(tmp_path) -> None:  # noqa: ANN001
    now = [datetime.now(timezone.utc)]
    ring = KeyRing.init(tmp_path / "k")
    store = LocalMetadataStore(tmp_path / "m", fsync=False)
    blobs = LocalBlobStore(tmp_path / "b")
    image = ImageRepository.create(store, blobs, ring, bins_bits=1, clock=lambda: now[0])
    director = Director.create(store, ring, image, clock=lambda: now[0])
    t = image.release(blobs.put(b"x"), model="m", version="1")
    director.assign("a", "cpu", {"control": t.name})
    director.assign("b", "cpu", {"control": t.name})
    now[0] += timedelta(hours=13)
    assert director.refresh_expiring() == 2
    assert director.refresh_expiring() == 0


def test_creating_twice_is_refused(env: TrustEnv) -> None:
    with pytest.raises(RepositoryStateError):
        ImageRepository.create(env.store, env.blobs, env.keyring)
    with pytest.raises(RepositoryStateError):
        Director.create(env.store, env.keyring, env.image)
