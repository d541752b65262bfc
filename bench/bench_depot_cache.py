"""Benchmark: bytes the controller sends ÷ bytes delivered to N devices through a depot cache.

A real controller (SQLite, HTTP on uvicorn) signs one bundle for N enrolled devices; a
depot cache (``fleet-agent cache serve``'s ``DepotCache``) on loopback sits in front of it.
Each device runs the agent's own verification path (``CacheFirstVerifier``: director
metadata from the controller with its own token, image metadata and the bundle from the
cache, every signature and hash checked) and downloads its bundle, all devices at once.
Printed side by side: bytes the cache fetched from the controller, bytes it delivered,
their ratio (goal ≈ 1/N), and the controller bytes the devices fetched themselves
(director metadata only). Baseline in the same run: N devices without the cache.

    python bench/bench_depot_cache.py [--devices 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from local_stack import local_stack  # noqa: E402


def _device(stack: Any, root: Path, device_id: str, cache_url: str | None) -> Any:
    import httpx

    from edgefleet.edge_agent.depot import CacheFirstVerifier
    from edgefleet.registry.tuf import DeviceVerifier, ResumableFetcher, provision

    creds = stack.client.enrol_device(device_id, "cpu-x86_64", {"bench": "depot"})
    roots = stack.controller.trust.roots()
    trust = root / device_id
    provision(trust, director_root=roots.director, image_root=roots.image)
    http = httpx.Client(headers={"Authorization": f"Bearer {creds['token']}", "Accept-Encoding": "identity"})
    fetcher = ResumableFetcher(client=http)
    base = stack.settings.base_url
    if cache_url:
        return CacheFirstVerifier.for_controller(base, device_id, "cpu-x86_64", trust, fetcher=fetcher,
                                                 cache_url=cache_url)
    return DeviceVerifier.for_controller(base, device_id, "cpu-x86_64", trust, fetcher=fetcher)


def _run(stack: Any, tmp: Path, n: int, label: str, cache_url: str | None) -> tuple[int, int, int]:
    """Returns (bytes the devices fetched from the controller, bytes delivered, bundle size)."""
    prefix = "c" if cache_url else "d"
    devices = [f"{prefix}-{i:03d}" for i in range(n)]
    verifiers = [_device(stack, tmp / prefix, d, cache_url) for d in devices]
    stack.client.deploy(label, "control", devices)
    results: list[int] = []
    errors: list[BaseException] = []

    def one(v: Any) -> None:
        try:
            target = v.check().for_slot("control")
            path = v.download(target, tmp / prefix / v.device_id / "bundle.tar")
            results.append(path.stat().st_size)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(v,)) for v in verifiers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"a device failed: {errors[0]!r}")
    origin = sum(v.fetcher.stats.bytes_received for v in verifiers)
    return origin, sum(results), results[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=20)
    args = ap.parse_args()
    from edgefleet.cloud.demo.train import train_digit_models
    from edgefleet.edge_agent.depot import DepotCache

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        control, _ = train_digit_models(tmp / "models")
        with local_stack(tmp / "stack", reconcile_interval_s=0.5) as stack:
            m = control.manifest
            stack.client.push_model(control.path, name=m.name, version=m.version,
                                    manifest=m.model_dump(mode="json", by_alias=True))
            base_origin, base_delivered, size = _run(stack, tmp, args.devices, m.label, None)
            cache = DepotCache(stack.settings.base_url, tmp / "depot",
                               token=stack.client.create_token("depot", "viewer")["token"])
            host, port = cache.start("127.0.0.1", 0)
            try:
                dev_origin, delivered, _ = _run(stack, tmp, args.devices, m.label, f"http://{host}:{port}")
            finally:
                cache.stop()
    n = args.devices
    print(f"bundle {size} bytes, {n} devices")
    print(f"{'':28} {'from controller':>16} {'delivered':>12} {'ratio':>8}")
    print(f"{'no cache (baseline)':28} {base_origin:>16} {base_delivered:>12} {base_origin / base_delivered:>8.3f}")
    total = cache.stats.upstream_bytes + dev_origin
    print(f"{'depot cache':28} {total:>16} {delivered:>12} {total / delivered:>8.3f}")
    print(f"  of which cache ← controller {cache.stats.upstream_bytes:>10} (image metadata + 1 bundle), "
          f"devices ← controller {dev_origin} (director metadata)")
    st = cache.stats
    print(f"bundles: from controller {st.upstream_target_bytes}, delivered {delivered}: "
          f"ratio {st.upstream_target_bytes / delivered:.4f} (goal ≈ 1/{n} = {1 / n:.4f})")
    print(f"all bytes incl. TUF metadata: ratio {total / (delivered + st.served_bytes - st.served_target_bytes + dev_origin):.4f} "
          f"(metadata is a fixed ~{(base_origin - base_delivered) // n} bytes per device; it dominates for a "
          f"{size}-byte demo bundle and vanishes for real models)")


if __name__ == "__main__":
    main()
