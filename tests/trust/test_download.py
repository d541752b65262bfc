"""Resumable download: drops, dripping servers, full disks and a killed agent.

All against a real HTTP server on 127.0.0.1 (``conftest.start_server``); the disk-full
cases use a real small tmpfs when this process may mount one, and otherwise a real
``RLIMIT_FSIZE`` in a child process (EFBIG, reported as ``E_DISK_FULL`` too).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edgefleet.registry.tuf import ResumableFetcher, TufError

from .conftest import HW, TrustEnv, payload

DATA = payload(2_000_000)


def _assigned(env: TrustEnv, data: bytes = DATA, device_id: str = "dev-1"):  # noqa: ANN202
    t = env.release(data)
    env.director.assign(device_id, HW, {"control": t.name})
    return t


def test_five_connection_drops_resume_with_range_and_no_extra_bytes(env: TrustEnv) -> None:
    _assigned(env)
    dev = env.device()
    target = dev.check().targets[0]
    env.hooks.drop_after = [150_000] * 5
    fetcher = dev.fetcher
    before = fetcher.stats.bytes_received
    out = dev.download(target, env.root / "out.bin")
    assert out.read_bytes() == DATA
    assert fetcher.stats.resumes == 5
    ranges = [r for p, r in env.hooks.requests if "/targets/" in p]
    assert ranges[0] is None and all(r is not None for r in ranges[1:]) and len(ranges) == 6
    assert fetcher.stats.bytes_received - before == len(DATA)


def test_server_ignoring_range_restarts_from_zero_and_still_verifies(env: TrustEnv) -> None:
    _assigned(env)
    dev = env.device()
    target = dev.check().targets[0]
    env.hooks.drop_after = [500_000]
    env.hooks.ignore_range = True
    assert dev.download(target, env.root / "out.bin").read_bytes() == DATA


def test_server_dripping_slower_than_gap_timeout_is_refused(env: TrustEnv) -> None:
    _assigned(env)
    dev = env.device(fetcher=ResumableFetcher(gap_timeout=0.3, deadline=3.0, max_stalls=2, backoff=0.01))
    target = dev.check().targets[0]
    env.hooks.drip = (1, 1.0)
    t0 = time.monotonic()
    with pytest.raises(TufError) as ei:
        dev.download(target, env.root / "out.bin")
    assert ei.value.code == "E_DOWNLOAD_TIMEOUT"
    assert time.monotonic() - t0 < 5.0
    assert not (env.root / "out.bin").exists()


def test_server_dripping_within_gap_timeout_hits_total_deadline(env: TrustEnv) -> None:
    _assigned(env)
    dev = env.device(fetcher=ResumableFetcher(gap_timeout=1.0, deadline=1.0, backoff=0.01))
    target = dev.check().targets[0]
    env.hooks.drip = (2000, 0.02)
    t0 = time.monotonic()
    with pytest.raises(TufError) as ei:
        dev.download(target, env.root / "out.bin")
    assert ei.value.code == "E_DOWNLOAD_TIMEOUT"
    assert time.monotonic() - t0 < 3.0
    assert not (env.root / "out.bin").exists()


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    return r.returncode == 0


def test_disk_full_during_download_is_refused_and_previous_file_stays(env: TrustEnv, tmp_path: Path) -> None:
    small = tmp_path / "small-disk"
    if not _mount_tmpfs(small, "1m"):
        pytest.skip("cannot mount a tmpfs here; test_file_size_limit_... covers the same path")
    try:
        _assigned(env)
        dev = env.device(state=small / "state")
        target = dev.check().targets[0]
        previous = small / "slots" / "control.bundle"
        previous.parent.mkdir()
        previous.write_bytes(b"model that runs now")
        with pytest.raises(TufError) as ei:
            dev.download(target, small / "slots" / "staged.bundle")
        assert ei.value.code == "E_DISK_FULL"
        assert previous.read_bytes() == b"model that runs now"
        assert not (small / "slots" / "staged.bundle").exists()
        (part,) = (small / "state" / "downloads").glob("*.part")  # kept, to resume from
        have = part.stat().st_size
        assert 0 < have < len(DATA)
        previous.unlink()  # still too small for the rest: resumes, refused again, part grows or stays
        env.hooks.requests.clear()
        with pytest.raises(TufError):
            dev.download(target, small / "slots" / "staged.bundle")
        assert [r for p, r in env.hooks.requests if "/targets/" in p][0] == f"bytes={have}-"
    finally:
        subprocess.run(["umount", str(small)], check=False)


_CHILD = textwrap.dedent(
    """
    import json, resource, signal, sys
    from edgefleet.registry.tuf import DeviceVerifier, ResumableFetcher, TufError
    args = json.loads(sys.argv[1])
    if args.get("fsize"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (args["fsize"], args["fsize"]))
    v = DeviceVerifier.for_controller(args["url"], "dev-1", args["hw"], args["state"],
                                      fetcher=ResumableFetcher(gap_timeout=5, deadline=60))
    try:
        target = v.check().targets[0]
        print("started", flush=True)
        v.download(target, args["dest"])
        print("OK", flush=True)
    except TufError as exc:
        print(exc.code, flush=True)
    """
)


def _child(env: TrustEnv, state: Path, dest: Path, **extra: object) -> subprocess.Popen[str]:
    args = {"url": env.url, "hw": HW, "state": str(state), "dest": str(dest), **extra}
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, json.dumps(args)], stdout=subprocess.PIPE, text=True,
    )


def test_file_size_limit_during_download_reports_disk_full(env: TrustEnv) -> None:
    _assigned(env)
    dev = env.device()  # provisions the state dir
    proc = _child(env, dev.state_dir, env.root / "staged.bundle", fsize=500_000)
    out, _ = proc.communicate(timeout=60)
    assert out.split()[-1] == "E_DISK_FULL"
    assert not (env.root / "staged.bundle").exists()


def test_agent_killed_mid_download_resumes_and_never_activates_partial_file(env: TrustEnv) -> None:
    _assigned(env)
    dev = env.device()
    dest = env.root / "slots" / "control.bundle"
    env.hooks.drip = (64 * 1024, 0.05)
    proc = _child(env, dev.state_dir, dest)
    part_dir = dev.state_dir / "downloads"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        parts = list(part_dir.glob("*.part")) if part_dir.exists() else []
        if parts and parts[0].stat().st_size >= 300_000:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert not dest.exists()
    (part,) = part_dir.glob("*.part")
    have = part.stat().st_size
    assert 0 < have < len(DATA)

    env.hooks.drip = None
    env.hooks.requests.clear()
    restarted = env.device()
    target = restarted.check().targets[0]
    assert restarted.download(target, dest).read_bytes() == DATA
    assert [r for p, r in env.hooks.requests if "/targets/" in p] == [f"bytes={have}-"]
    assert env.hooks.sent[-1] == (f"bytes={have}-", len(DATA) - have)
    assert not part.exists()


def test_corrupt_partial_file_from_a_previous_run_is_discarded_and_refetched(env: TrustEnv) -> None:
    _assigned(env)
    dev = env.device()
    target = dev.check().targets[0]
    part_dir = dev.state_dir / "downloads"
    part_dir.mkdir(parents=True, exist_ok=True)
    (part_dir / f"{target.digest}.part").write_bytes(b"\0" * 100_000)  # e.g. power loss garbage
    assert dev.download(target, env.root / "out.bin").read_bytes() == DATA
