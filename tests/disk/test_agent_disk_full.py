"""Disk-full drills on a real agent whose data dir is a real small tmpfs (issue 13, item 1).

Each drill: a small control model runs; a padded ~2 MiB candidate is deployed to the same
slot through a real HTTP hop that can hold the download at a chosen byte, while the test
fills the disk. The agent thread never exits, the pipeline's frame counter keeps moving on
the old model, the controller sees ``E_DISK_FULL`` with the bytes needed, and once the
filler is deleted the update completes — resuming what it had, never from byte 0 again.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edgefleet.cloud.tables import Device

from ..conftest import push, slot_of, wait_until
from .conftest import HoldProxy, fill, free, padded_model, unfill

BIG = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def big_model(digit_models, tmp_path_factory):  # noqa: ANN001, ANN201
    control, _ = digit_models
    return padded_model(control, tmp_path_factory.mktemp("big") / "big.onnx", size=BIG, version="9.0")


def _frames(agent) -> int:  # noqa: ANN001
    return int(agent.agent.pipeline.totals.get("frames", 0))


def _still_inferring(agent, label: str = "digits:1.0") -> None:  # noqa: ANN001
    before = _frames(agent)
    wait_until(lambda: _frames(agent) > before + 5, timeout=10, message="frame counter advancing")
    assert agent.thread.is_alive()
    assert agent.agent.pipeline.control is not None and agent.agent.pipeline.control.ref.label == label


def _reported(stack, device_id: str) -> dict:  # noqa: ANN001
    with stack.controller.session() as s:
        d = s.get(Device, device_id)
        return dict(d.reported or {}) if d is not None else {}


def _disk_full_seen(stack, device_id: str) -> dict | None:  # noqa: ANN001
    s = slot_of(stack, device_id)
    if s["error_code"] != "E_DISK_FULL":
        return None
    rep = (_reported(stack, device_id).get("slots") or {}).get("control") or {}
    return rep if rep.get("error_code") == "E_DISK_FULL" and rep.get("bytes_needed") else None


def _running_small(stack, proxy: HoldProxy, small_disk, disk_agents, digit_models, name: str, size: str = "8m"):  # noqa: ANN001, ANN202
    disk = small_disk(size)
    agent = disk_agents(stack, name, disk / "agent", controller_url=proxy.url)
    push(stack, digit_models[0])
    stack.client.deploy("digits:1.0", "control", [name])
    wait_until(lambda: slot_of(stack, name)["installed"] == "digits:1.0", message="small model active")
    proxy.target_bytes = 0  # count only the big bundle from here
    return disk, agent


def _bundle_size(stack, version: str) -> int:  # noqa: ANN001
    return next(m["size"] for m in stack.client.list_models() if m["version"] == version)


def _bundles_on_disk(data_dir: Path) -> tuple[list[str], list[str]]:
    tars = [p.name for p in (data_dir / "downloads").glob("*.bundle")] if (data_dir / "downloads").is_dir() else []
    dirs = [p.name for p in (data_dir / "bundles").iterdir() if not p.name.startswith(".")]
    return tars, dirs


def test_room_for_the_download_not_the_unpack_reports_and_finishes_without_refetching(
        stack, proxy, small_disk, disk_agents, digit_models, big_model) -> None:
    disk, agent = _running_small(stack, proxy, small_disk, disk_agents, digit_models, "cam-unpack")
    push(stack, big_model)
    length = _bundle_size(stack, "9.0")
    proxy.hold(length - 64 * 1024)
    stack.client.deploy("digits:9.0", "control", ["cam-unpack"])
    assert proxy.holding.wait(15), "download never reached the hold"
    part_dir = disk / "agent" / "trust" / "downloads"
    wait_until(lambda: sum(p.stat().st_size for p in part_dir.glob("*.part")) >= length - 64 * 1024,
               message="part file written up to the hold")
    fill(disk, leave=64 * 1024 + 256 * 1024)  # the rest of the download fits, the unpack does not
    proxy.release()
    rep = wait_until(lambda: _disk_full_seen(stack, "cam-unpack"), timeout=15, message="E_DISK_FULL at the controller")
    assert rep["bytes_needed"] >= length - 64 * 1024 and rep["bytes_free"] < rep["bytes_needed"]
    assert "unpacking digits:9.0" in rep["error"] and "bytes" in rep["error"]
    assert slot_of(stack, "cam-unpack")["installed"] == "digits:1.0"
    _still_inferring(agent)
    assert proxy.target_bytes == length  # the whole bundle came once
    unfill(disk)
    wait_until(lambda: slot_of(stack, "cam-unpack")["installed"] == "digits:9.0", timeout=15, message="big model active")
    assert proxy.target_bytes == length  # unpacked from the download it had: not one byte more
    _still_inferring(agent, "digits:9.0")
    tars, dirs = _bundles_on_disk(disk / "agent")
    assert tars == []  # stored once: the unpacked copy (and its digest record) only
    assert all((disk / "agent" / "bundles" / d / ".verified.json").exists() for d in dirs)


def test_disk_full_mid_download_keeps_the_part_and_resumes_it_after_space_frees(
        stack, proxy, small_disk, disk_agents, digit_models, big_model) -> None:
    disk, agent = _running_small(stack, proxy, small_disk, disk_agents, digit_models, "cam-part")
    push(stack, big_model)
    length = _bundle_size(stack, "9.0")
    proxy.hold(length // 2)
    stack.client.deploy("digits:9.0", "control", ["cam-part"])
    assert proxy.holding.wait(15), "download never reached the hold"
    part_dir = disk / "agent" / "trust" / "downloads"
    wait_until(lambda: sum(p.stat().st_size for p in part_dir.glob("*.part")) >= length // 2, message="half written")
    fill(disk)  # nothing left
    proxy.release()
    rep = wait_until(lambda: _disk_full_seen(stack, "cam-part"), timeout=15, message="E_DISK_FULL at the controller")
    assert rep["bytes_needed"] > 0 and "download" in rep["error"]
    (part,) = part_dir.glob("*.part")
    have = part.stat().st_size
    assert length // 2 <= have < length  # kept, not deleted
    _still_inferring(agent)
    ranges_before, served_before = len(proxy.target_ranges), proxy.target_bytes
    unfill(disk)
    wait_until(lambda: slot_of(stack, "cam-part")["installed"] == "digits:9.0", timeout=15, message="big model active")
    resumed = proxy.target_ranges[ranges_before:]
    assert resumed == [f"bytes={have}-"]  # resumed from the part, not from byte 0
    assert proxy.target_bytes - served_before == length - have  # exactly the missing bytes
    _still_inferring(agent, "digits:9.0")
    assert not part.exists()


def test_too_little_space_is_refused_before_downloading_with_the_figures(
        stack, proxy, small_disk, disk_agents, digit_models, big_model) -> None:
    disk, agent = _running_small(stack, proxy, small_disk, disk_agents, digit_models, "cam-pre")
    push(stack, big_model)
    length = _bundle_size(stack, "9.0")
    fill(disk, leave=length + 512 * 1024)  # the download would fit; download + unpack + margin do not
    stack.client.deploy("digits:9.0", "control", ["cam-pre"])
    rep = wait_until(lambda: _disk_full_seen(stack, "cam-pre"), timeout=15, message="E_DISK_FULL at the controller")
    assert rep["bytes_needed"] >= 2 * length and rep["bytes_free"] < rep["bytes_needed"]
    assert "to download" in rep["error"] and "unpacked" in rep["error"]
    assert proxy.target_bytes == 0 and not list((disk / "agent" / "trust" / "downloads").glob("*.part"))
    blocked = _reported(stack, "cam-pre").get("update_blocked") or {}
    assert blocked.get("code") == "E_DISK_FULL"
    _still_inferring(agent)
    unfill(disk)
    wait_until(lambda: slot_of(stack, "cam-pre")["installed"] == "digits:9.0", timeout=15, message="big model active")
    assert proxy.target_bytes == length


def test_full_disk_at_start_runs_the_installed_model_and_reports(
        stack, proxy, small_disk, disk_agents, digit_models) -> None:
    disk, agent = _running_small(stack, proxy, small_disk, disk_agents, digit_models, "cam-start", size="4m")
    creds = agent.creds  # type: ignore[attr-defined]
    agent.stop()
    assert not agent.thread.is_alive()
    fill(disk)
    assert free(disk) < 4096
    t0 = time.monotonic()
    again = disk_agents(stack, "cam-start", disk / "agent", controller_url=proxy.url, creds=creds,
                        capture={"enabled": True, "min_free_bytes": 0})  # the outbox cannot even open
    _still_inferring(again)

    def disk_reported() -> dict | None:
        d = _reported(stack, "cam-start").get("disk") or {}
        ts = _reported(stack, "cam-start").get("ts")
        return d if d.get("code") == "E_DISK_FULL" and ts else None

    d = wait_until(disk_reported, timeout=15, message="reported.disk at the controller")
    assert d["what"] in ("state", "outbox") and d["bytes_needed"] > d["bytes_free"]
    assert slot_of(stack, "cam-start")["installed"] == "digits:1.0"
    assert time.monotonic() - t0 < 20
    assert again.thread.is_alive()
    unfill(disk)
    wait_until(lambda: again.agent.store.save(again.agent.state), timeout=5, message="state writable again")
    assert again.thread.is_alive()
