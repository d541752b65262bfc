"""Depot cache: fetched from the controller once, served to many agents, never trusted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgefleet.edge_agent.depot import DepotCache
from tests.conftest import push, slot_of, wait_until

HW = "cpu-x86_64"


def _cache(stack: Any, tmp_path: Path) -> tuple[DepotCache, str]:
    token = stack.client.create_token("depot", "viewer")["token"]
    cache = DepotCache(stack.url, tmp_path / "depot", token=token, ttl_s=1.0)
    host, port = cache.start("127.0.0.1", 0)
    return cache, f"http://{host}:{port}"


def _deploy(stack: Any, model: Any, devices: list[str]) -> None:
    push(stack, model)
    stack.client.deploy(model.manifest.label, "control", devices)


def _installed(stack: Any, devices: list[str], label: str) -> bool:
    return all(slot_of(stack, d)["installed"] == label for d in devices)


def test_cache_serves_three_agents_from_one_controller_download(stack, agents, digit_models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    control, _ = digit_models
    cache, url = _cache(stack, tmp_path)
    try:
        devices = ["depot-1", "depot-2", "depot-3"]
        running = [agents(stack, d, cache_url=url, hardware_id=HW) for d in devices]
        _deploy(stack, control, devices)
        wait_until(lambda: _installed(stack, devices, control.manifest.label), timeout=60,
                   message="3 agents installed through the cache")
        target = next((tmp_path / "depot" / "image" / "targets").rglob("*.tar"))
        size = target.stat().st_size
        # one copy of the bundle came from the controller (+ the image metadata, a few KB)
        assert size <= cache.stats.upstream_bytes < size + 64 * 1024
        assert cache.stats.served_bytes >= 3 * size
        for ra in running:  # each agent got only its director metadata from the controller
            assert ra.agent.verifier.fallbacks == 0
            assert ra.agent.verifier.fetcher.stats.bytes_received < size
    finally:
        cache.stop()


def test_tampered_cache_is_caught_and_the_agent_falls_back_to_the_controller(stack, agents, digit_models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    control, _ = digit_models
    cache, url = _cache(stack, tmp_path)
    try:
        push(stack, control)
        ra = agents(stack, "depot-1", cache_url=url, hardware_id=HW)
        # the first device's download fills the cache; tamper the cached copy before it is served
        _tamper_on_fetch(cache)
        stack.client.deploy(control.manifest.label, "control", ["depot-1"])
        wait_until(lambda: _installed(stack, ["depot-1"], control.manifest.label), timeout=60,
                   message="installed from the controller after the cache served bad bytes")
        assert ra.agent.verifier.fallbacks >= 1
        size = next((tmp_path / "depot" / "image" / "targets").rglob("*.tar")).stat().st_size
        assert ra.agent.verifier.fetcher.stats.bytes_received >= size  # the bundle came from the controller
        assert slot_of(stack, "depot-1").get("error_code") in (None, "")
    finally:
        cache.stop()


def test_absent_cache_falls_back_to_the_controller(stack, agents, digit_models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    control, _ = digit_models
    ra = agents(stack, "depot-1", cache_url="http://127.0.0.1:9", hardware_id=HW)
    push(stack, control)
    stack.client.deploy(control.manifest.label, "control", ["depot-1"])
    wait_until(lambda: _installed(stack, ["depot-1"], control.manifest.label), timeout=60,
               message="installed from the controller with no cache")
    assert ra.agent.verifier.fallbacks >= 1


def _tamper_on_fetch(cache: DepotCache) -> None:
    """Every target the cache fetches from now on is stored with one byte flipped."""
    real = cache._fetch

    def tampering(rel: str, path: Path) -> Path | None:
        got = real(rel, path)
        if got is not None and rel.startswith("image/targets/"):
            data = bytearray(got.read_bytes())
            data[len(data) // 2] ^= 0xFF
            got.write_bytes(bytes(data))
        return got

    cache._fetch = tampering  # type: ignore[method-assign]
