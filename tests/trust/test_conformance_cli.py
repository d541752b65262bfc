"""``fleet-agent tuf-client``: the tuf-conformance client CLI, run as a real subprocess
against the image repository served on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

from .conftest import TrustEnv, payload


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgefleet.edge_agent.tuf_client", *args],
        capture_output=True, text=True, timeout=60,
    )


def test_init_refresh_download_and_cache(env: TrustEnv, tmp_path: Path) -> None:
    a = env.release(payload(50_000, seed=7), version="1.0.0")
    b = env.release(payload(20_000, seed=11), version="2.0.0")
    root = tmp_path / "root.json"
    root.write_bytes(env.image.root_bytes(1))
    env.image.rotate("root")  # the client must walk the root chain
    md, out = tmp_path / "md", tmp_path / "targets"
    murl, turl = f"{env.url}/tuf/image/metadata", f"{env.url}/tuf/image/targets"

    assert cli("--metadata-dir", str(md), "init", str(root)).returncode == 0
    assert not env.hooks.requests  # init makes no request
    r = cli("--metadata-dir", str(md), "--metadata-url", murl, "refresh")
    assert r.returncode == 0, r.stderr
    assert {"root.json", "timestamp.json", "snapshot.json", "targets.json"} <= {p.name for p in md.iterdir()}
    assert (md / "root.json").read_bytes() == env.image.root_bytes()  # version 2, after rotation

    args = ["--metadata-dir", str(md), "--metadata-url", murl, "--target-name", a.name,
            "--target-name", b.name, "--target-base-url", turl, "--target-dir", str(out), "download"]
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert (out / quote(a.name, safe="")).read_bytes() == payload(50_000, seed=7)
    assert (out / quote(b.name, safe="")).read_bytes() == payload(20_000, seed=11)

    env.hooks.requests.clear()
    assert cli(*args).returncode == 0
    assert not [p for p, _ in env.hooks.requests if "/targets/" in p]  # served from cache


def test_failures_exit_1_and_store_nothing(env: TrustEnv, tmp_path: Path) -> None:
    t = env.release(payload(30_000, seed=3))
    root = tmp_path / "root.json"
    root.write_bytes(env.image.root_bytes())
    md, out = tmp_path / "md", tmp_path / "targets"
    murl, turl = f"{env.url}/tuf/image/metadata", f"{env.url}/tuf/image/targets"
    assert cli("--metadata-dir", str(md), "init", str(root)).returncode == 0

    r = cli("--metadata-dir", str(md), "--metadata-url", murl, "--target-name", "digits/none/r9.tar",
            "--target-base-url", turl, "--target-dir", str(out), "download")
    assert r.returncode == 1 and "E_TARGET_MISSING" in r.stderr

    env.hooks.overrides[env.target_path(t)] = payload(30_000, seed=4)  # same length, other bytes
    r = cli("--metadata-dir", str(md), "--metadata-url", murl, "--target-name", t.name,
            "--target-base-url", turl, "--target-dir", str(out), "download")
    assert r.returncode == 1 and "E_HASH_MISMATCH" in r.stderr
    assert not (out / quote(t.name, safe="")).exists()

    r = cli("--metadata-dir", str(md), "--metadata-url", f"{env.url}/nowhere", "refresh")
    assert r.returncode == 1
    r = cli("--metadata-dir", str(tmp_path / "empty"), "--metadata-url", murl, "refresh")
    assert r.returncode == 1 and "E_NOT_PROVISIONED" in r.stderr
