"""``fleet device history|tag|inventory`` (registered on ``fleet device``)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .common import DataDirOpt, TokenOpt, UrlOpt, api_client, call, console, fail
from .device_cmd import app


@app.command()
def history(
    device_id: Annotated[str, typer.Argument(help="device id")],
    since: Annotated[Optional[str], typer.Option(help="only entries after this ISO time")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="entries per page")] = 100,
    kind: Annotated[Optional[list[str]], typer.Option("--kind", help="desired | signed | phase | rollback | rollout | "
                                                      "tags | audit (repeatable)")] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="follow every page")] = False,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """A device's story, oldest first: desired changes, signed metadata, phases with error codes, local rollbacks,
    rollout membership, tag edits and audited actions (enrol, revoke, credentials)."""
    client = api_client(data_dir, url, token)
    table = Table("time", "kind", "slot", "what", "by")
    while True:
        page = call(client.device_history, device_id, since=since, limit=limit, kinds=kind)
        for e in page["entries"]:
            table.add_row(e["at"][:23], e["kind"], e.get("slot") or "", escape(e["message"]), escape(e.get("actor") or ""))
        since = page.get("next_since")
        if not since or not all_pages:
            break
    console.print(table)
    if since:
        console.print(f"more: --since {since}")


@app.command()
def tag(
    device_id: Annotated[str, typer.Argument(help="device id")],
    tags: Annotated[Optional[list[str]], typer.Argument(help="KEY=VALUE to set")] = None,
    rm: Annotated[Optional[list[str]], typer.Option("--rm", help="tag KEY to remove (repeatable)")] = None,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Set and remove tags; rollout selectors (tag:KEY=VALUE) see the change on the next pass, started at once."""
    changes: dict[str, str] = {}
    for item in tags or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"expected KEY=VALUE, got {item!r}")
        changes[key] = value
    if not changes and not rm:
        fail("name tags to set (KEY=VALUE) or --rm KEY")
    res = call(api_client(data_dir, url, token).tag_device, device_id, changes, rm or [])
    shown = ", ".join(f"{k}={v}" for k, v in sorted(res["tags"].items())) or "(none)"
    console.print(f"device {escape(device_id)} tags: {escape(shown)}"
                  + ("" if res["changed"] else " (nothing changed)"))


@app.command()
def inventory(device_id: Annotated[str, typer.Argument(help="device id")],
              data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """What the device reported it is: agent, OS/JetPack, runtimes, providers, disk, memory."""
    res = call(api_client(data_dir, url, token).device_inventory, device_id)
    inv = res.get("inventory")
    if not inv:
        fail(f"device {device_id} has not reported an inventory yet")
    table = Table("field", "value")
    for key, value in inv.items():
        text = ", ".join(value) if isinstance(value, list) else ("-" if value is None else str(value))
        table.add_row(key, escape(text))
    console.print(table)
