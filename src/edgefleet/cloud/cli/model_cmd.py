"""``fleet model push|ls|show|import-mlflow|deprecate|block|unblock|yank``: the model catalog
and each version's lifecycle (cloud/lifecycle.py, cloud/yank.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..tables import MODEL_REF_PATTERN
from .common import DataDirOpt, TokenOpt, UrlOpt, api_client, call, console, err_console, fail

app = typer.Typer(help="Push, list and show model versions; deprecate, block, unblock or yank one.",
                  no_args_is_help=True)
ReasonOpt = Annotated[str, typer.Option("--reason", help="why (shown to whoever tries to deploy it; kept in the audit log)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]
_STATUS_STYLE = {"active": "green", "deprecated": "yellow", "blocked": "bold red"}


def _ref(model: str) -> str:
    if not re.match(MODEL_REF_PATTERN, model) or len(model) > 193:
        fail(f"model must be NAME:VERSION (letters, digits, '.', '_', '-'), got {model[:100]!r}")
    return model


def _status(status: str) -> str:
    return f"[{_STATUS_STYLE.get(status, 'white')}]{escape(status)}[/]"


def _provenance(mv: dict[str, Any]) -> str:
    """One line: how the version came to be (MLflow run and tracking URI, or a push by whom)."""
    prov = mv.get("provenance") or {}
    if prov.get("source") == "mlflow":
        run = prov.get("run_id") or "-"
        where = prov.get("tracking_uri") or "-"
        return f"MLflow {prov.get('source_uri', '')} run {run} at {where}".strip()
    return f"push by {mv.get('pushed_by') or 'unknown'}"


def _notes(mv: dict[str, Any]) -> None:
    for note in mv.get("notes") or []:
        err_console.print(f"[yellow]note:[/] {escape(note)}")


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
    _notes(mv)


@app.command("ls")
def list_models(as_json: JsonOpt = False, data_dir: DataDirOpt = None, url: UrlOpt = None,
                token: TokenOpt = None) -> None:
    """List model versions: status, who pushed them and how, and how many devices run each per slot."""
    rows = call(api_client(data_dir, url, token).list_models)
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table("model", "version", "status", "task", "labels", "digest", "size", "pushed", "provenance",
                  "control on", "shadow on")
    for mv in rows:
        running = mv.get("running") or {}
        table.add_row(escape(mv["name"]), escape(mv["version"]), _status(mv.get("status", "active")), mv["task"],
                      str(len(mv["labels"])), mv["digest"][:12], f"{mv['size']:,}", mv["created_at"][:19],
                      escape(_provenance(mv)), str(running.get("control", 0)), str(running.get("shadow", 0)))
    console.print(table)
    for mv in rows:
        if mv.get("status") in ("blocked", "deprecated"):
            console.print(f"{_status(mv['status'])} {escape(mv['name'])}:{escape(mv['version'])}: "
                          f"{escape(mv.get('status_reason') or '')} (by {escape(mv.get('status_by') or '-')})")


@app.command("show")
def show(
    model: Annotated[str, typer.Argument(help="NAME:VERSION")],
    as_json: JsonOpt = False, data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """One version: digest, status, who pushed it and when, provenance, the devices running it, its rollouts."""
    mv = call(api_client(data_dir, url, token).get_model, _ref(model))
    if as_json:
        console.print_json(json.dumps(mv))
        return
    prov = mv.get("provenance") or {}
    lines = [
        f"[bold]{escape(mv['name'])}:{escape(mv['version'])}[/]  {_status(mv['status'])}",
        f"digest      sha256:{mv['digest']}",
        f"onnx sha256 {mv.get('model_sha256') or '-'}",
        f"pushed      {mv['created_at'][:19]} by {escape(mv.get('pushed_by') or 'unknown')}",
        f"provenance  {escape(_provenance(mv))}",
    ]
    if mv["status"] != "active":
        lines.append(f"{mv['status']:<11} {(mv.get('status_at') or '')[:19]} by {escape(mv.get('status_by') or '-')}: "
                     f"{escape(mv.get('status_reason') or '')}")
    for key in sorted(k for k in prov if k not in ("source",)):
        lines.append(f"  {escape(key)}: {escape(str(prov[key]))}")
    devices = mv.get("devices") or {}
    for slot in ("control", "shadow"):
        ids = devices.get(slot) or []
        shown = ", ".join(ids[:20]) + (f" … (+{len(ids) - 20})" if len(ids) > 20 else "")
        lines.append(f"{slot:<11} {len(ids)} devices{': ' + escape(shown) if ids else ''}")
    for r in mv.get("rollouts") or []:
        lines.append(f"rollout     {r['id']} {r['slot']} {r['state']}{' — ' + escape(r['reason']) if r.get('reason') else ''}")
    console.print("\n".join(lines), highlight=False)


def _status_command(action: str, model: str, reason: str | None, data_dir: Any, url: Any, token: Any) -> None:
    out = call(api_client(data_dir, url, token).set_model_status, _ref(model), action, reason)
    mv = out["model"]
    console.print(f"{escape(mv['name'])}:{escape(mv['version'])}: {out['previous_status']} → {_status(mv['status'])}")
    for rid in out.get("aborted_rollouts") or []:
        console.print(f"[red]aborted[/] rollout {rid}")
    running = out.get("still_running") or {}
    for slot, ids in running.items():
        if ids and mv["status"] == "blocked":
            shown = ", ".join(ids[:20]) + (" …" if len(ids) > 20 else "")
            console.print(f"[yellow]{len(ids)} devices still run it in {slot}:[/] {escape(shown)} "
                          f"(fleet model yank {escape(model)} moves them off it)")


@app.command("deprecate")
def deprecate(model: Annotated[str, typer.Argument(help="NAME:VERSION")], reason: ReasonOpt,
              data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Deprecate a version: deploys and rollouts of it still work, with a warning."""
    _status_command("deprecate", model, reason, data_dir, url, token)


@app.command("block")
def block(model: Annotated[str, typer.Argument(help="NAME:VERSION")], reason: ReasonOpt,
          data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Block a version: no deploy or rollout of it is accepted (409 E_MODEL_BLOCKED); its live rollouts are aborted."""
    _status_command("block", model, reason, data_dir, url, token)


@app.command("unblock")
def unblock(model: Annotated[str, typer.Argument(help="NAME:VERSION")],
            reason: Annotated[Optional[str], typer.Option("--reason", help="why (kept in the audit log)")] = None,
            data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Make a blocked (or deprecated) version active again."""
    _status_command("unblock", model, reason, data_dir, url, token)


@app.command("yank")
def yank(
    model: Annotated[str, typer.Argument(help="NAME:VERSION to block and move every device off")],
    reason: ReasonOpt,
    to: Annotated[Optional[str], typer.Option("--to", help="NAME:VERSION for every device [default: each device's last known good]")] = None,
    waves: Annotated[str, typer.Option("--waves", help="cumulative percentages, e.g. 1,10,50,100")] = "1,10,50,100",
    soak: Annotated[str, typer.Option("--soak", help="soak after each wave, e.g. 90s, 30m")] = "30m",
    gate: Annotated[Optional[list[str]], typer.Option("--gate", help="gate, repeatable, e.g. failure<=0.02 [default: failure<=0.02]")] = None,
    on_breach: Annotated[str, typer.Option("--on-breach", help="pause (default: the yank stops where it is) or rollback")] = "pause",
    device_timeout: Annotated[str, typer.Option("--device-timeout", help="how long a device may take")] = "30m",
    max_concurrent: Annotated[Optional[int], typer.Option("--max-concurrent", min=1, help="devices in flight at once")] = None,
    as_json: JsonOpt = False, data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Block a version and roll every device off it in gated waves: one rollout per target version."""
    if on_breach not in ("pause", "rollback"):
        fail("--on-breach must be pause or rollback")
    out = call(api_client(data_dir, url, token).yank_model, _ref(model), reason=reason, to=_ref(to) if to else None,
               waves=waves, soak=soak, gates=gate, on_breach=on_breach, device_timeout=device_timeout,
               max_concurrent=max_concurrent)
    if as_json:
        console.print_json(json.dumps(out))
        return
    console.print(f"{escape(out['model'])} is now {_status('blocked')}")
    for w in out.get("warnings") or []:
        err_console.print(f"[yellow]warning:[/] {escape(w)}")
    for rid in out.get("aborted_rollouts") or []:
        console.print(f"[red]aborted[/] rollout {rid}")
    for r in out.get("rollouts") or []:
        console.print(f"rollout {r['id']}: {len(r['devices'])} devices → {escape(r['target'])} ({r['slot']}); "
                      f"fleet rollout status {r['id']}")
    if out.get("cleared"):
        console.print(f"shadow slot emptied on {len(out['cleared'])} devices: {escape(', '.join(out['cleared'][:20]))}")
    if out.get("needs_attention"):
        console.print(f"[bold red]{len(out['needs_attention'])} devices need attention[/] (still on {escape(out['model'])}):")
        for a in out["needs_attention"]:
            console.print(f"  {escape(a['device'])} ({a['slot']}): {escape(a['reason'])}")
    if not out.get("rollouts") and not out.get("cleared") and not out.get("needs_attention"):
        console.print("no device runs it: nothing to move")


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
    _notes(mv)
