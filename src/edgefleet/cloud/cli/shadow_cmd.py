"""``fleet shadow replay|stats|events``: compare models offline, read fleet shadow results.

``replay`` resolves ``NAME:VERSION`` from the controller's catalog, downloads both
bundles (``/api/v1/bundles/{digest}``), runs them with ONNX Runtime over a directory of
images or a video (``shadow.iter_frames``) and prints agreement and the confusion matrix
(``shadow.format_report``) — before anything is deployed. ``stats`` and ``events`` read
what the fleet reported (``/api/v1/shadow/pairs``, ``/api/v1/events``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ...shadow import SourceError, format_report, iter_frames, replay
from ..client import ApiClient, ApiError
from ..shadow_index import parse_pair
from .common import DataDirOpt, TokenOpt, UrlOpt, api_client, call, console, fail

app = typer.Typer(help="Shadow mode: offline replay, fleet agreement, capture events.", no_args_is_help=True)


def _load_model(client: ApiClient, ref: str, workdir: Path) -> tuple[Any, Any]:
    """(manifest, callable tensor → outputs) of a catalog model."""
    import onnxruntime as ort

    from ...registry.bundle import unpack_bundle

    name, _, version = ref.partition(":")
    if not name or not version:
        fail(f"model must be NAME:VERSION, got {ref!r}")
    found = [m for m in call(client.list_models) if m["name"] == name and m["version"] == version]
    if not found:
        fail(f"no model {ref} in the catalog (fleet model ls)")
    data = call(client.download_bundle, found[0]["digest"])
    bundle = unpack_bundle(data, workdir / f"{name}-{version}".replace("/", "_"))
    session = ort.InferenceSession(str(bundle.model_path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return bundle.manifest, lambda x: session.run(None, {input_name: x})


@app.command("replay")
def replay_cmd(
    control: Annotated[str, typer.Option("--control", help="control model NAME:VERSION")],
    candidate: Annotated[str, typer.Option("--candidate", help="candidate model NAME:VERSION")],
    source: Annotated[Path, typer.Option("--source", help="directory of images (sorted by name) or a video file")],
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="at most this many frames")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Run control and candidate over recorded frames; print agreement and the confusion matrix."""
    client = api_client(data_dir, url, token)
    with tempfile.TemporaryDirectory(prefix="fleet-replay-") as tmp:
        m_ctl, f_ctl = _load_model(client, control, Path(tmp))
        m_cand, f_cand = _load_model(client, candidate, Path(tmp))
        frames = iter_frames(source)
        if limit:
            frames = (f for i, f in zip(range(limit), frames))
        try:
            report = replay(frames, f_ctl, f_cand, m_ctl, m_cand)
        except (SourceError, ValueError) as exc:
            fail(str(exc))
    if as_json:
        console.print_json(json.dumps(report.to_dict()))
    else:
        console.print(format_report(report, control=control, candidate=candidate), highlight=False)


@app.command("stats")
def stats_cmd(
    pair: Annotated[Optional[str], typer.Option("--pair", help="CONTROL,CANDIDATE (or N1:V1:N2:V2); all pairs when omitted")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Fleet shadow agreement: every pair, or one pair's confusion matrix and per-device figures."""
    client = api_client(data_dir, url, token)
    if pair is None:
        rows = call(client.shadow_pairs)
        if as_json:
            console.print_json(json.dumps(rows))
            return
        table = Table("control", "candidate", "devices", "frames", "agreement", "disagreements", "dropped", "events", "clips")
        for p in rows:
            agreement = "-" if p["agreement"] is None else f"{p['agreement']:.2%}"
            table.add_row(p["control"], p["candidate"], str(p["devices"]), f"{p['frames']:,}", agreement,
                          f"{p['disagreements']:,}", f"{p['dropped']:,}", str(p["events"]), str(p["clips"]))
        console.print(table)
        return
    try:
        ctl, cand = parse_pair(pair)
    except Exception as exc:  # BadRequest
        fail(str(exc))
    d = call(client.shadow_pair, ctl, cand)
    if as_json:
        console.print_json(json.dumps(d))
        return
    agreement = "n/a" if d["agreement"] is None else f"{d['agreement']:.2%}"
    console.print(f"{ctl} vs {cand}: {d['frames']:,} frames, agreement {agreement}, "
                  f"{d['disagreements']:,} disagreements, {d['dropped']:,} dropped, {d['events']} events, {d['clips']} clips",
                  highlight=False)
    matrix = d["confusion"]
    cols = sorted({k for row in matrix.values() for k in row})
    table = Table(title=f"confusion (rows: {ctl}, columns: {cand})")
    table.add_column("")
    for c in cols:
        table.add_column(c, justify="right")
    for r in sorted(matrix):
        table.add_row(r, *(str(matrix[r].get(c, 0)) for c in cols))
    console.print(table)
    per_device = Table("device", "frames", "agreement", "events", "clips")
    for dev in d["devices"]:
        per_device.add_row(dev["device_id"], f"{dev['frames']:,}",
                           "-" if dev["agreement"] is None else f"{dev['agreement']:.2%}", str(dev["events"]), str(dev["clips"]))
    console.print(per_device)


@app.command("events")
def events_cmd(
    pair: Annotated[Optional[str], typer.Option("--pair", help="CONTROL,CANDIDATE")] = None,
    label: Annotated[Optional[str], typer.Option("--class", help="control or candidate label")] = None,
    device: Annotated[Optional[str], typer.Option("--device")] = None,
    trigger: Annotated[Optional[str], typer.Option("--trigger")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 20,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Recent capture events (newest first) with their clip ids."""
    params = {k: v for k, v in {"pair": pair, "class": label, "device": device, "trigger": trigger, "limit": limit}.items() if v}
    rows = call(api_client(data_dir, url, token).shadow_events, **params)
    table = Table("time", "device", "trigger", "control", "candidate", "clip")
    for e in rows:
        cand = e["candidate"] or {}
        table.add_row(str(e["ts"])[:19], e["device_id"], e["trigger"], f"{e['control']['label']} ({e['control']['score']})",
                      f"{cand.get('label')} ({cand.get('score')})" if cand else "-", e["clip_id"] or "-")
    console.print(table)


__all__ = ["app", "ApiError"]
