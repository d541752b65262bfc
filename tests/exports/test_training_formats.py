"""``fleet review export --format imagefolder|coco|yolo|jsonl`` on a real server: frames from
the clips at the trigger (or all of them), labels from the verdicts or the reviewer's
corrected label, the tools' documented layouts, and a provenance manifest."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
from typer.testing import CliRunner

from edgefleet.cloud.cli import app
from edgefleet.cloud.training_export import safe_name
from tests.review.conftest import ReviewServer

from .conftest import EXPECTED, label

PAIR = "digits:1.0:digits:2.0"


def export(server: ReviewServer, out: Path, *args: str) -> Any:
    res = CliRunner().invoke(app, ["review", "export", "--pair", PAIR, *args, str(out), "--url", server.url,
                                   "--token", server.tokens["reviewer"]])
    assert res.exit_code == 0, res.output
    return json.loads((out / "provenance.json").read_text())


def clip_frames(server: ReviewServer, event_id: str) -> list[np.ndarray]:
    from edgefleet.cloud.review import QueueFilter, export_items

    with server.controller.session() as s:
        (item,) = [it for it in export_items(s, QueueFilter()) if it.row["event_id"] == event_id]
    assert item.clip_digest is not None
    with tempfile.NamedTemporaryFile(suffix=".webm") as f:
        f.write(server.controller.store.get(item.clip_digest))
        f.flush()
        cap = cv2.VideoCapture(f.name)
        frames = []
        while (got := cap.read())[0]:
            frames.append(got[1])
        cap.release()
    return frames


def image_folder_samples(root: Path) -> list[tuple[Path, str]]:
    """What torchvision's ``ImageFolder`` finds: each sub-folder of ``root`` is a class (sorted),
    each image file in it (an IMG_EXTENSIONS suffix) a sample; files at the root are ignored."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    samples = []
    for c in classes:
        for f in sorted((root / c).iterdir()):
            assert f.is_file() and f.suffix == ".png", f"{f}: ImageFolder wants image files only, no nesting"
            assert cv2.imread(str(f)) is not None
            samples.append((f, c))
    return samples


def test_reviewer_enters_the_correct_label_checked_against_the_manifest(labelled: ReviewServer) -> None:
    eid = labelled.event_ids[2]
    queue = httpx.get(f"{labelled.url}/api/v1/review/queue", headers=labelled.headers("viewer"),
                      params={"device": "cam-b", "labelled": True}).json()
    (item,) = [it for it in queue["items"] if it["event_id"] == eid]
    assert item["label"]["corrected_label"] == "9" and item["label"]["training_label"] == "9"
    unknown = label(labelled, eid, "both_wrong", "<b>cat</b>")
    assert unknown.status_code == 400 and "is not a class of these models" in unknown.text and "0, 1, 2" in unknown.text
    contradiction = label(labelled, eid, "control_right", "3")  # the control said "8"
    assert contradiction.status_code == 400 and "use both_wrong" in contradiction.text
    after = httpx.get(f"{labelled.url}/api/v1/review/queue", headers=labelled.headers("viewer"),
                      params={"device": "cam-b", "labelled": True}).json()
    assert [it["label"]["corrected_label"] for it in after["items"] if it["event_id"] == eid] == ["9"]  # nothing lost
    res = CliRunner().invoke(app, ["review", "label", eid, "b", "--label", "9", "--url", labelled.url,
                                   "--token", labelled.tokens["reviewer"]])
    assert res.exit_code == 0 and "both_wrong, label 9" in res.output


def test_imagefolder_holds_the_trigger_frame_under_its_class_with_provenance(labelled: ReviewServer,
                                                                           tmp_path: Path) -> None:
    out = tmp_path / "imagefolder"
    prov = export(labelled, out, "--format", "imagefolder")
    samples = image_folder_samples(out)
    ids = labelled.event_ids
    assert sorted((p.stem, c) for p, c in samples) == sorted((safe_name(ids[i]), lab) for i, lab in EXPECTED.items())
    assert prov["counts"]["images"] == 3 and prov["counts"]["skipped"] == {
        "both_wrong without a corrected label": 1, "unclear": 1}
    # the frame at the trigger (the device said frame 12), losslessly
    frames = clip_frames(labelled, ids[0])
    assert np.array_equal(cv2.imread(str(out / "8" / f"{ids[0]}.png")), frames[12])
    row = next(r for r in prov["images"] if r["event_id"] == ids[2])
    assert row["label"] == "9" and row["label_source"] == "reviewer" and row["verdict"] == "both_wrong"
    assert row["device_id"] == "cam-b" and row["ts"] and row["frame_index"] == 12 and row["at_trigger"] is True
    assert row["control"]["digest"] == labelled.control.digest and row["candidate"]["digest"] == labelled.candidate.digest
    assert "campaign" in row and row["reviewer"] == "reviewer-user"


def test_coco_export_loads_in_pycocotools(labelled: ReviewServer, tmp_path: Path) -> None:
    from pycocotools.coco import COCO

    out = tmp_path / "coco"
    export(labelled, out, "--format", "coco")
    coco = COCO(str(out / "annotations.json"))
    cats = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert list(cats.values())[:10] == [str(i) for i in range(10)]  # the manifest's labels, in order
    images = coco.loadImgs(coco.getImgIds())
    assert len(images) == 3
    got = {}
    for img in images:
        (ann,) = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
        pixels = cv2.imread(str(out / "images" / img["file_name"]))
        assert pixels.shape[:2] == (img["height"], img["width"])
        assert ann["bbox"] == [0, 0, img["width"], img["height"]] and ann["iscrowd"] == 0
        got[Path(img["file_name"]).stem] = cats[ann["category_id"]]
    assert got == {safe_name(labelled.event_ids[i]): lab for i, lab in EXPECTED.items()}
    assert coco.getImgIds(catIds=coco.getCatIds(catNms=["9"])) != []


def test_yolo_classification_layout_with_every_frame_split_per_capture(labelled: ReviewServer, tmp_path: Path) -> None:
    out = tmp_path / "yolo"
    prov = export(labelled, out, "--format", "yolo", "--all-frames", "--test-fraction", "0.3")
    assert {d.name for d in out.iterdir() if d.is_dir()} == {"train", "test"}  # Ultralytics: train/ and test/
    per_event: dict[str, set[str]] = {}
    n = 0
    for split in ("train", "test"):
        for path, cls in image_folder_samples(out / split):
            event = path.stem.rsplit("_f", 1)[0]
            per_event.setdefault(event, set()).add(split)
            assert EXPECTED[[safe_name(e) for e in labelled.event_ids].index(event)] == cls
            n += 1
    assert all(len(splits) == 1 for splits in per_event.values())  # a capture's frames never straddle splits
    assert len(per_event) == 3 and n == prov["counts"]["images"] == 3 * 24  # the seed's clips have 24 frames
    triggers = [r for r in prov["images"] if r["at_trigger"]]
    assert len(triggers) == 3 and {r["frame_index"] for r in triggers} == {12}


def test_jsonl_rows_name_their_images(labelled: ReviewServer, tmp_path: Path) -> None:
    out = tmp_path / "jsonl"
    export(labelled, out, "--format", "jsonl")
    rows = [json.loads(x) for x in (out / "labels.jsonl").read_text().splitlines()]
    assert sorted(r["label"] for r in rows) == sorted(EXPECTED.values())
    assert all((out / r["file_name"]).is_file() and r["control"]["digest"] for r in rows)


def test_bad_export_input_is_refused(labelled: ReviewServer, tmp_path: Path) -> None:
    auth = ["--url", labelled.url, "--token", labelled.tokens["reviewer"]]
    res = CliRunner().invoke(app, ["review", "export", "--format", "voc", str(tmp_path / "x"), *auth])
    assert res.exit_code == 2 and "--format must be one of" in res.output
    res = CliRunner().invoke(app, ["review", "export", "--format", "zip", "--all-frames", str(tmp_path / "x"), *auth])
    assert res.exit_code == 2
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    res = CliRunner().invoke(app, ["review", "export", "--format", "coco", str(tmp_path / "full"), *auth])
    assert res.exit_code == 2 and "not empty" in res.output and (tmp_path / "full" / "keep.txt").read_text() == "mine"
    r = httpx.get(f"{labelled.url}/api/v1/review/export", headers=labelled.headers("reviewer"),
                  params={"format": "yolo", "test_fraction": 1.5})
    assert r.status_code in (400, 422)
