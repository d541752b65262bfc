"""Class names from devices must be labels of the model they refer to.

Devices name classes in telemetry (``class_counts`` of the control model; shadow
``per_class_disagreements`` and ``confusion[control label][candidate label]``) and in
capture events (``control.label``, ``candidate.label``). Those names are stored, shown in
the UI, put into the drift report and exported with training data, so the ingest path
keeps only names the referenced model's manifest lists (``ModelVersion.manifest["labels"]``,
found by bundle digest). Where the model is not in the catalog, or its manifest lists no
labels, only short plain names pass (``PLAIN``: ``[A-Za-z0-9_.:-]``, at most 64 characters).
The shadow comparator's "no box" marker (``NONE_LABEL``) always passes.

An unknown label is dropped — the count or the event's label, never the whole message —
counted per device and logged with the device id, before anything is stored.

Flow: ``LabelBook(lookup)`` is the pure part (``lookup(digest)`` returns the manifest's
labels, ``[]`` for a manifest without labels, ``None`` for a digest not in the catalog;
found manifests are cached by digest, since a digest's manifest never changes; a digest not
in the catalog is remembered as such for ``miss_ttl_s``, so a fleet reporting a model the
catalog lacks costs one read per digest per few seconds, not one per message);
``catalog_lookup(session_factory)`` is the one database read.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from sqlmodel import Session, select

from ...protocols import Event, ModelOutput, ModelRef, Telemetry
from ...shadow import NONE_LABEL
from ..tables import ModelVersion

log = logging.getLogger(__name__)

PLAIN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
Lookup = Callable[[str], Sequence[str] | None]


def plain_label(label: str) -> bool:
    """A short name of letters, digits and ``_.:-``: what passes without manifest labels."""
    return PLAIN.fullmatch(label) is not None


def _passes(label: str, listed: Sequence[frozenset[str]]) -> bool:
    """``label`` is in one of the ``listed`` manifests' labels (plain, where none lists any)."""
    if label == NONE_LABEL:
        return True
    if any(listed):
        return any(label in labels for labels in listed)
    return plain_label(label)


class LabelBook:
    """Checks device-sent class names against the manifests of the models they name.

    Args:
        lookup: digest → the manifest's labels (``[]``: none listed; ``None``: not in the catalog).
        cache_size: manifests kept (least recently used go first).
        miss_ttl_s: how long a digest the catalog lacks is taken as still missing.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(self, lookup: Lookup, *, cache_size: int = 1024, miss_ttl_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self._lookup = lookup
        self._cache: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._misses: OrderedDict[str, float] = OrderedDict()  # digest → until when it counts as missing
        self._cache_size = cache_size
        self._miss_ttl_s = miss_ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self.dropped: Counter[str] = Counter()  # device id → labels dropped so far

    def labels_of(self, ref: ModelRef | None) -> frozenset[str]:
        """The manifest labels of ``ref`` (empty when it lists none or is unknown)."""
        if ref is None:
            return frozenset()
        with self._lock:
            if ref.digest in self._cache:
                self._cache.move_to_end(ref.digest)
                return self._cache[ref.digest]
            until = self._misses.get(ref.digest)
            if until is not None and self._clock() < until:
                return frozenset()
        found = self._lookup(ref.digest)
        labels = frozenset(found or ())
        with self._lock:
            if found is not None:
                self._misses.pop(ref.digest, None)
                self._cache[ref.digest] = labels
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            else:  # not in the catalog (yet): looked up again once the miss expires
                self._misses[ref.digest] = self._clock() + self._miss_ttl_s
                self._misses.move_to_end(ref.digest)
                while len(self._misses) > self._cache_size:
                    self._misses.popitem(last=False)
        return labels

    def allows(self, label: str, *refs: ModelRef | None) -> bool:
        """True when ``label`` is a label of one of ``refs`` (or plain, where none lists labels)."""
        return _passes(label, [self.labels_of(r) for r in refs])

    # ----- messages -----

    def filter_telemetry(self, msg: Telemetry) -> tuple[Telemetry, list[str]]:
        """``msg`` without class names its models do not have, and the names dropped."""
        dropped: list[str] = []

        def keep(counts: dict[str, Any], *refs: ModelRef | None) -> dict[str, Any]:
            listed = [self.labels_of(r) for r in refs]  # once per map, not per class name
            out = {}
            for label, value in counts.items():
                if _passes(label, listed):
                    out[label] = value
                else:
                    dropped.append(label)
            return out

        update: dict[str, Any] = {}
        if msg.class_counts:
            update["class_counts"] = keep(msg.class_counts, msg.control)
        shadow = msg.shadow
        if shadow is not None and (shadow.per_class_disagreements or shadow.confusion):
            confusion = {row: keep(cols, shadow.candidate)
                         for row, cols in keep(shadow.confusion, msg.control).items()}
            update["shadow"] = shadow.model_copy(update={
                # a disagreement is attributed to the control's label, or (detection) to an
                # unmatched box of either model
                "per_class_disagreements": keep(shadow.per_class_disagreements, msg.control, shadow.candidate),
                "confusion": {row: cols for row, cols in confusion.items() if cols},
            })
        return (msg.model_copy(update=update) if dropped else msg), dropped

    def filter_event(self, msg: Event) -> tuple[Event, list[str]]:
        """``msg`` with a label its model does not have set to None, and the labels dropped."""
        dropped: list[str] = []

        def keep(out: ModelOutput) -> ModelOutput:
            if out.label is None or self.allows(out.label, out.model):
                return out
            dropped.append(out.label)
            return out.model_copy(update={"label": None})

        control = keep(msg.control)
        candidate = keep(msg.candidate) if msg.candidate is not None else None
        if not dropped:
            return msg, dropped
        return msg.model_copy(update={"control": control, "candidate": candidate}), dropped

    def check_telemetry(self, msg: Telemetry) -> Telemetry:
        """``filter_telemetry``, counting and logging what was dropped."""
        out, dropped = self.filter_telemetry(msg)
        self._note(msg.device_id, "telemetry", dropped)
        return out

    def check_event(self, msg: Event) -> Event:
        """``filter_event``, counting and logging what was dropped."""
        out, dropped = self.filter_event(msg)
        self._note(msg.device_id, "event", dropped)
        return out

    def _note(self, device_id: str, kind: str, dropped: list[str]) -> None:
        if not dropped:
            return
        with self._lock:
            self.dropped[device_id] += len(dropped)
        shown = ", ".join(repr(x[:40]) for x in dropped[:5]) + (" …" if len(dropped) > 5 else "")
        log.warning("device %s sent %d class name(s) in %s that its model does not have; dropped: %s",
                    device_id, len(dropped), kind, shown)


def catalog_lookup(session_factory: Callable[[], Session]) -> Lookup:
    """``lookup`` for ``LabelBook``: the manifest labels of the catalog's version with that digest."""

    def lookup(digest: str) -> Sequence[str] | None:
        with session_factory() as s:
            manifest = s.exec(select(ModelVersion.manifest).where(ModelVersion.digest == digest)).first()
        if manifest is None:
            return None
        labels = manifest.get("labels") if isinstance(manifest, dict) else None
        return [str(x) for x in labels] if isinstance(labels, list) else []

    return lookup
