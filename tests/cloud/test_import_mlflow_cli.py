"""`fleet model import-mlflow` against a real local MLflow tracking store and a real controller."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefleet.cloud.cli import app


def test_import_mlflow_pushes_with_run_id_and_source(stack, digit_models, tmp_path: Path, monkeypatch) -> None:
    mlflow = pytest.importorskip("mlflow")
    import onnx

    control, _ = digit_models
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        exp = mlflow.create_experiment("digits", artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=exp) as run:
            mlflow.onnx.log_model(onnx.load(control.path), name="model", registered_model_name="digits-mlp", pip_requirements=["onnx"])
            run_id = run.info.run_id
    finally:
        mlflow.set_tracking_uri(previous)
    result = CliRunner().invoke(app, [
        "model", "import-mlflow", "models:/digits-mlp/1", "--tracking-uri", uri, "--name", "digits", "--version", "7",
        "--labels", ",".join(str(i) for i in range(10)), "--url", stack.url, "--token", stack.token,
    ])
    assert result.exit_code == 0, result.output
    assert "sha256:" in result.output
    manifest = stack.client.request("GET", "/models/digits/versions/7/manifest")
    assert manifest["provenance"]["run_id"] == run_id
    assert manifest["provenance"]["source_uri"] == "models:/digits-mlp/1"


def test_import_of_a_missing_model_fails_clearly(stack, tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    result = CliRunner().invoke(app, [
        "model", "import-mlflow", "models:/nope/1", "--tracking-uri", f"sqlite:///{tmp_path}/empty.db",
        "--name", "x", "--version", "1", "--url", stack.url, "--token", stack.token,
    ])
    assert result.exit_code == 1
    assert "nope" in result.output
    assert stack.client.list_models() == []
