"""The first key setup is all or nothing: a process SIGKILLed at any step of it leaves a whole
setup or none, and the next start finishes it or starts over — never keys beside keys. A
partial setup an older version left is refused, naming the files, and kept as it is.

The setup runs in a real process (forked from one that imported its modules once), killed by the test hook ``EDGEFLEET_TEST_TRUST_SETUP_KILL_AT``
at step 1, 2, … until a run gets through (so every step is covered, however many there are),
and after random short delays; after each kill the next start is checked with python-tuf."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Root
from tuf.ngclient._internal.trusted_metadata_set import TrustedMetadataSet
from tuf.ngclient.config import EnvelopeType

from edgefleet.cloud.trust import first_setup
from edgefleet.cloud.trust.first_setup import KILL_ENV, PartialTrustSetup
from edgefleet.cloud.trust.repository import Trust
from edgefleet.registry import LocalBlobStore
from edgefleet.registry.tuf import KeyringError
from edgefleet.registry.tuf.keyplace import Placement

from .conftest import fleet

SETUP = """
import json
import os
import sys
import traceback
from pathlib import Path
from edgefleet.cloud.trust.repository import Trust
from edgefleet.registry import LocalBlobStore
from edgefleet.registry.tuf.keyplace import Placement


def setup(home, usb):
    if usb is not None:  # fleet keys init --offline-dir: 2 of 2 root keys on the medium
        Trust.init(home, LocalBlobStore(home / "blobs"), root_threshold=2, root_keys=2,
                   placement=Placement(directory=usb))
    else:  # the first start: a 1-of-1 demo setup
        Trust.open(home, LocalBlobStore(home / "blobs"))


for line in sys.stdin:  # one setup per line, each in a child forked from this (single-threaded) process
    job = json.loads(line)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.environ.pop(job["env"], None)
        if job["kill_at"] is not None:
            os.environ[job["env"]] = str(job["kill_at"])
        code, error = 0, b""
        try:
            setup(Path(job["home"]), Path(job["usb"]) if job["usb"] else None)
        except BaseException:
            code, error = 1, traceback.format_exc().encode()
        os.write(write, error)
        os._exit(code)
    os.close(write)
    print(pid, flush=True)
    error = b""
    while chunk := os.read(read, 65536):
        error += chunk
    os.close(read)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"returncode": -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status),
                      "error": error.decode(errors="replace")}), flush=True)
"""


class Forks:
    """A real process per setup, SIGKILLed by the test hook or after a delay, but forked from one
    process that imported the setup's modules once (1.7 s a process here, some 40 setups a test)."""

    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
        self.proc = subprocess.Popen([sys.executable, "-c", SETUP], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def run(self, home: Path, usb: Path | None, *, kill_at: int | None = None,
            kill_after: float | None = None) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        job = {"home": str(home), "usb": str(usb) if usb else None, "kill_at": kill_at, "env": KILL_ENV}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line.strip().isdigit(), f"the fork server died: {line!r}"
        if kill_after is not None:
            time.sleep(kill_after)
            try:
                os.kill(int(line), signal.SIGKILL)
            except ProcessLookupError:
                pass  # finished first
        done = json.loads(self.proc.stdout.readline())
        assert done["returncode"] in (0, -signal.SIGKILL), done["error"]
        return int(done["returncode"])

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def forks() -> Iterator[Forks]:
    f = Forks()
    yield f
    f.close()


def _next_start(home: Path, usb: Path | None) -> Trust:
    blobs = LocalBlobStore(home / "blobs")
    if usb is None:
        return Trust.open(home, blobs)
    try:  # the operator runs `fleet keys init` again: it finishes the committed setup, or makes one
        Trust.init(home, blobs, root_threshold=2, root_keys=2, placement=Placement(directory=usb))
    except KeyringError as exc:
        assert "exists already" in str(exc), exc
    return Trust.load(home, blobs)


def _staged_root_keyids(home: Path) -> list[str] | None:
    """The image root keyids of a committed stage (what roll-forward must install), if any."""
    for stage in home.glob(f"{first_setup.STAGE_PREFIX}*"):
        ring = stage / "keys" / "keyring.json"
        if not ring.exists():  # killed after it was moved, before the stage was removed
            ring = home / "keys" / "keyring.json"
        if (stage / first_setup.COMMIT_FILE).exists():
            return [k["keyid"] for k in json.loads(ring.read_text())["repos"]["image"]["root"]["keys"]]
    return None


def _assert_whole(trust: Trust, home: Path, usb: Path | None) -> None:
    """One consistent setup: python-tuf verifies the chain, root names exactly the keyring's keys,
    every key file the keyring names is there and no other trust key is, no stage is left."""
    assert not list(home.glob(f"{first_setup.STAGE_PREFIX}*"))
    ring = json.loads((home / "keys" / "keyring.json").read_text())["repos"]
    online = {k["uri"].split(":", 1)[1] for by_role in ring.values() for rk in by_role.values()
              for k in rk["keys"] if k["uri"]}
    on_disk = {p.name for p in (home / "keys").glob("*.pem") if p.name.startswith(("image-", "director-"))}
    assert on_disk == online, (on_disk, online)
    if usb is not None:
        offline = {k["location"]["file"] for by_role in ring.values() for k in by_role["root"]["keys"]}
        assert {p.name for p in usb.iterdir()} == offline and len(offline) == 4  # 2 per repository, nothing else
    for repo in ("image", "director"):
        root = Metadata[Root].from_bytes((home / "tuf" / repo / "root.json").read_bytes())
        assert (home / "tuf" / repo / "1.root.json").read_bytes() == (home / "tuf" / repo / "root.json").read_bytes()
        for role, rk in ring[repo].items():
            assert sorted(root.signed.roles[role].keyids) == sorted(k["keyid"] for k in rk["keys"]), (repo, role)
    tuf = home / "tuf" / "image"
    client = TrustedMetadataSet((tuf / "root.json").read_bytes(), EnvelopeType.METADATA)  # verifies root
    client.update_timestamp((tuf / "timestamp.json").read_bytes())
    client.update_snapshot((tuf / f"{client.timestamp.snapshot_meta.version}.snapshot.json").read_bytes())
    client.update_targets((tuf / f"{client.snapshot.meta['targets.json'].version}.targets.json").read_bytes())
    TrustedMetadataSet((home / "tuf" / "director" / "root.json").read_bytes(), EnvelopeType.METADATA)
    assert trust.image.repo.signers("timestamp")  # the controller can sign with its online keys


def _after_kill(home: Path, usb: Path | None, caplog: pytest.LogCaptureFixture) -> tuple[bytes, str]:
    staged = _staged_root_keyids(home)
    leftover = [s for s in home.glob(f"{first_setup.STAGE_PREFIX}*") if not (s / first_setup.COMMIT_FILE).exists()]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgefleet.cloud.trust.first_setup"):
        trust = _next_start(home, usb)
    _assert_whole(trust, home, usb)
    if leftover:
        assert any("removed the leftover of an interrupted first trust setup" in r.getMessage()
                   and str(leftover[0]) in r.getMessage() for r in caplog.records)
    keyring = json.loads((home / "keys" / "keyring.json").read_text())
    if staged is not None:  # committed before the kill: finished, not made again
        assert [k["keyid"] for k in keyring["repos"]["image"]["root"]["keys"]] == staged
    root = (home / "tuf" / "image" / "root.json").read_bytes()
    again = _next_start(home, usb)  # agents' trust stays: the next start changes nothing
    assert again.image.root_bytes() == root and again.director.root_bytes() == trust.director.root_bytes()
    return root, "committed" if staged is not None else ("discarded" if leftover else "none")


@pytest.mark.slow
@pytest.mark.parametrize("offline", [False, True], ids=["first-start", "offline-dir"])
def test_setup_killed_at_every_step_leaves_all_or_nothing(tmp_path: Path, offline: bool, forks: Forks,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    outcomes = []
    for step in range(1, 40):
        home = tmp_path / f"ctl-{step}"
        usb = tmp_path / f"usb-{step}" if offline else None
        if forks.run(home, usb, kill_at=step) == 0:
            break
        outcomes.append(_after_kill(home, usb, caplog)[1])
    else:
        pytest.fail("the setup never got through its steps")
    assert step >= 10, step  # every step, before and after the commit point, was killed once
    assert outcomes.count("discarded") >= 4 and outcomes.count("committed") >= 4, outcomes


def test_setup_killed_after_random_delays(tmp_path: Path, forks: Forks, caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(14)
    start = time.monotonic()
    forks.run(tmp_path / "timing", None)
    whole = time.monotonic() - start  # one setup on this machine, now (the modules are imported already)
    for i in range(3):  # every step is killed by the test above; these land between steps
        home = tmp_path / f"ctl-{i}"
        usb = tmp_path / f"usb-{i}" if i % 2 else None
        forks.run(home, usb, kill_after=rng.uniform(0.3, 1.0) * whole)
        _after_kill(home, usb, caplog)


def test_a_partial_setup_of_an_older_version_is_refused_and_kept(tmp_path: Path) -> None:
    home = tmp_path / "ctl"
    keys = home / "keys"
    keys.mkdir(parents=True)
    stray = keys / "image-root-0123456789ab.pem"  # an older version died after writing some keys
    stray.write_bytes(b"-----BEGIN PRIVATE KEY-----\nold\n-----END PRIVATE KEY-----\n")
    (keys / "audit-ed25519.pem").write_bytes(b"audit key: not a trust key")
    before = sorted(p.name for p in keys.iterdir())
    with pytest.raises(PartialTrustSetup) as err:
        Trust.open(home, LocalBlobStore(home / "blobs"))
    msg = str(err.value)
    assert str(stray) in msg and f"missing {keys / 'keyring.json'}" in msg and "fleet cloud restore" in msg, msg
    assert sorted(p.name for p in keys.iterdir()) == before and not (home / "tuf").exists()
    code, out = fleet("keys", "init", "--data-dir", home)  # the CLI says the same, and writes nothing
    assert code == 1 and "partial trust setup" in out and str(stray) in out, out
    assert sorted(p.name for p in keys.iterdir()) == before


def test_a_keyring_without_its_director_root_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "ctl"
    Trust.open(home, LocalBlobStore(home / "blobs"))
    for name in ("root.json", "1.root.json"):
        (home / "tuf" / "director" / name).unlink()  # as an older version left it, killed before the director
    snapshot = next((home / "keys").glob("image-snapshot-*.pem"))
    snapshot.unlink()
    with pytest.raises(PartialTrustSetup) as err:
        Trust.open(home, LocalBlobStore(home / "blobs"))
    msg = str(err.value)
    assert "is incomplete" in msg and str(home / "tuf" / "director" / "root.json") in msg and str(snapshot) in msg, msg
    assert not (home / "tuf" / "director" / "root.json").exists()  # nothing was made anew
