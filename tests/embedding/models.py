"""Digits models with a named feature output, built from the demo's MLP with ``onnx.helper``.

``with_features(onnx_bytes, dim)`` adds ``features`` [N, dim]: the hidden layer (32 values
after the ReLU), or for another ``dim`` a fixed, seeded linear map of it (so near frames stay
near). ``first=True`` puts ``features`` before ``probabilities`` in the graph's outputs, so a
reader that takes the first output would read the embedding as class scores.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefleet.protocols import Manifest, parse_manifest


def with_features(onnx_bytes: bytes, dim: int = 32, *, first: bool = False, seed: int = 5) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    if dim == 32:
        model.graph.node.append(helper.make_node("Identity", ["hr"], ["features"]))
    else:
        w = np.random.default_rng(seed).normal(0.0, 1.0 / np.sqrt(32), (32, dim)).astype(np.float32)
        model.graph.initializer.append(numpy_helper.from_array(w, "W_features"))
        model.graph.node.append(helper.make_node("MatMul", ["hr", "W_features"], ["features"]))
    out = helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, dim])
    if first:
        outputs = [out, *model.graph.output]
        del model.graph.output[:]
        model.graph.output.extend(outputs)
    else:
        model.graph.output.append(out)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def features_manifest(base: Manifest, *, output: str = "features", dim: int = 32, version: str | None = None) -> Manifest:
    data = {**base.model_dump(mode="json", by_alias=True), "schema": "fleet.manifest/2",
            "embedding": {"output": output, "dim": dim}}
    if version is not None:
        data["version"] = version
    return parse_manifest(data)


@dataclass
class FeatureModel:
    """What ``tests.conftest.push`` takes: an ONNX file and its manifest."""

    path: Path
    manifest: Manifest

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def feature_model(control: Any, directory: Path, *, dim: int = 100, version: str = "2.0-features",
                  first: bool = False, seed: int = 5) -> FeatureModel:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"digits-{version}.onnx"
    path.write_bytes(with_features(control.path.read_bytes(), dim, first=first, seed=seed))
    return FeatureModel(path, features_manifest(control.manifest, dim=dim, version=version))
