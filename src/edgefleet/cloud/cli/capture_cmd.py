"""``fleet capture show|set|reset``: what every device captures and uploads (fleet-wide)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from .common import DataDirOpt, TokenOpt, UrlOpt, api_client, call, console, fail

app = typer.Typer(
    help="The capture policy sent to every device: triggers, budgets, clip length.",
    no_args_is_help=True,
)

DEVICE_SIDE = ("cooldown_s", "dedupe_threshold", "near_band")  # None = the device's own config


def _print(res: dict[str, Any], as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(res))
        return
    source = "controller default (controller.toml [capture])" if res["source"] == "default" \
        else f"set by {res['updated_by']} at {str(res['updated_at'])[:19]}"
    table = Table("setting", "value", title=f"capture policy — {source}")
    for key, value in res["policy"].items():
        shown = "device's own" if value is None and key in DEVICE_SIDE else str(value)
        table.add_row(key, shown)
    console.print(table)
    if res.get("devices_notified") is not None:
        console.print(f"sent to {res['devices_notified']} devices")


@app.command()
def show(
    device: Annotated[str | None, typer.Option("--device", help="what this device gets, and from which scope")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Show the capture policy in force (fleet-wide, or of one device with the scope of each field)."""
    if device:
        from .policy_cmd import print_device_policy

        print_device_policy(call(api_client(data_dir, url, token).device_policy, device), as_json, "capture")
        return
    _print(call(api_client(data_dir, url, token).capture_settings), as_json)


@app.command("set")
def set_(
    disagreement: Annotated[bool | None, typer.Option("--disagreement/--no-disagreement",
                                                      help="capture frames where the candidate disagrees")] = None,
    low_confidence: Annotated[bool | None, typer.Option("--low-confidence/--no-low-confidence",
                                                        help="capture frames where control is under its threshold")] = None,
    sample_rate: Annotated[float | None, typer.Option(help="random sample of frames, 0–1")] = None,
    max_per_minute: Annotated[int | None, typer.Option(help="clips per minute per device")] = None,
    max_per_hour: Annotated[int | None, typer.Option(help="clips per hour per device")] = None,
    max_per_day: Annotated[int | None, typer.Option(help="clips per day per device")] = None,
    max_bytes_per_day: Annotated[int | None, typer.Option(help="upload bytes per day per device")] = None,
    pre_seconds: Annotated[float | None, typer.Option(help="seconds of video before the trigger")] = None,
    post_seconds: Annotated[float | None, typer.Option(help="seconds of video after the trigger")] = None,
    cooldown: Annotated[float | None, typer.Option("--cooldown", help="seconds between clips of one class")] = None,
    dedupe_threshold: Annotated[float | None, typer.Option(help="frames closer than this count as the same")] = None,
    near_band: Annotated[float | None, typer.Option(help="capture when control's score is this close to its threshold")] = None,
    unset: Annotated[list[str] | None, typer.Option("--unset", help=f"give back to the device's config: {', '.join(DEVICE_SIDE)}")] = None,
    select: Annotated[str | None, typer.Option("--select", help="only for these devices (a scoped policy; most specific wins)")] = None,
    scope: Annotated[str | None, typer.Option("--scope", help="name of the scoped policy (default: made from --select)")] = None,
    priority: Annotated[int | None, typer.Option("--priority", help="of the scoped policy: higher wins (default 0)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Change the named settings (the rest stay) and send the policy to every device, or with
    --select to the devices it matches (operator)."""
    given = {
        "disagreement": disagreement, "low_confidence": low_confidence, "sample_rate": sample_rate,
        "max_per_minute": max_per_minute, "max_per_hour": max_per_hour, "max_per_day": max_per_day,
        "max_bytes_per_day": max_bytes_per_day, "pre_seconds": pre_seconds, "post_seconds": post_seconds,
        "cooldown_s": cooldown, "dedupe_threshold": dedupe_threshold, "near_band": near_band,
    }
    changes: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    for key in unset or []:
        if key not in DEVICE_SIDE:
            fail(f"--unset takes one of {', '.join(DEVICE_SIDE)}, got {key!r}")
        if key in changes:
            fail(f"{key} is both set and unset")
        changes[key] = None
    if not changes:
        fail("name at least one setting to change (fleet capture set --help)")
    if select is not None or scope is not None:
        from .policy_cmd import _existing, change_scope, scope_name

        client = api_client(data_dir, url, token)
        row = _existing(client, scope_name(select or "", scope))
        merged = {**((row or {}).get("capture") or {}), **changes}
        res = change_scope(client, select or (row or {}).get("select", ""), scope, priority, "capture", merged)
        if as_json:
            console.print_json(json.dumps(res))
        else:
            console.print(f"capture policy of {res['name']} ({res['select']}): {json.dumps(res['capture'])}; "
                          f"sent to {res['devices_notified']} devices")
        return
    _print(call(api_client(data_dir, url, token).change_capture_settings, changes), as_json)


@app.command()
def reset(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Go back to the controller's default policy and send it to every device (operator)."""
    _print(call(api_client(data_dir, url, token).reset_capture_settings), as_json)
