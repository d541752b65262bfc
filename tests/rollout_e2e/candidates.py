"""Real ONNX candidates for the fault-injection tests, built from the demo's digit classifier.

Each is a genuine model bundle the real agent installs and runs with ONNX Runtime; nothing
in the agent knows it is a test:

* ``retag``          — the same graph under a new version (a good candidate).
* ``wrong_vectors``  — the same graph whose manifest carries wrong expected outputs for its
  test vectors (a reference exported from another model): its self-test fails, everywhere.
* ``nan_after_activation`` — the classifier plus ``0 * sqrt(0.5 - max(input))``: finite on
  its test vectors (dim inputs, max <= 0.5), NaN on every real camera frame (a bright
  digit, max near 1.0). Passes its self-test, then emits NaN once it runs.
* ``heavy``          — the classifier plus a dead branch of ``layers`` chained 256×256
  MatMul+Tanh on the input, multiplied by zero: same outputs, more compute. Two of these
  make a "current model" and a candidate three times slower than it.

Latency budgets are set to ``BUDGET_MS`` (1 s): here 10 agents share two cores in one
process, so a frame's wall time says more about the neighbours than about the model. The
slow candidate is caught where that noise cancels out — the controller's
``latency_p99_ratio`` gate compares models on the same devices under the same load — and
the agent's own budget check is pinned by a single-agent test with a tiny budget.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgefleet.cloud.demo.train import TrainedModel
from edgefleet.protocols import Manifest, TestVector

BUDGET_MS = 1000.0


def _load(model: TrainedModel):  # type: ignore[no-untyped-def]
    import onnx

    return onnx.load(str(model.path))


def _save(graph_model, out: Path) -> None:  # type: ignore[no-untyped-def]
    import onnx

    onnx.checker.check_model(graph_model)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(graph_model.SerializeToString())


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"input": x.astype(np.float32)})[0])


def _with(model: TrainedModel, path: Path, version: str, vectors: list[np.ndarray] | None = None,
          **manifest_changes: object) -> TrainedModel:
    m = model.manifest
    changes: dict[str, object] = {"version": version, "latency_budget_ms": BUDGET_MS, **manifest_changes}
    if vectors is not None:
        changes["test_vectors"] = [
            TestVector(input=v.ravel().tolist(), expected=_run(path, v.reshape(1, 1, 8, 8)).ravel().tolist(), atol=1e-4)
            for v in vectors]
    manifest = Manifest.model_validate({**m.model_dump(by_alias=True), **changes})
    return TrainedModel(path, manifest, model.accuracy, model.per_class_accuracy)


def retag(model: TrainedModel, version: str) -> TrainedModel:
    return _with(model, model.path, version)


def wrong_vectors(model: TrainedModel, version: str) -> TrainedModel:
    vectors = [v.model_copy(update={"expected": list(reversed(v.expected))}) for v in model.manifest.test_vectors]
    return _with(model, model.path, version, test_vectors=vectors)


def nan_after_activation(model: TrainedModel, out_dir: Path, version: str) -> TrainedModel:
    from onnx import helper, numpy_helper

    g = _load(model)
    out = g.graph.output[0].name
    for node in g.graph.node:
        node.output[:] = [f"{o}_raw" if o == out else o for o in node.output]
    g.graph.initializer.extend([numpy_helper.from_array(np.array(0.5, np.float32), "nan_half"),
                                numpy_helper.from_array(np.array(0.0, np.float32), "nan_zero")])
    g.graph.node.extend([
        helper.make_node("ReduceMax", ["input"], ["nan_max"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["nan_max", "nan_axes"], ["nan_max2"]),
        helper.make_node("Sub", ["nan_half", "nan_max2"], ["nan_gap"]),
        helper.make_node("Sqrt", ["nan_gap"], ["nan_root"]),  # NaN where max(input) > 0.5
        helper.make_node("Mul", ["nan_root", "nan_zero"], ["nan_term"]),
        helper.make_node("Add", [f"{out}_raw", "nan_term"], [out]),
    ])
    g.graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "nan_axes"))
    path = out_dir / f"nan-{version}.onnx"
    _save(g, path)
    rng = np.random.default_rng(0)
    vectors = [np.zeros((1, 1, 8, 8), np.float32), np.full((1, 1, 8, 8), 0.25, np.float32),
               (rng.random((1, 1, 8, 8)) * 0.5).astype(np.float32)]
    return _with(model, path, version, vectors)


def heavy(model: TrainedModel, out_dir: Path, version: str, layers: int, width: int = 256,
          latency_budget_ms: float = BUDGET_MS) -> TrainedModel:
    from onnx import helper, numpy_helper

    g = _load(model)
    out = g.graph.output[0].name
    for node in g.graph.node:
        node.output[:] = [f"{o}_raw" if o == out else o for o in node.output]
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(np.array([-1, 64], np.int64), "hv_shape"),
             numpy_helper.from_array((rng.standard_normal((64, width)) / 8).astype(np.float32), "hv_w0"),
             numpy_helper.from_array(np.array(0.0, np.float32), "hv_zero")]
    nodes = [helper.make_node("Reshape", ["input", "hv_shape"], ["hv_flat"]),
             helper.make_node("MatMul", ["hv_flat", "hv_w0"], ["hv_h0"]),
             helper.make_node("Tile", ["hv_h0", "hv_rows"], ["hv_t0"])]
    inits.append(numpy_helper.from_array(np.array([width, 1], np.int64), "hv_rows"))
    prev = "hv_t0"
    for i in range(layers):
        inits.append(numpy_helper.from_array((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), f"hv_w{i + 1}"))
        nodes += [helper.make_node("MatMul", [prev, f"hv_w{i + 1}"], [f"hv_m{i}"]),
                  helper.make_node("Tanh", [f"hv_m{i}"], [f"hv_a{i}"])]
        prev = f"hv_a{i}"
    nodes += [helper.make_node("ReduceSum", [prev], ["hv_sum"], keepdims=0),
              helper.make_node("Mul", ["hv_sum", "hv_zero"], ["hv_term"]),
              helper.make_node("Add", [f"{out}_raw", "hv_term"], [out])]
    g.graph.initializer.extend(inits)
    g.graph.node.extend(nodes)
    path = out_dir / f"heavy-{version}.onnx"
    _save(g, path)
    vectors = [np.asarray(v.input, np.float32) for v in model.manifest.test_vectors]
    return _with(model, path, version, vectors, latency_budget_ms=latency_budget_ms)


def latency_ratio(slow: TrainedModel, base: TrainedModel, rounds: int = 40, runs: int = 5) -> float:
    """How many times slower ``slow`` is than ``base``: interleaved rounds (both see the same
    load), the fastest run of each — robust to other work on a shared 2-core machine."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sessions = [ort.InferenceSession(str(m.path), opts, providers=["CPUExecutionProvider"]) for m in (slow, base)]
    x = np.random.default_rng(0).random((1, 1, 8, 8)).astype(np.float32)
    best = [float("inf"), float("inf")]
    for _ in range(rounds):
        for i, sess in enumerate(sessions):
            for _ in range(runs):
                t0 = time.perf_counter()
                sess.run(None, {"input": x})
                best[i] = min(best[i], time.perf_counter() - t0)
    return best[0] / best[1]


def latency_ms(model: TrainedModel, runs: int = 200) -> float:
    """Median single-frame latency of the model in ONNX Runtime (1 thread), for calibration."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model.path), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 1, 8, 8)).astype(np.float32)
    for _ in range(10):
        sess.run(None, {"input": x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {"input": x})
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)
