"""``fleet campaign start|ls|status|stop``: capture campaigns (frames a condition matches, up to a quota)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from .common import DataDirOpt, TokenOpt, UrlOpt, api_client, call, console, fail

app = typer.Typer(
    help="Capture campaigns: ask the devices a selector picks for the frames a condition matches, "
         "up to a fleet-wide quota. Conditions: label, confidence, margin, score.LABEL, disagree, "
         "candidate.*, boxes.count|max_area|labels, context.KEY, hour|minute|weekday; "
         "e.g. --when 'label == \"3\" and confidence < 0.6' or --when 'context.steering_deg < -20'.",
    no_args_is_help=True,
)


def _clip(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    pre, sep, post = text.partition(",")
    try:
        if not sep:
            raise ValueError
        return float(pre), float(post)
    except ValueError:
        fail(f"--clip takes PRE,POST seconds (e.g. 2,1), not {text!r}")


def _row(c: dict[str, Any]) -> list[str]:
    what = c.get("when") or ""
    if c.get("like"):
        lk = c["like"]
        space = f"{lk.get('output') or 'scores'}[{lk.get('dim')}]" if lk.get("dim") else ""
        what = (what + " " if what else "") + f"like {lk['event_id']} {space} ({lk.get('metric') or 'cosine'} ≤ {lk['threshold']})"
    return [escape(c["name"]), c["state"], f"{c['captured']}/{c['quota']}", str(c["per_device"]),
            escape(c["select"]), escape(what), str(c.get("ends_at") or "")[:19]]


@app.command()
def start(
    name: Annotated[str, typer.Argument(help="campaign name (lower case, digits, _ . -)")],
    select: Annotated[str, typer.Option("--select", help="devices, as rollouts select them (tag:site=7,hw:orin)")] = "all",
    when: Annotated[str | None, typer.Option("--when", help="condition on each frame (see `fleet campaign --help`)")] = None,
    like: Annotated[str | None, typer.Option("--like", help="EVENT_ID of a reviewed capture: frames like it")] = None,
    threshold: Annotated[float | None, typer.Option(help="with --like: distance of the embedding (cosine e.g. 0.05)")] = None,
    metric: Annotated[str, typer.Option(help="with --like: cosine (threshold in (0, 2]) or l2")] = "cosine",
    quota: Annotated[int, typer.Option(help="captures wanted fleet-wide; the campaign completes there")] = 100,
    per_device: Annotated[int | None, typer.Option(help="at most this many from one device (default: the quota)")] = None,
    until: Annotated[str | None, typer.Option(help="end after this long (30m, 2h, 7d)")] = None,
    clip: Annotated[str | None, typer.Option(help="PRE,POST seconds of video around each frame")] = None,
    frames_only: Annotated[bool, typer.Option("--frames-only", help="one frame per capture, no video")] = False,
    priority: Annotated[int, typer.Option(help="0-100 against the standing triggers (10-40)")] = 25,
    max_per_minute: Annotated[int, typer.Option(help="captures per minute per device")] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Start a campaign. Errors in --select or --when point at the problem with a caret."""
    if metric not in ("cosine", "l2"):
        fail(f"--metric takes cosine or l2, not {metric!r}")
    body: dict[str, Any] = {"name": name, "select": select, "quota": quota, "frames_only": frames_only,
                            "priority": priority, "max_per_minute": max_per_minute}
    if like is not None:
        body["metric"] = metric
    for key, value in (("when", when), ("like_event", like), ("threshold", threshold), ("per_device", per_device),
                       ("until", until)):
        if value is not None:
            body[key] = value
    pre_post = _clip(clip)
    if pre_post is not None:
        body["pre_seconds"], body["post_seconds"] = pre_post
    res = call(api_client(data_dir, url, token).start_campaign, body)
    if as_json:
        console.print_json(json.dumps(res))
        return
    console.print(f"campaign {escape(res['name'])} started: quota {res['quota']} ({res['per_device']} per device); "
                  f"sent to {res.get('devices_notified') or 0} devices")


@app.command("ls")
def ls(
    state: Annotated[str | None, typer.Option(help="running | completed | stopped | ended")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """List campaigns, newest first, with their progress."""
    res = call(api_client(data_dir, url, token).campaigns, state)
    if as_json:
        console.print_json(json.dumps(res))
        return
    table = Table("name", "state", "captured", "per device", "select", "when", "ends")
    for c in res:
        table.add_row(*_row(c))
    console.print(table)


@app.command()
def status(
    name: Annotated[str, typer.Argument(help="campaign name")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """One campaign: progress against its quota per device group (hardware profile) and per device."""
    res = call(api_client(data_dir, url, token).campaign, name)
    if as_json:
        console.print_json(json.dumps(res))
        return
    console.print(f"campaign {escape(res['name'])}: {res['state']}, {res['captured']}/{res['quota']} captured"
                  + (f" (finished by {escape(res['finished_by'])})" if res.get("finished_by") else ""))
    groups = Table("device group", "devices", "captured", title="per hardware profile")
    for group, g in sorted(res["groups"].items()):
        groups.add_row(escape(group), str(g["devices"]), str(g["captured"]))
    console.print(groups)
    devices = Table("device", "captured", title=f"per device (at most {res['per_device']} each)")
    for device, n in sorted(res["devices"].items()):
        devices.add_row(escape(device), str(n))
    console.print(devices)
    if res.get("skipped"):
        skipped = Table("device", "why", title="not comparing the like embedding")
        for device, why in sorted(res["skipped"].items()):
            skipped.add_row(escape(device), escape(why))
        console.print(skipped)


@app.command()
def stop(
    name: Annotated[str, typer.Argument(help="campaign name")],
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Stop a running campaign; its devices are told at once (offline ones when they return)."""
    res = call(api_client(data_dir, url, token).stop_campaign, name)
    console.print(f"campaign {escape(res['name'])} stopped at {res['captured']}/{res['quota']}")
