from __future__ import annotations

from datetime import datetime, timezone

import cv2
import numpy as np
import pytest

from edgefleet.protocols import Event, ModelRef, decode, encode
from edgefleet.shadow import (
    CODECS,
    ClipEncodeError,
    ClipRecorder,
    Codec,
    FrameRing,
    Trigger,
    build_event,
    codec_works,
    encode_clip,
    encode_keyframe,
)

from .conftest import cls_pred, det_pred

FPS = 10.0
LEVEL_STEP = 12


def numbered_frame(i: int, shape=(48, 64)) -> np.ndarray:
    """Frame i is a flat grey of level 10 + 12*i (distinguishable after lossy coding)."""
    return np.full((*shape, 3), 10 + LEVEL_STEP * i, np.uint8)


def decode_all(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames


def test_ring_keeps_only_the_last_capacity_seconds():
    ring = FrameRing(capacity_seconds=1.0, fps_hint=FPS)
    for i in range(30):
        ring.push(i / FPS, numbered_frame(0, (2, 2)))
    assert ring.oldest_ts == pytest.approx(1.9) and ring.newest_ts == pytest.approx(2.9)
    assert [round(t, 1) for t, _ in ring.window(2.0, 2.3)] == [2.0, 2.1, 2.2, 2.3]
    assert ring.nearest(2.44)[0] == pytest.approx(2.4)
    ring.push(1.0, numbered_frame(0, (2, 2)))  # going backwards is ignored
    assert ring.newest_ts == pytest.approx(2.9)


def test_ring_frame_cap_bounds_memory_when_the_camera_is_faster_than_announced():
    ring = FrameRing(capacity_seconds=1.0, fps_hint=5.0)
    for i in range(100):
        ring.push(i / 100.0, numbered_frame(0, (2, 2)))
    assert len(ring) == ring.max_frames == 10


def test_clip_holds_frames_from_before_and_after_the_trigger(tmp_path):
    recorder = ClipRecorder(pre_seconds=1.0, post_seconds=0.5, fps_hint=FPS)
    ready = []
    for i in range(19):  # 0.0 .. 1.8 s
        ts = i / FPS
        ready += recorder.push(ts, numbered_frame(i))
        if i == 12:  # trigger at 1.2 s
            assert recorder.request(ts, "clip-1", payload={"k": 1})
    assert len(ready) == 1
    clip = ready[0]
    assert clip.complete and clip.payload == {"k": 1} and recorder.pending == []
    assert [round(t, 1) for t, _ in clip.frames] == [round(0.2 + i / FPS, 1) for i in range(16)]
    assert clip.keyframe_index == 10 and clip.fps() == pytest.approx(FPS)

    info = encode_clip([f for _, f in clip.frames], clip.fps(), tmp_path / "clip-1.mp4")
    assert info.path.exists() and info.size_bytes == info.path.stat().st_size > 0
    assert info.browser_playable and info.fourcc == "VP80" and info.path.suffix == ".webm"
    assert not list(tmp_path.glob(".*partial*"))
    decoded = decode_all(info.path)
    assert len(decoded) == 16 == info.frames
    levels = [int(round(f.mean())) for f in decoded]
    expected = [10 + LEVEL_STEP * i for i in range(2, 18)]  # frames 2..17: 1.0 s before, 0.5 s after
    assert all(abs(a - b) <= 4 for a, b in zip(levels, expected)), (levels, expected)


def test_clip_finishes_at_the_deadline_when_frames_stop():
    recorder = ClipRecorder(pre_seconds=0.5, post_seconds=1.0, fps_hint=FPS, timeout_s=2.0)
    for i in range(10):
        recorder.push(i / FPS, numbered_frame(i))
    recorder.request(0.9, "late")
    assert recorder.poll(3.0) == []
    (clip,) = recorder.poll(3.9)
    assert not clip.complete and len(clip.frames) == 6  # 0.4 .. 0.9


def test_overlapping_requests_and_the_pending_cap():
    recorder = ClipRecorder(pre_seconds=0.2, post_seconds=0.2, fps_hint=FPS, max_pending=2)
    for i in range(5):
        recorder.push(i / FPS, numbered_frame(i))
    assert recorder.request(0.3, "a") and recorder.request(0.4, "b")
    assert not recorder.request(0.4, "c") and recorder.refused == 1
    done = recorder.push(0.5, numbered_frame(5))
    assert [c.clip_id for c in done] == ["a"]
    done = recorder.push(0.6, numbered_frame(6))
    assert [c.clip_id for c in done] == ["b"] and len(done[0].frames) == 5


def test_encode_clip_handles_grey_odd_sizes_and_downscaling(tmp_path):
    frames = [np.full((75, 101), 30 * i, np.uint8) for i in range(5)]
    info = encode_clip(frames, 5.0, tmp_path / "grey", max_side=50)
    assert (info.width, info.height) == (50, 36)
    decoded = decode_all(info.path)
    assert len(decoded) == 5 and decoded[0].shape == (36, 50, 3)
    with pytest.raises(ClipEncodeError):
        encode_clip([], 5.0, tmp_path / "none")


def test_vp8_webm_is_preferred_and_unusable_codecs_fall_back(tmp_path):
    assert CODECS[0].fourcc == "VP80" and codec_works(CODECS[0])
    bogus = Codec("ZZZZ", ".avi", "video/x-msvideo", False)
    assert not codec_works(bogus)
    frames = [numbered_frame(i) for i in range(3)]
    info = encode_clip(frames, 5.0, tmp_path / "fallback", codecs=(bogus, CODECS[0]))
    assert info.fourcc == "VP80" and info.mime == "video/webm" and len(decode_all(info.path)) == 3
    with pytest.raises(ClipEncodeError, match="ZZZZ"):
        encode_clip(frames, 5.0, tmp_path / "nothing", codecs=(bogus,))


def test_keyframe_is_a_valid_jpeg():
    frame = numbered_frame(5, (120, 160))
    frame[10:50, 20:80] = (0, 0, 255)
    data = encode_keyframe(frame, max_side=80)
    assert data[:3] == b"\xff\xd8\xff" and data[-2:] == b"\xff\xd9"
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (60, 80, 3)
    assert img[15, 25, 2] > 200 and img[15, 25, 0] < 60


def test_event_record_stays_within_one_kilobyte_and_round_trips():
    labels = [f"a-rather-long-imagenet-style-label-number-{i}" for i in range(1000)]
    probs = np.random.default_rng(0).dirichlet(np.ones(1000))
    control = cls_pred(probs, labels)
    candidate = cls_pred(probs[::-1], labels)
    ref = ModelRef(name="resnet", version="1.2.3", digest="b" * 64)
    cand_ref = ModelRef(name="resnet", version="1.3.0-rc1", digest="c" * 64)
    event = build_event(
        device_id="jetson-orin-0042", event_id="e" * 32, trigger=Trigger("disagreement", 40, control.label),
        control=control, candidate=candidate, control_model=ref, candidate_model=cand_ref,
        ts=datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc), clip_id="clip-" + "f" * 32, frame_index=1234,
    )
    data = encode(event)
    assert len(data) <= 1024
    back = decode(data, Event)
    assert back.trigger == "disagreement" and back.priority == 40
    assert back.control.model.digest == "b" * 64 and back.candidate.model.digest == "c" * 64
    assert back.control.label == control.label[:48] or back.control.label == control.label
    assert back.control.score == pytest.approx(control.score, abs=1e-4)


def test_small_event_keeps_all_scores():
    control = cls_pred([0.2, 0.5, 0.3])
    event = build_event(device_id="d1", event_id="e1", trigger=Trigger("low_confidence", 30),
                        control=control, ts=datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert event.control.scores == [0.2, 0.5, 0.3] and event.candidate is None
    det = det_pred([[0, 0, 1, 1, 0.9, 0], [0, 0, 2, 2, 0.4, 1]])
    event = build_event(device_id="d1", event_id="e2", trigger=Trigger("sample", 10), control=det,
                        ts=datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert event.control.label == "car" and event.control.scores == [0.9, 0.4]
