"""/api/v1/review — the review queue, verdicts on captures, and the training-data export.

The queue's ``labels`` maps each model ``name:version`` of its items to its manifest's class
labels: the choices for a verdict's ``corrected_label``. Reading the queue needs the viewer role; labelling and exporting need ``reviewer``
(operators and admins include it). The export streams a zip: ``clips/<event_id>.webm``,
``keyframes/<event_id>.jpg`` and ``labels.jsonl`` (see ``cloud.review``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from ... import review
from ..deps import ControllerDep, Principal, SessionDep, Viewer, require
from ..params import DeviceIdValue, Offset, PairRef, Timestamp
from ..problems import responses

router = APIRouter(prefix="/review", tags=["review"])
Reviewer = Annotated[Principal, Depends(require("reviewer"))]


Verdict = Literal["control_right", "candidate_right", "both_wrong", "unclear"]  # review.VERDICTS
EventId = Annotated[str, Path(min_length=1, max_length=128, description="the capture's event id")]


class LabelBody(BaseModel):
    verdict: Verdict
    note: str = Field(default="", max_length=4000)
    device_id: DeviceIdValue | None = Field(default=None, description="only needed when several devices used the event id")
    corrected_label: str | None = Field(
        default=None, min_length=1, max_length=128,
        description="the correct class, when the reviewer knows it: one of the labels of the capture's models' "
                    "manifests, consistent with the verdict (a training export uses it as the label)")


def queue_filter(
    pair: Annotated[PairRef | None, Query(description="CONTROL,CANDIDATE or N1:V1:N2:V2")] = None,
    class_: Annotated[str | None, Query(alias="class", max_length=128, description="control or candidate label")] = None,
    control_label: Annotated[str | None, Query(max_length=128, description="the control's label (a confusion-matrix row)")] = None,
    candidate_label: Annotated[str | None, Query(max_length=128, description="the candidate's label (a confusion-matrix column)")] = None,
    device: Annotated[str | None, Query(max_length=128)] = None,
    trigger: Annotated[str | None, Query(max_length=32, description="disagreement, low_confidence, near_threshold, sample")] = None,
    since: Annotated[Timestamp | None, Query(description="captures at or after (ISO 8601)")] = None,
    until: Annotated[Timestamp | None, Query(description="captures before (ISO 8601)")] = None,
    unlabelled: Annotated[bool, Query(description="only captures nobody has labelled")] = False,
    labelled: bool = False,
    has_clip: bool | None = None,
    verdict: Verdict | None = None,
    exclude: Annotated[list[str] | None, Query(description="event ids to leave out (repeatable)")] = None,
) -> review.QueueFilter:
    f = review.QueueFilter(pair=pair or None, label=class_ or None, control_label=control_label,
                           candidate_label=candidate_label, device_id=device or None, trigger=trigger or None,
                           since=since, until=until, unlabelled=unlabelled, labelled=labelled, has_clip=has_clip,
                           verdict=verdict, exclude=tuple(exclude or ()))
    return f


Filter = Annotated[review.QueueFilter, Depends(queue_filter)]


@router.get("/queue", summary="Captures to review, newest first, with their label")
def get_queue(session: SessionDep, _: Viewer, f: Filter,
              limit: Annotated[int, Query(ge=1, le=1000)] = 50,
              offset: Annotated[Offset, Query()] = 0) -> dict[str, Any]:
    items = review.queue(session, f, limit=limit, offset=offset)
    return {"items": [review.item_public(i) for i in items], "total": review.count(session, f),
            "unlabelled": review.count(session, review.QueueFilter(**{**f.__dict__, "unlabelled": True})),
            "labels": review.queue_labels(session, items)}  # manifest labels per model name:version


@router.post("/{event_id}/label", summary="Label one capture: control_right, candidate_right, both_wrong, unclear",
             responses=responses(409, _409="several devices used this event id: name device_id"))
def post_label(event_id: EventId, body: LabelBody, session: SessionDep, who: Reviewer) -> dict[str, Any]:
    event = review.find_event(session, event_id, body.device_id)
    row = review.label(session, event_id, body.verdict, note=body.note, reviewer=who.name,
                       device_id=event.device_id, corrected_label=body.corrected_label)
    return review.item_public(review.ReviewItem(event, row))


@router.get("/export", summary="Labelled captures as a zip: clips/, keyframes/, labels.jsonl — or a training "
            "format (imagefolder, coco, yolo, jsonl) of frames extracted at the trigger",
            response_class=StreamingResponse)
def export(session: SessionDep, controller: ControllerDep, _: Reviewer, f: Filter,
           format: Annotated[Literal["zip", "imagefolder", "coco", "yolo", "jsonl"], Query(
               description="zip: clips, keyframes and labels.jsonl; imagefolder (torchvision), coco, yolo "
                           "(Ultralytics classification), jsonl: PNG frames laid out for that tool, with "
                           "provenance.json (see cloud.training_export)")] = "zip",
           all_frames: Annotated[bool, Query(description="every frame of each clip, not only the trigger frame")] = False,
           test_fraction: Annotated[float, Query(ge=0.0, lt=1.0, description="yolo: share of captures in test/")] = 0.2,
           ) -> StreamingResponse:
    items = review.export_items(session, f)  # read now: the stream outlives the session
    if format != "zip":
        from ... import training_export

        files = training_export.build(
            items, controller.store, format, all_frames=all_frames, test_fraction=test_fraction,
            labels=training_export.known_labels(session, items),
            filters={k: v for k, v in f.__dict__.items() if v not in (None, False, ())})
        return StreamingResponse(training_export.iter_training_zip(files), media_type="application/zip",
                                 headers={"Content-Disposition": f'attachment; filename="review-{format}.zip"',
                                          "X-Edgefleet-Labels": str(len(items))})
    name = "review-export.zip"
    return StreamingResponse(review.iter_zip(items, controller.store), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="{name}"',
                                      "X-Edgefleet-Labels": str(len(items))})
