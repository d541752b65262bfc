"""Test and benchmark models: the demo digit classifier and the onnx package's light models.

Only tests and bench import this (it needs ``onnx`` and scikit-learn, which a device lacks).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

LIGHT_MODELS = ("resnet50", "squeezenet", "shufflenet", "densenet121", "inception_v1")


def light_model_dir() -> Path:
    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def light_model(name: str) -> tuple[Path, np.ndarray]:
    """(model path, the output shipped next to it) for ``light_<name>.onnx``."""
    from onnx import load_tensor, numpy_helper

    d = light_model_dir()
    expected = numpy_helper.to_array(load_tensor(str(d / f"light_{name}_output_0.pb")))
    return d / f"light_{name}.onnx", expected


def build_demo_model(path: Path) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    """Train a logistic-regression digit classifier on scikit-learn's digits and write it as
    ONNX (input "input" [N,1,8,8] float32 → Reshape → MatMul → Add → Softmax).

    Returns:
        (model path, images [N,1,8,8] float32, sklearn's predicted labels, sklearn's probabilities)
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    clf = LogisticRegression(max_iter=500).fit(x, digits.target)
    w = clf.coef_.T.astype(np.float32)  # [64, 10]
    b = clf.intercept_.astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["input", "flat_shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "W"], ["logits_raw"]),
            helper.make_node("Add", ["logits_raw", "B"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "digits_logreg",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])],
        initializer=[
            numpy_helper.from_array(np.array([-1, 64], dtype=np.int64), "flat_shape"),
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(b, "B"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgefleet-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    images = x.reshape(-1, 1, 8, 8)
    return path, images, clf.predict(x), clf.predict_proba(x).astype(np.float32)
