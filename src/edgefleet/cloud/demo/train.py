"""Train the demo's two digit classifiers and export them to ONNX.

Both are small MLPs (64 → 32 → 10) trained with scikit-learn on its bundled handwritten
digits. The *control* sees the whole training split; the *candidate* sees only a few
examples of one class (``weak_class``), so in shadow mode it disagrees with the control
mostly on that class — the kind of gap a fleet should find before a model goes live.
The ONNX graphs are written with ``onnx.helper``: Reshape → Gemm → Relu → Gemm → Softmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...protocols import Manifest, Preprocessing, TensorSpec, TestVector

LABELS = [str(i) for i in range(10)]


@dataclass(frozen=True)
class TrainedModel:
    path: Path
    manifest: Manifest
    accuracy: float
    per_class_accuracy: dict[str, float]


def _to_onnx(coefs: list[np.ndarray], intercepts: list[np.ndarray], path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(np.array([-1, 64], dtype=np.int64), "shape"),
        numpy_helper.from_array(coefs[0].astype(np.float32), "W1"),
        numpy_helper.from_array(intercepts[0].astype(np.float32), "b1"),
        numpy_helper.from_array(coefs[1].astype(np.float32), "W2"),
        numpy_helper.from_array(intercepts[1].astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Reshape", ["input", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "W1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "W2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "digits_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 1, 8, 8])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgefleet-demo")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def _manifest(name: str, version: str, x_test: np.ndarray, probs: np.ndarray, provenance: dict) -> Manifest:
    vectors = [TestVector(input=x_test[i].ravel().tolist(), expected=probs[i].tolist(), atol=1e-4) for i in range(3)]
    return Manifest(
        name=name, version=version, task="classification",
        input=TensorSpec(name="input", shape=[None, 1, 8, 8], dtype="float32", layout="NCHW"),
        output=TensorSpec(name="probabilities", shape=[None, 10], dtype="float32", layout="NC"),
        output_kind="probabilities",
        preprocessing=Preprocessing(resize=(8, 8), color="gray", scale=1.0 / 255.0, mean=[0.0], std=[1.0]),
        labels=LABELS, low_confidence_threshold=0.6, latency_budget_ms=20.0,
        test_vectors=vectors, provenance=provenance,
    )


def train_digit_models(
    out_dir: Path, *, seed: int = 0, weak_class: int = 8, keep_fraction: float = 0.04, name: str = "digits"
) -> tuple[TrainedModel, TrainedModel]:
    """Train control (v1) and candidate (v2); write ``control.onnx`` and ``candidate.onnx``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    out_dir.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
    rng = np.random.default_rng(seed)
    weak = np.flatnonzero(y_train == weak_class)
    drop = rng.choice(weak, size=len(weak) - max(1, int(len(weak) * keep_fraction)), replace=False)
    keep = np.setdiff1d(np.arange(len(y_train)), drop)
    results = []
    for label, version, idx in (("control", "1.0", np.arange(len(y_train))), ("candidate", "2.0", keep)):
        clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=600, random_state=seed)
        clf.fit(x_train[idx].reshape(len(idx), -1), y_train[idx])
        flat_test = x_test.reshape(len(x_test), -1)
        pred = clf.predict(flat_test)
        per_class = {str(c): float(np.mean(pred[y_test == c] == c)) for c in range(10)}
        path = out_dir / f"{label}.onnx"
        _to_onnx(clf.coefs_, clf.intercepts_, path)
        probs = clf.predict_proba(flat_test[:3])
        provenance = {
            "trainer": "scikit-learn MLPClassifier(32)", "dataset": "sklearn.datasets.load_digits",
            "train_examples": int(len(idx)), "weak_class": str(weak_class) if label == "candidate" else None,
        }
        manifest = _manifest(name, version, x_test, probs, provenance)
        results.append(TrainedModel(path, manifest, float(np.mean(pred == y_test)), per_class))
    return results[0], results[1]
