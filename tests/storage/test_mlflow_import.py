"""Importing ONNX models from a real local MLflow tracking store (SQLite + file artifacts)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgefleet.protocols import Manifest, TensorSpec
from edgefleet.registry.mlflow_import import (
    MlflowImportError,
    MlflowSource,
    import_from_mlflow,
    parse_mlflow_uri,
    redact_uri,
)


@pytest.mark.parametrize(
    ("uri", "want"),
    [
        ("models:/digits/3", MlflowSource("models", model_name="digits", version="3")),
        ("models:/digits/latest", MlflowSource("models", model_name="digits", version="latest")),
        ("models:/digits@champion", MlflowSource("models", model_name="digits", alias="champion")),
        ("runs:/abc123/model", MlflowSource("runs", run_id="abc123", artifact_path="model")),
        ("runs:/abc123/exported/net.onnx", MlflowSource("runs", run_id="abc123", artifact_path="exported/net.onnx")),
        ("runs:/abc123", MlflowSource("runs", run_id="abc123")),
    ],
)
def test_model_and_run_uris_are_parsed(uri: str, want: MlflowSource) -> None:
    assert parse_mlflow_uri(uri) == want


@pytest.mark.parametrize("uri", ["models:/digits", "models:/digits/Production", "s3://x/model.onnx", "runs:/", ""])
def test_an_unsupported_uri_is_refused_before_any_lookup(uri: str) -> None:
    with pytest.raises(MlflowImportError) as info:
        parse_mlflow_uri(uri)
    assert info.value.reason == "bad_uri" and not info.value.retryable


def test_credentials_never_reach_the_provenance() -> None:
    assert redact_uri("https://alice:s3cret@mlflow.example.com/x") == "https://mlflow.example.com/x"
    assert redact_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
    assert redact_uri(None) is None


def test_importing_the_module_does_not_import_mlflow_or_onnx() -> None:
    code = (
        "import sys, edgefleet.registry.mlflow_import\n"
        "bad = [m for m in ('mlflow', 'onnx') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- against a real tracking store -------------------------------------------------------

mlflow_marks = [pytest.mark.mlflow]


def _tiny_onnx() -> Any:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.RandomState(0)
    weights = numpy_helper.from_array(rng.randn(64, 10).astype(np.float32), "W")
    shape = numpy_helper.from_array(np.array([-1, 64], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["input", "shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])],
        initializer=[weights, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


class Tracking:
    def __init__(self, uri: str, model: Any, onnx_bytes: bytes, model_run: str, artifact_run: str, notes_run: str):
        self.uri, self.model, self.onnx_bytes = uri, model, onnx_bytes
        self.model_run, self.artifact_run, self.notes_run = model_run, artifact_run, notes_run


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tracking]:
    pytest.importorskip("mlflow")
    import mlflow
    import mlflow.onnx
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    env = pytest.MonkeyPatch()
    env.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp}/mlflow.db"
    model = _tiny_onnx()
    onnx_path = tmp / "net.onnx"
    onnx_path.write_bytes(model.SerializeToString())  # before log_model moves weights out of it
    x = np.zeros((2, 1, 8, 8), dtype=np.float32)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        exp = mlflow.create_experiment("digits", artifact_location=(tmp / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=exp) as run:  # onnx flavor, weights as external data
            mlflow.onnx.log_model(
                model, name="model", registered_model_name="digits", pip_requirements=["onnx"],
                signature=infer_signature(x, np.full((2, 10), 0.1, dtype=np.float32)),
            )
            model_run = run.info.run_id
        with mlflow.start_run(experiment_id=exp) as run:  # a bare .onnx artifact
            mlflow.log_artifact(str(onnx_path), artifact_path="exported")
            artifact_run = run.info.run_id
        with mlflow.start_run(experiment_id=exp) as run:  # nothing ONNX at all
            mlflow.log_text("just notes", "notes/readme.txt")
            notes_run = run.info.run_id
        client = MlflowClient(uri)
        v1 = client.get_model_version("digits", "1")
        client.create_model_version("digits", source=v1.source, run_id=v1.run_id)  # version 2
        client.set_registered_model_alias("digits", "champion", "1")
    finally:
        mlflow.set_tracking_uri(previous)
    yield Tracking(uri, model, onnx_path.read_bytes(), model_run, artifact_run, notes_run)
    env.undo()


def _run(path: Path) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.linspace(0, 1, 2 * 64, dtype=np.float32).reshape(2, 1, 8, 8)
    return np.asarray(sess.run(None, {"input": x})[0])


@pytest.mark.mlflow
def test_a_registered_onnx_model_imports_as_one_self_contained_file(tracking: Tracking, tmp_path: Path) -> None:
    got = import_from_mlflow("models:/digits/1", tracking_uri=tracking.uri, dest_dir=tmp_path / "out")
    assert got.onnx_path == tmp_path / "out" / "model.onnx"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.onnx"]  # no external .data, no leftovers
    ref = tmp_path / "ref.onnx"
    ref.write_bytes(tracking.onnx_bytes)
    np.testing.assert_allclose(_run(got.onnx_path), _run(ref), rtol=1e-6)
    assert (got.flavor, got.model_name, got.model_version, got.run_id) == ("onnx", "digits", "1", tracking.model_run)
    assert got.signature is not None and got.signature["inputs"][0]["tensor-spec"]["shape"] == [-1, 1, 8, 8]
    prov = got.provenance
    assert prov["source"] == "mlflow" and prov["source_uri"] == "models:/digits/1"
    assert prov["tracking_uri"] == tracking.uri
    assert prov["registered_model_name"] == "digits" and prov["registered_model_version"] == "1"
    assert prov["run_id"] == tracking.model_run and prov["experiment_id"]
    assert prov["mlflow_version"] and prov["onnx_sha256"] and prov["model_id"].startswith("m-")
    # fit for the signed manifest
    manifest = Manifest(
        name="digits", version="1", input=TensorSpec(name="input", shape=[None, 1, 8, 8]),
        labels=[str(i) for i in range(10)], provenance=prov,
    )
    assert json.loads(manifest.to_json())["provenance"]["run_id"] == tracking.model_run


@pytest.mark.mlflow
@pytest.mark.parametrize(("uri", "version"), [("models:/digits@champion", "1"), ("models:/digits/latest", "2")])
def test_an_alias_or_latest_is_pinned_to_one_version(tracking: Tracking, tmp_path: Path, uri: str, version: str) -> None:
    got = import_from_mlflow(uri, tracking_uri=tracking.uri, dest_dir=tmp_path)
    assert got.model_version == version
    assert got.provenance["resolved_uri"] == f"models:/digits/{version}"
    assert got.provenance["source_uri"] == uri


@pytest.mark.mlflow
def test_a_run_artifact_path_imports_the_logged_model(tracking: Tracking, tmp_path: Path) -> None:
    got = import_from_mlflow(f"runs:/{tracking.model_run}/model", tracking_uri=tracking.uri, dest_dir=tmp_path)
    assert got.flavor == "onnx" and got.run_id == tracking.model_run and got.model_version is None
    assert got.provenance["artifact_path"] == "model"


@pytest.mark.mlflow
@pytest.mark.parametrize("path", ["exported", "exported/net.onnx"])
def test_a_bare_onnx_artifact_is_found_and_copied_byte_for_byte(tracking: Tracking, tmp_path: Path, path: str) -> None:
    got = import_from_mlflow(f"runs:/{tracking.artifact_run}/{path}", tracking_uri=tracking.uri, dest_dir=tmp_path)
    assert got.flavor == "artifact" and got.signature is None
    assert got.onnx_path.read_bytes() == tracking.onnx_bytes
    assert got.provenance["onnx_file"] == "net.onnx"


@pytest.mark.mlflow
@pytest.mark.parametrize("path", ["notes", "notes/readme.txt"])
def test_artifacts_without_onnx_are_refused_clearly(tracking: Tracking, tmp_path: Path, path: str) -> None:
    with pytest.raises(MlflowImportError, match="ONNX") as info:
        import_from_mlflow(f"runs:/{tracking.notes_run}/{path}", tracking_uri=tracking.uri, dest_dir=tmp_path)
    assert info.value.reason == "no_onnx"
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.mlflow
@pytest.mark.parametrize("uri", ["models:/digits/99", "models:/nope/1", "models:/digits@nobody", "runs:/" + "0" * 32 + "/model"])
def test_a_missing_model_or_run_is_not_found(tracking: Tracking, tmp_path: Path, uri: str) -> None:
    with pytest.raises(MlflowImportError) as info:
        import_from_mlflow(uri, tracking_uri=tracking.uri, dest_dir=tmp_path)
    assert info.value.reason == "not_found", info.value
    assert not info.value.retryable


@pytest.mark.mlflow
def test_an_unreachable_tracking_server_is_a_retryable_error(
    tracking: Tracking, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(MlflowImportError, match="unreachable") as info:
        import_from_mlflow("models:/digits/1", tracking_uri=f"http://u:pw@127.0.0.1:{port}", dest_dir=tmp_path)
    assert info.value.reason == "unreachable" and info.value.retryable
    assert "pw" not in str(info.value).replace("pw@", "")  # the message names the redacted URI
