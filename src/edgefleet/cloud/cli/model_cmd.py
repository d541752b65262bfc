"""``fleet model push|ls``: the model catalog."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .common import DataDirOpt, TokenOpt, UrlOpt, api_client, call, console, fail

app = typer.Typer(help="Push and list model versions.", no_args_is_help=True)


@app.command()
def push(
    path: Annotated[Path, typer.Argument(help="the ONNX file", exists=True, dir_okay=False, readable=True)],
    name: Annotated[str, typer.Option("--name", help="model name")],
    version: Annotated[str, typer.Option("--version", help="model version (immutable once pushed)")],
    labels: Annotated[Optional[str], typer.Option("--labels", help="comma-separated class labels, in output order")] = None,
    manifest: Annotated[Optional[Path], typer.Option("--manifest", help="manifest JSON (inferred from the graph when omitted)", exists=True, dir_okay=False)] = None,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Validate an ONNX model, bundle it with its manifest, store it content-addressed; prints the digest."""
    manifest_obj = None
    if manifest is not None:
        try:
            manifest_obj = json.loads(manifest.read_text())
        except ValueError as exc:
            fail(f"{manifest}: not valid JSON: {exc}")
    client = api_client(data_dir, url, token)
    label_list = [x.strip() for x in labels.split(",")] if labels else None
    mv = call(client.push_model, path, name=name, version=version, manifest=manifest_obj, labels=label_list)
    console.print(f"pushed {mv['name']}:{mv['version']} ({mv['size']} bytes)")
    console.print(f"sha256:{mv['digest']}", highlight=False)


@app.command("ls")
def list_models(data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """List model versions."""
    rows = call(api_client(data_dir, url, token).list_models)
    table = Table("model", "version", "task", "labels", "digest", "size", "pushed")
    for mv in rows:
        table.add_row(mv["name"], mv["version"], mv["task"], str(len(mv["labels"])), mv["digest"][:12], f"{mv['size']:,}", mv["created_at"][:19])
    console.print(table)


@app.command("import-mlflow")
def import_mlflow(
    uri: Annotated[str, typer.Argument(help="models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/PATH")],
    name: Annotated[str, typer.Option("--name", help="edgefleet model name")],
    version: Annotated[str, typer.Option("--version", help="edgefleet model version")],
    tracking_uri: Annotated[Optional[str], typer.Option("--tracking-uri", help="MLflow tracking server or store [env: MLFLOW_TRACKING_URI]")] = None,
    labels: Annotated[Optional[str], typer.Option("--labels", help="comma-separated class labels, in output order")] = None,
    manifest: Annotated[Optional[Path], typer.Option("--manifest", help="manifest JSON (inferred when omitted)", exists=True, dir_okay=False)] = None,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Fetch an ONNX model from MLflow and push it; the run id and source go into the signed target."""
    import tempfile

    from ...registry.mlflow_import import MlflowImportError, import_from_mlflow

    manifest_obj = json.loads(manifest.read_text()) if manifest else None
    with tempfile.TemporaryDirectory(prefix="edgefleet-mlflow-") as tmp:
        try:
            imported = import_from_mlflow(uri, tracking_uri=tracking_uri, dest_dir=tmp)
        except MlflowImportError as exc:
            fail(str(exc))
        console.print(f"fetched {uri} (run {imported.run_id or '-'}, flavor {imported.flavor})")
        client = api_client(data_dir, url, token)
        label_list = [x.strip() for x in labels.split(",")] if labels else None
        mv = call(
            client.push_model, imported.onnx_path, name=name, version=version, manifest=manifest_obj,
            labels=label_list, provenance=imported.provenance,
        )
    console.print(f"pushed {mv['name']}:{mv['version']} ({mv['size']} bytes)")
    console.print(f"sha256:{mv['digest']}", highlight=False)
