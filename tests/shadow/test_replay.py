from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from edgefleet.shadow import SourceError, encode_clip, format_report, iter_frames, replay

from .conftest import build_colour_classifier, coloured_frame, manifest

# control: input RGB, class = dominant channel (red, green, blue)
CONTROL_W = np.eye(3) * 10.0
# candidate: input BGR (its own preprocessing); blue frames come out as "green"
#   rows = input channels (b, g, r), columns = classes (red, green, blue)
CANDIDATE_W = np.array([[0.0, 10.0, 0.0], [0.0, 10.0, 0.0], [10.0, 0.0, 0.0]])
SEQUENCE = ["red"] * 4 + ["green"] * 3 + ["blue"] * 3


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})


@pytest.fixture
def models(tmp_path):
    control_m = manifest(
        name="colour", version="1", output_kind="logits",
        input={"name": "x", "shape": [1, 3, 8, 8]}, preprocessing={"color": "rgb", "resize": [8, 8]},
    )
    candidate_m = manifest(
        name="colour", version="2", output_kind="probabilities",
        input={"name": "x", "shape": [1, 3, 8, 8]}, preprocessing={"color": "bgr", "resize": [8, 8]},
    )
    control = session(build_colour_classifier(tmp_path / "control.onnx", CONTROL_W, softmax=False))
    candidate = session(build_colour_classifier(tmp_path / "candidate.onnx", CANDIDATE_W, softmax=True))
    return control, candidate, control_m, candidate_m


@pytest.fixture
def png_dir(tmp_path, rng):
    d = tmp_path / "frames"
    d.mkdir()
    for i, colour in enumerate(SEQUENCE):
        assert cv2.imwrite(str(d / f"frame-{i:03d}.png"), coloured_frame(colour, rng))
    (d / "notes.txt").write_text("not an image")
    return d


def test_replay_over_png_frames_finds_the_weak_class(models, png_dir):
    control, candidate, control_m, candidate_m = models
    report = replay(iter_frames(png_dir), control, candidate, control_m, candidate_m)
    assert report.frames == 10
    assert report.agreement == pytest.approx(0.7)
    assert report.per_class_counts == {"blue": 3, "green": 3, "red": 4}
    assert report.confusion == {"blue": {"green": 3}, "green": {"green": 3}, "red": {"red": 4}}
    assert dict(report.stats.per_class_disagreements) == {"blue": 3}
    assert [d.name for d in report.disagreements] == ["frame-007.png", "frame-008.png", "frame-009.png"]
    text = format_report(report, control="colour:1", candidate="colour:2")
    assert "agreement: 70.00%" in text and "blue: 3/3" in text
    assert report.to_dict()["confusion"]["blue"] == {"green": 3}


def test_replay_over_a_video_file(models, tmp_path, rng):
    control, candidate, control_m, candidate_m = models
    frames = [coloured_frame(c, rng, size=(48, 64)) for c in SEQUENCE]
    info = encode_clip(frames, 5.0, tmp_path / "recorded")
    report = replay(iter_frames(info.path), control, candidate, control_m, candidate_m, max_examples=1)
    assert report.frames == 10 and report.agreement == pytest.approx(0.7)
    assert len(report.disagreements) == 1 and report.stats.disagreements == 3


def test_identical_models_agree_everywhere(models, png_dir):
    control, _, control_m, _ = models
    report = replay(iter_frames(png_dir), control, control, control_m, control_m)
    assert report.agreement == 1.0 and report.disagreements == []


def test_bad_sources_and_mismatched_tasks_are_refused(models, tmp_path):
    control, candidate, control_m, candidate_m = models
    with pytest.raises(SourceError):
        list(iter_frames(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError):
        list(iter_frames(tmp_path / "empty"))
    (tmp_path / "bad.webm").write_bytes(b"not a video")
    with pytest.raises(SourceError):
        list(iter_frames(tmp_path / "bad.webm"))
    with pytest.raises(ValueError):
        replay([], control, candidate, control_m, manifest(task="regression", labels=[]))
