"""Real agents, broker and controller: disagreements become events and clips on the controller."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

from edgefleet.cloud.shadow_index import pair_agreement
from tests.conftest import Stack, wait_until

from .conftest import TEST_POLICY, clips, deploy_pair, events


def _decode(data: bytes, path: Path) -> list[np.ndarray]:
    path.write_bytes(data)
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def test_weak_class_disagreements_arrive_as_events_with_clips_holding_frames_before_the_trigger(
    stack: Stack, agents: Any, digit_models: Any, tmp_path: Path
) -> None:
    stack.controller.capture_policy = TEST_POLICY
    for device_id in ("cam-1", "cam-2"):
        agents(stack, device_id, fps=30.0)
    control, candidate = deploy_pair(stack, digit_models)

    stored = wait_until(lambda: [c for c in clips(stack)], 60, message="a clip stored by the controller")
    clip = stored[0]
    evs = {e.event_id: e for e in events(stack)}
    event = evs[clip.event_id]
    assert event.trigger == "disagreement" and event.control_label != event.candidate_label
    assert event.candidate_name == "digits" and event.device_id == clip.device_id
    assert event.clip_id == clip.clip_id

    # The clip plays back and holds ~pre_seconds of frames before the trigger frame.
    r = stack.client.http.get(f"/clips/{clip.clip_id}")
    assert r.status_code == 200 and r.headers["content-type"] == "video/webm"
    frames = _decode(r.content, tmp_path / "clip.webm")
    index = event.record["frame_index"]
    assert index is not None and 0 < index < len(frames)
    assert index >= 0.5 * TEST_POLICY.pre_seconds * 30 * 0.5  # at least half the nominal pre-roll at half rate
    kf = stack.client.http.get(f"/clips/{clip.clip_id}/keyframe")
    assert kf.status_code == 200 and kf.headers["content-type"] == "image/jpeg"
    key = cv2.imdecode(np.frombuffer(kf.content, np.uint8), cv2.IMREAD_COLOR)
    diffs = [float(np.abs(f.astype(np.float32) - key.astype(np.float32)).mean()) for f in frames]
    assert abs(int(np.argmin(diffs)) - index) <= 3  # the keyframe is the frame at frame_index

    # Range requests, for seeking in the browser.
    part = stack.client.http.get(f"/clips/{clip.clip_id}", headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == r.content[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(r.content)}"

    # Events and pair aggregates are queryable over /api/v1 (viewer reads).
    listed = stack.client.request("GET", "/events", params={"pair": f"{control},{candidate}", "trigger": "disagreement"})
    assert clip.event_id in {e["event_id"] for e in listed}
    pairs = wait_until(lambda: [p for p in stack.client.request("GET", "/shadow/pairs") if p["frames"] > 0], 20,
                       message="pair statistics from telemetry")
    assert pairs[0]["control"] == control and pairs[0]["candidate"] == candidate
    assert 0.0 < pairs[0]["agreement"] < 1.0 and pairs[0]["clips"] >= 1
    detail = stack.client.request("GET", f"/shadow/pairs/{control}/{candidate}")
    assert {d["device_id"] for d in detail["devices"]} <= {"cam-1", "cam-2"}
    assert detail["per_class"]["8"]["disagreements"] > 0
    assert sum(sum(row.values()) for row in detail["confusion"].values()) == detail["frames"]
    def same_as_database() -> bool:  # telemetry keeps arriving: compare a read taken between two equal ones
        before = stack.client.request("GET", f"/shadow/pairs/{control}/{candidate}")
        with stack.controller.session() as s:
            agreement, frames = pair_agreement(s, control, candidate)
        after = stack.client.request("GET", f"/shadow/pairs/{control}/{candidate}")
        if before["frames"] != after["frames"]:
            return False
        assert frames == after["frames"] and abs(agreement - after["agreement"]) < 1e-9
        return True

    wait_until(same_as_database, 20, message="pair statistics equal to the database's sums")

    # A reader without a token gets nothing.
    assert httpx.get(f"{stack.url}/api/v1/clips/{clip.clip_id}").status_code == 401


def test_a_device_cannot_upload_as_another_device(stack: Stack) -> None:
    token_a = stack.client.enrol_device("cam-a")["token"]
    stack.client.enrol_device("cam-b")
    event = {"schema": "fleet.event/1", "device_id": "cam-b", "event_id": "e-forged", "trigger": "disagreement"}
    body = {"event": event, "clip": {"size": 4, "sha256": "0" * 64, "content_type": "video/webm"}}
    with httpx.Client(base_url=f"{stack.url}/api/v1", headers={"Authorization": f"Bearer {token_a}"}) as http:
        r = http.post("/uploads", json=body)
        assert r.status_code == 403
        # Its own event is fine, and an admin token is not a device token.
        own = {**body, "event": {**event, "device_id": "cam-a", "event_id": "e-own"}}
        assert http.post("/uploads", json=own).status_code == 200
    admin = httpx.post(f"{stack.url}/api/v1/uploads", json=body, headers={"Authorization": f"Bearer {stack.token}"})
    assert admin.status_code == 403
    assert not [e for e in events(stack) if e.device_id == "cam-b"]
