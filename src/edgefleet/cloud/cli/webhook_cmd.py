"""``fleet webhook add|ls|rm|test|deliveries|redeliver``: signed webhooks (admin token)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .common import DataDirOpt, TokenOpt, UrlOpt, api_client, call, console, fail

app = typer.Typer(help="Signed webhooks: tell pagers, ticket systems and pipelines what happens.", no_args_is_help=True)

EVENTS_HELP = ("comma-separated event types or patterns: rollout.* (started, wave_advanced, paused, breached, "
               "rolled_back, completed, aborted), device.stale, device.offline, drift.breach, capture.new")


@app.command()
def add(
    url: Annotated[str, typer.Argument(help="the receiver's http:// or https:// URL")],
    events: Annotated[str, typer.Option("--events", help=EVENTS_HELP)] = "rollout.*,device.stale,drift.breach,capture.new",
    secret_file: Annotated[Optional[Path], typer.Option("--secret-file", help="read the signing secret from this file "
                                                        "(16-256 characters); else one is generated and printed once")] = None,
    description: Annotated[str, typer.Option(help="a note shown by `fleet webhook ls`")] = "",
    data_dir: DataDirOpt = None, url_opt: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Add a receiver. Every request carries X-Edgefleet-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">."""
    secret = None
    if secret_file is not None:
        try:
            secret = secret_file.read_text().strip()
        except OSError as exc:
            fail(f"cannot read {secret_file}: {exc}")
    client = api_client(data_dir, url_opt, token)
    res = call(client.add_webhook, url, [e.strip() for e in events.split(",") if e.strip()],
               secret=secret, description=description)
    console.print(f"webhook {res['id']} → {escape(res['url'])} for {', '.join(res['events'])}")
    if secret_file is None:
        console.print("signing secret (shown once, store it with the receiver):")
        console.print(res["secret"], highlight=False, soft_wrap=True)


@app.command("ls")
def list_cmd(data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """List receivers (secrets are never shown again)."""
    hooks = call(api_client(data_dir, url, token).list_webhooks)
    table = Table("id", "url", "events", "created", "by", "description")
    for h in hooks:
        table.add_row(h["id"], escape(h["url"]), ", ".join(h["events"]), h["created_at"][:19], escape(h["created_by"]),
                      escape(h["description"]))
    console.print(table)


@app.command("rm")
def remove(webhook_id: Annotated[str, typer.Argument(help="webhook id (wh_…)")],
           data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Remove a receiver and its queued and logged deliveries."""
    res = call(api_client(data_dir, url, token).remove_webhook, webhook_id)
    console.print(f"webhook {res['id']} removed")


@app.command()
def test(webhook_id: Annotated[str, typer.Argument(help="webhook id (wh_…)")],
         wait: Annotated[float, typer.Option(help="seconds to wait for the outcome (0: do not wait)")] = 15.0,
         data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Send a webhook.test event and show what the receiver answered."""
    client = api_client(data_dir, url, token)
    d = call(client.test_webhook, webhook_id)
    deadline = time.monotonic() + wait
    with console.status(f"delivering {d['id']} …"):
        while d["state"] == "pending" and d["attempts"] == 0 and time.monotonic() < deadline:
            time.sleep(0.3)
            d = call(client.webhook_delivery, d["id"])
    if d["state"] == "delivered":
        console.print(f"delivery {d['id']}: delivered (HTTP {d['status_code']})")
    elif d["attempts"]:
        fail(f"delivery {d['id']}: {escape(d['error'] or '')} after {d['attempts']} attempt(s); "
             f"{'retrying' if d['state'] == 'pending' else 'given up'}")
    else:
        console.print(f"delivery {d['id']} queued; `fleet webhook deliveries {webhook_id}` shows the outcome")


@app.command()
def deliveries(webhook_id: Annotated[str, typer.Argument(help="webhook id (wh_…)")],
               limit: Annotated[int, typer.Option(min=1, max=500)] = 30,
               state: Annotated[Optional[str], typer.Option(help="pending | delivered | failed")] = None,
               data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """The delivery log, newest first: state, attempts, last status code or error."""
    rows = call(api_client(data_dir, url, token).webhook_deliveries, webhook_id, limit=limit, state=state)
    table = Table("delivery", "event", "type", "state", "attempts", "status", "error", "created")
    for d in rows:
        table.add_row(d["id"], d["event_id"], d["type"], d["state"], str(d["attempts"]),
                      str(d["status_code"] or "-"), escape(d["error"] or ""), d["created_at"][:19])
    console.print(table)


@app.command()
def redeliver(delivery_id: Annotated[str, typer.Argument(help="delivery id (dlv_…)")],
              data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Send a delivery's body again (same event id) as a new delivery."""
    d = call(api_client(data_dir, url, token).redeliver_webhook, delivery_id)
    console.print(f"delivery {d['id']} queued (redelivery of {delivery_id}, event {d['event_id']})")
