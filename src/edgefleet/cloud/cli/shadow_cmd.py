"""``fleet shadow replay|stats|events``: compare models offline, read fleet shadow results.

``replay`` takes each model as ``NAME:VERSION`` from the controller's catalog (downloads
the bundle, ``/api/v1/bundles/{digest}``) or as a local file — an ONNX model (manifest
from ``--control-manifest``/``--candidate-manifest``, else inferred from the graph, with
``--labels``) or a model bundle — and needs no controller when both are local. It runs them
with ONNX Runtime over a directory of images or a video (``shadow.iter_frames``), prints
agreement, latency and the confusion matrix (``shadow.format_report``) and, with
``--gate``, judges the replay (``cloud.replay_gate``): exit 1 on a breach with the
figures, ``--json OUT`` and ``--junit OUT`` for CI. ``stats`` and ``events`` read what the
fleet reported (``/api/v1/shadow/pairs``, ``/api/v1/events``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ...shadow import SourceError, format_report, iter_frames, replay
from ..client import ApiClient, ApiError
from ..shadow_index import parse_pair
from .common import DataDirOpt, TokenOpt, UrlOpt, api_client, call, console, fail

app = typer.Typer(help="Shadow mode: offline replay, fleet agreement, capture events.", no_args_is_help=True)


def _is_local(ref: str) -> bool:
    return ref.endswith((".onnx", ".tar", ".bundle")) or Path(ref).is_file()


def _session(model_path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # both models alike: the latency figures compare like with like
    session = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    from ...shadow.replay import NamedModel

    return NamedModel(lambda x: session.run(None, {input_name: x}), tuple(o.name for o in session.get_outputs()))


def _load_local(ref: str, manifest_file: Path | None, labels: list[str] | None, workdir: Path) -> tuple[Any, Any]:
    """(manifest, callable) of a local ONNX file or model bundle."""
    import tarfile

    from ...protocols import parse_manifest
    from ...protocols.errors import InvalidPayload
    from ...registry.bundle import unpack_bundle
    from ...registry.errors import InvalidBundle
    from ...registry.onnx_check import check_model, infer_manifest

    path = Path(ref)
    if not path.is_file():
        fail(f"{ref}: no such file (a local model is an .onnx file or a bundle; a catalog model is NAME:VERSION)")
    try:
        if tarfile.is_tarfile(path):
            bundle = unpack_bundle(path, workdir / f"local-{len(list(workdir.iterdir()))}")
            return bundle.manifest, _session(bundle.model_path)
        data = path.read_bytes()
        if manifest_file is not None:
            manifest = parse_manifest(manifest_file.read_bytes())
            check_model(data, manifest)
        else:
            name = "".join(c if c.isalnum() or c in "._-" else "-" for c in path.stem).strip("-._") or "model"
            manifest = infer_manifest(data, name=name, version="local", labels=labels)
    except (InvalidBundle, InvalidPayload, OSError) as exc:
        fail(f"{ref}: {exc}")
    return manifest, _session(path)


def _load_model(client: ApiClient, ref: str, workdir: Path) -> tuple[Any, Any]:
    """(manifest, callable tensor → outputs) of a catalog model."""
    from ...registry.bundle import unpack_bundle

    name, _, version = ref.partition(":")
    if not name or not version:
        fail(f"model must be NAME:VERSION or a local .onnx file or bundle, got {ref!r}")
    found = [m for m in call(client.list_models) if m["name"] == name and m["version"] == version]
    if not found:
        fail(f"no model {ref} in the catalog (fleet model ls)")
    data = call(client.download_bundle, found[0]["digest"])
    bundle = unpack_bundle(data, workdir / f"{name}-{version}".replace("/", "_"))
    return bundle.manifest, _session(bundle.model_path)


def _write(target: Path, data: bytes) -> None:
    """Write atomically (a temp file beside it, then rename); ``-`` is stdout."""
    import os

    if str(target) == "-":
        typer.echo(data.decode())
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


_GATE_HELP = ("gate, repeatable: agreement>=0.97, nan_rate<=0, error_rate<=0.01, latency_p99_ratio<=1.2 "
              "(with the rollout options, e.g. ';min=100;floor=2ms'), or absolute p99_ms<=12; "
              "exit 1 when one breaches or cannot be judged")


@app.command("replay")
def replay_cmd(
    control: Annotated[str, typer.Option("--control", help="control model: NAME:VERSION, or a local .onnx file or bundle")],
    candidate: Annotated[str, typer.Option("--candidate", help="candidate model: NAME:VERSION, or a local .onnx file or bundle")],
    source: Annotated[Path, typer.Option("--source", help="directory of images (sorted by name) or a video file")],
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="at most this many frames")] = None,
    gate: Annotated[Optional[list[str]], typer.Option("--gate", help=_GATE_HELP)] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write the report (and gate verdicts) as JSON to this file; '-' prints it")] = None,
    junit_out: Annotated[Optional[Path], typer.Option("--junit", help="write JUnit XML (one testcase per gate) to this file")] = None,
    control_manifest: Annotated[Optional[Path], typer.Option("--control-manifest", exists=True, dir_okay=False, help="manifest JSON of a local control .onnx [default: inferred from the graph]")] = None,
    candidate_manifest: Annotated[Optional[Path], typer.Option("--candidate-manifest", exists=True, dir_okay=False, help="manifest JSON of a local candidate .onnx [default: inferred from the graph]")] = None,
    labels: Annotated[Optional[str], typer.Option("--labels", help="comma-separated class labels of local .onnx files without a manifest")] = None,
    repeat: Annotated[int, typer.Option("--repeat", min=1, max=100, help="time each model N times per frame and keep the fastest (steadier latency figures on a busy CI machine)")] = 1,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Run control and candidate over recorded frames; print agreement, latency and the confusion matrix.

    With --gate, judge the replay as a rollout wave is judged and exit 1 on a breach
    (printing the figures); 0 when every gate passed; 2 on bad input. Local files need no
    controller: fleet shadow replay --control ctl.onnx --candidate new.onnx --source frames/
    --gate 'agreement>=0.97' --gate 'p99_ms<=12' --junit replay.xml
    """
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from .. import replay_gate
    from ..rollout.errors import GateSyntaxError
    from .common import err_console

    try:
        gates = replay_gate.parse_replay_gates(gate or [])
    except GateSyntaxError as exc:
        fail(str(exc), code=2)
    label_list = [x.strip() for x in labels.split(",") if x.strip()] if labels else None
    client: ApiClient | None = None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fleet-replay-") as tmp:
        loaded = []
        for role, ref, manifest_file in (("control", control, control_manifest),
                                         ("candidate", candidate, candidate_manifest)):
            if _is_local(ref):
                loaded.append(_load_local(ref, manifest_file, label_list, Path(tmp)))
                continue
            if manifest_file is not None:
                fail(f"--{role}-manifest is for a local .onnx file; "
                     f"{ref} comes with its own manifest", code=2)
            client = client or api_client(data_dir, url, token)
            loaded.append(_load_model(client, ref, Path(tmp)))
        (m_ctl, f_ctl), (m_cand, f_cand) = loaded
        frames = iter_frames(source)
        if limit:
            frames = (f for i, f in zip(range(limit), frames))
        with Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(), console=err_console,
                      transient=True, disable=not err_console.is_terminal) as progress:
            task = progress.add_task("replay", total=limit)

            def counted(items):  # type: ignore[no-untyped-def]
                for item in items:
                    yield item
                    progress.advance(task)

            try:
                report = replay(counted(frames), f_ctl, f_cand, m_ctl, m_cand, repeats=repeat)
            except (SourceError, ValueError) as exc:
                fail(str(exc))
    seconds = time.monotonic() - started
    results = replay_gate.judge_replay(report, gates)
    passed = replay_gate.all_passed(results)
    if json_out is not None:
        doc = replay_gate.to_json(results, report, control=control, candidate=candidate, seconds=seconds)
        _write(json_out, json.dumps(doc, indent=2, sort_keys=True).encode())
    if junit_out is not None:
        _write(junit_out, replay_gate.to_junit(results, report, control=control, candidate=candidate,
                                               seconds=seconds))
    if json_out is None or str(json_out) != "-":
        console.print(format_report(report, control=control, candidate=candidate), highlight=False)
    if not results:
        return
    table = Table("gate", "result", "figure", "why", title="replay gates")
    for r in results:
        table.add_row(r.gate, {"passed": "[green]passed[/]", "failed": "[red]failed[/]"}.get(r.status, "[yellow]pending[/]"),
                      "-" if r.value is None else f"{r.value:.4g}", escape(r.reason))
    (console if passed else err_console).print(table)
    if not passed:
        for r in results:
            if not r.passed:
                err_console.print(f"[bold red]gate:[/] {escape(replay_gate.failure_message(r))}", highlight=False)
        raise typer.Exit(1)


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
