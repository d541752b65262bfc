from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgefleet.shadow import PreprocessError, make_preprocessor, preprocess

from .conftest import manifest


def reference(frame: np.ndarray, m) -> np.ndarray:
    """The obvious, slow implementation: float64, one step at a time, explicit loops."""
    pp, spec = m.preprocessing, m.input
    img = frame
    if pp.resize:
        h, w = pp.resize
        interp = cv2.INTER_AREA if h * w < img.shape[0] * img.shape[1] else cv2.INTER_LINEAR
        img = cv2.resize(img, (w, h), interpolation=interp)
    if pp.color == "gray":
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[:, :, None]
    elif pp.color == "rgb":
        img = img[:, :, ::-1]
    h, w, c = img.shape
    x = np.zeros((h, w, c), dtype=np.float64)
    mean = pp.mean * c if len(pp.mean) == 1 else pp.mean
    std = pp.std * c if len(pp.std) == 1 else pp.std
    for ch in range(c):
        for y in range(h):
            for xx in range(w):
                x[y, xx, ch] = (img[y, xx, ch] * pp.scale - mean[ch]) / std[ch]
    if spec.layout == "NCHW":
        x = x.transpose(2, 0, 1)[None]
    elif spec.layout == "NC":
        x = x.reshape(1, -1)
    else:
        x = x[None]
    if np.issubdtype(np.dtype(spec.dtype), np.integer):
        info = np.iinfo(spec.dtype)
        x = np.clip(np.rint(x), info.min, info.max)
    return x.astype(spec.dtype)


CASES = {
    "rgb-nchw-imagenet": dict(
        input={"name": "x", "shape": [1, 3, 12, 16], "layout": "NCHW"},
        preprocessing={"resize": [12, 16], "color": "rgb", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    ),
    "bgr-nhwc-upscale": dict(
        input={"name": "x", "shape": [1, 40, 50, 3], "layout": "NHWC"},
        preprocessing={"resize": [40, 50], "color": "bgr", "scale": 1.0, "mean": [127.5], "std": [127.5]},
    ),
    "gray-nc-digits": dict(
        input={"name": "x", "shape": [1, 64], "layout": "NC"},
        preprocessing={"resize": [8, 8], "color": "gray", "scale": 16.0 / 255.0},
    ),
    "gray-nchw-float16": dict(
        input={"name": "x", "shape": [1, 1, 10, 10], "layout": "NCHW", "dtype": "float16"},
        preprocessing={"color": "gray"},  # size from the input shape
    ),
    "rgb-nhwc-uint8-raw": dict(
        input={"name": "x", "shape": [1, 12, 16, 3], "layout": "NHWC", "dtype": "uint8"},
        preprocessing={"resize": [12, 16], "color": "rgb", "scale": 1.0},
    ),
    "rgb-nchw-uint8-raw": dict(
        input={"name": "x", "shape": [1, 3, 12, 16], "layout": "NCHW", "dtype": "uint8"},
        preprocessing={"color": "rgb", "scale": 1.0},
    ),
    "bgr-nchw-int8-centred": dict(
        input={"name": "x", "shape": [1, 3, 12, 16], "layout": "NCHW", "dtype": "int8"},
        preprocessing={"color": "bgr", "scale": 1.0, "mean": [128.0]},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_preprocess_matches_the_reference_implementation(case, rng):
    m = manifest(**CASES[case])
    if m.preprocessing.resize is None:  # the reference resizes only when told; tell it what the shape says
        hw = m.input.shape[2:4] if m.input.layout == "NCHW" else m.input.shape[1:3]
        m = m.model_copy(update={"preprocessing": m.preprocessing.model_copy(update={"resize": tuple(hw)})})
    frame = rng.integers(0, 256, size=(30, 41, 3), dtype=np.uint8)
    got = preprocess(frame, manifest(**CASES[case]))
    want = reference(frame, m)
    assert got.shape == want.shape and got.dtype == want.dtype
    tol = 2e-3 if got.dtype == np.float16 else 1e-5
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=tol, atol=tol)


def test_output_buffer_is_reused_when_given(rng):
    m = manifest(**CASES["rgb-nchw-imagenet"])
    pre = make_preprocessor(m)
    frame = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    out = np.empty((1, 3, 12, 16), np.float32)
    assert pre(frame, out=out) is out
    np.testing.assert_array_equal(out, pre(frame))
    with pytest.raises(PreprocessError):
        pre(frame, out=np.empty((1, 3, 12, 15), np.float32))


def test_grey_camera_frames_are_accepted(rng):
    m = manifest(**CASES["rgb-nchw-imagenet"])
    grey = rng.integers(0, 256, size=(24, 32), dtype=np.uint8)
    x = preprocess(grey, m)
    assert x.shape == (1, 3, 12, 16)
    # all three channels carry the same grey, each normalised with its own mean/std
    raw = (x[0] * np.array([0.229, 0.224, 0.225])[:, None, None]) + np.array([0.485, 0.456, 0.406])[:, None, None]
    np.testing.assert_allclose(raw[0], raw[2], atol=1e-5)


def test_inconsistent_manifests_and_frames_are_refused(rng):
    with pytest.raises(PreprocessError):
        make_preprocessor(manifest(preprocessing={"color": "rgb", "mean": [0.1, 0.2]}))
    with pytest.raises(PreprocessError):
        make_preprocessor(manifest(input={"name": "x", "shape": [1, 1, 4, 4]}, preprocessing={"color": "rgb"}))
    pre = make_preprocessor(manifest(input={"name": "x", "shape": [1, 64], "layout": "NC"},
                                     preprocessing={"color": "gray", "resize": [8, 9]}))
    with pytest.raises(PreprocessError):
        pre(rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8))
    with pytest.raises(PreprocessError):
        make_preprocessor(manifest())(np.zeros((4, 4, 3), np.float32))
