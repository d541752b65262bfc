"""Bad input: each refusal carries its error code, and the running model stays as it is.

Every test starts from a device that verified, downloaded and activated release 1 in its
``control`` slot, then meets one attack on the way to release 2. It asserts the error
code, that the active file still holds release 1's bytes, and that the device's record
of what is installed did not move.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, TargetFile

from edgefleet.protocols import Desired, SlotTarget, decode, encode
from edgefleet.registry.tuf import (
    BadTargetName,
    DeviceVerifier,
    Expiry,
    TufError,
)
from edgefleet.registry.tuf.signing import metafile, sign

from .conftest import HW, TrustEnv, payload

V1 = payload(200_000)
V2 = payload(300_000)


class Device:
    def __init__(self, env: TrustEnv, dev: DeviceVerifier):
        self.env, self.dev = env, dev
        self.active = env.root / "slots" / "control.bundle"
        self.staged = env.root / "slots" / "staged.bundle"

    def install_v1(self) -> None:
        t1 = self.env.release(V1, version="1.0.0")
        self.env.director.assign(self.dev.device_id, self.dev.hardware_id, {"control": t1.name})
        res = self.dev.check()
        self.dev.download(res.targets[0], self.active)
        self.dev.mark_installed(res.targets[0], "control")

    def update(self) -> Path:
        """What the agent does on a hint: check, download to staging, activate."""
        res = self.dev.check()
        target = res.for_slot("control")
        assert target is not None
        self.dev.download(target, self.staged)
        self.staged.replace(self.active)
        self.dev.mark_installed(target, "control")
        return self.active

    def refused(self, code: str) -> TufError:
        before = self.dev.state().installed
        with pytest.raises(TufError) as ei:
            self.update()
        assert ei.value.code == code, str(ei.value)
        assert self.active.read_bytes() == V1
        assert not self.staged.exists()
        assert self.dev.state().installed == before
        return ei.value


@pytest.fixture
def device(env: TrustEnv) -> Device:
    d = Device(env, env.device())
    d.install_v1()
    return d


def release_v2(env: TrustEnv, device_id: str = "dev-1") -> None:
    t2 = env.release(V2, version="2.0.0")
    env.director.assign(device_id, HW, {"control": t2.name})


def _resign(env: TrustEnv, path: str, mutate, signers) -> bytes:  # noqa: ANN001
    md = Metadata.from_bytes(env.store.read(path))
    mutate(md.signed)
    return sign(md, signers)


# -- target bytes ---------------------------------------------------------------------


def test_target_altered_at_same_length_is_refused_and_model_kept(env: TrustEnv, device: Device) -> None:
    release_v2(env)
    t2 = env.image.get_target(env.director.assignment("dev-1")["control"])
    bad = bytearray(V2)
    bad[len(bad) // 2] ^= 0xFF
    env.hooks.overrides[env.target_path(t2)] = bytes(bad)
    device.refused("E_HASH_MISMATCH")
    assert not list((device.dev.state_dir / "downloads").glob("*.part"))


def test_truncated_target_is_refused_and_model_kept(env: TrustEnv, device: Device) -> None:
    release_v2(env)
    t2 = env.image.get_target(env.director.assignment("dev-1")["control"])
    env.hooks.overrides[env.target_path(t2)] = V2[:-1000]
    device.refused("E_LENGTH")


def test_target_longer_than_signed_is_refused_without_reading_past_length(env: TrustEnv, device: Device) -> None:
    release_v2(env)
    t2 = env.image.get_target(env.director.assignment("dev-1")["control"])
    env.hooks.overrides[env.target_path(t2)] = V2 + b"x" * 50_000
    device.refused("E_LENGTH")
    assert device.dev.fetcher.stats.bytes_received < len(V1) * 2 + len(V2)


# -- signatures -----------------------------------------------------------------------


def test_metadata_signed_by_unknown_key_is_refused(env: TrustEnv, device: Device) -> None:
    release_v2(env)
    intruder = CryptoSigner.generate_ed25519()
    env.hooks.overrides["/tuf/image/metadata/timestamp.json"] = _resign(
        env, "image/timestamp.json", lambda s: None, [intruder]
    )
    device.refused("E_SIGNATURE")


def test_root_below_signature_threshold_is_refused(env_factory) -> None:  # noqa: ANN001
    env = env_factory(root_threshold=2, root_keys=3)
    d = Device(env, env.device())
    d.install_v1()
    release_v2(env)
    root = Metadata.from_bytes(env.image.root_bytes())
    root.signed.version += 1
    one = env.keyring.signers("image", "root")[:1]
    env.hooks.overrides["/tuf/image/metadata/2.root.json"] = sign(root, one)
    d.refused("E_SIGNATURE")


def test_one_key_counted_twice_is_refused(env: TrustEnv, device: Device) -> None:
    release_v2(env)
    import json

    doc = json.loads(env.store.read("image/timestamp.json"))
    doc["signatures"] = doc["signatures"] * 2
    env.hooks.overrides["/tuf/image/metadata/timestamp.json"] = json.dumps(doc).encode()
    device.refused("E_SIGNATURE")


# -- replay, freeze, mix-and-match ----------------------------------------------------


def test_replayed_old_timestamp_is_refused(env: TrustEnv, device: Device) -> None:
    old = env.store.read("image/timestamp.json")  # what the device verified for v1
    env.image.refresh_expiring(datetime.now(timezone.utc) + timedelta(days=10))  # newer one
    device.dev.check()  # the device now trusts the newer timestamp
    release_v2(env)
    env.hooks.overrides["/tuf/image/metadata/timestamp.json"] = old
    device.refused("E_ROLLBACK")


def test_replayed_old_snapshot_is_refused(env: TrustEnv, device: Device) -> None:
    old_snap_meta = Metadata.from_bytes(env.store.read("image/timestamp.json")).signed.snapshot_meta
    release_v2(env)
    # an attacker holding the online timestamp key points a fresh timestamp at the old snapshot
    ts_signers = env.keyring.signers("image", "timestamp")

    def point_back(ts) -> None:  # noqa: ANN001
        ts.version += 1
        ts.snapshot_meta = old_snap_meta

    device.dev.check()  # trusts snapshot of release 2 now
    env.hooks.overrides["/tuf/image/metadata/timestamp.json"] = _resign(env, "image/timestamp.json", point_back, ts_signers)
    device.refused("E_ROLLBACK")


def test_replayed_old_targets_is_refused(env: TrustEnv, device: Device) -> None:
    t1 = env.image.get_target(env.director.assignment("dev-1")["control"])
    bin_name = env.image.bin_for(t1.name)
    snap_v1 = Metadata.from_bytes(env.store.read("image/timestamp.json")).signed.snapshot_meta.version
    old_bin_meta = Metadata.from_bytes(env.store.read(f"image/{snap_v1}.snapshot.json")).signed.meta[f"{bin_name}.json"]
    # release 2 lands in the same bin so the device's trusted bin version moves on
    counter = next(c for c in range(2, 500) if env.image.bin_for(f"digits/2.0.0/r{c}.tar") == bin_name)
    env.image.add_target(f"digits/2.0.0/r{counter}.tar", env.blobs.put(V2), dict(t1.custom, release_counter=counter))
    env.image.publish()
    env.director.assign("dev-1", HW, {"control": f"digits/2.0.0/r{counter}.tar"})
    device.dev.check()
    snap_now = Metadata.from_bytes(env.store.read("image/timestamp.json")).signed.snapshot_meta.version
    signers_s = env.keyring.signers("image", "snapshot")

    def roll_back_bin(s) -> None:  # noqa: ANN001
        s.version += 1
        s.meta[f"{bin_name}.json"] = old_bin_meta

    new_snap = _resign(env, f"image/{snap_now}.snapshot.json", roll_back_bin, signers_s)

    def point(ts) -> None:  # noqa: ANN001
        ts.version += 1
        ts.snapshot_meta = metafile(new_snap, snap_now + 1)

    env.hooks.overrides[f"/tuf/image/metadata/{snap_now + 1}.snapshot.json"] = new_snap
    env.hooks.overrides["/tuf/image/metadata/timestamp.json"] = _resign(
        env, "image/timestamp.json", point, env.keyring.signers("image", "timestamp")
    )
    device.refused("E_ROLLBACK")


def test_snapshot_not_matching_timestamp_is_refused(env: TrustEnv, device: Device) -> None:
    old_version = Metadata.from_bytes(env.store.read("image/timestamp.json")).signed.snapshot_meta.version
    release_v2(env)
    new_version = Metadata.from_bytes(env.store.read("image/timestamp.json")).signed.snapshot_meta.version
    # a validly signed but different snapshot served under the name the timestamp points to
    env.hooks.overrides[f"/tuf/image/metadata/{new_version}.snapshot.json"] = env.store.read(
        f"image/{old_version}.snapshot.json"
    )
    device.refused("E_METADATA_MISMATCH")


@pytest.mark.parametrize("role", ["root", "timestamp", "snapshot", "targets", "delegated"])
def test_expired_metadata_of_each_role_is_refused(env_factory, role: str) -> None:  # noqa: ANN001
    env = env_factory()
    d = Device(env, env.device())
    d.install_v1()
    # the repository signs release 2 with this role already expired
    short = Expiry(**{role: timedelta(seconds=-60)})
    env.image.repo.expiry = short
    if role == "root":
        root = Metadata.from_bytes(env.image.root_bytes())
        root.signed.version += 1
        root.signed.expires = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
        env.image.repo.write_root(root, env.keyring.signers("image", "root"))
    if role == "targets":
        top = copy.deepcopy(env.image.repo.targets().signed)
        top.version += 1
        env.image.repo.commit({"targets": top})
    release_v2(env)
    d.refused("E_EXPIRED")


def test_expired_director_metadata_is_refused(env: TrustEnv, device: Device) -> None:
    env.director.expiry = Expiry(targets=timedelta(seconds=-60))
    release_v2(env)
    device.refused("E_EXPIRED")


# -- director vs image ----------------------------------------------------------------


def _forge_director(env: TrustEnv, device_id: str, mutate) -> None:  # noqa: ANN001
    """The director (its online key) signs whatever ``mutate`` makes of the assignment."""
    repo = env.director.device_repo(device_id)
    t = copy.deepcopy(repo.targets().signed)
    t.version += 1
    mutate(t)
    repo.commit({"targets": t})


def test_director_naming_target_absent_from_image_is_refused(env: TrustEnv, device: Device) -> None:
    def add_ghost(t) -> None:  # noqa: ANN001
        t.targets = {
            "digits/6.6.6/r66.tar": TargetFile(
                len(V2), {"sha256": "ab" * 32}, "digits/6.6.6/r66.tar",
                {"custom": {"device_id": "dev-1", "hardware_id": HW, "release_counter": 66, "slots": ["control"]}},
            )
        }

    _forge_director(env, "dev-1", add_ghost)
    device.refused("E_TARGET_MISSING")


@pytest.mark.parametrize("what", ["length", "hash", "release_counter"])
def test_director_and_image_disagreeing_is_refused(env: TrustEnv, device: Device, what: str) -> None:
    release_v2(env)

    def skew(t) -> None:  # noqa: ANN001
        (tf,) = t.targets.values()
        if what == "length":
            tf.length += 1
        elif what == "hash":
            tf.hashes = {"sha256": "cd" * 32}
        else:
            tf.unrecognized_fields["custom"]["release_counter"] += 100

    _forge_director(env, "dev-1", skew)
    device.refused("E_DIRECTOR_IMAGE_MISMATCH")


def test_director_metadata_for_another_device_is_refused(env: TrustEnv, device: Device) -> None:
    release_v2(env, device_id="dev-2")
    env.director.assign("dev-2", HW, {"shadow": env.director.assignment("dev-2")["control"]})
    # serve dev-2's validly signed director files (newer versions than dev-1's) at dev-1's URLs
    for name in env.store.list("director/devices/dev-2"):
        fname = name.rsplit("/", 1)[-1]
        env.hooks.overrides[f"/tuf/director/dev-1/{fname}"] = env.store.read(name)
    device.refused("E_WRONG_DEVICE")


@pytest.mark.parametrize("where", ["director", "image"])
def test_hardware_id_mismatch_is_refused(env: TrustEnv, device: Device, where: str) -> None:
    if where == "director":
        release_v2(env)
        _forge_director(env, "dev-1", lambda t: t.unrecognized_fields["x-edgefleet"].update(hardware_id="jetson-xavier"))
    else:
        t2 = env.release(V2, version="2.0.0", hardware_ids=("jetson-xavier",))

        def assign_xavier_build(t) -> None:  # noqa: ANN001
            t.targets = {
                t2.name: TargetFile(
                    t2.length, {"sha256": t2.digest}, t2.name,
                    {"custom": {"device_id": "dev-1", "hardware_id": HW,
                                "release_counter": t2.release_counter, "slots": ["control"]}},
                )
            }

        _forge_director(env, "dev-1", assign_xavier_build)
    device.refused("E_HARDWARE_MISMATCH")


def test_release_counter_lower_than_installed_is_refused(env: TrustEnv, device: Device) -> None:
    t1_name = env.director.assignment("dev-1")["control"]
    release_v2(env)
    device.update()  # release 2 installed: its counter is the floor now
    device.active.write_bytes(V1)  # (test bookkeeping: the fixture compares against V1)
    env.director.assign("dev-1", HW, {"control": t1_name})
    device.refused("E_RELEASE_COUNTER")


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "digits/..%2f..%2fetc/passwd", "digits/%2e%2e/x.tar", "digits\\..\\x.tar", "/abs/x.tar"]
)
def test_target_names_escaping_or_encoding_separators_are_refused(env: TrustEnv, device: Device, name: str) -> None:
    def evil(t) -> None:  # noqa: ANN001
        t.targets = {
            name: TargetFile(len(V2), {"sha256": "ab" * 32}, name,
                             {"custom": {"device_id": "dev-1", "hardware_id": HW, "release_counter": 5, "slots": ["control"]}})
        }

    _forge_director(env, "dev-1", evil)
    device.refused("E_BAD_TARGET_NAME")
    with pytest.raises(BadTargetName):  # and the repository never signs such a name
        env.image.add_target(name, env.blobs.put(V2))


# -- hints and clocks -----------------------------------------------------------------


def test_forged_mqtt_desired_message_achieves_nothing(env: TrustEnv, device: Device) -> None:
    evil = env.blobs.put(b"evil model")
    forged = Desired(
        device_id="dev-1", generation=99, director_version=999,
        slots={"control": SlotTarget(name="digits", version="6.6.6", digest=evil, size=10,
                                     path=f"/tuf/image/targets/digits/6.6.6/{evil}.r1.tar", release_counter=10_000)},
    )
    hint = decode(encode(forged), Desired)
    res = device.dev.check(hint=hint.director_version)
    assert res.hint_error is not None and res.hint_error.code == "E_HINT_UNCONFIRMED"
    target = res.for_slot("control")
    assert target is not None and target.digest != evil and target.version == "1.0.0"
    assert not any(evil in path for path, _ in env.hooks.requests)
    assert device.active.read_bytes() == V1


def test_clock_set_back_after_update_cannot_revive_expired_metadata(env_factory) -> None:  # noqa: ANN001
    real = datetime.now(timezone.utc)
    repo_now = [real]
    env = env_factory(clock=lambda: repo_now[0])
    device_now = [real + timedelta(hours=12)]
    dev = env.device(clock=lambda: device_now[0])
    d = Device(env, dev)
    d.install_v1()  # at device time real+12h: last trusted time = real+12h
    # metadata signed long ago (timestamps expiring at real+6h), surfacing only now
    repo_now[0] = real - timedelta(hours=18)
    release_v2(env)
    device_now[0] = real  # the clock is set back
    err = d.refused("E_CLOCK_ROLLBACK")
    assert "expired" in str(err)
    # without the recorded last trusted time the same metadata would have been accepted
    fresh = env.device("dev-1", state=env.root / "fresh-state", clock=lambda: real)
    assert fresh.check().for_slot("control").version == "2.0.0"


def test_every_refusal_leaves_metadata_usable_for_the_next_good_release(env: TrustEnv, device: Device) -> None:
    release_v2(env)
    t2 = env.image.get_target(env.director.assignment("dev-1")["control"])
    env.hooks.overrides[env.target_path(t2)] = V2[:-1]
    device.refused("E_LENGTH")
    env.hooks.overrides.clear()
    assert device.update().read_bytes() == V2


def test_unknown_signed_field_shapes_do_not_crash(env: TrustEnv, device: Device) -> None:
    _forge_director(env, "dev-1", lambda t: t.unrecognized_fields.pop("x-edgefleet"))
    device.refused("E_WRONG_DEVICE")


_ = MetaFile  # re-exported for readers crafting metadata by hand
