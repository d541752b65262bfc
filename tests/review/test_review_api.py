"""The review API on a real server: queue filters, verdicts by role, next item, zip export."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from edgefleet.cloud import review, shadow_index

PAIR = "digits:1.0:digits:2.0"


def _queue(server, role: str = "viewer", **params) -> dict:  # type: ignore[no-untyped-def]
    r = httpx.get(server.url + "/api/v1/review/queue", params=params, headers=server.headers(role))
    assert r.status_code == 200, r.text
    return r.json()


def _label(server, event_id: str, verdict: str, role: str = "reviewer", **extra) -> httpx.Response:  # type: ignore[no-untyped-def]
    return httpx.post(server.url + f"/api/v1/review/{event_id}/label", json={"verdict": verdict, **extra},
                      headers=server.headers(role))


def test_queue_filters_by_pair_class_device_trigger_time_and_confusion_cell(server) -> None:  # type: ignore[no-untyped-def]
    everything = _queue(server)
    assert everything["total"] == 5
    ts = [it["ts"] for it in everything["items"]]
    assert ts == sorted(ts, reverse=True)  # newest first
    assert _queue(server, pair=PAIR)["total"] == 5
    assert _queue(server, pair="digits:1.0,digits:9.9")["total"] == 0
    assert _queue(server, **{"class": "8"})["total"] == 3
    assert _queue(server, **{"class": "3"})["total"] == 3  # control or candidate said 3
    assert _queue(server, device="cam-b")["total"] == 2
    assert _queue(server, trigger="low_confidence")["items"][0]["control"]["label"] == "5"
    cell = _queue(server, pair=PAIR, control_label="8", candidate_label="3")
    assert cell["total"] == 2 and {it["device_id"] for it in cell["items"]} == {"cam-a"}
    newest = datetime.fromisoformat(ts[0].replace("Z", "+00:00"))
    recent = _queue(server, since=(newest - timedelta(seconds=25)).isoformat())
    assert recent["total"] == 3
    older = _queue(server, until=(newest - timedelta(seconds=25)).isoformat())
    assert older["total"] == 2
    item = everything["items"][0]
    assert item["clip_id"] and item["control"]["digest"] == server.control.digest
    assert item["candidate"]["digest"] == server.candidate.digest and len(item["control"]["scores"]) == 10


def test_malformed_pair_is_a_400_with_the_accepted_shapes(server) -> None:  # type: ignore[no-untyped-def]
    r = httpx.get(server.url + "/api/v1/review/queue", params={"pair": "digits"}, headers=server.headers("viewer"))
    assert r.status_code == 422 and "CONTROL,CANDIDATE" in r.json()["message"]  # checked at the schema


@pytest.mark.parametrize("role", ["viewer"])
def test_a_viewer_reads_the_queue_but_may_not_label_or_export(server, role) -> None:  # type: ignore[no-untyped-def]
    eid = server.event_ids[0]
    r = _label(server, eid, "control_right", role=role)
    assert r.status_code == 403 and "reviewer" in r.json()["detail"]
    r = httpx.get(server.url + "/api/v1/review/export", headers=server.headers(role))
    assert r.status_code == 403
    assert _queue(server, role=role)["unlabelled"] == _queue(server)["total"] - _queue(server, labelled=True)["total"]


def test_labelling_takes_the_item_out_of_the_unlabelled_queue_and_the_next_one_is_ready(server) -> None:  # type: ignore[no-untyped-def]
    before = _queue(server, device="cam-b", unlabelled=True)
    first, second = before["items"][0], before["items"][1]
    r = _label(server, first["event_id"], "candidate_right", note="the 1 is a 1")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"]["verdict"] == "candidate_right" and body["label"]["reviewer"] == "reviewer-user"
    after = _queue(server, device="cam-b", unlabelled=True)
    assert after["total"] == before["total"] - 1 and after["items"][0]["event_id"] == second["event_id"]
    with server.controller.session() as s:
        nxt = review.next_item(s, review.QueueFilter(device_id="cam-b"))
        assert nxt is not None and nxt.event.event_id == second["event_id"]
    # a later verdict replaces the earlier one (operators include the reviewer role)
    r = _label(server, first["event_id"], "both_wrong", role="operator")
    assert r.status_code == 200 and r.json()["label"]["reviewer"] == "operator-user"
    labelled = _queue(server, labelled=True, device="cam-b")["items"]
    assert [it["label"]["verdict"] for it in labelled] == ["both_wrong"] and labelled[0]["label"]["note"] == ""


def test_unknown_verdict_and_unknown_event_are_refused(server) -> None:  # type: ignore[no-untyped-def]
    assert _label(server, server.event_ids[0], "maybe").status_code == 422
    assert _label(server, "no-such-event", "unclear").status_code == 404
    with server.controller.session() as s, pytest.raises(Exception, match="verdict must be one of"):
        review.label(s, server.event_ids[0], "maybe")


def test_export_zip_holds_the_clips_keyframes_and_one_labels_row_per_labelled_capture(server) -> None:  # type: ignore[no-untyped-def]
    eid = server.event_ids[2]  # cam-b, 8 vs 1
    assert _label(server, eid, "control_right", note="clearly an eight").status_code == 200
    r = httpx.get(server.url + "/api/v1/review/export", params={"pair": PAIR, "format": "zip"},
                  headers=server.headers("reviewer"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    rows = [json.loads(line) for line in zf.read("labels.jsonl").decode().splitlines()]
    assert int(r.headers["x-edgefleet-labels"]) == len(rows) >= 1
    row = next(x for x in rows if x["event_id"] == eid)
    assert row["verdict"] == "control_right" and row["note"] == "clearly an eight"
    assert row["reviewer"] == "reviewer-user" and row["device_id"] == "cam-b" and row["trigger"] == "disagreement"
    assert row["control"] == {"model": "digits:1.0", "digest": server.control.digest, "label": "8", "score": 0.91,
                              "scores": row["control"]["scores"]}
    assert row["candidate"]["label"] == "1" and row["candidate"]["digest"] == server.candidate.digest
    assert row["clip"] == f"clips/{eid}.webm" and row["keyframe"] == f"keyframes/{eid}.jpg"
    assert datetime.fromisoformat(row["ts"].replace("Z", "+00:00")).tzinfo == timezone.utc
    with server.controller.session() as s:
        [e] = shadow_index.list_events(s, device_id="cam-b", trigger="disagreement")
        clip = shadow_index.get_clip(s, e.clip_id)
    assert zf.read(row["clip"]) == server.controller.store.get(clip.clip_digest)
    assert zf.read(row["keyframe"])[:3] == b"\xff\xd8\xff"  # a JPEG
    assert set(zf.namelist()) == {"labels.jsonl", *(x["clip"] for x in rows), *(x["keyframe"] for x in rows)}
    # a filter that matches no labelled capture gives an empty but valid export
    r = httpx.get(server.url + "/api/v1/review/export", params={"pair": "digits:1.0,digits:9.9"},
                  headers=server.headers("reviewer"))
    assert zipfile.ZipFile(io.BytesIO(r.content)).read("labels.jsonl") == b""


def test_the_queue_names_each_models_manifest_labels_the_choices_for_a_corrected_label(server) -> None:  # type: ignore[no-untyped-def]
    control, candidate = server.control.label, server.candidate.label
    got = _queue(server, pair=PAIR)["labels"]
    with server.controller.session() as s:
        from sqlmodel import select

        from edgefleet.cloud.tables import ModelVersion

        manifests = {f"{mv.name}:{mv.version}": mv.manifest["labels"] for mv in s.exec(select(ModelVersion)).all()}
        assert got == {control: manifests[control], candidate: manifests[candidate]}
        # a model the catalog lacks has no labels (and a malformed ref is left out)
        assert review.manifest_labels(s, [control, "digits:9.9", "nocolon", ""]) == {
            control: manifests[control], "digits:9.9": []}
        [item] = [i for i in review.queue(s, review.QueueFilter(pair=PAIR), limit=1)]
        assert review.model_labels(s, item.event) == review.merged_labels([control, candidate], got)
    assert review.merged_labels(["a:1", "b:1"], {"a:1": ["x", "y"], "b:1": ["y", "z"], "c:1": ["w"]}) == ["x", "y", "z"]
    assert review.merged_labels(["b:1"], {}) == []
    assert _queue(server, device="cam-nobody")["labels"] == {}
