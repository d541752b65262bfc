"""Capture campaigns on the device: which frame counts for which campaign, within its budget.

Flow: the daemon hands the signed settings' ``campaigns`` to ``Campaigns.update`` after
each applied desired state; the application's context arrives through the prediction
socket (``set_context``) and, from another process, sidecar signals (``signals``, kept by
``signal_source.py``): a frame's context is both, the per-frame one winning on a clash; ``Capture.observe`` asks ``match(...)`` once per frame that
reached the shadow path (every frame with a control result, candidate or not) and gets the
campaign that wants the frame, or None. ``match`` counts the capture at once (before the
clip is encoded), so the per-device quota also bounds captures still in flight.

Counts survive restarts (``campaigns.json`` in the data dir, written atomically); a
campaign that left the settings is forgotten with its count. Nothing here is evaluated from
text: conditions are the checked AST of ``protocols.conditions``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..atomicio import atomic_write
from ..protocols.campaigns import CampaignSpec, check_context
from ..protocols.conditions import Condition, ConditionError, Facts, Output, load_condition
from ..shadow.prediction import Prediction
from .signals import SignalTable, merge

log = logging.getLogger(__name__)

CONTEXT_TTL_S = 2.0  # context older than this is no longer the frame's context
STATE_FILE = "campaigns.json"


def facts_output(prediction: Prediction) -> Output:
    """A prediction in the plain values conditions look at."""
    scores: dict[str, float] = {}
    if prediction.probs is not None and prediction.labels:
        scores = {lab: float(p) for lab, p in zip(prediction.labels, np.asarray(prediction.probs).ravel())}
    boxes = [(max(0.0, b.x2 - b.x1) * max(0.0, b.y2 - b.y1), b.label) for b in prediction.boxes]
    score = None if prediction.score is None or not math.isfinite(prediction.score) else float(prediction.score)
    return Output(label=prediction.label, score=score, scores=scores, boxes=boxes)


def _vector(raw: object) -> np.ndarray | None:
    if raw is None:
        return None
    v = np.asarray(raw, dtype=np.float64).ravel()
    return v if v.size and np.all(np.isfinite(v)) else None


def embedding(prediction: Prediction, size: int | None = None, *, named_first: bool = True) -> np.ndarray | None:
    """The frame's embedding for ``like``: the output the control model's manifest names
    (``embedding``), else its output vector. With ``size`` (the campaign vector's length),
    the one of the two of that length: a vector the controller built from a capture's
    scores is compared with the output vector, not with a named embedding of another size
    (``named_first=False``, for a campaign built from scores, prefers the output vector
    where both have that length)."""
    named = _vector(prediction.embedding)
    output = _vector(prediction.probs if prediction.probs is not None else prediction.values)
    if size is not None:
        for v in ((named, output) if named_first else (output, named)):
            if v is not None and v.size == size:
                return v
        return None
    return named if named is not None else output


def l2_distance(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return math.inf
    return float(np.linalg.norm(a - b))


def distance(metric: str, a: np.ndarray, b: np.ndarray) -> float:
    """The like metric's distance (``cosine`` or ``l2``); inf for vectors of different sizes."""
    return l2_distance(a, b) if metric == "l2" else cosine_distance(a, b)


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return math.inf
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return math.inf
    return 1.0 - float(np.dot(a, b)) / (na * nb)


def _named(spec: CampaignSpec) -> bool:
    """A like built from a named embedding (vs. from class scores, ``output`` empty)."""
    like = spec.like
    return like is None or like.embedding is None or bool(like.embedding.output)


@dataclass
class _Running:
    spec: CampaignSpec
    condition: Condition | None
    vector: np.ndarray | None
    recent: deque[float]
    model_digest: str | None = None  # like: compare only on a control model of this digest


@dataclass(frozen=True)
class Match:
    name: str
    priority: int
    pre_seconds: float
    post_seconds: float
    frames_only: bool


class Campaigns:
    """The device's running campaigns, their counts and the latest application context."""

    def __init__(self, data_dir: Path | None = None, *, clock: Callable[[], float] = time.time, device_id: str = ""):
        self.path = data_dir / STATE_FILE if data_dir is not None else None
        self.clock = clock
        self._lock = threading.Lock()
        self._running: dict[str, _Running] = {}
        self._counts: dict[str, int] = self._load()
        self._context: tuple[float, dict[str, Any]] | None = None
        self.signals: SignalTable | None = None  # sidecar signals, when the agent reads them
        self.refused: dict[str, int] = {}
        self.device_id = device_id
        # like campaigns this device does not compare with, and why (another control model)
        self.skipped: dict[str, str] = {}

    # ----- settings -----

    def update(self, specs: Sequence[CampaignSpec]) -> None:
        """The campaigns in the signed settings now; ones gone are over for this device."""
        with self._lock:
            running: dict[str, _Running] = {}
            for spec in specs:
                old = self._running.get(spec.name)
                if old is not None and old.spec == spec:
                    running[spec.name] = old
                    continue
                try:
                    cond = load_condition(spec.condition, spec.condition_text) if spec.condition is not None else None
                except ConditionError as exc:  # the schema checked it; a newer controller's node kind
                    log.error("campaign %s: condition not usable here (%s); campaign ignored", spec.name, exc)
                    continue
                vector = np.asarray(spec.like.values(), dtype=np.float64) if spec.like is not None else None
                digest = spec.like.embedding.model_digest if spec.like and spec.like.embedding else None
                running[spec.name] = _Running(spec, cond, vector, old.recent if old else deque(), digest)
                if old is None:
                    log.info("campaign %s started on this device: %s (quota %d here)", spec.name,
                             spec.condition_text or f"like {spec.like.source_event if spec.like else ''}",
                             spec.per_device_quota)
            for name in set(self._running) - set(running):
                log.info("campaign %s is over for this device (%d captured)", name, self._counts.get(name, 0))
            self._running = running
            gone = set(self._counts) - set(running)
            for name in gone:
                self._counts.pop(name, None)
            for name in set(self.skipped) - set(running):
                self.skipped.pop(name, None)
            if gone:
                self._save()

    @property
    def names(self) -> list[str]:
        return sorted(self._running)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    # ----- context from the application -----

    def set_context(self, context: Any, ts: float | None = None) -> dict[str, Any]:
        """The application's context for the frames from now on (bounded, checked).

        Raises:
            ValueError: not a flat map of at most 32 short keys to numbers, booleans or text.
        """
        ctx = check_context(context)
        with self._lock:
            self._context = (self.clock() if ts is None else ts, ctx)
        return ctx

    def context(self, now: float | None = None) -> dict[str, Any] | None:
        """The context of a frame taken at ``now``: the sidecar signals' values at that time (not
        older than their max age) under the application's latest context (if not older than
        ``CONTEXT_TTL_S``). O(keys)."""
        now = self.clock() if now is None else now
        held = self._context
        frame = held[1] if held is not None and now - held[0] <= CONTEXT_TTL_S else None
        if self.signals is None:
            return frame
        return merge(self.signals.at(now), frame)

    # ----- per frame -----

    def match(self, control: Prediction, candidate: Prediction | None, disagree: bool | None,
              *, now: float | None = None, bytes_left: bool = True,
              control_digest: str | None = None) -> tuple[Match | None, dict[str, Any] | None]:
        """The highest-priority campaign that wants this frame and may still capture it, and
        the frame's context. Counts the capture for that campaign (persisted).

        A ``like`` campaign whose embedding came from another control model (its
        ``model_digest`` is not ``control_digest``) is skipped: its vector lives in another
        space. The reason is kept in ``skipped`` and logged once with the device id."""
        if not self._running:
            return None, self.context(now)
        now = self.clock() if now is None else now
        ctx = self.context(now)
        facts = Facts(control=facts_output(control), candidate=facts_output(candidate) if candidate else None,
                      disagree=disagree, context=ctx, now=datetime.fromtimestamp(now).astimezone())
        embs: dict[tuple[int, bool], np.ndarray | None] = {}
        with self._lock:
            ordered = sorted(self._running.values(), key=lambda r: (-r.spec.priority, r.spec.name))
            for run in ordered:
                spec = run.spec
                if spec.ends_at is not None and now >= spec.ends_at.replace(
                        tzinfo=spec.ends_at.tzinfo or timezone.utc).timestamp():
                    continue
                if run.condition is not None and not run.condition.evaluate(facts):
                    continue
                if run.vector is not None and spec.like is not None:
                    if run.model_digest is not None and control_digest != run.model_digest:
                        self._skip(spec.name, run.model_digest, control_digest)
                        continue
                    key = (int(run.vector.size), _named(spec))
                    if key not in embs:
                        embs[key] = embedding(control, key[0], named_first=key[1])
                    emb = embs[key]
                    if emb is None or distance(spec.like.metric, emb, run.vector) > spec.like.threshold:
                        continue
                if self._counts.get(spec.name, 0) >= spec.per_device_quota:
                    self._refuse(spec.name, "quota")
                    continue
                while run.recent and run.recent[0] <= now - 60.0:
                    run.recent.popleft()
                if len(run.recent) >= spec.max_per_minute:
                    self._refuse(spec.name, "per_minute")
                    continue
                if not bytes_left:
                    self._refuse(spec.name, "bytes_per_day")
                    continue
                run.recent.append(now)
                self._counts[spec.name] = self._counts.get(spec.name, 0) + 1
                self._save()
                pre, post = (0.0, 0.0) if spec.frames_only else (spec.pre_seconds, spec.post_seconds)
                return Match(spec.name, spec.priority, pre, post, spec.frames_only), ctx
        return None, ctx

    def _skip(self, name: str, wanted: str, have: str | None) -> None:
        self._refuse(name, "model_digest")
        reason = (f"control model {have[:12] if have else '(none)'} is not the model the embedding came from "
                  f"({wanted[:12]}); like not compared")
        if self.skipped.get(name) != reason:
            self.skipped[name] = reason
            log.warning("device %s: campaign %s: %s", self.device_id or "?", name, reason)

    def _refuse(self, name: str, why: str) -> None:
        key = f"{name}:{why}"
        self.refused[key] = self.refused.get(key, 0) + 1

    # ----- state on disk -----

    def _load(self) -> dict[str, int]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            raw = json.loads(self.path.read_text())
            return {str(k): int(v) for k, v in raw.get("counts", {}).items() if isinstance(v, int) and v >= 0}
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("campaign counts in %s unreadable (%s); starting from zero", self.path, exc)
            return {}

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            atomic_write(self.path, json.dumps({"counts": self._counts}, sort_keys=True).encode(), fsync=False)
        except OSError as exc:  # a full disk: counts stay in memory; the controller's quota still holds
            log.warning("campaign counts not saved (%s)", exc)
