"""Keep each device's director metadata in step with its slot assignments and settings,
many devices at a time.

``sign_devices(session, trust, devices, settings)`` is called before desired state is
published (deploy, rollout waves, settings changes, the sync loop). A device is signed
again only when what the director signed for it differs from what it should now say: the
desired generation moved since the last signature, or the signed binding carries other
settings (capture policy, telemetry period) or another credentials epoch
(level-triggered: a lost signature, a restart or metadata signed by an older controller
re-signs on the next pass). A model that goes back to a device with a release counter at
or below what that slot already had signed (a rollback) is re-released under a new
counter first, so the device's "never lower" check holds.

One pass per batch: the director's keys are loaded once, the devices' head rows are
locked in the database (``director_store``: any replica may sign; versions continue
above the locked ones, never twice), every device is signed in memory
(``registry.tuf.device_meta``), and documents, heads, device rows and history commit in
one transaction — no file and no fsync per device. Desired state is published only
after that commit. Nothing signs on the MQTT bridge's threads (``SigningOnBridgeThread``).

``refresh_expiring`` re-signs what would expire soon (reading only rows due);
``resign_all`` follows a director key rotation; ``withdraw`` signs a revoked device's
empty metadata; ``import_files`` moves an upgraded controller's per-device files into the
database.
"""

from __future__ import annotations

import functools
import logging
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy import insert as sa_insert
from sqlalchemy import update as sa_update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, or_, select
from tuf.api.metadata import Metadata, Targets

from ...protocols import SLOTS, DeviceSettings
from ...registry.tuf import KeyringError, LocalMetadataStore, RepositoryStateError
from ...registry.tuf.device_meta import DeviceSigner, SignedDevice, decode_binding
from ..db import is_conflict
from ..devices import history
from ..devices.assigned import models_assigned
from ..errors import BadRequest, CloudError, KeysOffline
from ..tables import Device
from . import director_store
from .director_tables import DirectorHead
from .repository import Trust

log = logging.getLogger(__name__)

BATCH = 1000  # devices per transaction
ATTEMPTS = 5  # a batch that lost a race to another signer is signed again
BRIDGE_THREADS = ("bridge-ingest", "paho-mqtt-client")


class SigningOnBridgeThread(CloudError):
    """Signing was asked for on a thread of the MQTT bridge (it would stall ingest)."""


@dataclass
class SignResult:
    """What a ``sign_devices`` call did: device → director version (signed now or already
    current); device → why it could not be signed (its desired state is not published)."""

    versions: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    signed: list[str] = field(default_factory=list)  # signed in this call (the rest were current)


@dataclass
class _Plan:
    device: Device
    slots: dict[str, str | None]
    binding: dict[str, Any]  # generation / credentials_epoch / settings for ``desired_targets``
    floor: dict[str, int]
    withdrawn: bool = False


def signed_binding(device: Device, settings: DeviceSettings | None) -> dict[str, Any]:
    """The fields of the director's device binding that the controller decides."""
    out: dict[str, Any] = {"generation": device.desired_generation, "credentials_epoch": device.credentials_epoch}
    if settings is not None:
        out["settings"] = settings.model_dump(mode="json")
    return out


def _refuse_on_bridge_thread() -> None:
    name = threading.current_thread().name
    if name.startswith(BRIDGE_THREADS):
        raise SigningOnBridgeThread(f"director signing asked for on the MQTT bridge thread {name!r}; "
                                    "sign in the sync loop, the reconciler or the request instead")


def sign_device(session: Session, trust: Trust, device: Device, settings: DeviceSettings | None = None) -> int:
    """Sign (if needed) and return the device's current director version.

    Args:
        settings: the settings the device must apply (``Controller.device_settings``); they
            travel inside the signed binding. None leaves settings out (the device keeps its own).

    Raises:
        BadRequest: a target not built for this device's hardware, or unknown.
    """
    result = sign_devices(session, trust, [device], settings)
    if device.id in result.failed:
        raise BadRequest(f"cannot assign to {device.id}: {result.failed[device.id]}")
    return result.versions[device.id]


def sign_devices(session: Session, trust: Trust, devices: Sequence[Device],
                 settings: DeviceSettings | Mapping[str, DeviceSettings | None] | None = None) -> SignResult:
    """Sign every device of ``devices`` whose signed state is not current, ``BATCH`` devices
    per transaction (the caller's pending changes are committed first).

    Args:
        settings: what every device must apply, or per device id (scoped policies).

    Raises:
        SigningOnBridgeThread: called on an MQTT bridge thread.
        KeysOffline: the controller does not hold the director's online keys.
    """
    _refuse_on_bridge_thread()
    session.commit()
    result = SignResult()
    for i in range(0, len(devices), BATCH):
        _with_retry(session, lambda chunk=devices[i:i + BATCH]: _sign_batch(session, trust, chunk, settings, result))
    return result


def withdraw(session: Session, trust: Trust, device: Device) -> int:
    """Sign the revoked ``device``'s director metadata naming nothing (and no settings)."""
    _refuse_on_bridge_thread()
    session.commit()
    result = SignResult()
    plan = _Plan(device, {slot: None for slot in SLOTS}, {}, dict(device.release_floor or {}), withdrawn=True)
    _with_retry(session, lambda: _write_plans(session, trust, [plan], result))
    if device.id in result.failed:
        raise BadRequest(f"cannot withdraw {device.id}'s director metadata: {result.failed[device.id]}")
    return result.versions[device.id]


def _with_retry(session: Session, run: Any) -> None:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            run()
            return
        except (IntegrityError, DBAPIError) as exc:
            session.rollback()
            if attempt == ATTEMPTS or not (isinstance(exc, IntegrityError) or is_conflict(exc)):
                raise
            log.info("director signing lost a race to another signer (attempt %d): signing the batch again", attempt)
            time.sleep(0.01 * attempt)


def _current(binding: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return all(binding.get(k) == v for k, v in wanted.items())


def _settings_of(settings: DeviceSettings | Mapping[str, DeviceSettings | None] | None,
                 device_id: str) -> DeviceSettings | None:
    return settings.get(device_id) if isinstance(settings, Mapping) else settings


def _sign_batch(session: Session, trust: Trust, devices: Sequence[Device],
                settings: DeviceSettings | Mapping[str, DeviceSettings | None] | None, result: SignResult) -> None:
    known = director_store.heads(session, [d.id for d in devices])
    todo: list[Device] = []
    for d in devices:
        h = known.get(d.id) or director_store.seed_from_files(trust.director, d.id)
        known[d.id] = h
        if d.director_generation == d.desired_generation and h.targets_version > 0 and _current(
                h.binding, signed_binding(d, _settings_of(settings, d.id))):
            if d.director_version != h.targets_version:
                d.director_version = h.targets_version
                session.add(d)
            result.versions[d.id] = h.targets_version
        else:
            todo.append(d)
    if not todo:
        session.commit()
        return
    assigned = models_assigned(session, [d.id for d in todo])
    plans = []
    for d in todo:
        floor = dict(d.release_floor or {})
        slots: dict[str, str | None] = {}
        for slot in SLOTS:
            mv = assigned[d.id].get(slot)
            if mv is None:
                slots[slot] = None
                continue
            already = known[d.id].slots.get(slot)
            if mv.target_name is None or (mv.release_counter < floor.get(slot, 0) and already != mv.target_name):
                target = trust.release(mv.digest, mv.manifest, session=session)
                log.info("re-released %s:%s as %s (counter %d > floor %d of device %s)", mv.name, mv.version,
                         target.name, target.release_counter, floor.get(slot, 0), d.id)
                mv.target_name, mv.release_counter = target.name, target.release_counter
                session.add(mv)
            floor[slot] = max(floor.get(slot, 0), mv.release_counter)
            slots[slot] = mv.target_name
        plans.append(_Plan(d, slots, signed_binding(d, _settings_of(settings, d.id)), floor))
    _write_plans(session, trust, plans, result, seeds=known)


def _signer(trust: Trust, now: datetime | None = None) -> DeviceSigner:
    try:
        return DeviceSigner(trust.director, now=now)
    except KeyringError as exc:
        raise KeysOffline(f"director metadata cannot be signed: {exc}") from None


def _head_fields(s: SignedDevice, targets: Targets | None) -> dict[str, Any]:
    v = s.versions
    out: dict[str, Any] = {"targets_version": v.targets, "snapshot_version": v.snapshot,
                           "timestamp_version": v.timestamp, "targets_meta": s.targets_meta,
                           "snapshot_expires": s.expires["snapshot"], "timestamp_expires": s.expires["timestamp"]}
    if targets is not None:
        out["targets_expires"] = s.expires["targets"]
        out["binding"] = decode_binding(targets)
        out["slots"] = {slot: name for name, tf in targets.targets.items() for slot in tf.custom.get("slots", [])}
        out["digests"] = sorted({tf.hashes["sha256"] for tf in targets.targets.values() if "sha256" in tf.hashes})
    return out


def _write_plans(session: Session, trust: Trust, plans: list[_Plan], result: SignResult,
                 seeds: dict[str, director_store.Head] | None = None) -> None:
    seeds = seeds or {}
    signer = _signer(trust)
    locked = director_store.lock_heads(session, [p.device.id for p in plans],
                                       lambda i: seeds.get(i) or director_store.seed_from_files(trust.director, i))
    signed: list[SignedDevice] = []
    heads: dict[str, dict[str, Any]] = {}
    done: list[tuple[_Plan, int]] = []
    lookup = functools.lru_cache(maxsize=None)(trust.director.image.get_target)  # each target read once per batch
    for p in plans:
        d, h = p.device, locked[p.device.id]
        newer = h.binding.get("generation")
        if not p.withdrawn and isinstance(newer, int) and newer > p.binding.get("generation", -1):
            result.versions[d.id] = h.targets_version  # another signer signed a later generation meanwhile
            continue
        try:
            targets = trust.director.desired_targets(d.id, d.hardware_id, p.slots, lookup=lookup, **p.binding)
        except RepositoryStateError as exc:
            log.error("device %s: director metadata not signed: %s", d.id, exc)
            result.failed[d.id] = str(exc)
            continue
        s = signer.sign(d.id, director_store.versions_of(h).next(targets=True), targets=targets)
        signed.append(s)
        heads[d.id] = _head_fields(s, targets)
        done.append((p, s.versions.targets))
    director_store.write(session, signed, heads)
    _record(session, done)
    session.commit()
    for p, version in done:
        result.versions[p.device.id] = version
        result.signed.append(p.device.id)
        log.info("director v%d signed for device %s (%s): %s", version, p.device.id, p.device.hardware_id, p.slots)


def _record(session: Session, done: list[tuple[_Plan, int]]) -> None:
    """The signed devices' rows (director version, generation, release floor) and one history
    row each, as two executemany statements; the caller's Device objects show the new values."""
    if not done:
        return
    now = datetime.now(timezone.utc)
    devices, rows = [], []
    for p, version in done:
        d = p.device
        generation = d.director_generation if p.withdrawn else d.desired_generation
        floor = d.release_floor if p.withdrawn else p.floor
        devices.append({"b_id": d.id, "b_version": version, "b_generation": generation, "b_floor": floor})
        for attr, value in (("director_version", version), ("director_generation", generation), ("release_floor", floor)):
            set_committed_value(d, attr, value)  # what the database holds once this commits
        slots = ", ".join(f"{k}={v or '-'}" for k, v in p.slots.items())
        what = " (withdrawn: names nothing)" if p.withdrawn else f": generation {d.desired_generation}, {slots}"
        rows.append({"device_id": d.id, "at": now, "kind": "signed", "slot": None,
                     "message": f"director metadata v{version} signed{what}"[:1024],
                     "data": {"director_version": version, "generation": None if p.withdrawn else d.desired_generation,
                              "slots": p.slots, "settings": p.binding.get("settings")}})
    table = Device.__table__  # type: ignore[attr-defined]
    session.execute(sa_update(table).where(table.c.id == bindparam("b_id")).values(
        director_version=bindparam("b_version"), director_generation=bindparam("b_generation"),
        release_floor=bindparam("b_floor")), devices)
    session.execute(sa_insert(history.DeviceHistory.__table__), rows)  # type: ignore[attr-defined]


# ----- expiry and key rotation -----------------------------------------------------------------


def refresh_expiring(session: Session, trust: Trust, now: datetime | None = None) -> int:
    """Re-sign every device's director metadata that would expire soon (targets when its
    own expiry is due; snapshot and timestamp otherwise), reading only the rows due.
    Returns the devices re-signed."""
    now = now or datetime.now(timezone.utc)
    exp = trust.director.expiry
    cut = {role: now + exp.for_role(role) * exp.refresh_fraction for role in ("targets", "snapshot", "timestamp")}
    touched, after = 0, ""
    while True:  # keyset pages: each device at most once per call
        due = list(session.exec(select(DirectorHead.device_id).where(col(DirectorHead.device_id) > after).where(or_(
            col(DirectorHead.targets_expires) <= cut["targets"], col(DirectorHead.snapshot_expires) <= cut["snapshot"],
            col(DirectorHead.timestamp_expires) <= cut["timestamp"])).order_by(col(DirectorHead.device_id))
            .limit(BATCH)).all())
        if not due:
            return touched
        _with_retry(session, lambda ids=due: _resign(session, trust, ids,
                                                     lambda h: _aware(h.targets_expires) <= cut["targets"], now))
        touched, after = touched + len(due), due[-1]


def resign_all(session: Session, trust: Trust, role: str) -> int:
    """After the director's ``role`` key changed: re-sign every device in the database
    (targets too when the targets key changed). Returns the devices re-signed."""
    if role == "root":
        return 0
    ids = list(session.exec(select(DirectorHead.device_id).where(col(DirectorHead.targets_version) > 0)
                            .order_by(col(DirectorHead.device_id))).all())
    for i in range(0, len(ids), BATCH):
        _with_retry(session, lambda chunk=ids[i:i + BATCH]: _resign(session, trust, chunk, lambda _h: role == "targets"))
    return len(ids)


def _aware(t: datetime | None) -> datetime:
    if t is None:
        return datetime.min.replace(tzinfo=timezone.utc)
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


def _resign(session: Session, trust: Trust, ids: list[str], targets_due: Any, now: datetime | None = None) -> None:
    signer = _signer(trust, now)
    locked = director_store.lock_heads(session, ids, director_store.Head)
    signed: list[SignedDevice] = []
    heads: dict[str, dict[str, Any]] = {}
    for device_id in ids:
        h = locked[device_id]
        if h.targets_version < 1:
            continue
        targets: Targets | None = None
        if targets_due(h):
            data = director_store.latest_targets(session, device_id, h.targets_version)
            if data is None:
                log.error("device %s: director targets v%d missing from the database; not re-signed", device_id,
                          h.targets_version)
                continue
            parsed = Metadata.from_bytes(bytes(data)).signed
            assert isinstance(parsed, Targets)
            targets = parsed
        s = signer.sign(device_id, director_store.versions_of(h).next(targets=targets is not None), targets=targets,
                        targets_meta=h.targets_meta)
        signed.append(s)
        heads[device_id] = _head_fields(s, targets)
    director_store.write(session, signed, heads)
    session.commit()


# ----- upgrade: per-device files into the database ---------------------------------------------


def import_files(session: Session, trust: Trust) -> int:
    """Copy the current per-device director files an older controller wrote into the
    database (devices already there are left alone), then move the files aside
    (``director/devices.imported``). Idempotent. Returns the devices imported."""
    store = trust.store
    if not isinstance(store, LocalMetadataStore):
        return 0
    base = f"{trust.director.prefix}/devices"
    ids = [p.rsplit("/", 1)[-1] for p in store.list(base)]
    imported = 0
    for i in range(0, len(ids), BATCH):
        chunk = ids[i:i + BATCH]
        known = director_store.heads(session, chunk)
        fresh = [director_store.seed_from_files(trust.director, d) for d in chunk if d not in known]
        fresh = [h for h in fresh if h.targets_version > 0]
        if not fresh:
            continue
        docs = []
        for h in fresh:
            repo = trust.director.device_repo(h.device_id)
            docs.append((h, {"targets": (h.targets_version, store.read(repo.name("targets", h.targets_version))),
                             "snapshot": (h.snapshot_version, store.read(repo.name("snapshot", h.snapshot_version))),
                             "timestamp": (h.timestamp_version, store.read(repo.name("timestamp", None)))}))
        director_store.import_documents(session, docs)
        session.commit()
        imported += len(docs)
    folder = store.root / base
    if folder.is_dir():
        aside = folder.with_name("devices.imported")
        if aside.exists():
            shutil.rmtree(aside)
        folder.rename(aside)
        log.info("director metadata of %d devices imported into the database; files moved to %s", imported, aside)
    return imported
