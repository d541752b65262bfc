"""Director versions are sequenced by the database: two signers (two engines, as two
replicas would have) racing for the same devices on PostgreSQL never sign one version twice,
and each device's versions strictly increase."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import select
from tuf.api.metadata import Metadata

from edgefleet.cloud.tables import Device
from edgefleet.cloud.trust import director_store, signing
from edgefleet.cloud.trust.director_tables import DirectorMetadata
from edgefleet.cloud.trust.repository import Trust

from .conftest import DirEnv

pytestmark = pytest.mark.slow  # a throwaway PostgreSQL cluster takes a while to start

ROUNDS = 12


def _race(a: DirEnv, b: DirEnv, ids: list[str]) -> dict[str, list[list[int]]]:
    """Both signers, ROUNDS times each: bump the devices' desired generation, then sign them."""
    barrier = threading.Barrier(2)
    seen: dict[str, list[list[int]]] = {d: [[], []] for d in ids}
    errors: list[BaseException] = []

    def signer(env: DirEnv, k: int) -> None:
        try:
            barrier.wait()
            for _ in range(ROUNDS):
                with env.session() as s:
                    for d in sorted(ids):  # row locks in device-id order, as the signers take them
                        s.execute(update(Device).where(Device.id == d)  # type: ignore[arg-type]
                                  .values(desired_generation=Device.desired_generation + 1))
                    s.commit()
                    devices = list(s.exec(select(Device).where(Device.id.in_(ids))).all())  # type: ignore[attr-defined]
                    result = signing.sign_devices(s, env.trust, devices)
                assert not result.failed, result.failed
                for d, v in result.versions.items():
                    seen[d][k].append(v)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=signer, args=(env, k), name=f"signer-{k}") for k, env in enumerate((a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not errors, errors
    return seen


def test_two_signers_on_postgresql_never_sign_a_version_twice(
        postgres: str, dir_env_factory: Callable[..., DirEnv], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(director_store, "KEEP_VERSIONS", 10_000)  # keep every version to compare them all
    a = dir_env_factory("a", postgres)
    b = dir_env_factory("b", postgres, trust=Trust.load(a.root, a.blobs))  # a second replica: same keys, own engine
    mv = a.model()
    ids = ["cam-0", "cam-1", "cam-2"]
    a.deploy(mv, ids)
    seen = _race(a, b, ids)
    with a.session() as s:
        for d in ids:
            for k in (0, 1):  # each signer saw the device's version only go up
                assert seen[d][k] == sorted(seen[d][k]) and len(seen[d][k]) == ROUNDS
            rows = s.exec(select(DirectorMetadata).where(DirectorMetadata.device_id == d)).all()
            by_role: dict[str, list[int]] = {}
            for r in rows:
                by_role.setdefault(r.role, []).append(r.version)
            top = max(by_role["targets"])
            assert top >= ROUNDS  # both signed; a round may find its generation signed by the other already
            for role, versions in by_role.items():  # one document per version (the primary key), no gaps
                assert sorted(versions) == list(range(1, top + 1)), (d, role)
            generations = [Metadata.from_bytes(r.data).signed.unrecognized_fields["x-edgefleet"]["generation"]
                           for r in sorted((r for r in rows if r.role == "targets"), key=lambda r: r.version)]
            assert generations == sorted(generations), "a later version never names an older generation"
            assert len({hashlib.sha256(r.data).hexdigest() for r in rows}) == len(rows)
            device = s.get(Device, d)
            assert device is not None and device.director_version == top
    for env in (a, b):  # whichever replica serves, the device verifies the last version
        env.serve()
        got = env.device("cam-1").check(hint=seen["cam-1"][0][-1])
        assert got.hint_error is None and got.targets[0].name == "digits/1.0.0/r1.tar"
