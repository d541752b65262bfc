"""Download-and-verify throughput against ``sha256sum``, and bytes on the wire with drops.

    python bench/bench_download.py [--size-mb 200] [--drops 5]

Serves a real image repository + director from a separate process over loopback HTTP
(the standard-library server of ``registry.tuf.server``), then on the device side:

1. throughput: ``DeviceVerifier.download`` (resumable fetcher, hashing while writing,
   fsync, atomic move) of one ``--size-mb`` artifact, MB/s ÷ ``sha256sum`` MB/s on the
   same file (page cache warm) in the same run. Goal >= 0.8. Also printed against
   Python's ``hashlib.sha256`` over the file (OpenSSL, often faster than coreutils).
2. wire: the same artifact with ``--drops`` forced connection drops (the server closes
   the socket after an equal share of the body); every byte the server writes to the
   socket (status lines, headers and bodies) ÷ artifact size. Goal <= 1.02.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import subprocess
import tempfile
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from edgefleet.registry import LocalBlobStore, sha256_file
from edgefleet.registry.tuf import (
    DeviceVerifier,
    Director,
    ImageRepository,
    KeyRing,
    LocalMetadataStore,
    ResumableFetcher,
    TufResolver,
    make_handler,
    provision,
)

HW = "jetson-orin-nano"


class _Counting:
    def __init__(self, raw: Any, counter: Any):
        self.raw, self.counter = raw, counter

    def write(self, b: bytes) -> int:
        n = self.raw.write(b)
        with self.counter.get_lock():
            self.counter.value += len(b)
        return n

    def flush(self) -> None:
        self.raw.flush()

    def __getattr__(self, name: str) -> Any:  # closed, close, ... of the socket writer
        return getattr(self.raw, name)


def serve(root: str, port: Any, wire: Any, drops: Any, drop_every: int) -> None:
    ring = KeyRing.load(Path(root) / "keys")
    store = LocalMetadataStore(Path(root) / "meta")
    blobs = LocalBlobStore(Path(root) / "blobs")
    image = ImageRepository(store, blobs, ring)
    base = make_handler(TufResolver(image, Director(store, ring, image)), blobs)

    class Handler(base):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            super().setup()
            self.wfile = _Counting(self.wfile, wire)  # type: ignore[assignment]

        def write_body(self, res: Any, start: int, end: int) -> None:
            if res.blob_digest is None or drops.value <= 0:
                return super().write_body(res, start, end)
            with drops.get_lock():
                drops.value -= 1
            super().write_body(res, start, min(end, start + drop_every - 1))
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port.value = srv.server_port
    srv.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--drops", type=int, default=5)
    a = ap.parse_args()
    size = a.size_mb * 1024 * 1024
    tmp = Path(tempfile.mkdtemp(prefix="bench-dl-"))
    try:
        ring = KeyRing.init(tmp / "keys")
        store = LocalMetadataStore(tmp / "meta")
        blobs = LocalBlobStore(tmp / "blobs")
        image = ImageRepository.create(store, blobs, ring)
        director = Director.create(store, ring, image)
        src = tmp / "artifact.bin"
        with open(src, "wb") as f:
            for _ in range(a.size_mb):
                f.write(os.urandom(1024 * 1024))
        t = image.release(blobs.put_file(src), model="bench", version="1.0.0", hardware_ids=[HW])
        director.assign("dev-1", HW, {"control": t.name})
        blob_path = blobs.path(t.digest)

        port, wire, drops = mp.Value("i", 0), mp.Value("q", 0), mp.Value("i", 0)
        proc = mp.get_context("fork").Process(
            target=serve, args=(str(tmp), port, wire, drops, size // (a.drops + 1)), daemon=True
        )
        proc.start()
        while port.value == 0:
            time.sleep(0.01)
        url = f"http://127.0.0.1:{port.value}"

        # baseline: sha256sum on the same file, page cache warm
        subprocess.run(["sha256sum", str(blob_path)], check=True, capture_output=True)
        t0 = time.perf_counter()
        subprocess.run(["sha256sum", str(blob_path)], check=True, capture_output=True)
        base_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        sha256_file(blob_path)
        hashlib_s = time.perf_counter() - t0

        def device(name: str) -> DeviceVerifier:
            state = tmp / name
            provision(state, director_root=director.root_bytes(), image_root=image.root_bytes())
            return DeviceVerifier.for_controller(
                url, "dev-1", HW, state, fetcher=ResumableFetcher(gap_timeout=30, deadline=600, backoff=0.05)
            )

        dev = device("dev-a")
        target = dev.check().targets[0]
        t0 = time.perf_counter()
        out = dev.download(target, tmp / "dev-a" / "control.bundle")
        ours_s = time.perf_counter() - t0
        out.unlink()

        dev = device("dev-b")
        target = dev.check().targets[0]
        drops.value = a.drops
        before = wire.value
        dev.download(target, tmp / "dev-b" / "control.bundle")
        on_wire = wire.value - before
        proc.terminate()

        mb = size / 1e6
        print(f"artifact {a.size_mb} MiB over loopback HTTP, {os.cpu_count()} CPUs")
        print(f"sha256sum:             {mb / base_s:8.0f} MB/s")
        print(f"download+verify:       {mb / ours_s:8.0f} MB/s  (fetch, hash while writing, fsync, rename)")
        print(f"hashlib.sha256 (file): {mb / hashlib_s:8.0f} MB/s  (stricter baseline: OpenSSL SHA-256)")
        print(f"throughput ratio ours / sha256sum: {base_s / ours_s:.2f}   (goal >= 0.8)")
        print(f"throughput ratio ours / hashlib.sha256: {hashlib_s / ours_s:.2f}")
        print(f"with {a.drops} forced drops: {dev.fetcher.stats.resumes} resumes, "
              f"{dev.fetcher.stats.connections} connections")
        print(f"bytes on wire / artifact size: {on_wire / size:.4f}   (goal <= 1.02)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
