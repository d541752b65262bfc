"""Two controllers on one PostgreSQL and one blob store share one image repository: a model
pushed through A is served by B and verified by python-tuf there; pushes racing on A and B
never sign one version (or hand out one release counter) twice; the expiry refresh run by
both re-signs once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from edgefleet.cloud.trust.image_tables import ImageMetadata

from .conftest import Ctl, client

pytestmark = pytest.mark.slow  # a throwaway PostgreSQL cluster takes a while to start

ROUNDS = 6


def _pair(controllers: Callable[..., Ctl], url: str) -> tuple[Ctl, Ctl]:
    a = controllers("a", url)
    with a.session() as s:
        a.trust.import_image_files(s)  # as `fleet cloud serve` does at start
    b = controllers("b", url, keys_from=a.root)  # a second replica: same keys, own data dir and engine
    with b.session() as s:
        assert b.trust.import_image_files(s) is False  # A imported already
    a.serve()
    b.serve()
    return a, b


def _race(fns: list[Callable[[], None]]) -> None:
    barrier = threading.Barrier(len(fns))
    errors: list[BaseException] = []

    def run(fn: Callable[[], None]) -> None:
        try:
            barrier.wait()
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(fn,)) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors


def test_a_model_pushed_on_a_is_served_by_b_and_verifies_there(
        postgres: str, controllers: Callable[..., Ctl], tmp_path: Path) -> None:
    a, b = _pair(controllers, postgres)
    first = b.push("0.9.0")  # B serves what it signed, A learns of it the same way
    up = client(a.url, tmp_path / "dev", a.trust.image.root_bytes(1))
    up.refresh()
    assert up.get_targetinfo(first.name) is not None
    target = a.push("1.0.0")
    assert target.release_counter == first.release_counter + 1
    assert b.trust.image.get_target(target.name) is not None  # B's director can assign it
    up = client(b.url, tmp_path / "dev", a.trust.image.root_bytes(1))  # the same device, now asking B
    up.refresh()
    info = up.get_targetinfo(target.name)
    assert info is not None and info.custom["release_counter"] == target.release_counter
    assert Path(up.download_target(info)).read_bytes() == b"bundle 1.0.0 " * 200  # from the shared store
    assert not (b.root / "blobs").exists()


def test_pushes_racing_on_two_replicas_never_sign_one_version_twice(
        postgres: str, controllers: Callable[..., Ctl], tmp_path: Path) -> None:
    a, b = _pair(controllers, postgres)
    got: dict[str, list] = {"a": [], "b": []}

    def pusher(c: Ctl, k: str) -> Callable[[], None]:
        return lambda: got[k].extend(c.push(f"{k}.{i}") for i in range(ROUNDS))

    _race([pusher(a, "a"), pusher(b, "b")])
    counters = sorted(t.release_counter for t in got["a"] + got["b"])
    assert counters == list(range(1, 2 * ROUNDS + 1))  # each counter handed out once
    with a.session() as s:
        snaps = sorted(s.exec(select(ImageMetadata.version).where(ImageMetadata.role == "snapshot")).all())
    assert snaps == list(range(1, 2 * ROUNDS + 2))  # one snapshot per push above the imported v1, no gap
    for c in (a, b):  # every push is in the final repository, whichever replica is asked
        up = client(c.url, tmp_path / f"dev-{c.root.name}", a.trust.image.root_bytes(1))
        up.refresh()
        assert up._trusted_set.snapshot.version == 2 * ROUNDS + 1
        for t in got["a"] + got["b"]:
            info = up.get_targetinfo(t.name)
            assert info is not None and info.hashes["sha256"] == t.digest


def test_the_expiry_refresh_run_by_both_replicas_re_signs_once(
        postgres: str, controllers: Callable[..., Ctl], tmp_path: Path) -> None:
    a, b = _pair(controllers, postgres)
    a.push("1.0.0")
    ts = a.trust.image.repo.timestamp().signed
    later = ts.expires - timedelta(hours=6)  # inside the timestamp's refresh window (half of a day)
    for c in (a, b):
        c.trust.image.repo.clock = lambda: later
    _race([a.trust.refresh_expiring, b.trust.refresh_expiring])
    with a.session() as s:
        versions = sorted(s.exec(select(ImageMetadata.version).where(ImageMetadata.role == "timestamp")).all())
    assert versions == [ts.version, ts.version + 1]  # one replica re-signed; the other found it fresh
    fresh = b.trust.image.repo.timestamp().signed
    assert fresh.version == ts.version + 1 and fresh.expires > ts.expires
    up = client(b.url, tmp_path / "dev", a.trust.image.root_bytes(1))
    up.refresh()
    assert up._trusted_set.timestamp.version == ts.version + 1
