"""MLflow import of bytes that are blocked under another version: allowed, and said — against
a real local MLflow tracking store (SQLite) and a real controller."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefleet.cloud.cli import app

pytestmark = pytest.mark.slow  # a real MLflow store: logging and downloading a model takes a while

def _cli(stack, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, [*args, "--url", stack.url, "--token", stack.token], env={"COLUMNS": "250"})


def test_reimport_of_blocked_bytes_under_a_new_version_is_allowed_with_a_note(stack, digit_models, tmp_path: Path,
                                                                               monkeypatch) -> None:  # type: ignore[no-untyped-def]
    mlflow = pytest.importorskip("mlflow")
    import onnx

    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        exp = mlflow.create_experiment("digits", artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=exp) as run:
            mlflow.onnx.log_model(onnx.load(digit_models[0].path), name="model", registered_model_name="digits-mlp",
                                  pip_requirements=["onnx"])
            run_id = run.info.run_id
    finally:
        mlflow.set_tracking_uri(previous)
    labels = ",".join(str(i) for i in range(10))

    def imported(version: str):  # type: ignore[no-untyped-def]
        return _cli(stack, "model", "import-mlflow", "models:/digits-mlp/1", "--tracking-uri", uri,
                    "--name", "digits", "--version", version, "--labels", labels)

    res = imported("7")
    assert res.exit_code == 0 and "note:" not in res.output, res.output
    assert _cli(stack, "model", "block", "digits:7", "--reason", "wrong labels").exit_code == 0

    res = imported("8")  # the same ONNX bytes under a new version
    assert res.exit_code == 0, res.output
    assert "note:" in res.output and "blocked under digits:7: wrong labels" in res.output
    v7, v8 = stack.client.get_model("digits:7"), stack.client.get_model("digits:8")
    assert v7["model_sha256"] == v8["model_sha256"] and v7["digest"] != v8["digest"]
    assert (v7["status"], v8["status"]) == ("blocked", "active")  # allowed: a deliberate re-release stays possible
    assert v8["provenance"]["run_id"] == run_id and v8["provenance"]["source"] == "mlflow"
    assert v8["provenance"]["tracking_uri"].startswith("sqlite:///")

    res = _cli(stack, "model", "show", "digits:8")
    assert res.exit_code == 0 and f"run {run_id}" in res.output and "MLflow models:/digits-mlp/1" in res.output
