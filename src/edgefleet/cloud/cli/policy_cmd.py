"""``fleet policy|window|network``: policies scoped to a selector (cloud/policy).

* ``fleet policy ls|show|rm|explain --device ID`` — the scopes, and what one device gets
  (with the scope each field came from).
* ``fleet window add|ls|rm`` — maintenance windows, fleet-wide or ``--select EXPR``.
* ``fleet network show|set|reset [--select EXPR]`` — the network policy, fleet-wide or scoped.

A scope is named (``--scope NAME``; by default the selector, made into a name). Changing
one sends the new settings, signed, to exactly the devices it matches.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ..client import ApiError
from .common import DataDirOpt, TokenOpt, UrlOpt, api_client, call, console, fail

policy_app = typer.Typer(help="Policies scoped to a selector: list them, explain one device's.", no_args_is_help=True)
window_app = typer.Typer(help="Maintenance windows: devices download any time, switch only inside a window.",
                         no_args_is_help=True)
network_app = typer.Typer(help="The network policy: which links bundles and clips may use, bandwidth caps.",
                          no_args_is_help=True)

SelectOpt = Annotated[str | None, typer.Option("--select", help="devices this applies to (selector, e.g. hw:jetson-orin,tag:site=a); fleet-wide without")]
ScopeOpt = Annotated[str | None, typer.Option("--scope", help="name of the scoped policy (default: made from --select)")]
PriorityOpt = Annotated[int | None, typer.Option("--priority", help="higher wins over more selector terms (default 0)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


def scope_name(select: str, scope: str | None) -> str:
    """``hw:jetson-orin,tag:site=a`` → ``hw-jetson-orin.tag-site-a`` (or ``scope`` as given)."""
    if scope:
        return scope
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", select.replace(",", ".")).strip("-.")[:64]
    return name or "all"


def _existing(client: Any, name: str) -> dict[str, Any] | None:
    try:
        return client.get_policy(name)
    except ApiError as exc:
        if exc.status_code == 404:
            return None
        fail(f"{exc.detail} (HTTP {exc.status_code})")


def _body(row: dict[str, Any] | None, select: str, priority: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"select": select, "priority": priority if priority is not None else (row or {}).get("priority", 0)}
    if row is not None:
        if row.get("select") != select and select:
            body["select"] = select
        for key in ("capture", "network"):
            if row.get(key) is not None:
                body[key] = row[key]
        if row.get("windows") is not None:
            body["windows"] = [{k: w[k] for k in ("days", "start", "duration", "timezone")} for w in row["windows"]]
    return body


def change_scope(client: Any, select: str, scope: str | None, priority: int | None, key: str, value: Any) -> dict[str, Any]:
    """Read-modify-write one field of a scope (``None`` clears it); creates the scope if needed."""
    name = scope_name(select, scope)
    row = _existing(client, name)
    body = _body(row, select or (row or {}).get("select", ""), priority)
    if value is None:
        body.pop(key, None)
    else:
        body[key] = value
    return call(client.put_policy, name, body)


def _windows_table(title: str, windows: list[dict[str, Any]]) -> Table:
    t = Table("#", "days", "start", "duration", "time zone", title=title)
    for i, w in enumerate(windows):
        t.add_row(str(i), ",".join(w["days"]), w["start"], w["duration"], escape(w["timezone"]))
    return t


def window_option(text: str) -> dict[str, Any]:
    """``'mon-fri 02:00 2h Europe/Berlin'`` (zone optional: the device's own) → a window body."""
    parts = text.split()
    if len(parts) not in (3, 4):
        fail(f"--window {text!r}: write 'DAYS HH:MM DURATION [TIMEZONE]', e.g. 'mon-fri 02:00 2h Europe/Berlin'")
    return {"days": parts[0].split(","), "start": parts[1], "duration": parts[2],
            "timezone": parts[3] if len(parts) == 4 else "device"}


# ----- fleet policy -----

@policy_app.command("ls")
def policy_ls(as_json: JsonOpt = False, data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """List the scoped policies, most specific first per device (priority, then selector terms)."""
    res = call(api_client(data_dir, url, token).policies)
    if as_json:
        console.print_json(json.dumps(res))
        return
    t = Table("name", "select", "priority", "capture", "network", "windows", "by", title="scoped policies")
    for p in res["policies"]:
        t.add_row(escape(p["name"]), escape(p["select"]) if not p.get("rollout_id") else f"rollout {escape(p['rollout_id'])}",
                  str(p["priority"]), escape(json.dumps(p["capture"])) if p.get("capture") else "-",
                  escape(json.dumps(p["network"])) if p.get("network") else "-",
                  "; ".join(f"{','.join(w['days'])} {w['start']}+{w['duration']} {w['timezone']}" for w in p["windows"])
                  if p.get("windows") is not None else "-", escape(p.get("updated_by") or ""))
    console.print(t)
    if res["fleet_windows"]:
        console.print(_windows_table("fleet-wide windows", res["fleet_windows"]))


@policy_app.command("rm")
def policy_rm(name: Annotated[str, typer.Argument(help="policy name (fleet policy ls)")],
              data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Remove a scoped policy; its devices fall back to less specific scopes (operator)."""
    res = call(api_client(data_dir, url, token).delete_policy, name)
    console.print(f"removed policy {escape(name)}; sent to {res['devices_notified']} devices")


@policy_app.command("explain")
def policy_explain(device: Annotated[str, typer.Option("--device", help="device id")], as_json: JsonOpt = False,
                   data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """What one device gets, and which scope gave each setting."""
    print_device_policy(call(api_client(data_dir, url, token).device_policy, device), as_json, None)


def print_device_policy(res: dict[str, Any], as_json: bool, only: str | None) -> None:
    if as_json:
        console.print_json(json.dumps(res))
        return
    t = Table("setting", "value", "from", title=f"policy of {escape(res['device_id'])} "
              f"(scopes: {escape(', '.join(res['scopes']) or 'fleet-wide only')})")
    for part in ("capture", "network"):
        if only and part != only:
            continue
        for key, value in res[part].items():
            t.add_row(f"{part}.{key}", escape(str(value)), escape(res["sources"].get(f"{part}.{key}", "fleet")))
    if not only or only == "windows":
        shown = "; ".join(f"{','.join(w['days'])} {w['start']} for {w['duration']} ({w['timezone']})"
                          for w in res["windows"]) or "none: switches any time"
        t.add_row("windows", escape(shown), escape(res["sources"].get("windows", "fleet")))
    console.print(t)


# ----- fleet window -----

@window_app.command("add")
def window_add(
    days: Annotated[str, typer.Option("--days", help="mon … sun, ranges (mon-fri) or daily; comma-separated")],
    start: Annotated[str, typer.Option("--start", help="local start time HH:MM")],
    duration: Annotated[str, typer.Option("--duration", help="with a unit: 2h, 90m, 1h30m")],
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone (Europe/Berlin), or 'device' for each device's own")] = "device",
    select: SelectOpt = None, scope: ScopeOpt = None, priority: PriorityOpt = None, as_json: JsonOpt = False,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Add a maintenance window (several per policy; overlaps are fine) (operator)."""
    client = api_client(data_dir, url, token)
    window = {"days": [d.strip() for d in days.split(",")], "start": start, "duration": duration, "timezone": tz}
    if select is None and scope is None:
        current = call(client.fleet_windows)["windows"]
        res = call(client.set_fleet_windows, [*_plain(current), window])
        _print_windows("fleet-wide windows", res, as_json)
        return
    row = _existing(client, scope_name(select or "", scope))
    existing = _plain((row or {}).get("windows") or [])
    res = change_scope(client, select or (row or {}).get("select", ""), scope, priority, "windows", [*existing, window])
    _print_windows(f"windows of {res['name']} ({res['select']})", res, as_json)


def _plain(windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: w[k] for k in ("days", "start", "duration", "timezone")} for w in windows]


def _print_windows(title: str, res: dict[str, Any], as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(res))
        return
    console.print(_windows_table(title, res.get("windows") or []))
    if res.get("devices_notified") is not None:
        console.print(f"sent to {res['devices_notified']} devices")


@window_app.command("ls")
def window_ls(as_json: JsonOpt = False, data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """List every maintenance window: fleet-wide and per scope."""
    res = call(api_client(data_dir, url, token).policies)
    if as_json:
        console.print_json(json.dumps({"fleet": res["fleet_windows"],
                                       **{p["name"]: p["windows"] for p in res["policies"] if p.get("windows") is not None}}))
        return
    console.print(_windows_table("fleet-wide", res["fleet_windows"]))
    for p in res["policies"]:
        if p.get("windows") is not None:
            console.print(_windows_table(f"{p['name']} ({p['select']}, priority {p['priority']})", p["windows"]))


@window_app.command("rm")
def window_rm(
    index: Annotated[int | None, typer.Argument(help="window number (fleet window ls); all when left out")] = None,
    select: SelectOpt = None, scope: ScopeOpt = None, as_json: JsonOpt = False,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Remove one window (or all) of the fleet or of a scope (operator)."""
    client = api_client(data_dir, url, token)
    if select is None and scope is None:
        current = _plain(call(client.fleet_windows)["windows"])
        if index is not None and not 0 <= index < len(current):
            fail(f"no fleet-wide window {index}; there are {len(current)}")
        kept: list[dict[str, Any]] = [] if index is None else current[:index] + current[index + 1:]
        _print_windows("fleet-wide windows", call(client.set_fleet_windows, kept), as_json)
        return
    name = scope_name(select or "", scope)
    row = _existing(client, name)
    if row is None or row.get("windows") is None:
        fail(f"policy {name!r} has no windows")
    current = _plain(row["windows"])
    if index is not None and not 0 <= index < len(current):
        fail(f"policy {name!r} has no window {index}; it has {len(current)}")
    rest: list[dict[str, Any]] | None = None if index is None else current[:index] + current[index + 1:]
    res = change_scope(client, row["select"], name, None, "windows", rest or None)  # none left: the scope sets none
    _print_windows(f"windows of {res['name']}", res, as_json)


# ----- fleet network -----

@network_app.command("show")
def network_show(device: Annotated[str | None, typer.Option("--device", help="what this device gets, and from which scope")] = None,
                 as_json: JsonOpt = False, data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Show the fleet-wide network policy, or what one device gets."""
    client = api_client(data_dir, url, token)
    if device:
        print_device_policy(call(client.device_policy, device), as_json, "network")
        return
    res = call(client.network_settings)
    if as_json:
        console.print_json(json.dumps(res))
        return
    t = Table("setting", "value", title=f"network policy (fleet-wide) — {res['source']}")
    for k, v in res["policy"].items():
        t.add_row(k, escape(str(v)))
    console.print(t)


@network_app.command("set")
def network_set(
    download: Annotated[str | None, typer.Option("--download", help="any | unmetered | interfaces")] = None,
    interface: Annotated[list[str] | None, typer.Option("--interface", help="with --download interfaces (repeat)")] = None,
    max_download_bps: Annotated[int | None, typer.Option(help="bytes/s cap for bundle downloads")] = None,
    max_upload_bps: Annotated[int | None, typer.Option(help="bytes/s cap for clip uploads")] = None,
    select: SelectOpt = None, scope: ScopeOpt = None, priority: PriorityOpt = None, as_json: JsonOpt = False,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Set the network policy, fleet-wide (whole policy) or for --select (only the fields given) (operator)."""
    fields: dict[str, Any] = {"download": download, "interfaces": interface or None,
                              "max_download_bps": max_download_bps, "max_upload_bps": max_upload_bps}
    fields = {k: v for k, v in fields.items() if v is not None}
    if not fields:
        fail("name at least one setting (fleet network set --help)")
    client = api_client(data_dir, url, token)
    if select is None and scope is None:
        res = call(client.set_network_settings, fields)
        if as_json:
            console.print_json(json.dumps(res))
        else:
            console.print(f"network policy (fleet-wide) set; sent to {res.get('devices_notified')} devices")
        return
    row = _existing(client, scope_name(select or "", scope))
    merged = {**((row or {}).get("network") or {}), **fields}
    res = change_scope(client, select or (row or {}).get("select", ""), scope, priority, "network", merged)
    if as_json:
        console.print_json(json.dumps(res))
    else:
        console.print(f"network policy of {escape(res['name'])} ({escape(res['select'])}) set to "
                      f"{escape(json.dumps(res['network']))}; sent to {res['devices_notified']} devices")
