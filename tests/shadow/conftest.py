"""Shared builders for the shadow tests: manifests, tiny real ONNX classifiers, coloured frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgefleet.protocols import Manifest
from edgefleet.shadow import Prediction, decode

COLOURS = ["red", "green", "blue"]
BGR = {"red": (0, 0, 255), "green": (0, 255, 0), "blue": (255, 0, 0)}


def manifest(**kw) -> Manifest:
    base: dict = {
        "name": "m",
        "version": "1",
        "task": "classification",
        "input": {"name": "x", "shape": [1, 3, 4, 4]},
        "labels": COLOURS,
    }
    base.update(kw)
    return Manifest.model_validate(base)


def cls_pred(probs, labels=COLOURS) -> Prediction:
    return decode([np.asarray([probs], dtype=np.float32)], manifest(labels=list(labels)))


def det_pred(rows, labels=("car", "truck", "person")) -> Prediction:
    arr = np.asarray(rows, dtype=np.float32).reshape(-1, 6)
    return decode([arr], manifest(task="detection", labels=list(labels)))


def coloured_frame(colour: str, rng: np.random.Generator, size=(24, 32)) -> np.ndarray:
    """A noisy frame dominated by one colour (uint8 BGR)."""
    frame = rng.integers(0, 60, size=(*size, 3), dtype=np.uint8)
    frame[:] = np.maximum(frame, np.asarray(BGR[colour], dtype=np.uint8) * 0.8)
    return frame


def build_colour_classifier(path: Path, weights: np.ndarray, *, softmax: bool) -> Path:
    """GlobalAveragePool over a [1,3,H,W] input → Flatten → MatMul(weights 3x3) (→ Softmax)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["logits"]),
    ]
    out = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
        out = "probs"
    graph = helper.make_graph(
        nodes,
        "colour",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, None, None])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 3])],
        initializer=[numpy_helper.from_array(weights.astype(np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
