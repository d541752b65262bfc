"""``fleet review ls|label|export``: the review queue from the terminal, and training data out.

All three go through the API (``/api/v1/review/...``): ``ls`` reads the queue (viewer),
``label`` records a verdict and ``export`` downloads the labelled captures as a zip
(reviewer). ``export --format folder`` unpacks that zip into OUT (``clips/``,
``keyframes/``, ``labels.jsonl``); ``--format zip`` writes ``OUT.zip``. The training formats
(``imagefolder``, ``coco``, ``yolo``, ``jsonl``; ``cloud.training_export``) are built by the
controller from frames at the trigger (``--all-frames``: every frame) and unpacked into OUT.
``label --label CLASS`` records the correct class as well as the verdict.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..review import VERDICTS, extract_zip
from .common import DataDirOpt, TokenOpt, UrlOpt, api_client, call, console, fail

app = typer.Typer(help="Review captures: list the queue, label who was right, export training data.",
                  no_args_is_help=True)
ALIASES = {"c": "control_right", "control": "control_right", "k": "candidate_right", "candidate": "candidate_right",
           "b": "both_wrong", "both": "both_wrong", "u": "unclear"}
EXPORT_FORMATS = ("folder", "zip", "imagefolder", "coco", "yolo", "jsonl")
PairOpt = Annotated[Optional[str], typer.Option("--pair", help="CONTROL:CANDIDATE, e.g. digits:1.0:digits:2.0 (or with a comma)")]


def _params(**kw: object) -> dict[str, object]:
    return {k: v for k, v in kw.items() if v not in (None, False, "")}


@app.command("ls")
def ls_cmd(
    pair: PairOpt = None,
    label: Annotated[Optional[str], typer.Option("--class", help="control or candidate label")] = None,
    device: Annotated[Optional[str], typer.Option("--device")] = None,
    trigger: Annotated[Optional[str], typer.Option("--trigger")] = None,
    since: Annotated[Optional[str], typer.Option("--since", help="ISO time")] = None,
    until: Annotated[Optional[str], typer.Option("--until", help="ISO time")] = None,
    unlabelled: Annotated[bool, typer.Option("--unlabelled", help="only captures nobody labelled")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """The review queue, newest first: both models' outputs and the verdict so far."""
    res = call(api_client(data_dir, url, token).review_queue, **_params(
        pair=pair, **{"class": label}, device=device, trigger=trigger, since=since, until=until,
        unlabelled=unlabelled, limit=limit))
    if as_json:
        console.print_json(json.dumps(res))
        return
    table = Table("event", "time", "device", "trigger", "control", "candidate", "clip", "verdict",
                  title=f"{res['total']} captures, {res['unlabelled']} unlabelled")
    for it in res["items"]:
        ctl, cand = it["control"] or {}, it["candidate"] or {}
        table.add_row(it["event_id"], (it["ts"] or "")[:19], it["device_id"], it["trigger"],
                      f"{ctl.get('label')} ({_score(ctl.get('score'))})",
                      f"{cand.get('label')} ({_score(cand.get('score'))})" if cand else "-",
                      "yes" if it["clip_id"] else "-", (it["label"] or {}).get("verdict", "-"))
    console.print(table)


def _score(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


@app.command("label")
def label_cmd(
    event_id: Annotated[str, typer.Argument(help="the capture's event id (fleet review ls)")],
    verdict: Annotated[str, typer.Argument(help=f"{', '.join(VERDICTS)} (or c, k, b, u)")],
    note: Annotated[str, typer.Option("--note", help="free text kept with the label")] = "",
    correct: Annotated[Optional[str], typer.Option("--label", help="the correct class (one of the models' labels); exports use it")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="only if several devices used this event id")] = None,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Record who was right on one capture (replaces an earlier verdict)."""
    verdict = ALIASES.get(verdict, verdict)
    if verdict not in VERDICTS:
        fail(f"verdict must be one of {', '.join(VERDICTS)} (or c, k, b, u)")
    res = call(api_client(data_dir, url, token).review_label, event_id, verdict, note=note, device_id=device,
               corrected_label=correct)
    lab = res["label"]
    console.print(f"{res['event_id']} ({res['device_id']}): {lab['verdict']}"
                  + (f", label {lab['corrected_label']}" if lab.get("corrected_label") else ""), highlight=False)


@app.command("export")
def export_cmd(
    out: Annotated[Path, typer.Argument(help="target folder (OUT.zip for --format zip)")],
    pair: PairOpt = None,
    fmt: Annotated[str, typer.Option("--format", help=f"{', '.join(EXPORT_FORMATS)}: clips as they are (folder, zip), "
                                     "or PNG frames for a training tool (imagefolder: torchvision ImageFolder; coco; "
                                     "yolo: Ultralytics classification; jsonl)")] = "folder",
    all_frames: Annotated[bool, typer.Option("--all-frames", help="training formats: every frame of each clip, not only the trigger frame")] = False,
    test_fraction: Annotated[float, typer.Option("--test-fraction", min=0.0, max=0.99, help="yolo: share of captures in test/ (stable per capture)")] = 0.2,
    verdict: Annotated[Optional[str], typer.Option("--verdict", help="only this verdict")] = None,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Labelled captures as training data: clips/, keyframes/ and labels.jsonl, or a training format.

    Training formats take each capture's frame at the trigger (or every frame), label it
    with the reviewer's corrected label or the label of the model that was right, and
    write provenance.json (device, time, model digests, campaign) beside the images.
    """
    if fmt not in EXPORT_FORMATS:
        fail(f"--format must be one of {', '.join(EXPORT_FORMATS)}", code=2)
    if all_frames and fmt in ("folder", "zip"):
        fail("--all-frames is for the training formats (imagefolder, coco, yolo, jsonl)", code=2)
    client = api_client(data_dir, url, token)
    params = _params(pair=pair, verdict=verdict)
    if fmt not in ("folder", "zip"):
        _export_training(client, out, fmt, {**params, **_params(all_frames=all_frames), "test_fraction": test_fraction})
        return
    if fmt == "zip":
        target = out if out.suffix == ".zip" else out.with_name(out.name + ".zip")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".export-", suffix=".zip")
        try:
            with os.fdopen(fd, "wb") as f:
                n = call(client.review_export, f, **params)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    else:
        with tempfile.TemporaryFile() as f:
            n = call(client.review_export, f, **params)
            f.seek(0)
            target = extract_zip(f, out)  # type: ignore[arg-type]
    console.print(f"exported {n} labelled captures to {target}", highlight=False)


def _export_training(client: object, out: Path, fmt: str, params: dict[str, object]) -> None:
    """Download a training-format export and unpack it into ``out`` (refused if not empty)."""
    from rich.status import Status

    if out.exists() and any(out.iterdir()):
        fail(f"{out} is not empty; give a new or empty folder", code=2)
    with tempfile.TemporaryFile() as f, Status(f"exporting {fmt} …", console=console):
        n = call(client.review_export, f, format=fmt, **params)  # type: ignore[attr-defined]
        f.seek(0)
        extract_zip(f, out)  # type: ignore[arg-type]
    prov = json.loads((out / "provenance.json").read_text())
    counts = prov["counts"]
    skipped = ", ".join(f"{k}: {v}" for k, v in counts["skipped"].items())
    console.print(f"exported {counts['images']} images of {counts['captures_exported']} of {n} labelled captures "
                  f"to {out} ({prov['layout']})" + (f"; left out {skipped}" if skipped else ""), highlight=False)
