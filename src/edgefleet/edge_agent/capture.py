"""Capture on the device: frame ring → trigger → clip → outbox and ``events``.

Who calls what, and on which thread::

    control path   push(ts, frame)           ring append (+ hand finished clips to the encoder)
    shadow path    observe(ts, frame, ...)   ShadowMonitor: compare → triggers → budget → stats;
                                             an admitted trigger asks the ClipRecorder for a clip
    control path   drop()                    a shadow frame the bounded queue had no room for
    encoder        (own thread)              encode_clip + encode_keyframe + build_event →
                                             Outbox.put (durable) → publish on MQTT ``events``
    daemon         take_stats()              this period's AgreementStats (telemetry.shadow)

The control path only appends to the ring (a reference, no copy: sources hand out fresh
arrays) and moves finished clips onto the encoder's bounded queue; everything slow (video
encoding, JPEG, fsync, MQTT) happens on the encoder thread. The event record goes into the
outbox *before* it is published, so a device that is offline (or killed) still uploads it
later with its clip; the controller deduplicates the two paths by ``event_id``.

``Capture(outbox=None)`` records nothing: it only compares and counts (the statistics have
one source of truth, the ``ShadowMonitor``, whether or not clips are wanted).
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..protocols import CapturePolicy, Embedding, Event, Manifest, ModelRef
from ..protocols.embedding import pack
from ..shadow import (
    AgreementStats,
    ClipEncodeError,
    ClipRecorder,
    Observation,
    Prediction,
    ReadyClip,
    ShadowMonitor,
    Trigger,
    build_event,
    encode_clip,
    encode_keyframe,
)
from .campaigns import Campaigns
from .disk import DiskWatch, disk_full, is_disk_full
from .errors import DiskFull
from .isolation import ThreadPolicy
from .outbox import Outbox, OutboxError, OutboxFull

log = logging.getLogger(__name__)

Publisher = Callable[[Event], object]
SHADOW_NICE = 10  # the shadow path and the encoder yield the CPU to the control path


def lower_thread_priority(nice: int) -> None:
    """Best effort: raise the calling thread's nice value (per thread on Linux)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):
        pass


class Model(Protocol):
    """What capture needs of a loaded model (``ModelRunner`` has it)."""

    ref: ModelRef
    manifest: Manifest


@dataclass(frozen=True)
class Pending:
    """What travels with a clip request until the clip is encoded."""

    event_id: str
    observation: Observation
    control: ModelRef
    candidate: ModelRef | None
    wall_ts: float
    campaign: str | None = None  # the campaign this capture counts for (edge_agent/campaigns.py)
    context: dict[str, Any] | None = None  # the application's context at this frame
    embedding_output: str | None = None  # the control manifest's embedding output, if it names one


def record_embedding(pending: Pending) -> Embedding | None:
    """The control model's named embedding of the captured frame, compact (float16), for the
    event record; None where the manifest names none or the output is not usable."""
    emb = pending.observation.control.embedding
    if pending.embedding_output is None or emb is None:
        return None
    try:
        return pack(np.asarray(emb, dtype=np.float32).ravel().tolist(), output=pending.embedding_output,
                    model_digest=pending.control.digest)
    except ValueError as exc:  # NaN/inf, or more values than the wire takes: the record goes without it
        log.info("capture %s: embedding not recorded (%s)", pending.event_id, exc)
        return None


class Capture:
    """Ring, monitor, recorder and the encoder thread of one device."""

    def __init__(
        self,
        device_id: str,
        outbox: Outbox | None,
        publish: Publisher | None = None,
        *,
        policy: CapturePolicy | None = None,
        work_dir: Path | None = None,
        max_side: int | None = 640,
        fps_hint: float = 30.0,
        cooldown_s: float = 10.0,
        dedupe_threshold: float = 0.02,
        near_band: float = 0.05,
        lag_margin_s: float = 2.0,
        encode_queue: int = 8,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
    ):
        self.device_id = device_id
        self.outbox = outbox
        self.publish = publish
        self.policy = policy or CapturePolicy()
        self.max_side = max_side
        self.fps_hint = fps_hint
        self.cooldown_s = cooldown_s
        self.dedupe_threshold = dedupe_threshold
        self.near_band = near_band
        self.lag_margin_s = lag_margin_s
        self.clock = clock
        self.seed = seed
        self.recording = outbox is not None
        self.work_dir = work_dir
        self.disk_watch: DiskWatch | None = None  # told when clips or events find the disk full
        if self.recording and work_dir is not None:
            shutil.rmtree(work_dir, ignore_errors=True)  # half-encoded clips of a previous run
            try:
                work_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # a full disk at start: made again at the first clip
                log.warning("capture: cannot make %s now: %s", work_dir, exc)
        self.recorder = self._new_recorder()
        self.counts: Counter[str] = Counter()
        self._rec_lock = threading.Lock()
        self._mon_lock = threading.Lock()
        self._monitor: ShadowMonitor | None = None
        self._monitor_key: tuple[str, str | None] | None = None
        self._dropped_total = 0  # written by the control thread only
        self._dropped_taken = 0
        self._encode_q: queue.Queue[ReadyClip | None] = queue.Queue(encode_queue)
        self._worker: threading.Thread | None = None
        self.thread_policy: ThreadPolicy | None = None  # set by the Pipeline: how the encoder lowers itself
        self.campaigns: Campaigns | None = None  # running capture campaigns (set by the daemon)

    # ----- lifecycle -----

    def start(self) -> None:
        if self.recording and self._worker is None:
            self._worker = threading.Thread(target=self._encode_loop, name="capture-encoder", daemon=True)
            self._worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the encoder after the clips already queued (up to ``timeout`` seconds)."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        try:
            self._encode_q.put(None, timeout=timeout)
        except queue.Full:
            pass
        worker.join(timeout=timeout)

    def update_policy(self, policy: CapturePolicy) -> None:
        """New settings from ``Desired.settings.capture``; counted budgets carry over."""
        if policy == self.policy:
            return
        resize = (policy.pre_seconds, policy.post_seconds) != (self.policy.pre_seconds, self.policy.post_seconds)
        self.policy = policy
        with self._mon_lock:
            if self._monitor is not None:
                self._monitor.update_policy(policy)
        if resize:
            with self._rec_lock:
                self.recorder = self._new_recorder()

    # ----- control path -----

    def push(self, ts: float, frame: np.ndarray) -> None:
        """Add a frame to the ring (no copy); queue the clips it completes for encoding."""
        if not self.recording:
            return
        with self._rec_lock:
            ready = self.recorder.push(ts, frame)
        for clip in ready:
            try:
                self._encode_q.put_nowait(clip)
            except queue.Full:
                self.counts["encode_queue_full"] += 1
                log.warning("capture: encoder busy, clip %s dropped", clip.clip_id)

    def drop(self, n: int = 1) -> None:
        """Count shadow frames dropped under load (control thread only)."""
        self._dropped_total += n

    # ----- shadow path -----

    def monitor_for(self, control: Model, candidate: Model | None) -> ShadowMonitor:
        """The monitor of this (control, candidate) pair; rebuilt when a model changes.

        The budget carries over; the statistics carry over only while the candidate stays
        the same (a new candidate starts from zero, so its agreement is its own).
        """
        key = (control.ref.digest, candidate.ref.digest if candidate else None)
        if self._monitor is not None and self._monitor_key == key:
            return self._monitor
        monitor = ShadowMonitor(
            control.manifest, candidate.manifest if candidate else None, self.policy,
            near_band=self.near_band, cooldown_s=self.cooldown_s,
            dedupe_threshold=self.dedupe_threshold, seed=self.seed,
        )
        old = self._monitor
        if old is not None:
            monitor.budget = old.budget
            if self._monitor_key is not None and self._monitor_key[1] == key[1]:
                monitor.stats = old.stats
        self._monitor, self._monitor_key = monitor, key
        return monitor

    def observe(
        self,
        ts: float,
        frame: np.ndarray,
        control: Model,
        control_prediction: Prediction,
        candidate: Model | None = None,
        candidate_prediction: Prediction | None = None,
        *,
        candidate_latency_ms: float | None = None,
    ) -> Observation:
        """Judge one frame; an admitted trigger asks the recorder for a clip around ``ts``."""
        with self._mon_lock:
            monitor = self.monitor_for(control, candidate)
            obs = monitor.observe(
                ts, control_prediction, candidate_prediction if candidate is not None else None,
                frame=frame if self.recording else None, candidate_latency_ms=candidate_latency_ms,
            )
            bytes_left = monitor.budget.bytes_used(ts) < monitor.budget.max_bytes_per_day
        campaign, context, pre, post = None, None, None, None
        if self.campaigns is not None:  # every frame, candidate or not; the campaign's own budget
            disagree = None if obs.comparison is None else not obs.comparison.agree
            match, context = self.campaigns.match(obs.control, obs.candidate, disagree, now=ts, bytes_left=bytes_left,
                                                  control_digest=control.ref.digest)
            if match is not None:
                campaign, pre, post = match.name, match.pre_seconds, match.post_seconds
                if obs.capture is None or obs.capture.priority <= match.priority:
                    obs = replace(obs, capture=Trigger("campaign", match.priority, obs.control.label, obs.control.score),
                                  refused=None)
                self.counts["campaign_admitted"] += 1
        if obs.capture is None:
            if obs.refused:
                self.counts[f"refused_{obs.refused}"] += 1
            return obs
        self.counts["admitted"] += 1
        if not self.recording:
            return obs
        event_id = uuid.uuid4().hex
        emb_spec = control.manifest.embedding
        pending = Pending(event_id, obs, control.ref, candidate.ref if candidate else None, self.clock(),
                          campaign=campaign, context=context, embedding_output=emb_spec.output if emb_spec else None)
        with self._rec_lock:
            accepted = self.recorder.request(ts, event_id, payload=pending, pre_seconds=pre, post_seconds=post)
        if not accepted:
            self.counts["recorder_busy"] += 1
        return obs

    def candidate_failed(self, control: Model, candidate: Model) -> None:
        """Count one frame the candidate failed on (inference error, or outputs that do not
        fit its manifest): it reaches telemetry as ``shadow.errors``."""
        with self._mon_lock:
            self.monitor_for(control, candidate).stats.add_error()

    def take_stats(self) -> AgreementStats:
        """This period's statistics (dropped frames included); a new period starts."""
        with self._mon_lock:
            stats = self._monitor.take_stats() if self._monitor is not None else AgreementStats()
        total = self._dropped_total
        stats.add_dropped(total - self._dropped_taken)
        self._dropped_taken = total
        return stats

    def budget_used(self, now: float) -> dict[str, int]:
        with self._mon_lock:
            return self._monitor.budget.used(now) if self._monitor is not None else {}

    # ----- encoder thread -----

    def _new_recorder(self) -> ClipRecorder:
        return ClipRecorder(
            self.policy.pre_seconds, self.policy.post_seconds, self.fps_hint, lag_margin_s=self.lag_margin_s
        )

    def encode_pending(self) -> int:
        """Encode the clips waiting for the encoder on the calling thread (no encoder thread
        running: offline tools, benchmarks). Returns how many were written."""
        n = 0
        while True:
            try:
                clip = self._encode_q.get_nowait()
            except queue.Empty:
                return n
            if clip is not None:
                self.write(clip)
                n += 1

    def _encode_loop(self) -> None:
        if self.thread_policy is not None:
            self.thread_policy.apply("capture-encoder")
        else:
            lower_thread_priority(SHADOW_NICE)
        while True:
            clip = self._encode_q.get()
            if clip is None:
                return
            try:
                self.write(clip)
            except Exception:  # one bad clip must not end capture
                self.counts["encode_errors"] += 1
                log.exception("capture: clip %s could not be written", clip.clip_id)

    def _disk_full(self, error: DiskFull) -> None:
        if self.disk_watch is not None:
            self.disk_watch.note(error)

    def write(self, clip: ReadyClip) -> Event | None:
        """Encode one finished clip, put it in the outbox, publish its event record."""
        pending: Pending = clip.payload
        assert self.outbox is not None
        obs = pending.observation
        assert obs.capture is not None
        clip_path: Path | None = None
        clip_bytes = 0
        jpeg: bytes | None = None
        work = self.work_dir or self.outbox.root / "work"
        if clip.frames:
            try:
                work.mkdir(parents=True, exist_ok=True)
                info = encode_clip([f for _, f in clip.frames], clip.fps(self.fps_hint), work / pending.event_id,
                                   max_side=self.max_side)
                clip_path, clip_bytes = info.path, info.size_bytes
                key = clip.keyframe
                jpeg = encode_keyframe(key, max_side=self.max_side) if key is not None else None
            except (ClipEncodeError, OSError) as exc:
                if isinstance(exc, OSError) and not is_disk_full(exc):
                    raise
                self.counts["encode_errors"] += 1
                if isinstance(exc, OSError):
                    self.counts["disk_full"] += 1
                    self._disk_full(disk_full("clip", work, 0, exc))
                for leftover in work.glob(f"{pending.event_id}*"):
                    leftover.unlink(missing_ok=True)
                log.warning("capture: clip %s not encoded (%s); sending the event alone", clip.clip_id, exc)
        event = build_event(
            device_id=self.device_id, event_id=pending.event_id, trigger=obs.capture,
            control=obs.control, candidate=obs.candidate, control_model=pending.control,
            candidate_model=pending.candidate, ts=datetime.fromtimestamp(pending.wall_ts, timezone.utc),
            clip_id=pending.event_id if clip_path else None,
            frame_index=clip.keyframe_index if clip_path else None,
            campaign=pending.campaign, context=pending.context, embedding=record_embedding(pending),
        )
        try:
            self.outbox.put(event, clip_path, jpeg, priority=event.priority)
            if self.disk_watch is not None:
                self.disk_watch.clear("outbox")
        except OutboxError as exc:
            self.counts["outbox_errors"] += 1
            if isinstance(exc, OutboxFull):
                self.counts["disk_full"] += 1
                self._disk_full(DiskFull(str(exc), needed=exc.needed, free=exc.free, path=str(self.outbox.root),
                                         what="outbox"))
            log.warning("capture: outbox refused event %s: %s", event.event_id, exc)
        finally:
            if clip_path is not None:
                clip_path.unlink(missing_ok=True)
        size = len(jpeg or b"") + (clip_bytes if clip_path else 0) + len(event.model_dump_json())
        with self._mon_lock:
            if self._monitor is not None:
                self._monitor.budget.charge_bytes(clip.trigger_ts, size)
        self.counts["clips"] += 1 if clip_path else 0
        self.counts["events"] += 1
        if self.publish is not None:
            try:
                self.publish(event)
                self.counts["events_published"] += 1
            except Exception as exc:  # offline: the outbox still has it
                log.info("capture: event %s not published now (%s); the outbox has it", event.event_id, exc)
        return event
