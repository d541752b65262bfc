"""Two measurements of signing cost.

Releases (default): time to sign and publish one release into an image repository that
already holds 10,000 targets, against the same operation on a repository holding one target.

    python bench/bench_sign.py [--targets 10000] [--repeat 15] [--bins-bits 8]

A release = ``ImageRepository.release`` (stage the target with its custom fields, sign
one hash bin, the snapshot and the timestamp, write them durably) + ``Director.assign``
for one device. The blob upload is excluded (it is the same in both cases).

Devices (``--devices``): per-device director signing cost in bulk
(``cloud.trust.signing.sign_devices``: one key load, one database transaction per 1,000
devices, documents in ``director_metadata``) ÷ the per-device file-based path
(``Director.assign``: three signatures, three fsync'd files per device), both measured in
this run, and the wall time to sign a whole fleet in bulk.

    python bench/bench_sign.py --devices [--batch 1000] [--fleet 10000] [--file-devices 200] [--db-url URL]

The bulk figure includes everything ``sign_devices`` does for a device (reading its head
and assignments, history row, device row); the file figure is only ``Director.assign``,
so the ratio is conservative. SQLite (WAL) in a temporary directory unless ``--db-url``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from edgefleet.registry import LocalBlobStore
from edgefleet.registry.tuf import Director, ImageRepository, KeyRing, LocalMetadataStore


def build(root: Path, n: int, bins_bits: int) -> tuple[ImageRepository, Director, LocalBlobStore]:
    ring = KeyRing.init(root / "keys")
    store = LocalMetadataStore(root / "meta")
    blobs = LocalBlobStore(root / "blobs")
    image = ImageRepository.create(store, blobs, ring, bins_bits=bins_bits)
    director = Director.create(store, ring, image)
    digest = blobs.put(b"existing bundle")
    for i in range(n):
        image.add_release(
            digest, model=f"model{i % 50}", version=f"1.{i}.0", hardware_ids=["jetson-orin-nano"],
            manifest_digest="0" * 64, provenance={"run_id": f"run-{i}", "source": "bench"},
        )
    image.publish()
    return image, director, blobs


def time_release(image: ImageRepository, director: Director, blobs: LocalBlobStore, repeat: int) -> float:
    times = []
    for i in range(repeat):
        digest = blobs.put(f"new bundle {i}".encode())
        t0 = time.perf_counter()
        t = image.release(
            digest, model="digits", version=f"9.{i}.0", hardware_ids=["jetson-orin-nano"],
            manifest_digest="0" * 64, provenance={"run_id": f"new-{i}"},
        )
        director.assign("dev-1", "jetson-orin-nano", {"control": t.name})
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _fleet(root: Path, db_url: str | None, n: int):  # noqa: ANN202 - bench helper
    """A migrated database with ``n`` enrolled devices assigned one released model, and the trust state."""
    from sqlalchemy import insert

    from edgefleet.cloud.db import make_engine, migrate
    from edgefleet.cloud.tables import Device, ModelVersion, SlotAssignment
    from edgefleet.cloud.trust.repository import Trust

    root.mkdir(parents=True, exist_ok=True)
    engine = make_engine(db_url or f"sqlite:///{root / 'edgefleet.db'}")
    migrate(engine)
    blobs = LocalBlobStore(root / "blobs")
    trust = Trust.init(root, blobs)
    trust.attach_database(engine)
    data = b"bench bundle" * 1000
    manifest = {"name": "digits", "version": "1.0.0", "hardware_ids": ["jetson-orin-nano"]}
    target = trust.release(blobs.put(data), manifest)
    from sqlmodel import Session

    with Session(engine) as s:
        mv = ModelVersion(name="digits", version="1.0.0", digest=target.digest, size=len(data), manifest=manifest,
                          target_name=target.name, release_counter=target.release_counter)
        s.add(mv)
        s.commit()
        s.refresh(mv)
        ids = [f"dev-{i:05d}" for i in range(n)]
        s.execute(insert(Device), [{"id": d, "hardware_id": "jetson-orin-nano", "tags": {}, "desired_generation": 1}
                                   for d in ids])
        s.execute(insert(SlotAssignment), [{"device_id": d, "slot": "control", "model_version_id": mv.id} for d in ids])
        s.commit()
    return engine, trust, ids, target


def _sign_bulk(engine, trust, ids: list[str]) -> float:  # noqa: ANN001 - bench helper
    from sqlmodel import Session, select

    from edgefleet.cloud.tables import Device
    from edgefleet.cloud.trust import signing

    with Session(engine, expire_on_commit=False) as s:
        devices = list(s.exec(select(Device)).all())  # each fleet has its own database
        t0 = time.perf_counter()
        result = signing.sign_devices(s, trust, devices)
        took = time.perf_counter() - t0
    assert len(result.signed) == len(ids) and not result.failed, (len(result.signed), result.failed)
    return took


def devices_mode(a: argparse.Namespace) -> None:
    import logging

    logging.disable(logging.INFO)  # one log line per device signed would be measured too
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        image, director, _blobs = build(root / "files", 1, 4)
        target = image.release(_blobs.put(b"bench bundle" * 1000), model="digits", version="1.0.0",
                               hardware_ids=["jetson-orin-nano"], manifest_digest="0" * 64, provenance={})
        t0 = time.perf_counter()
        for i in range(a.file_devices):
            director.assign(f"dev-{i:05d}", "jetson-orin-nano", {"control": target.name}, generation=1)
        file_per = (time.perf_counter() - t0) / a.file_devices
        engine, trust, ids, _t = _fleet(root / "batch", a.db_url, a.batch)
        bulk_per = _sign_bulk(engine, trust, ids) / a.batch
        engine.dispose()
        engine, trust, ids, _t = _fleet(root / "fleet", a.db_url, a.fleet)
        fleet_s = _sign_bulk(engine, trust, ids)
        engine.dispose()
    print(f"director signing per device ({'SQLite' if not a.db_url else a.db_url.split(':')[0]}):")
    print(f"  file-based Director.assign, {a.file_devices} devices (3 signatures, 3 fsync'd files each): "
          f"{file_per * 1000:8.2f} ms")
    print(f"  bulk sign_devices, one batch of {a.batch} devices (one transaction):           {bulk_per * 1000:8.2f} ms")
    print(f"ratio bulk / file-based per device: {bulk_per / file_per:.3f} ({file_per / bulk_per:.1f}x cheaper)")
    print(f"wall time to sign {a.fleet} devices in bulk: {fleet_s:.1f} s ({fleet_s / a.fleet * 1000:.2f} ms per device)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--bins-bits", type=int, default=8)
    ap.add_argument("--devices", action="store_true", help="per-device director signing: bulk vs file-based")
    ap.add_argument("--batch", type=int, default=1000, help="devices in the measured bulk batch")
    ap.add_argument("--fleet", type=int, default=10_000, help="devices signed for the wall-time figure")
    ap.add_argument("--file-devices", type=int, default=200, help="devices signed one by one on the file path")
    ap.add_argument("--db-url", default=None, help="database for the bulk path (default: SQLite in a temp dir)")
    a = ap.parse_args()
    if a.devices:
        devices_mode(a)
        return
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        big = build(Path(d) / "big", a.targets, a.bins_bits)
        build_s = time.perf_counter() - t0
        small = build(Path(d) / "small", 1, a.bins_bits)
        base = time_release(*small, a.repeat)
        large = time_release(*big, a.repeat)
    print(f"repository with {a.targets} targets built in {build_s:.1f} s ({2 ** a.bins_bits} hash bins)")
    print(f"sign+publish one release (bin, snapshot, timestamp, director), median of {a.repeat}:")
    print(f"  1 existing target:       {base * 1000:8.1f} ms")
    print(f"  {a.targets} existing targets: {large * 1000:8.1f} ms")
    print(f"ratio {a.targets} / 1 targets: {large / base:.2f}")


if __name__ == "__main__":
    main()
