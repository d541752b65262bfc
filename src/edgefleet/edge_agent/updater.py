"""Apply desired state to the slots: check → fetch → verify → stage → activate → report.

The MQTT ``desired`` is only a hint that something changed. What is applied comes from
the director's verified metadata: the slots, and the device binding's settings (capture
policy, telemetry period), generation and credentials epoch. A hint whose generation or
settings differ from the signed ones changes nothing and is reported as
``update_blocked`` (``E_HINT_UNCONFIRMED``, with the reason); so are refused metadata and
refused deployments.

For each slot whose target differs from what is installed, the updater downloads the
bundle (resumable), verifies its digest, unpacks it into ``bundles/<digest>``, loads it
and runs the self-test, and only then switches the pipeline to it and records the switch
in the state file (atomically). Any failure leaves the running model untouched and is
reported with an error code. Bytes that do not match the signed length or hashes may have
been damaged in transit: they are retried from a clean fetch (the part file discarded)
with the daemon's backoff, ``DOWNLOAD_ATTEMPTS`` times in all, before the refusal is final
for that release. Other permanent failures (self-test, signature, hardware) are final at
once; retryable ones (link, disk) are retried with backoff by the daemon.

Disk: before a download the free space is compared with what the deployment still needs
(signed length less the partial file kept, plus the unpacked size, plus a margin); short of
it, or on ``ENOSPC``/``EDQUOT`` in any step, the slot reports ``E_DISK_FULL`` with the bytes
needed and free, the running model stays, and the daemon retries — at once when the space
is there again. A partial download is kept and resumed. Each kept model is stored once:
the unpacked files plus a record of their digests (``bundle.RECORD_FILE``, re-verified
whenever a model is loaded from disk); the tar is deleted once unpacked.

Network policy (``network.py``): before a download, a link the signed policy does not
allow (metered under ``unmetered``, an interface not listed) defers it — the slot stays
``notified``, ``update_blocked`` says ``E_LINK_METERED``/``E_LINK_INTERFACE`` with the
reason (not a failure), and the daemon applies again once ``link_ready()``.

Maintenance windows (``maintenance.py``): download and verification happen whenever the
network policy allows; the switch (load, self-test, activate) waits for a window of the
signed ``maintenance`` policy, in the device's own clock and zone. Meanwhile the slot is
``waiting_for_window`` with the next window start (not a failure); the daemon applies
again once ``window_ready()``.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..atomicio import atomic_write
from ..protocols import SLOTS, Desired, DeviceSettings, Phase, SlotName, SlotTarget
from ..protocols.messages import HeldMetadata, UpdateBlocked
from ..registry.bundle import (
    MANIFEST_FILE,
    RECORD_FILE,
    hash_files,
    read_manifest_dir,
    record_bytes,
    unpack_bundle,
    unpacked_size,
    verify_unpacked,
)
from ..registry.errors import InvalidBundle
from ..registry.tuf import (
    BadMetadata,
    CheckResult,
    DeviceVerifier,
    HintUnconfirmed,
    TufError,
    VerifiedTarget,
)
from .disk import SpacePlan, disk_full, free_bytes, is_disk_full, space_needed
from .errors import (
    BadBundle,
    DamagedDownload,
    DeploymentError,
    DiskFull,
    LinkDeferred,
    RetryableError,
)
from .maintenance import WindowGate
from .pipeline import Pipeline
from .runner import ModelRunner
from .state import AgentState, InstalledModel, SlotState, StateStore

log = logging.getLogger(__name__)

Reporter = Callable[[], None]
RETIRE_AFTER_S = 5.0  # a replaced model is closed this long after the switch
#: Phases of a deployment that is dropped when the desired model changes back to the running one.
_ABANDONED = frozenset({Phase.NOTIFIED, Phase.DOWNLOADING, Phase.VERIFYING, Phase.PREPARING, Phase.FAILED,
                        Phase.WAITING_FOR_WINDOW})
#: Download refusals that bytes damaged in transit cause: retried from a clean fetch.
TRANSIT_CODES = frozenset({"E_HASH_MISMATCH", "E_LENGTH"})
DOWNLOAD_ATTEMPTS = 3  # fetches of one release whose bytes do not match before the refusal is final


def _settings_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted names of the fields where two settings dumps differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _settings_diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def unconfirmed_reason(desired: Desired, result: CheckResult, signed: DeviceSettings | None) -> str | None:
    """Why the hint ``desired`` claims more than the verified metadata ``result`` says, or None.

    A hint *behind* the signed state (an older generation, a lower director version) is
    just late and not reported; one naming a newer director version or generation, or the
    same generation with other settings or credentials epoch, is forged or premature.
    """
    reasons = []
    if result.hint_error is not None:
        reasons.append(f"hint names director version {result.hint}, signed metadata is at {result.director_version}")
    if result.generation is not None:
        if desired.generation > result.generation:
            reasons.append(f"hint names generation {desired.generation}, signed metadata {result.generation}")
        elif desired.generation == result.generation:
            if signed is not None and desired.settings != signed:
                fields = _settings_diff(desired.settings.model_dump(mode="json"), signed.model_dump(mode="json"))
                reasons.append(f"hint settings differ from the signed ones ({', '.join(fields)})")
            if result.credentials_epoch is not None and desired.credentials_epoch != result.credentials_epoch:
                reasons.append(f"hint names credentials epoch {desired.credentials_epoch}, "
                               f"signed metadata {result.credentials_epoch}")
    return "; ".join(reasons) or None


def _as_slot_target(target: VerifiedTarget | None) -> SlotTarget | None:
    """The verified director target in the shape the slot logic uses."""
    if target is None:
        return None
    return SlotTarget(
        name=target.model or target.name, version=target.version or "?", digest=target.digest,
        size=target.length, path=target.url, release_counter=target.release_counter,
    )


def _tar_members_size(bundle_file: Path, fallback: int) -> int:
    try:
        return unpacked_size(bundle_file)
    except (InvalidBundle, OSError):
        return fallback


def _signed_settings(result: CheckResult) -> DeviceSettings | None:
    """The settings of the director's signed binding (None: it carries none).

    Raises:
        BadMetadata: signed settings that are not valid device settings.
    """
    if result.settings is None:
        return None
    try:
        return DeviceSettings.model_validate(result.settings)
    except ValidationError as exc:
        raise BadMetadata(f"director binding: invalid settings: {exc.errors()[0].get('msg', exc)}") from None


class Updater:
    def __init__(
        self,
        *,
        device_id: str,
        data_dir: Path,
        state: AgentState,
        store: StateStore,
        pipeline: Pipeline,
        report: Reporter,
        threads: int = 1,
        profile: object | None = None,
        verifier: DeviceVerifier,
    ):
        self.device_id = device_id
        self.bundles = data_dir / "bundles"
        self.downloads = data_dir / "downloads"
        self.state = state
        self.store = store
        self.pipeline = pipeline
        self.report = report
        self.threads = threads
        self.profile = profile
        self.verifier = verifier
        self._verified: dict[str, VerifiedTarget] = {}
        self.engines = data_dir / "engines"
        self.shadow_spinning = False  # [pipeline] ort_allow_spinning: the shadow session's ORT threads spin
        self.retry_pending = False
        self.activated_at: dict[str, float] = {}
        self.credentials_epoch: int | None = None  # the signed epoch of the last verified check
        self.held: dict[str, HeldMetadata] = {}  # director/image metadata held, for reports
        self.update_blocked: UpdateBlocked | None = None  # why the last hint did not fully happen
        self._damaged: dict[tuple[str, int], int] = {}  # (digest, release counter) → mismatching fetches
        self._retrying: UpdateBlocked | None = None
        self.disk_wait: tuple[Path, int] | None = None  # (where, bytes) a disk-full step waits for
        self._floor_pending: dict[str, VerifiedTarget] = {}  # release floors a full disk kept from disk
        self.network: Any = None  # network.NetworkGate: link policy and bandwidth caps (None: any link)
        self.link_wait: UpdateBlocked | None = None  # a download the link policy defers
        self.windows = WindowGate()  # maintenance windows: the clock and zone are replaceable (tests)
        self._window_fired: tuple[datetime | None, ...] | None = None  # the waits window_ready() last woke

    # ----- start-up -----

    def restore(self) -> None:
        """Load the installed models from disk (no download) into the pipeline.

        Never raises for a full disk: the models run from what is on disk, and the state is
        written once there is room again. A model that cannot load for lack of space is
        deployed again by the next apply (not refused for good)."""
        for slot in SLOTS:
            s = self.state.slot(slot)
            if s.installed is None:
                continue
            try:
                runner = self._load(s.installed, slot=slot)
            except DeploymentError as exc:
                log.error("device %s: installed %s model %s cannot be loaded: %s", self.device_id, slot, s.installed.label, exc)
                if isinstance(exc, RetryableError):
                    self._fail(s, exc, None)
                    self.retry_pending = True
                else:
                    self._fail(s, exc, s.installed.digest, s.installed.release_counter)
                s.installed = None
                continue
            self._set_runner(slot, runner)
            log.info("device %s: %s slot runs %s (restored)", self.device_id, slot, s.installed.label)
        self.store.save(self.state)
        try:
            self.gc()  # also gives back the second copy older agents kept of each model
        except OSError as exc:
            log.warning("device %s: clean-up at start failed: %s", self.device_id, exc)

    # ----- apply -----

    def apply(self, desired: Desired) -> None:
        """Verify what the director signed for this device and install it.

        ``desired`` (from MQTT) is only a hint that something changed: the slots installed
        are those of the director metadata, cross-checked with the image repository.
        """
        self.retry_pending = False
        self._retrying = None
        try:
            try:
                result = self.verifier.check(hint=desired.director_version)
                signed = _signed_settings(result)
            finally:
                self.held = {repo: HeldMetadata(version=h.version, timestamp_version=h.timestamp_version, expires=h.expires)
                             for repo, h in self.verifier.held().items()}
        except TufError as exc:
            self._refuse_unverified(desired, exc)
            return
        unconfirmed = unconfirmed_reason(desired, result, signed)
        if unconfirmed is not None:
            log.warning("device %s: hint not confirmed by signed metadata, not applied: %s", self.device_id, unconfirmed)
            # metadata behind the hint may be a stale cache or a frozen link: look again with backoff
            self.retry_pending = result.hint_error is not None or (
                result.generation is not None and desired.generation > result.generation)
        if signed is not None:
            self.state.settings = signed
        if result.credentials_epoch is not None:
            self.credentials_epoch = result.credentials_epoch
        self._verified = {t.digest: t for t in result.targets}
        self.disk_wait = None
        self.link_wait = None
        if self.network is not None:
            self.network.set_policy(self.state.settings.network_policy)
        for slot in SLOTS:
            self._apply_slot(slot, _as_slot_target(result.for_slot(slot)))
        for pending_slot, verified in list(self._floor_pending.items()):
            self._mark_installed(verified, pending_slot)
        if result.generation is not None:
            self.state.generation = result.generation
        if unconfirmed is not None:
            self._block(HintUnconfirmed.code, unconfirmed)
        elif self._retrying is not None:
            self._block(self._retrying.code, self._retrying.reason)
        elif self.link_wait is not None:
            self._block(self.link_wait.code, self.link_wait.reason)
        else:
            refused = self._slot_refusal()
            if refused is None:
                self._unblock()
            else:
                self._block(*refused)
        self.store.save(self.state)
        self.report()
        self.gc()

    # ----- update_blocked -----

    def _block(self, code: str, reason: str) -> None:
        since = self.update_blocked.since if self.update_blocked and self.update_blocked.code == code else None
        self.update_blocked = UpdateBlocked(code=code, reason=reason[:2000], since=since or datetime.now(timezone.utc))

    def _unblock(self) -> None:
        self.update_blocked = None

    def _slot_refusal(self) -> tuple[str, str] | None:
        """A slot whose signed target stays refused (final for that release), if any."""
        for slot in SLOTS:
            s = self.state.slot(slot)
            if s.phase in (Phase.FAILED, Phase.ROLLED_BACK) and s.error_code and s.target is not None \
                    and (s.installed is None or s.installed.digest != s.target.digest):
                return s.error_code, f"{slot} slot: {s.target.label} refused: {s.error or s.error_code}"
        return None

    def _refuse_unverified(self, desired: Desired, exc: TufError) -> None:
        """Metadata did not verify: nothing changes; slots the hint wanted changed report why."""
        log.error("device %s: signed metadata refused [%s]: %s", self.device_id, exc.code, exc)
        self.retry_pending = exc.retryable
        self._block(exc.code, f"signed metadata refused: {exc}")
        for slot in SLOTS:
            hint = desired.slots.get(slot)
            s = self.state.slot(slot)
            if hint is None or (s.installed is not None and s.installed.digest == hint.digest):
                continue
            if s.phase == Phase.WAITING_FOR_WINDOW and s.target is not None and s.target.digest == hint.digest:
                continue  # staged and verified already: it waits (e.g. offline as its window opened), not failed
            if s.phase == Phase.FAILED and s.error_code == exc.code and s.target is not None \
                    and s.target.digest == hint.digest:
                continue  # failed for this reason already (e.g. disk full mid-download): keep its own account
            s.target = InstalledModel(name=hint.name, version=hint.version, digest=hint.digest, release_counter=hint.release_counter)
            s.phase, s.error_code, s.error, s.progress = Phase.FAILED, exc.code, str(exc)[:2000], None
        self.store.save(self.state)
        self.report()

    def _apply_slot(self, slot: SlotName, target: SlotTarget | None) -> None:
        s = self.state.slot(slot)
        if target is None:
            if s.installed is not None:
                log.info("device %s: %s slot emptied (was %s)", self.device_id, slot, s.installed.label)
                self._set_runner(slot, None)
                s.installed, s.target, s.phase, s.error_code, s.error = None, None, Phase.IDLE, None, None
            elif s.target is not None:  # withdrawn before it was installed: nothing under way
                s.target, s.phase, s.progress, s.error_code, s.error = None, Phase.IDLE, None, None, None
            return
        if s.installed is not None and s.installed.digest == target.digest:
            if s.target is not None and s.target.digest != target.digest and s.phase in _ABANDONED:
                # the controller wants the running model again: the other deployment is abandoned
                log.info("device %s: %s slot: deployment of %s abandoned, keeping %s", self.device_id, slot,
                         s.target.label, s.installed.label)
                s.phase, s.progress, s.error_code, s.error = Phase.IDLE, None, None, None
            s.target = s.installed
            s.window_opens_at = None
            return
        if self._still_waiting(slot, s, target):
            return
        if s.failed_digest == target.digest and (s.failed_release is None or target.release_counter <= s.failed_release):
            # permanent failure for these exact bytes: wait for another target, or for the
            # controller to release them again (a new counter: the operator sent them anew)
            return
        wanted = InstalledModel(name=target.name, version=target.version, digest=target.digest, release_counter=target.release_counter)
        proven = s.phase != Phase.ACTIVE  # a model still in its health window is not known good
        s.target, s.error_code, s.error, s.progress = wanted, None, None, None
        s.window_opens_at = None
        try:
            self._phase(s, Phase.NOTIFIED)
            path = self._fetch(s, target)
            self._phase(s, Phase.VERIFYING)
            directory = self._stage(path, target)
            if self._wait_for_window(slot, s, target):
                return
            self._phase(s, Phase.PREPARING)
            runner = self._load(wanted, directory, progress=self._prepare_progress(s), slot=slot)
            runner.self_test()
            runner.prepare()
        except (DeploymentError, OSError) as exc:
            if not isinstance(exc, DeploymentError):
                if not is_disk_full(exc):
                    raise
                exc = disk_full("deployment", self.bundles.parent, 0, exc)
            if isinstance(exc, DamagedDownload) and self._retry_damaged(s, target, exc):
                return
            if isinstance(exc, LinkDeferred):  # waiting for the link, not failed
                s.phase, s.error_code, s.error, s.progress = Phase.NOTIFIED, None, None, None
                self.link_wait = UpdateBlocked(code=exc.code, reason=f"{slot} slot: {target.name}:{target.version}: {exc}")
                log.info("device %s: %s", self.device_id, self.link_wait.reason)
                self.retry_pending = True  # looked at again with backoff, and at once when link_ready()
                self.store.save(self.state)
                self.report()
                return
            if isinstance(exc, DiskFull):
                self.disk_wait = (Path(exc.path or self.bundles.parent), exc.needed or 0)
            if isinstance(exc, RetryableError):
                self._fail(s, exc, None)
                self.retry_pending = True
            else:
                self._fail(s, exc, target.digest, target.release_counter)
            return
        self._damaged.pop((target.digest, target.release_counter), None)
        previous = s.installed
        self._set_runner(slot, runner)  # load first, then switch: no frame lost
        if previous is not None and (proven or s.last_known_good is None):
            s.last_known_good = previous
        s.installed = wanted
        s.failed_digest, s.failed_release = None, None
        s.progress = None
        s.window_opens_at = None
        self._phase(s, Phase.ACTIVE)
        self.activated_at[slot] = time.monotonic()
        verified = self._verified.get(wanted.digest)
        if verified is not None:
            self._mark_installed(verified, slot)  # its release counter is now this slot's floor
        log.info("device %s: %s slot now runs %s (was %s)", self.device_id, slot, wanted.label, previous.label if previous else "nothing")

    def rollback(self, slot: SlotName, reason: str, code: str = "E_HEALTH") -> bool:
        """Return the slot to its last known good model (local decision, no controller needed)."""
        s = self.state.slot(slot)
        lkg = s.last_known_good
        bad = s.installed
        if lkg is None:
            self._set_runner(slot, None)
            s.installed = None
        else:
            try:
                runner = self._load(lkg, slot=slot)
            except DeploymentError as exc:
                log.error("device %s: last known good %s cannot be loaded: %s", self.device_id, lkg.label, exc)
                return False
            self._set_runner(slot, runner)
            s.installed = lkg
        s.failed_digest = bad.digest if bad else None
        s.failed_release = bad.release_counter if bad else None
        s.phase, s.error_code, s.error = Phase.ROLLED_BACK, code, reason
        if bad is not None:
            self._block(code, f"{slot} slot: {bad.label} rolled back: {reason}")
        self.store.save(self.state)
        log.warning("device %s: %s slot rolled back from %s to %s: %s", self.device_id, slot,
                    bad.label if bad else "-", lkg.label if lkg else "nothing", reason)
        self.report()
        return True

    def mark_healthy(self, slot: SlotName) -> None:
        s = self.state.slot(slot)
        if s.phase == Phase.ACTIVE:
            s.phase = Phase.HEALTHY
            self.store.save(self.state)
            self.report()

    # ----- steps -----

    def _phase(self, s: SlotState, phase: Phase) -> None:
        s.phase = phase
        self.store.save(self.state)
        self.report()

    def _fail(self, s: SlotState, exc: DeploymentError, failed_digest: str | None, failed_release: int | None = None) -> None:
        s.phase, s.error_code, s.error = Phase.FAILED, exc.code, str(exc)[:2000]
        s.failed_digest, s.failed_release = failed_digest, failed_release
        s.progress = None
        s.bytes_needed = exc.needed if isinstance(exc, DiskFull) else None
        s.bytes_free = exc.free if isinstance(exc, DiskFull) else None
        self.store.save(self.state)
        log.error("device %s: deployment of %s failed [%s]: %s", self.device_id,
                  s.target.label if s.target else "?", exc.code, exc)
        self.report()

    def _retry_damaged(self, s: SlotState, target: SlotTarget, exc: DamagedDownload) -> bool:
        """Bytes that did not match may have been damaged in transit: discard them and let the
        daemon fetch again with backoff, up to ``DOWNLOAD_ATTEMPTS`` fetches of this release.
        Returns False once the refusal is final."""
        key = (target.digest, target.release_counter)
        attempts = self._damaged[key] = self._damaged.get(key, 0) + 1
        if attempts >= DOWNLOAD_ATTEMPTS:
            self._damaged.pop(key, None)
            return False
        verified = self._verified.get(target.digest)
        if verified is not None:
            self.verifier.discard_part(verified)
        (self.downloads / f"{target.digest}.bundle").unlink(missing_ok=True)
        reason = f"{exc}; fetch {attempts} of {DOWNLOAD_ATTEMPTS}, retrying from a clean download"
        log.warning("device %s: %s: %s", self.device_id, s.target.label if s.target else "?", reason)
        s.phase, s.error_code, s.error, s.progress = Phase.DOWNLOADING, None, reason[:2000], None
        self._retrying = UpdateBlocked(code=exc.code, reason=reason[:2000])
        self.retry_pending = True
        self.store.save(self.state)
        self.report()
        return True

    def _wait_for_window(self, slot: SlotName, s: SlotState, target: SlotTarget) -> bool:
        """Staged and verified: outside every maintenance window, the slot waits (True)."""
        wait = self.windows.wait(self.state.settings.maintenance)
        if wait is None:
            return False
        s.phase, s.window_opens_at, s.progress = Phase.WAITING_FOR_WINDOW, wait.opens_at, None
        log.info("device %s: %s slot: %s:%s downloaded and verified; %s", self.device_id, slot,
                 target.name, target.version, wait.reason)
        self.retry_pending = True  # looked at again with backoff, and at once when window_ready()
        self.store.save(self.state)
        self.report()
        return True

    def _still_waiting(self, slot: SlotName, s: SlotState, target: SlotTarget) -> bool:
        """The same target already waits staged for a window that is still closed (no churn)."""
        if s.phase != Phase.WAITING_FOR_WINDOW or s.target is None or s.target.digest != target.digest \
                or not (self.bundles / target.digest).is_dir():
            return False
        wait = self.windows.wait(self.state.settings.maintenance)
        if wait is None:
            return False
        self.retry_pending = True
        if s.window_opens_at != wait.opens_at:  # the policy changed: a new next start
            s.window_opens_at = wait.opens_at
            log.info("device %s: %s slot: %s", self.device_id, slot, wait.reason)
            self.store.save(self.state)
            self.report()
        return True

    def window_ready(self) -> bool:
        """A slot waits for a maintenance window that is open now (True once per opening: a
        failed try is retried with the daemon's backoff, not every second of the window)."""
        waiting = tuple(self.state.slot(slot).window_opens_at for slot in SLOTS
                        if self.state.slot(slot).phase == Phase.WAITING_FOR_WINDOW)
        if not waiting or waiting == self._window_fired or self.windows.wait(self.state.settings.maintenance) is not None:
            return False
        self._window_fired = waiting
        return True

    def link_ready(self) -> bool:
        """A download the link policy deferred could go now."""
        return self.link_wait is not None and self.network is not None and self.network.download_refusal() is None

    def _fetch(self, s: SlotState, target: SlotTarget) -> Path:
        dest = self.downloads / f"{target.digest}.bundle"
        if self.network is not None and not (self.bundles / target.digest).is_dir() and not dest.exists():
            deferred = self.network.download_refusal()
            if deferred is not None:
                raise deferred
        self._phase(s, Phase.DOWNLOADING)
        if (self.bundles / target.digest).is_dir():  # unpacked already (kept as last known good)
            return dest
        verified = self._verified[target.digest]
        plan = self.space_plan(verified, downloaded=dest.exists())
        if not plan.fits:
            raise DiskFull(
                f"not enough disk for {target.name}:{target.version}: {plan.needed} bytes needed "
                f"({plan.download} to download, {plan.unpack} unpacked, {plan.margin} margin), "
                f"{plan.free} free in {self.downloads.parent}", needed=plan.needed, free=plan.free,
                path=str(self.downloads.parent), what="download")
        if dest.exists():
            return dest
        try:
            return self.verifier.download(verified, dest)
        except TufError as exc:
            if exc.code in TRANSIT_CODES:
                raise DamagedDownload(str(exc), code=exc.code) from None
            if exc.code == DiskFull.code:
                plan = self.space_plan(verified)
                raise DiskFull(f"disk full while downloading {target.name}:{target.version}: {plan.needed} "
                               f"bytes needed, {plan.free} free ({exc})", needed=plan.needed, free=plan.free,
                               path=str(self.downloads.parent), what="download") from None
            raise (RetryableError if exc.retryable else DeploymentError)(str(exc), code=exc.code) from None

    def space_plan(self, target: VerifiedTarget, *, downloaded: bool = False) -> SpacePlan:
        """What installing ``target`` still needs on the data disk, against what is free there.

        The unpacked size is the image repository's signed ``unpacked_size`` where present,
        else the signed length (a tar is never smaller than its members).
        """
        part = self.verifier.part_path(target)
        try:
            have = part.stat().st_size if part is not None else 0
        except OSError:
            have = 0
        unpacked = target.image_custom.get("unpacked_size") if target.image_custom else None
        if not isinstance(unpacked, int) or isinstance(unpacked, bool) or not 0 <= unpacked <= target.length:
            unpacked = target.length
        self.downloads.parent.mkdir(parents=True, exist_ok=True)
        return space_needed(length=target.length, have=have, unpacked=unpacked,
                            free=free_bytes(self.downloads.parent), downloaded=downloaded)

    def space_ready(self) -> bool:
        """A step that found the disk full could go on now (enough bytes are free again)."""
        if self.disk_wait is None:
            return False
        where, needed = self.disk_wait
        try:
            return needed > 0 and free_bytes(where) >= needed
        except OSError:
            return False

    def _mark_installed(self, verified: VerifiedTarget, slot: str) -> None:
        """Record the slot's release floor; a full disk keeps it pending (retried at each apply)."""
        try:
            self.verifier.mark_installed(verified, slot)
        except (TufError, OSError) as exc:
            if not is_disk_full(exc):
                raise
            self._floor_pending[slot] = verified
            log.warning("device %s: %s slot release floor not saved yet (disk full); retrying", self.device_id, slot)
            return
        self._floor_pending.pop(slot, None)

    def _stage(self, bundle_file: Path, target: SlotTarget) -> Path:
        """Unpack the verified tar into ``bundles/<digest>`` with a record of each file's
        digest, then delete the tar: each kept model is stored once."""
        final = self.bundles / target.digest
        if final.is_dir():
            bundle_file.unlink(missing_ok=True)
            return final
        tmp = self.bundles / f".{target.digest}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            unpacked = unpack_bundle(bundle_file, tmp)
            if (unpacked.manifest.name, unpacked.manifest.version) != (target.name, target.version):
                raise BadBundle(f"bundle contains {unpacked.manifest.label}, expected {target.name}:{target.version}")
            atomic_write(tmp / RECORD_FILE, record_bytes(target.digest, unpacked.files), mode=0o644)
            tmp.replace(final)
        except InvalidBundle as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise BadBundle(str(exc)) from None
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)  # the tar stays: the retry unpacks it again
            if not is_disk_full(exc):
                raise
            needed = _tar_members_size(bundle_file, target.size) + 64 * 1024
            raise disk_full(f"unpacking {target.name}:{target.version}", self.bundles, needed, exc) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        bundle_file.unlink(missing_ok=True)
        return final

    def _prepare_progress(self, s: SlotState) -> Callable[[float, str], None]:
        """Engine builds take minutes on an Orin: report how far they got."""

        def progress(fraction: float, message: str) -> None:
            s.progress = round(max(0.0, min(1.0, fraction)), 2)
            log.info("device %s: preparing %s: %s (%.0f%%)", self.device_id, s.target.label if s.target else "?", message, fraction * 100)
            self.report()

        return progress

    def _load(self, ref: InstalledModel, directory: Path | None = None, progress: Callable[[float, str], None] | None = None,
              *, slot: SlotName = "control") -> ModelRunner:
        """Load an unpacked bundle; one kept from before (restore, rollback) is re-verified
        against its record first. Engine-cache writes a full disk refuses are DiskFull. The
        shadow slot's backend is opened as a background session (isolation from control)."""
        staged_now = directory is not None
        directory = directory or self.bundles / ref.digest
        try:
            if not staged_now:
                verify_unpacked(directory, ref.digest)
            manifest = read_manifest_dir(directory)
        except InvalidBundle as exc:
            raise BadBundle(str(exc)) from None
        try:
            return ModelRunner.load(
                ref, manifest, directory, threads=self.threads, profile=self.profile, cache_dir=self.engines, progress=progress,
                background=slot == "shadow", allow_spinning=self.shadow_spinning,
            )
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            raise disk_full(f"preparing {ref.label} (engine cache)", self.engines, 0, exc) from None

    def _set_runner(self, slot: SlotName, runner: ModelRunner | None) -> None:
        old = self.pipeline.control if slot == "control" else self.pipeline.shadow
        if slot == "control":
            self.pipeline.control = runner
        else:
            self.pipeline.shadow = runner
        if old is not None and old is not runner:
            # the control/shadow thread may be inside old.predict() right now: close it only
            # once that frame is surely done, so the swap never fails a frame
            closer = threading.Timer(RETIRE_AFTER_S, old.close)
            closer.daemon = True
            closer.start()

    def gc(self) -> None:
        """Remove bundles, downloads and engines no slot refers to any more (a target still
        being deployed, or waiting for disk space, keeps its download); drop the tar of a
        kept model that an older agent stored twice."""
        keep = set()
        for s in self.state.slots.values():
            for ref in (s.installed, s.last_known_good):
                if ref is not None:
                    keep.add(ref.digest)
            if s.target is not None and s.failed_digest != s.target.digest:
                keep.add(s.target.digest)
        for digest in keep:
            self._store_once(digest)
        if self.engines.is_dir():
            from ..hardware import EngineCache

            EngineCache(self.engines).gc(keep)
        for folder in (self.bundles, self.downloads):
            if not folder.is_dir():
                continue
            for p in folder.iterdir():
                digest = p.name.split(".")[0] if not p.name.startswith(".") else p.name[1:].split(".")[0]
                if digest in keep or p.name.endswith(".part"):
                    continue
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)

    def _store_once(self, digest: str) -> None:
        """An unpacked model whose tar is still kept (older agents kept both): record the
        unpacked files' digests where missing, then delete the tar."""
        directory, tar = self.bundles / digest, self.downloads / f"{digest}.bundle"
        if not (directory.is_dir() and tar.exists()):
            return
        if not (directory / RECORD_FILE).exists():
            try:
                manifest = read_manifest_dir(directory)
                files = hash_files(directory, sorted({MANIFEST_FILE, manifest.model_file}))
                atomic_write(directory / RECORD_FILE, record_bytes(digest, files), mode=0o644)
            except (InvalidBundle, OSError) as exc:  # the tar goes anyway: it is the copy not run
                log.warning("device %s: no record written for bundle %s: %s", self.device_id, digest[:12], exc)
        tar.unlink(missing_ok=True)
        log.info("device %s: bundle %s kept once (its tar removed)", self.device_id, digest[:12])
