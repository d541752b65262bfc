"""``fleet rollout start|ls|status|pause|resume|abort|rollback|reschedule|cancel`` (talks to
/api/v1/rollouts). ``start --start-at`` schedules a rollout; ``--rate``/``--ramp`` pace it."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Optional

import typer
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..rollout.gates import evidence_text
from .common import DataDirOpt, TokenOpt, UrlOpt, api_client, call, console, fail

app = typer.Typer(help="Staged rollouts: waves, soak, health gates, rollback.", no_args_is_help=True)

FINISHED = ("completed", "rolled_back", "aborted", "superseded")
_STATE_STYLE = {"running": "cyan", "soaking": "cyan", "completed": "green", "rolled_back": "yellow",
                "rolling_back": "yellow", "breached": "red", "paused": "magenta", "aborted": "dim",
                "superseded": "dim", "pending": "white", "scheduled": "blue"}


def _when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(at))


@app.command()
def start(
    model: Annotated[str, typer.Option("--model", help="NAME:VERSION")],
    slot: Annotated[str, typer.Option("--slot", help="control or shadow")] = "control",
    select: Annotated[str, typer.Option("--select", help="devices: all, tag:K=V, hw:PROFILE, device:ID, id:GLOB; ',' = and, '|' = or, '!' = not")] = "all",
    waves: Annotated[str, typer.Option("--waves", help="cumulative percents, e.g. 1,10,50,100")] = "1,10,50,100",
    soak: Annotated[str, typer.Option("--soak", help="soak after each wave, with a unit: 90s, 30m, 2h")] = "30m",
    gate: Annotated[Optional[list[str]], typer.Option("--gate", help="METRIC OP LIMIT, repeatable (default failure<=0.02)")] = None,
    on_breach: Annotated[str, typer.Option("--on-breach", help="pause or rollback")] = "rollback",
    device_timeout: Annotated[str, typer.Option("--device-timeout", help="a device that has not settled after this is timed out, with a unit: 30m, 1h")] = "30m",
    max_concurrent: Annotated[Optional[int], typer.Option("--max-concurrent", help="devices installing at once")] = None,
    start_at: Annotated[Optional[str], typer.Option("--start-at", help="schedule it: ISO 8601 with an offset (2026-05-01T22:00:00+02:00, ...Z) or relative (+10m, +2h)")] = None,
    rate: Annotated[Optional[str], typer.Option("--rate", help="dispatch at most N devices per minute, e.g. 60/min (1..1000), within waves and gates")] = None,
    ramp: Annotated[Optional[str], typer.Option("--ramp", help="START/min,xFACTOR,every=K: start at START/min, multiply by FACTOR (1.1..5) after every K successes, up to 1000/min")] = None,
    window: Annotated[Optional[list[str]], typer.Option("--window", help="this rollout's maintenance window while it runs: 'DAYS HH:MM DURATION [TZ]', e.g. 'mon-fri 02:00 2h Europe/Berlin' (repeatable; devices download at once, switch inside)")] = None,
    download: Annotated[Optional[str], typer.Option("--download", help="this rollout's network policy while it runs: any, unmetered or interfaces (with --interface)")] = None,
    interface: Annotated[Optional[list[str]], typer.Option("--interface", help="with --download interfaces (repeatable)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Start a staged rollout now or at --start-at (supersedes live rollouts of the same slot on the
    same devices when it starts)."""
    from ..rollout import SpecError, parse_duration, parse_pace, parse_start_at

    for option, text in (("--soak", soak), ("--device-timeout", device_timeout)):
        try:
            parse_duration(text, require_unit=True)
        except SpecError as exc:
            fail(f"{option} {exc}")
    try:
        parse_pace(rate=rate, ramp=ramp)
    except SpecError as exc:
        fail(str(exc))
    if start_at is not None:
        try:
            parse_start_at(start_at, time.time())
        except SpecError as exc:
            fail(f"--start-at: {exc}")
    from .policy_cmd import window_option

    windows = [window_option(w) for w in window] if window else None
    network = {"download": download, **({"interfaces": interface} if interface else {})} if download else None
    res = call(api_client(data_dir, url, token).start_rollout, model, slot=slot, select=select, waves=waves,
               soak=soak, gates=gate, on_breach=on_breach, device_timeout=device_timeout,
               max_concurrent=max_concurrent, start_at=start_at, rate=rate, ramp=ramp, windows=windows, network=network)
    if as_json:
        console.print_json(json.dumps(res))
        return
    verb = f"scheduled for {_when(res.get('start_at'))}" if res["state"] == "scheduled" else "started"
    console.print(f"rollout [bold]{res['id']}[/] {verb}: {res['model']} → {res['slot']} "
                  f"({select!r}, waves {waves}, gates {', '.join(res['gates_spec']) or 'none'}"
                  + (f", rate {res['rate_spec']}" if res.get("rate_spec") else "") + ")")
    console.print(f"follow it with: fleet rollout status {res['id']} --watch")
    for warning in res.get("warnings") or []:  # e.g. a deprecated version
        console.print(Text.assemble(("warning: ", "yellow"), str(warning)))


@app.command("ls")
def list_rollouts(
    state: Annotated[Optional[str], typer.Option("--state", help="only rollouts in this state")] = None,
    scheduled: Annotated[bool, typer.Option("--scheduled", help="only scheduled rollouts (not started yet), with their start times")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="the newest N rollouts")] = 100,
    show_all: Annotated[bool, typer.Option("--all", help="every rollout, page after page (ignores --limit)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """List rollouts, newest first (the newest 100 unless --limit or --all)."""
    if scheduled and state not in (None, "scheduled"):
        fail("use either --scheduled or --state, not both")
    rows = call(api_client(data_dir, url, token).list_rollouts, "scheduled" if scheduled else state,
                limit=None if show_all else limit)
    if as_json:
        console.print_json(json.dumps(rows))
        return
    if scheduled:
        table = Table("id", "model", "slot", "starts at", "select", "rate", "created")
        for r in rows:
            table.add_row(r["id"], r["model"], r["slot"], _when(r.get("start_at")), r["select"],
                          r.get("rate") or "-", _when(r["created_at"]))
        console.print(table)
        return
    table = Table("id", "model", "slot", "state", "wave", "devices", "select", "reason", "created")
    for r in rows:
        style = _STATE_STYLE.get(r["state"], "white")
        table.add_row(r["id"], r["model"], r["slot"], f"[{style}]{r['state']}[/]",
                      f"{r['current_wave'] + 1}/{len(r['waves'].split(','))}", str(r["devices"]),
                      r["select"], (r.get("reason") or "")[:60],
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created_at"])))
    console.print(table)
    if not show_all and len(rows) == limit:
        console.print(f"[dim]the newest {limit} shown; older ones: --limit N or --all[/]")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def progress_bar(fraction: float, width: int = 30) -> str:
    fraction = max(0.0, min(1.0, fraction))
    full = int(round(fraction * width))
    return "█" * full + "░" * (width - full)


def render_status(st: dict[str, Any]) -> Group:
    """The status screen: header, progress bar, one row per wave, gates, breach, events."""
    style = _STATE_STYLE.get(st["state"], "white")
    parts: list[Any] = [
        Text.from_markup(f"rollout [bold]{st['id']}[/]  {st['model']} → {st['slot']}  "
                         f"[{style}]{st['state']}[/]  wave {st['current_wave'] + 1}/{len(st['waves'])}"),
        Text(f"select {st['select']!r}  soak {st['soak']}  timeout {st['device_timeout']}  "
             f"on breach {st['on_breach']}  max concurrent {st['max_concurrent'] or '-'}"),
        Text(f"{progress_bar(st['progress'])} {st['on_model']}/{st['devices']} devices on the model "
             f"({st['progress']:.0%})"),
    ]
    if st.get("rate_spec"):
        parts.append(Text(f"rate {st['rate_per_min']:g}/min now (asked: {st['rate_spec']})"))
    if st["state"] == "scheduled":
        parts.append(Text(f"starts at {_when(st.get('start_at'))}", style="blue"))
    if st.get("reason"):
        parts.append(Text(f"reason: {st['reason']}", style="yellow" if st["state"] != "breached" else "red"))
    waves = Table("wave", "%", "devices", "outcome", "by status",
                  "gates (figure vs limit · interval · sample · significance)")
    for w in st["waves"]:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(w["counts"].items())) or "-"
        gates = "\n".join(
            f"{g['metric']} {_fmt(g.get('value'))} {g.get('op', '')} {_fmt(g.get('limit'))} [{g['status']}]"
            + (f" ({ev})" if (ev := evidence_text(g)) else "")
            for g in w["gates"]) or "-"
        waves.add_row(str(w["index"] + 1), f"{w['percent']:g}", str(w["members"]), w["outcome"], counts, gates)
    parts.append(waves)
    if st.get("breach"):
        b = st["breach"]
        parts.append(Text(f"breach on wave {b['wave'] + 1}: {b['summary']}", style="bold red"))
    for e in (st.get("events") or [])[-8:]:
        parts.append(Text(f"{time.strftime('%H:%M:%S', time.localtime(e['at']))} {e['message']}",
                          style="yellow" if e["level"] == "warning" else "dim"))
    return Group(*parts)


@app.command()
def status(
    rollout_id: Annotated[str, typer.Argument(help="rollout id (fleet rollout ls)")],
    watch: Annotated[bool, typer.Option("--watch", help="refresh until the rollout finishes")] = False,
    interval: Annotated[float, typer.Option("--interval", help="seconds between refreshes")] = 2.0,
    devices: Annotated[bool, typer.Option("--devices", help="also list member devices, a page at a time (--limit, --all)")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="with --devices: at most this many devices")] = 100,
    all_devices: Annotated[bool, typer.Option("--all", help="with --devices: every member device")] = False,
    member_status: Annotated[Optional[str], typer.Option("--status", help="with --devices: only members in this status (pending, healthy, failed, …)")] = None,
    wave: Annotated[Optional[int], typer.Option("--wave", min=1, help="with --devices: only members of this wave (1 = first)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Waves, counts by device status, each gate's figure against its limit, a progress bar."""
    client = api_client(data_dir, url, token)
    st = call(client.rollout_status, rollout_id, devices=as_json)
    if as_json:
        console.print_json(json.dumps(st))
        return
    if not watch:
        console.print(render_status(st))
        if devices:
            members, total, more = _members(client, rollout_id, limit=limit, all_devices=all_devices,
                                            status=member_status, wave=wave)
            console.print(_device_table({"members": members}))
            if more:
                console.print(f"{len(members)} of {total} member devices shown (--all for every one, "
                              "--status/--wave to narrow)")
        return
    with Live(render_status(st), console=console, refresh_per_second=4) as live:
        while st["state"] not in FINISHED:
            time.sleep(interval)
            st = call(client.rollout_status, rollout_id, devices=False)
            live.update(render_status(st))


def _members(client: Any, rollout_id: str, *, limit: int, all_devices: bool, status: str | None,
             wave: int | None) -> tuple[list[dict[str, Any]], int, bool]:
    """Member rows page after page (pages of up to 1000): the rows, how many match, whether more do."""
    rows: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        want = 1000 if all_devices else min(1000, limit - len(rows))
        page = call(client.rollout_devices, rollout_id, limit=want, cursor=cursor, status=status, wave=wave)
        rows.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor or (not all_devices and len(rows) >= limit):
            return rows, page["total"], bool(cursor)


def _device_table(st: dict[str, Any]) -> Table:
    table = Table("device", "hw", "wave", "status", "installed", "phase", "error", "previous")
    for m in st.get("members") or []:
        table.add_row(*(escape(str(v)) for v in (m["device"], m["hardware_id"], m["wave"] + 1, m["status"],
                      m["installed"] or "-", m["phase"], m["error_code"] or "-", m["previous"] or "-")))
    return table


def _command(name: str, doc: str):  # type: ignore[no-untyped-def]
    def cmd(
        rollout_id: Annotated[str, typer.Argument(help="rollout id")],
        reason: Annotated[Optional[str], typer.Option("--reason", help="recorded in the rollout's log")] = None,
        data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
    ) -> None:
        st = call(api_client(data_dir, url, token).rollout_command, rollout_id, name, reason)
        console.print(f"rollout {st['id']}: {st['state']}" + (f" ({st['reason']})" if st.get("reason") else ""))

    cmd.__doc__ = doc
    cmd.__name__ = name
    return cmd


for _name, _doc in (("pause", "Pause: no new devices are sent the model."),
                    ("resume", "Resume a paused or breached rollout."),
                    ("abort", "Abort: devices stay where they are."),
                    ("rollback", "Roll back every device that was sent the model to its previous one.")):
    app.command(_name)(_command(_name, _doc))
app.command("cancel")(_command("cancel", "Cancel a scheduled rollout before it starts (abort one that has started)."))


@app.command()
def reschedule(
    rollout_id: Annotated[str, typer.Argument(help="rollout id (fleet rollout ls --scheduled)")],
    start_at: Annotated[str, typer.Argument(help="new start: ISO 8601 with an offset, or relative (+10m)")],
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Move a scheduled rollout's start time (before it starts)."""
    from ..rollout import SpecError, parse_start_at

    try:
        parse_start_at(start_at, time.time())
    except SpecError as exc:
        fail(f"TIME: {exc}")
    st = call(api_client(data_dir, url, token).reschedule_rollout, rollout_id, start_at)
    console.print(f"rollout {st['id']}: scheduled for {_when(st.get('start_at'))}")
