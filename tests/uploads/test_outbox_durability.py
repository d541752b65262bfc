"""The outbox keeps every item whose put() returned, across SIGKILL at random points."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from edgefleet.edge_agent.outbox import Outbox

REPO = Path(__file__).resolve().parents[2]


def _run_and_kill(root: Path, rng: random.Random) -> list[tuple[int, str, str]]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("_put_loop.py")), str(root)],
        stdout=subprocess.PIPE, cwd=REPO, env=env,
    )
    assert proc.stdout is not None
    lines = []
    wanted = rng.randint(1, 25)
    while len(lines) < wanted:
        line = proc.stdout.readline()
        assert line, "child died before being killed"
        lines.append(line)
    time.sleep(rng.uniform(0, 0.02))  # land somewhere inside a later put()
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate(timeout=30)
    lines += rest.splitlines(keepends=True)
    out = []
    for line in lines:
        item_id, event_id, sha = line.decode().split()
        out.append((int(item_id), event_id, sha))
    return out


def test_outbox_loses_no_item_across_sigkill_and_leaves_no_half_items(tmp_path: Path) -> None:
    rng = random.Random(5)
    root = tmp_path / "outbox"
    acknowledged: list[tuple[int, str, str]] = []
    for _ in range(4):
        acknowledged += _run_and_kill(root, rng)
        with Outbox(root, max_bytes=1 << 34, min_free_bytes=0) as outbox:
            items = {i.item_id: i for i in outbox.pending(limit=100_000)}
            # every put() that returned is there, whole
            for item_id, event_id, sha in acknowledged:
                item = items[item_id]
                assert item.event.event_id == event_id
                assert item.clip_path is not None
                assert hashlib.sha256(item.clip_path.read_bytes()).hexdigest() == sha == item.clip_sha256
            # no half items: every indexed item has both its files, of the right size
            for item in items.values():
                assert item.clip_path is not None and item.keyframe_path is not None
                assert item.clip_path.stat().st_size == item.clip_size
                assert item.keyframe_path.stat().st_size == item.keyframe_size
            # orphans (temp files, files of a put that never committed) are gone
            referenced = {p.name for i in items.values() for p in (i.clip_path, i.keyframe_path) if p}
            assert {p.name for p in (root / "files").iterdir()} == referenced
    assert len(acknowledged) >= 5
