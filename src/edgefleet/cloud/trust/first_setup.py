"""The first setup of the trust keys, all or nothing, and the check that a setup is whole.

``Trust.init`` (``fleet keys init``, the first ``fleet cloud serve``) makes the keyring
(``keys/``: ``keyring.json`` and the online PEMs), the root keys kept offline (``--offline-dir``)
and the first signed metadata (``tuf/``: both roots, targets, bins, snapshot, timestamp). A
process killed half-way must leave either all of it or nothing, so ``build`` runs as a
journal:

1. *stage*: everything is made in ``<data dir>/.trust-setup-XXXX/`` (``keys/``, ``tuf/``);
   offline root keys in ``<offline dir>/.edgefleet-setup-XXXX/``, which ``offline.json`` in the
   stage names before any key is written there. Files are fsynced, then every directory.
2. *commit*: ``commit.json`` (the list of moves) is written atomically into the stage.
   Before it exists the stage is rubbish; once it exists the set is complete and durable.
3. *move*: offline keys into the offline dir, ``tuf/`` into the data dir, the key files into
   ``keys/`` and ``keyring.json`` last (what ``Trust.exists`` looks for); then the stage goes.

``recover`` runs before any start or setup, under ``setup_lock`` (an advisory lock, released
by the kernel when its holder dies): a stage without ``commit.json`` is removed with a WARNING
(and the setup starts over), one with it is moved into place (every move is idempotent).
``refuse_partial`` then refuses what an older version's interrupted setup left (keys without
``keyring.json``, or a keyring whose files or roots are missing), naming the files, and never
overwrites it. ``EDGEFLEET_TEST_TRUST_SETUP_KILL_AT=N`` makes the process SIGKILL itself at
the N-th step (the tests kill the setup at every step this way).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from ...atomicio import atomic_write
from ...registry import BlobStore
from ...registry.tuf import Director, ImageRepository, KeyRing, KeyringError, LocalMetadataStore
from ...registry.tuf.keyplace import KEY_DIR_MODE, Placement
from ...registry.tuf.keys import KEYRING_FILE

log = logging.getLogger(__name__)

KEYS_DIR, TUF_DIR = "keys", "tuf"
STAGE_PREFIX = ".trust-setup-"
OFFLINE_STAGE_PREFIX = ".edgefleet-setup-"
COMMIT_FILE, OFFLINE_NOTE = "commit.json", "offline.json"
LOCK_FILE = ".trust-setup.lock"
COMMIT_SCHEMA = "edgefleet.trust-setup/1"
KILL_ENV = "EDGEFLEET_TEST_TRUST_SETUP_KILL_AT"
TRUST_KEY_PREFIXES = ("image-", "director-")  # the keyring's PEMs (keys/ also holds the audit key)
#: what a keyring needs beside it: the roots (the rest of the image metadata may live in the database)
REQUIRED_METADATA = ("image/1.root.json", "image/root.json", "director/1.root.json", "director/root.json")
RECOVER_HINT = ("If no device was ever provisioned with these keys, move them and {tuf} aside and start again "
                "(a new setup is made); otherwise restore the data dir from a backup (fleet cloud restore)")


class PartialTrustSetup(KeyringError):
    """A trust setup that is neither whole nor absent (an older version's interrupted first setup)."""


_steps = 0


def checkpoint(step: str) -> None:
    """One step of the setup done; the test hook kills the process here when its turn comes."""
    global _steps
    _steps += 1
    at = os.environ.get(KILL_ENV)
    if at and at.isdigit() and int(at) == _steps:
        log.warning("test hook %s=%s: killing the setup after step %r", KILL_ENV, at, step)
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def setup_lock(data_dir: Path) -> Iterator[None]:
    """Hold the data dir's setup lock (one setup or recovery at a time, across processes)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# ----- building -----


def build(data_dir: Path, blobs: BlobStore, *, root_threshold: int, root_keys: int,
          placement: Placement | None) -> None:
    """Make a complete trust setup aside and move it into place (hold ``setup_lock``).

    Raises:
        KeyringError: bad threshold, an unusable signer URI (nothing is left behind).
    """
    stage = Path(_mkstage(data_dir))
    try:
        checkpoint("stage created")
        place = placement
        if placement is not None and placement.directory is not None:
            placement.directory.mkdir(parents=True, exist_ok=True, mode=KEY_DIR_MODE)
            os.chmod(placement.directory, KEY_DIR_MODE)
            offline_stage = placement.directory / f"{OFFLINE_STAGE_PREFIX}{stage.name[len(STAGE_PREFIX):]}"
            atomic_write(stage / OFFLINE_NOTE, json.dumps({"offline_stage": str(offline_stage)}).encode(),
                         fsync_dir=True)  # before a key lands there, so a discard finds it
            checkpoint("offline stage noted")
            place = replace(placement, stage_dir=offline_stage)
        keyring = KeyRing.init(stage / KEYS_DIR, root_threshold=root_threshold, root_keys=root_keys, placement=place)
        checkpoint("keys made")
        store = LocalMetadataStore(stage / TUF_DIR)
        image = ImageRepository.create(store, blobs, keyring)
        checkpoint("image repository signed")
        Director.create(store, keyring, image)
        keyring.forget_offline()
        checkpoint("director signed")
    except BaseException:
        _discard(stage, "the setup failed")
        raise
    offline = place.stage_dir if place is not None else None
    _fsync_tree(stage)
    if offline is not None:
        _fsync_tree(offline)
    checkpoint("staged files durable")
    plan = {
        "schema": COMMIT_SCHEMA,
        "key_files": sorted(p.name for p in (stage / KEYS_DIR).iterdir() if p.name != KEYRING_FILE),
        "offline_dir": str(placement.directory) if offline is not None and placement is not None else None,
        "offline_stage": str(offline) if offline is not None else None,
        "offline_files": sorted(p.name for p in offline.iterdir()) if offline is not None else [],
    }
    atomic_write(stage / COMMIT_FILE, json.dumps(plan, indent=2).encode(), fsync_dir=True)  # the commit point
    checkpoint("committed")
    _roll_forward(data_dir, stage, plan)


def _mkstage(data_dir: Path) -> str:
    stage = data_dir / f"{STAGE_PREFIX}{secrets.token_hex(4)}"
    stage.mkdir(mode=KEY_DIR_MODE)
    _fsync_dir(data_dir)
    return str(stage)


def _roll_forward(data_dir: Path, stage: Path, plan: dict[str, Any]) -> None:
    """Move a committed stage into place; each move is idempotent, so a rerun finishes a killed one."""
    if plan.get("offline_stage"):
        offline_dir, offline_stage = Path(plan["offline_dir"]), Path(plan["offline_stage"])
        if not offline_dir.is_dir():
            raise PartialTrustSetup(f"the trust setup interrupted in {stage} keeps its root keys in {offline_dir}, "
                                    "which is not reachable: mount it and start again to finish the setup")
        for name in plan["offline_files"]:
            _move(offline_stage / name, offline_dir / name)
            checkpoint(f"moved offline {name}")
        _fsync_dir(offline_dir)
        if offline_stage.is_dir():
            offline_stage.rmdir()
    tuf = data_dir / TUF_DIR
    if (stage / TUF_DIR).is_dir():
        if tuf.is_dir() and not any(tuf.iterdir()):
            tuf.rmdir()
        if tuf.exists():
            raise PartialTrustSetup(f"cannot finish the interrupted trust setup in {stage}: {tuf} exists meanwhile")
        os.rename(stage / TUF_DIR, tuf)
        _fsync_dir(data_dir)
    checkpoint("moved metadata")
    keys = data_dir / KEYS_DIR
    keys.mkdir(mode=KEY_DIR_MODE, exist_ok=True)
    os.chmod(keys, KEY_DIR_MODE)
    for name in plan["key_files"]:
        _move(stage / KEYS_DIR / name, keys / name)
        checkpoint(f"moved {name}")
    _fsync_dir(keys)
    _move(stage / KEYS_DIR / KEYRING_FILE, keys / KEYRING_FILE)
    _fsync_dir(keys)
    checkpoint("moved keyring")
    shutil.rmtree(stage)
    _fsync_dir(data_dir)


def _move(src: Path, dst: Path) -> None:
    if src.exists():
        if dst.exists():
            if dst.read_bytes() != src.read_bytes():
                raise PartialTrustSetup(f"cannot finish the interrupted trust setup: {dst} exists with other "
                                        f"content than {src}")
            src.unlink()
            return
        os.rename(src, dst)
    elif not dst.exists():
        raise PartialTrustSetup(f"cannot finish the interrupted trust setup: {src} is missing")


# ----- recovery and checks -----


def recover(data_dir: Path) -> None:
    """Finish (committed) or remove (not committed) what an interrupted setup left; hold ``setup_lock``."""
    if not data_dir.is_dir():
        return
    for stage in sorted(data_dir.glob(f"{STAGE_PREFIX}*")):
        if not stage.is_dir():
            continue
        try:
            plan = json.loads((stage / COMMIT_FILE).read_bytes())
        except FileNotFoundError:
            _discard(stage, "it was interrupted before it was complete; starting over")
            continue
        except (OSError, ValueError) as exc:
            raise PartialTrustSetup(f"cannot read {stage / COMMIT_FILE}: {exc}") from None
        if not isinstance(plan, dict) or plan.get("schema") != COMMIT_SCHEMA:
            raise PartialTrustSetup(f"{stage / COMMIT_FILE}: unknown schema")
        log.warning("finishing the trust setup interrupted after it was complete (%s): moving it into place", stage)
        _roll_forward(data_dir, stage, plan)


def _discard(stage: Path, why: str) -> None:
    try:
        note = json.loads((stage / OFFLINE_NOTE).read_bytes())
        offline = Path(str(note["offline_stage"]))
    except (OSError, ValueError, KeyError, TypeError):
        offline = None
    if offline is not None and offline.name.startswith(OFFLINE_STAGE_PREFIX) and offline.is_dir():
        shutil.rmtree(offline)
    shutil.rmtree(stage, ignore_errors=True)
    log.warning("removed the leftover of an interrupted first trust setup %s%s: %s", stage,
                f" (and {offline})" if offline is not None else "", why)


def refuse_partial(data_dir: Path) -> None:
    """Raise unless the trust setup in ``data_dir`` is whole or absent (run after ``recover``).

    Raises:
        PartialTrustSetup: names what is present and what is missing, and how to recover.
    """
    keys, tuf = data_dir / KEYS_DIR, data_dir / TUF_DIR
    if (keys / KEYRING_FILE).exists():
        missing = missing_files(data_dir)
        if missing:
            raise PartialTrustSetup(
                f"the trust setup in {data_dir} is incomplete: missing {', '.join(missing)}. "
                + RECOVER_HINT.format(tuf=tuf))
        return
    present = [str(p) for p in sorted(keys.glob("*.pem")) if p.name.startswith(TRUST_KEY_PREFIXES)] if keys.is_dir() else []
    if tuf.is_dir() and any(tuf.iterdir()):
        present.append(f"{tuf}/")
    if present:
        raise PartialTrustSetup(
            f"a partial trust setup is in {data_dir} (an interrupted first setup of an older version): present "
            f"{', '.join(present)}; missing {keys / KEYRING_FILE}. It is not overwritten. " + RECOVER_HINT.format(tuf=tuf))


def missing_files(data_dir: Path) -> list[str]:
    """Files a keyring in ``data_dir`` needs that are absent: its online and encrypted key files, the roots."""
    keys = data_dir / KEYS_DIR
    try:
        doc = json.loads((keys / KEYRING_FILE).read_text())
        entries = [k for by_role in doc["repos"].values() for rk in by_role.values() for k in rk["keys"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return [f"{keys / KEYRING_FILE} (unreadable: {exc})"]
    need: list[Path] = []
    for k in entries:
        uri, loc = k.get("uri"), k.get("location") or {}
        scheme, _, rest = str(uri or "").partition(":")
        if uri and scheme == "file2" and not os.path.isabs(rest):
            need.append(keys / rest)
        elif loc.get("kind") == "file" and not loc.get("dir") and loc.get("file"):
            need.append(keys / str(loc["file"]))
    need += [data_dir / TUF_DIR / name for name in REQUIRED_METADATA]
    return [str(p) for p in dict.fromkeys(need) if not p.is_file()]


def _fsync_tree(top: Path) -> None:
    """Make every directory entry under ``top`` durable (the files were fsynced as written)."""
    for dirpath, _dirs, _files in os.walk(top):
        _fsync_dir(Path(dirpath))
    _fsync_dir(top.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
