"""Reviewed captures as training data that training tools read as they are.

``review.export_items`` gives the labelled captures (verdict, corrected label, both models'
outputs and digests, clip and keyframe blobs). ``build(items, store, fmt, ...)`` turns them
into files, ``(path, bytes)`` in order, for ``iter_training_zip`` to stream:

1. each capture's label: the reviewer's corrected label, else the label of the model the
   verdict says was right (``review.training_label``); ``both_wrong`` without a corrected
   label and ``unclear`` have no label and are left out (counted in the provenance);
2. its frames: the clip is decoded with OpenCV and the frame at the trigger
   (``Event.frame_index``; the middle frame when the device did not say) is written as PNG
   — or every frame with ``all_frames`` (all frames of one capture stay in one split); a
   capture without a clip falls back to its keyframe JPEG;
3. a layout per format:

   * ``imagefolder`` — ``<class>/<file>.png``: torchvision's ``ImageFolder``
     (``root/dog/xxx.png``; classes are the sub-folders, sorted);
   * ``yolo`` — Ultralytics' *classification* dataset layout (these are classifiers, not
     detectors): ``train/<class>/<file>.png`` and ``test/<class>/<file>.png`` (``val`` is
     optional there; Ultralytics validates on ``test`` without it); captures are split by
     a hash of the event id (``test_fraction``, default 0.2), so a re-export keeps them
     where they were (and neither folder is left empty: ``assign_splits``);
   * ``coco`` — ``images/<file>.png`` and ``annotations.json`` (``images``, ``annotations``
     with ``category_id`` and a whole-image ``bbox``, ``categories`` with ids 1..N in the
     control manifest's label order);
   * ``jsonl`` — ``images/<file>.png`` and ``labels.jsonl``, one JSON line per image
     (``file_name``, ``label``, and the provenance fields);

4. ``provenance.json`` at the root: for every image the device, capture time, trigger,
   verdict, label and its source, reviewer, both models with their digests, the frame
   index and the campaign (when the device named one); and the export's own counts. Files
   at the root do not disturb ``ImageFolder`` or Ultralytics (they read sub-folders).

Folder and file names are made safe (``safe_name``); the real labels are in the
provenance, ``annotations.json`` and ``labels.jsonl``.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..registry import BlobStore
from .errors import BadRequest
from .review import ExportItem, _zip_time

FORMATS = ("imagefolder", "coco", "yolo", "jsonl")
PROVENANCE_FILE = "provenance.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")
_VIDEO_SUFFIX = {"video/webm": ".webm", "video/mp4": ".mp4", "video/x-msvideo": ".avi"}


def safe_name(text: str) -> str:
    """A file or folder name from ``text``: letters, digits, ``_ . -`` only, never hidden,
    never empty, at most 100 characters (``left turn/x`` → ``left_turn_x``)."""
    name = _UNSAFE.sub("_", text).strip("._") or "_"
    return name[:100]


@dataclass(frozen=True)
class Image:
    file: str  # the stem: <event>[_f0007]
    frame: np.ndarray
    frame_index: int | None
    at_trigger: bool


def _decode_clip(data: bytes, content_type: str | None) -> list[np.ndarray]:
    import cv2

    with tempfile.NamedTemporaryFile(suffix=_VIDEO_SUFFIX.get(content_type or "", ".webm")) as f:
        f.write(data)
        f.flush()
        cap = cv2.VideoCapture(f.name)
        frames: list[np.ndarray] = []
        try:
            while cap.isOpened():
                ok, img = cap.read()
                if not ok:
                    break
                frames.append(img)
        finally:
            cap.release()
    return frames


def _decode_jpeg(data: bytes) -> np.ndarray | None:
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return img if img is not None else None


def frames_of(item: ExportItem, store: BlobStore, *, all_frames: bool) -> list[Image]:
    """The capture's trigger frame (or every frame) as images; [] when nothing decodes."""
    row = item.row
    stem = safe_name(Path(row["clip"]).stem if row.get("clip") else row["event_id"])
    if item.clip_digest:
        frames = _decode_clip(store.get(item.clip_digest), item.clip_type)
        if frames:
            want = row.get("frame_index")
            trigger = want if isinstance(want, int) and 0 <= want < len(frames) else len(frames) // 2
            if not all_frames:
                return [Image(stem, frames[trigger], trigger, True)]
            return [Image(f"{stem}_f{i:04d}", f, i, i == trigger) for i, f in enumerate(frames)]
    if item.keyframe_digest:
        key = _decode_jpeg(store.get(item.keyframe_digest))
        if key is not None:
            return [Image(stem, key, row.get("frame_index"), True)]
    return []


def _png(frame: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", frame)
    if not ok:
        raise BadRequest("a frame could not be encoded as PNG")
    return buf.tobytes()


def split_of(event_id: str, test_fraction: float) -> str:
    """``train`` or ``test``, stable per event id (a hash, not a random draw)."""
    h = int.from_bytes(hashlib.sha256(event_id.encode()).digest()[:8], "big") / 2**64
    return "test" if h < test_fraction else "train"


def assign_splits(captures: Mapping[str, str], test_fraction: float, *, both: bool) -> dict[str, str]:
    """Each capture's split (``captures``: event id -> the key its hash is taken of).

    With ``both`` (Ultralytics wants ``train/`` and ``test/``), a non-zero fraction and at
    least two captures, neither split is left empty: the hash alone puts every capture in
    ``test/`` with probability ``test_fraction ** n``; then one capture, chosen by its event
    id's hash so a re-export chooses the same one, moves over."""
    splits = {event: split_of(key, test_fraction) for event, key in captures.items()}
    if both and test_fraction > 0 and len(splits) > 1:
        by_hash = sorted(splits, key=lambda e: hashlib.sha256(e.encode()).hexdigest())
        if "test" not in splits.values():
            splits[by_hash[-1]] = "test"
        elif "train" not in splits.values():
            splits[by_hash[0]] = "train"
    return splits


def categories(items: Sequence[ExportItem], known: Sequence[str]) -> list[str]:
    """Class names in a stable order: ``known`` (the models' manifest labels), then any
    other label the export holds, sorted."""
    extra = sorted({it.row["label"] for it in items if it.row.get("label") and it.row["label"] not in known})
    return [*known, *extra]


def known_labels(session: Any, items: Sequence[ExportItem]) -> list[str]:
    """The labels of every model the items name (catalog manifests), control models first,
    in manifest order: the COCO category ids follow it."""
    from sqlmodel import select

    from .tables import ModelVersion

    out: list[str] = []
    refs: list[str] = []
    for side in ("control", "candidate"):
        for it in items:
            ref = (it.row.get(side) or {}).get("model")
            if ref and ref not in refs:
                refs.append(ref)
    for ref in refs:
        name, _, version = ref.rpartition(":")
        mv = session.exec(select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)).first()
        for lab in (mv.manifest.get("labels") or []) if mv is not None else []:
            if isinstance(lab, str) and lab not in out:
                out.append(lab)
    return out


def _provenance_row(row: dict[str, Any], img: Image, path: str) -> dict[str, Any]:
    return {
        "file_name": path, "label": row["label"], "label_source": row["label_source"],
        "event_id": row["event_id"], "device_id": row["device_id"], "ts": row["ts"], "trigger": row["trigger"],
        "verdict": row["verdict"], "corrected_label": row.get("corrected_label"), "reviewer": row["reviewer"],
        "labelled_at": row["labelled_at"], "frame_index": img.frame_index, "at_trigger": img.at_trigger,
        "control": row.get("control"), "candidate": row.get("candidate"), "campaign": row.get("campaign"),
    }


def build(items: Sequence[ExportItem], store: BlobStore, fmt: str, *, all_frames: bool = False,
          labels: Sequence[str] = (), test_fraction: float = 0.2, filters: dict[str, Any] | None = None,
          now: datetime | None = None) -> Iterator[tuple[str, bytes]]:
    """The export's files in ``fmt``, one at a time (images first, index files last).

    Raises:
        BadRequest: an unknown format or a test fraction outside [0, 1).
    """
    if fmt not in FORMATS:
        raise BadRequest(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not 0.0 <= test_fraction < 1.0:
        raise BadRequest(f"test fraction is in [0, 1), got {test_fraction}")
    now = now or datetime.now(timezone.utc)
    classes = categories(items, labels)
    cat_id = {name: i + 1 for i, name in enumerate(classes)}
    skipped: Counter[str] = Counter()
    rows: list[dict[str, Any]] = []
    coco_images: list[dict[str, Any]] = []
    coco_annotations: list[dict[str, Any]] = []
    splits = assign_splits({it.row["event_id"]: f"{it.row['device_id']}/{it.row['event_id']}"
                            for it in items if it.row.get("label")},  # only what is exported
                           test_fraction, both=fmt == "yolo")
    for it in items:
        row = it.row
        if not row.get("label"):
            skipped[row["label_source"]] += 1
            continue
        images = frames_of(it, store, all_frames=all_frames)
        if not images:
            skipped["no clip or keyframe to extract a frame from"] += 1
            continue
        folder = safe_name(row["label"])
        for img in images:
            name = f"{img.file}.png"
            path = {"imagefolder": f"{folder}/{name}", "yolo": f"{splits[row['event_id']]}/{folder}/{name}",
                    "coco": f"images/{name}", "jsonl": f"images/{name}"}[fmt]
            yield path, _png(img.frame)
            rows.append(_provenance_row(row, img, path))
            if fmt == "coco":
                h, w = img.frame.shape[:2]
                image_id = len(coco_images) + 1
                coco_images.append({"id": image_id, "file_name": name, "width": int(w), "height": int(h),
                                    "date_captured": row["ts"]})
                coco_annotations.append({"id": image_id, "image_id": image_id, "category_id": cat_id[row["label"]],
                                         "bbox": [0, 0, int(w), int(h)], "area": int(w) * int(h), "iscrowd": 0})
    if fmt == "coco":
        doc = {"info": {"description": "edgefleet reviewed captures", "version": "1",
                        "date_created": now.isoformat().replace("+00:00", "Z")},
               "licenses": [], "images": coco_images, "annotations": coco_annotations,
               "categories": [{"id": cat_id[c], "name": c, "supercategory": "class"} for c in classes]}
        yield "annotations.json", json.dumps(doc, indent=1).encode()
    if fmt == "jsonl":
        yield "labels.jsonl", b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in rows)
    provenance = {
        "schema": "fleet.training-export/1", "format": fmt, "all_frames": all_frames,
        "exported_at": now.isoformat().replace("+00:00", "Z"), "filters": filters or {},
        "classes": classes, "layout": LAYOUTS[fmt],
        "counts": {"captures": len(items), "images": len(rows),
                   "captures_exported": len({(r["device_id"], r["event_id"]) for r in rows}),
                   "skipped": dict(sorted(skipped.items()))},
        "images": rows,
    }
    if fmt == "yolo":
        provenance["splits"] = {"test_fraction": test_fraction,
                                "test": sorted({r["event_id"] for r in rows if r["file_name"].startswith("test/")})}
    yield PROVENANCE_FILE, json.dumps(provenance, indent=1, sort_keys=True, default=str).encode()


LAYOUTS = {
    "imagefolder": "torchvision.datasets.ImageFolder: <class>/<file>.png",
    "yolo": "Ultralytics classification: train/<class>/<file>.png, test/<class>/<file>.png",
    "coco": "COCO: images/<file>.png, annotations.json (images, annotations, categories)",
    "jsonl": "images/<file>.png, labels.jsonl (file_name, label, provenance)",
}


def iter_training_zip(files: Iterator[tuple[str, bytes]]) -> Iterator[bytes]:
    """Stream ``(path, bytes)`` entries as a zip (PNGs stored, index files deflated)."""
    import zipfile

    from .review import _Sink

    sink = _Sink()
    with zipfile.ZipFile(sink, "w") as zf:  # type: ignore[arg-type]
        for name, data in files:
            info = zipfile.ZipInfo(name, _zip_time())
            info.compress_type = zipfile.ZIP_STORED if name.endswith(".png") else zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
            yield sink.take()
    yield sink.take()


__all__ = ["FORMATS", "LAYOUTS", "PROVENANCE_FILE", "build", "categories", "frames_of", "iter_training_zip",
           "known_labels", "safe_name", "split_of"]
