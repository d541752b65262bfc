"""Time to sign and publish one release into an image repository that already holds
10,000 targets, against the same operation on a repository holding one target.

    python bench/bench_sign.py [--targets 10000] [--repeat 15] [--bins-bits 8]

A release = ``ImageRepository.release`` (stage the target with its custom fields, sign
one hash bin, the snapshot and the timestamp, write them durably) + ``Director.assign``
for one device. The blob upload is excluded (it is the same in both cases).
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--targets", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--bins-bits", type=int, default=8)
    a = ap.parse_args()
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
