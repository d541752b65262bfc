"""Review of shadow captures: who was right, and the labelled clips as training data.

What flows through:

* ``queue(session, QueueFilter(...))`` — capture events (``shadow_index.ShadowEvent``) joined
  with their label, newest first, filtered by pair, class, device, trigger, time, and
  "unlabelled only". The review page and ``fleet review ls`` read this.
* ``label(session, event_id, verdict, note=, reviewer=, corrected_label=)`` — one label per
  capture (a new verdict replaces the old one; who and when are kept). Verdicts:
  ``VERDICTS``. The reviewer may also enter the correct class (``corrected_label``), checked
  against the labels of both models' manifests (``model_labels``) and against the verdict.
* ``manifest_labels(session, refs)`` — those labels per model ``name:version`` in one query:
  what the review page and the queue API offer as the correct label.
* ``export_items(session, QueueFilter(...))`` → ``ExportItem`` rows (labelled captures with
  both outputs, device, time, model digests, blob digests), then ``iter_zip(items, store)``
  streams ``clips/<event_id>.webm``, ``keyframes/<event_id>.jpg`` and ``labels.jsonl`` as a
  zip, or ``write_folder(items, store, out)`` writes the same layout into a directory.

Training formats (``imagefolder``, ``coco``, ``yolo``, ``jsonl``) are built from the same
``ExportItem`` rows by ``cloud.training_export``. Labels live in ``review_label``
(migration 0006; ``corrected_label`` 0015), one row per ``shadow_event`` row.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import Column, Index, Text, UniqueConstraint, and_, func, or_
from sqlmodel import Field, Session, SQLModel, col, select

from ..registry import BlobStore
from .errors import BadRequest, Conflict, NotFound
from .shadow_index import Clip, ShadowEvent, parse_pair

VERDICTS = ("control_right", "candidate_right", "both_wrong", "unclear")
LABELS_FILE = "labels.jsonl"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ReviewLabel(SQLModel, table=True):
    """A reviewer's verdict on one capture (migration 0006)."""

    __tablename__ = "review_label"
    __table_args__ = (
        UniqueConstraint("shadow_event_id", name="uq_review_label_event"),
        Index("ix_review_label_device_event", "device_id", "event_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    shadow_event_id: int
    device_id: str = Field(max_length=128)
    event_id: str = Field(max_length=64)
    verdict: str = Field(max_length=32)
    note: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    reviewer: str = Field(default="", max_length=128)
    labelled_at: datetime = Field(default_factory=_utcnow)
    corrected_label: str | None = Field(default=None, max_length=128)  # the true class, as the reviewer entered it


# ----- filters -----


@dataclass(frozen=True)
class QueueFilter:
    """What the review queue, the export and the confusion-matrix links filter on.

    ``pair`` is ``CONTROL,CANDIDATE`` or ``N1:V1:N2:V2``; ``label`` matches the control's
    or the candidate's label; ``control_label``/``candidate_label`` pick one confusion cell.
    """

    pair: str | None = None
    label: str | None = None
    control_label: str | None = None
    candidate_label: str | None = None
    device_id: str | None = None
    trigger: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    unlabelled: bool = False
    labelled: bool = False
    has_clip: bool | None = None
    verdict: str | None = None
    exclude: tuple[str, ...] = field(default_factory=tuple)

    def pair_refs(self) -> tuple[str, str] | None:
        return parse_pair(self.pair) if self.pair else None


def _filtered(q: Any, f: QueueFilter) -> Any:
    refs = f.pair_refs()
    if refs is not None:
        (cn, _, cv), (kn, _, kv) = (refs[0].partition(":"), refs[1].partition(":"))
        q = (q.where(ShadowEvent.control_name == cn).where(ShadowEvent.control_version == cv)
             .where(ShadowEvent.candidate_name == kn).where(ShadowEvent.candidate_version == kv))
    if f.label:
        q = q.where((ShadowEvent.control_label == f.label) | (ShadowEvent.candidate_label == f.label))
    if f.control_label is not None:
        q = q.where(ShadowEvent.control_label == f.control_label)
    if f.candidate_label is not None:
        q = q.where(ShadowEvent.candidate_label == f.candidate_label)
    if f.device_id:
        q = q.where(ShadowEvent.device_id == f.device_id)
    if f.trigger:
        q = q.where(ShadowEvent.trigger == f.trigger)
    if f.since is not None:
        q = q.where(ShadowEvent.ts >= f.since)
    if f.until is not None:
        q = q.where(ShadowEvent.ts < f.until)
    if f.has_clip is True:
        q = q.where(col(ShadowEvent.clip_id).is_not(None))
    elif f.has_clip is False:
        q = q.where(col(ShadowEvent.clip_id).is_(None))
    if f.unlabelled:
        q = q.where(col(ReviewLabel.id).is_(None))
    if f.labelled or f.verdict:
        q = q.where(col(ReviewLabel.id).is_not(None))
    if f.verdict:
        q = q.where(ReviewLabel.verdict == f.verdict)
    if f.exclude:
        q = q.where(col(ShadowEvent.event_id).notin_(list(f.exclude)))
    return q


def _joined(*entities: Any) -> Any:
    return (select(*entities).select_from(ShadowEvent)
            .outerjoin(ReviewLabel, col(ReviewLabel.shadow_event_id) == ShadowEvent.id))


# ----- reading -----


@dataclass(frozen=True)
class ReviewItem:
    event: ShadowEvent
    label: ReviewLabel | None


def queue(session: Session, f: QueueFilter = QueueFilter(), *, limit: int = 50, offset: int = 0) -> list[ReviewItem]:
    """Captures matching ``f`` with their label (None: unlabelled), newest first."""
    q = _filtered(_joined(ShadowEvent, ReviewLabel), f)
    q = q.order_by(col(ShadowEvent.ts).desc(), col(ShadowEvent.id).desc()).offset(offset).limit(limit)
    return [ReviewItem(e, lab) for e, lab in session.exec(q).all()]


def count(session: Session, f: QueueFilter = QueueFilter()) -> int:
    return int(session.exec(_filtered(_joined(func.count(col(ShadowEvent.id))), f)).one())


def next_item(session: Session, f: QueueFilter = QueueFilter()) -> ReviewItem | None:
    """The next unlabelled capture in ``f`` (what the page shows after a verdict)."""
    items = queue(session, QueueFilter(**{**f.__dict__, "unlabelled": True}), limit=1)
    return items[0] if items else None


def verdict_counts(session: Session, f: QueueFilter = QueueFilter()) -> dict[str, int]:
    q = _filtered(_joined(ReviewLabel.verdict, func.count()), QueueFilter(**{**f.__dict__, "labelled": True}))
    return {v: int(n) for v, n in session.exec(q.group_by(ReviewLabel.verdict)).all()}


def facets(session: Session) -> dict[str, list[str]]:
    """Filter choices: pairs (``CONTROL:CANDIDATE``), devices, triggers and classes seen in captures."""
    pairs = session.exec(
        select(ShadowEvent.control_name, ShadowEvent.control_version, ShadowEvent.candidate_name,
               ShadowEvent.candidate_version).where(col(ShadowEvent.candidate_name).is_not(None)).distinct()
    ).all()
    labels = {x for x in session.exec(select(ShadowEvent.control_label).distinct()).all() if x is not None}
    labels |= {x for x in session.exec(select(ShadowEvent.candidate_label).distinct()).all() if x is not None}
    return {
        "pairs": sorted(f"{a}:{b}:{c}:{d}" for a, b, c, d in pairs),
        "devices": sorted(session.exec(select(ShadowEvent.device_id).distinct()).all()),
        "triggers": sorted(session.exec(select(ShadowEvent.trigger).distinct()).all()),
        "classes": sorted(labels, key=lambda x: (len(x), x)),
    }


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _output(e: ShadowEvent, side: str) -> dict[str, Any] | None:
    name, version = getattr(e, f"{side}_name"), getattr(e, f"{side}_version")
    label, score = getattr(e, f"{side}_label"), getattr(e, f"{side}_score")
    if side == "candidate" and name is None and label is None:
        return None
    record = (e.record or {}).get(side) or {}
    return {"model": f"{name}:{version}" if name else None, "digest": getattr(e, f"{side}_digest"),
            "label": label, "score": score, "scores": list(record.get("scores") or [])}


def _campaign_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The capture campaign and the application's context a device recorded (device-supplied:
    plain values only, shown as text)."""
    campaign = record.get("campaign")
    context = record.get("context")
    if isinstance(context, dict):
        context = {str(k)[:64]: v for k, v in list(context.items())[:32]
                   if isinstance(v, (bool, int, float)) or isinstance(v, str) and len(v) <= 128}
    return {"campaign": campaign if isinstance(campaign, str) else None,
            "context": context if isinstance(context, dict) and context else None}


def item_public(item: ReviewItem) -> dict[str, Any]:
    """The wire shape of one queue item."""
    e, lab = item.event, item.label
    return {
        "event_id": e.event_id, "device_id": e.device_id, "ts": _iso(e.ts), "trigger": e.trigger,
        "priority": e.priority, "control": _output(e, "control"), "candidate": _output(e, "candidate"),
        "clip_id": e.clip_id, "clip_evicted": e.clip_evicted, **_campaign_fields(e.record or {}),
        "label": None if lab is None else {"verdict": lab.verdict, "note": lab.note, "reviewer": lab.reviewer,
                                           "labelled_at": _iso(lab.labelled_at),
                                           "corrected_label": lab.corrected_label,
                                           "training_label": training_label(e, lab)[0]},
    }


# ----- labelling -----


def find_event(session: Session, event_id: str, device_id: str | None = None) -> ShadowEvent:
    """The capture with ``event_id`` (ids are per device; ``device_id`` settles a clash).

    Raises:
        NotFound: no such capture. Conflict: several devices used that id; pass the device.
    """
    q = select(ShadowEvent).where(ShadowEvent.event_id == event_id)
    if device_id:
        q = q.where(ShadowEvent.device_id == device_id)
    rows = session.exec(q.limit(2)).all()
    if not rows:
        raise NotFound(f"no capture event {event_id!r}" + (f" from {device_id}" if device_id else ""))
    if len(rows) > 1:
        raise Conflict(f"event id {event_id!r} was used by several devices; give the device")
    return rows[0]


def manifest_labels(session: Session, refs: Iterable[str]) -> dict[str, list[str]]:
    """The class labels of each model ``name:version`` in ``refs`` from its manifest in the
    catalog, read in one query (a model not in the catalog maps to ``[]``). The review page
    offers these as the correct label."""
    from .tables import ModelVersion

    wanted = {r for r in refs if r and ":" in r}
    out: dict[str, list[str]] = {r: [] for r in wanted}
    pairs = [tuple(r.split(":", 1)) for r in wanted]
    if not pairs:
        return out
    q = select(ModelVersion).where(or_(*(and_(col(ModelVersion.name) == n, col(ModelVersion.version) == v)
                                         for n, v in pairs)))
    for mv in session.exec(q).all():
        labels = mv.manifest.get("labels") if isinstance(mv.manifest, dict) else None
        out[f"{mv.name}:{mv.version}"] = [lab for lab in labels or [] if isinstance(lab, str)]
    return out


def event_models(event: ShadowEvent) -> list[str]:
    """``name:version`` of the capture's control, then its candidate (when there is one)."""
    refs = []
    for side in ("control", "candidate"):
        name, version = getattr(event, f"{side}_name"), getattr(event, f"{side}_version")
        if name and version:
            refs.append(f"{name}:{version}")
    return refs


def queue_labels(session: Session, items: list[ReviewItem]) -> dict[str, list[str]]:
    """``manifest_labels`` of every model the items' captures name (the queue's label choices)."""
    return manifest_labels(session, {ref for it in items for ref in event_models(it.event)})


def merged_labels(refs: list[str], by_model: dict[str, list[str]]) -> list[str]:
    """The control's labels, then any the candidate's adds (what a capture may carry)."""
    out: list[str] = []
    for ref in refs:
        out.extend(lab for lab in by_model.get(ref, []) if lab not in out)
    return out


def model_labels(session: Session, event: ShadowEvent) -> list[str]:
    """The class labels a capture may carry: the control's manifest labels, then any the
    candidate's manifest adds (both from the catalog; empty when neither is there)."""
    refs = event_models(event)
    return merged_labels(refs, manifest_labels(session, refs))


def check_corrected_label(session: Session, event: ShadowEvent, verdict: str, corrected: str) -> str:
    """``corrected`` if it is one of the models' labels and does not contradict ``verdict``.

    Raises:
        BadRequest: not a label of the models' manifests (the message lists them), or a
            verdict that says a model was right about another class.
    """
    allowed = model_labels(session, event)
    if not allowed:
        raise BadRequest(f"cannot check the label {corrected!r}: neither model of this capture is in the catalog")
    if corrected not in allowed:
        shown = ", ".join(allowed[:50]) + (" …" if len(allowed) > 50 else "")
        raise BadRequest(f"label {corrected!r} is not a class of these models; known labels: {shown}")
    for side in ("control", "candidate"):
        said = getattr(event, f"{side}_label")
        if verdict == f"{side}_right" and said != corrected:
            raise BadRequest(f"verdict {verdict} says the {side} ({said!r}) was right, but the label given is "
                             f"{corrected!r}; use both_wrong for another class")
    return corrected


def training_label(event: ShadowEvent, lab: ReviewLabel) -> tuple[str | None, str]:
    """(the label a training set gets, where it came from): the reviewer's corrected label
    when given, else the label of the model the verdict says was right; (None, why) for
    ``both_wrong`` without a corrected label and for ``unclear``."""
    if lab.corrected_label:
        return lab.corrected_label, "reviewer"
    if lab.verdict == "control_right" and event.control_label is not None:
        return event.control_label, "control"
    if lab.verdict == "candidate_right" and event.candidate_label is not None:
        return event.candidate_label, "candidate"
    return None, "both_wrong without a corrected label" if lab.verdict == "both_wrong" else lab.verdict


def label(session: Session, event_id: str, verdict: str, *, note: str = "", reviewer: str = "",
          device_id: str | None = None, now: datetime | None = None,
          corrected_label: str | None = None) -> ReviewLabel:
    """Record (or replace) the verdict on one capture, and the correct class when the
    reviewer gives it (``check_corrected_label``); commits.

    Raises:
        BadRequest: unknown verdict, or a corrected label that is not a class of the models or
            contradicts the verdict. NotFound / Conflict: see ``find_event``.
    """
    if verdict not in VERDICTS:
        raise BadRequest(f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
    event = find_event(session, event_id, device_id)
    assert event.id is not None
    corrected = check_corrected_label(session, event, verdict, corrected_label) if corrected_label else None
    row = session.exec(select(ReviewLabel).where(ReviewLabel.shadow_event_id == event.id)).first()
    if row is None:
        row = ReviewLabel(shadow_event_id=event.id, device_id=event.device_id, event_id=event.event_id, verdict=verdict)
    row.verdict, row.note, row.reviewer = verdict, (note or "")[:4000], reviewer
    row.corrected_label = corrected
    row.labelled_at = now or _utcnow()
    session.add(row)
    session.commit()
    return row


# ----- export -----


@dataclass(frozen=True)
class ExportItem:
    row: dict[str, Any]  # one labels.jsonl line
    clip_digest: str | None
    keyframe_digest: str | None
    clip_type: str | None = None  # the clip's MIME type (how to decode it)


_EXT = {"video/webm": ".webm", "video/mp4": ".mp4", "video/x-msvideo": ".avi"}


def export_items(session: Session, f: QueueFilter = QueueFilter(), *, limit: int = 100_000) -> list[ExportItem]:
    """Labelled captures matching ``f``, oldest first, as labels.jsonl rows plus blob digests."""
    q = _filtered(_joined(ShadowEvent, ReviewLabel, Clip).outerjoin(Clip, col(Clip.clip_id) == ShadowEvent.clip_id),
                  QueueFilter(**{**f.__dict__, "labelled": True, "unlabelled": False}))
    q = q.order_by(col(ShadowEvent.ts), col(ShadowEvent.id)).limit(limit)
    out = []
    for e, lab, clip in session.exec(q).all():
        stem = e.event_id if not _clashes(session, e) else f"{e.device_id}-{e.event_id}"
        clip_file = f"clips/{stem}{_EXT.get(clip.content_type, '.bin')}" if clip else None
        key_file = f"keyframes/{stem}.jpg" if clip and clip.keyframe_digest else None
        training, source = training_label(e, lab)
        record = e.record or {}
        row = {
            "event_id": e.event_id, "verdict": lab.verdict, "note": lab.note, "reviewer": lab.reviewer,
            "corrected_label": lab.corrected_label, "label": training, "label_source": source,
            "frame_index": record.get("frame_index") if isinstance(record.get("frame_index"), int) else None,
            "campaign": record.get("campaign") if isinstance(record.get("campaign"), (str, dict)) else None,
            "labelled_at": _iso(lab.labelled_at), "device_id": e.device_id, "ts": _iso(e.ts), "trigger": e.trigger,
            "control": _output(e, "control"), "candidate": _output(e, "candidate"),
            "clip": clip_file, "keyframe": key_file,
        }
        out.append(ExportItem(row, clip.clip_digest if clip else None, clip.keyframe_digest if key_file and clip else None,
                              clip.content_type if clip else None))
    return out


def _clashes(session: Session, e: ShadowEvent) -> bool:
    n = session.exec(select(func.count()).select_from(ShadowEvent).where(ShadowEvent.event_id == e.event_id)).one()
    return int(n) > 1


def _files(items: list[ExportItem]) -> Iterator[tuple[str, str]]:
    for it in items:
        if it.row["clip"] and it.clip_digest:
            yield it.row["clip"], it.clip_digest
        if it.row["keyframe"] and it.keyframe_digest:
            yield it.row["keyframe"], it.keyframe_digest


def labels_jsonl(items: list[ExportItem]) -> bytes:
    return b"".join(json.dumps(it.row, sort_keys=True).encode() + b"\n" for it in items)


class _Sink(io.RawIOBase):
    """An unseekable write target whose bytes are taken out between zip entries."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.parts.append(bytes(b))
        return len(b)

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def iter_zip(items: list[ExportItem], store: BlobStore, *, chunk: int = 1 << 20) -> Iterator[bytes]:
    """The export as a zip, produced entry by entry (clips are stored, labels deflated)."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w") as zf:  # type: ignore[arg-type]
        for name, digest in _files(items):
            with store.open(digest) as src, zf.open(zipfile.ZipInfo(name, _zip_time()), "w") as dst:
                while block := src.read(chunk):
                    dst.write(block)
                    yield sink.take()
            yield sink.take()
        info = zipfile.ZipInfo(LABELS_FILE, _zip_time())
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, labels_jsonl(items))
    yield sink.take()


def _zip_time() -> tuple[int, int, int, int, int, int]:
    return datetime.now(timezone.utc).timetuple()[:6]  # type: ignore[return-value]


def write_zip(items: list[ExportItem], store: BlobStore, target: BinaryIO) -> None:
    for part in iter_zip(items, store):
        target.write(part)


def write_folder(items: list[ExportItem], store: BlobStore, out: Path) -> Path:
    """``out/clips/``, ``out/keyframes/``, ``out/labels.jsonl`` (labels written last, atomically)."""
    for name, digest in _files(items):
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(store.get(digest))
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{LABELS_FILE}.tmp"
    tmp.write_bytes(labels_jsonl(items))
    os.replace(tmp, out / LABELS_FILE)
    return out


def extract_zip(source: BinaryIO | Path, out: Path) -> Path:
    """Unpack an export zip into ``out`` (refuses paths that leave ``out``)."""
    out.mkdir(parents=True, exist_ok=True)
    root = out.resolve()
    with zipfile.ZipFile(source) as zf:
        for name in zf.namelist():
            dest = (out / name).resolve()
            if root not in dest.parents:
                raise BadRequest(f"export entry {name!r} leaves the target folder")
        zf.extractall(out)
    return out


__all__ = [
    "LABELS_FILE", "VERDICTS", "ExportItem", "QueueFilter", "ReviewItem", "ReviewLabel", "check_corrected_label",
    "count", "event_models", "export_items", "extract_zip", "facets", "find_event", "item_public", "iter_zip", "label",
    "labels_jsonl", "manifest_labels", "merged_labels", "model_labels", "next_item", "queue", "queue_labels",
    "training_label", "verdict_counts", "write_folder", "write_zip",
]
