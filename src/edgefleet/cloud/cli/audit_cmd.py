"""``fleet audit ls|verify|export``: the hash-chained log of control-plane actions.

Through the API (admin token) by default. ``--data-dir`` without ``--url``/``--token``
works on that controller's database directly — an offline check that needs no running
controller (``verify`` reads the anchor key from ``<data_dir>/keys``).
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from .. import audit
from ..client import ApiError
from ..db import make_engine
from ..settings import load_settings
from .common import DataDirOpt, TokenOpt, UrlOpt, api_client, call, console, err_console, fail

app = typer.Typer(help="The audit log: who did what, hash-chained and signed.", no_args_is_help=True)

ActorOpt = Annotated[Optional[str], typer.Option("--actor", help="only this actor (token name, reconciler, …)")]
ActionOpt = Annotated[Optional[str], typer.Option("--action", help="action prefix: rollout., token.create, denied")]
SinceOpt = Annotated[Optional[datetime], typer.Option("--since", help="at or after this time (ISO 8601, UTC)")]
UntilOpt = Annotated[Optional[datetime], typer.Option("--until", help="before this time (ISO 8601, UTC)")]


def _offline(data_dir: Path | None, url: str | None, token: str | None) -> bool:
    return data_dir is not None and url is None and token is None


def _params(actor: str | None, action: str | None, since: datetime | None, until: datetime | None) -> dict[str, Any]:
    p = {"actor": actor, "action": action, "since": since.isoformat() if since else None,
         "until": until.isoformat() if until else None}
    return {k: v for k, v in p.items() if v}


def _local(data_dir: Path | None) -> tuple[Any, Path]:
    settings = load_settings(data_dir)
    if settings.database_url is None and not (settings.data_dir / "controller.db").exists():
        fail(f"no controller database in {settings.data_dir}")
    return make_engine(settings.db_url), settings.data_dir


@app.command("ls")
def list_entries(
    actor: ActorOpt = None, action: ActionOpt = None, since: SinceOpt = None, until: UntilOpt = None,
    limit: Annotated[int, typer.Option(help="at most this many, newest first")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """List audit entries, newest first."""
    if _offline(data_dir, url, token):
        engine, _ = _local(data_dir)
        from sqlmodel import Session

        with Session(engine) as s:
            rows = [audit.entry_dict(e) for e in audit.list_entries(
                s, actor=actor, action=action, since=since, until=until, limit=limit)]
        engine.dispose()
    else:
        rows = call(api_client(data_dir, url, token).request, "GET", "/audit",
                    params={**_params(actor, action, since, until), "limit": limit})
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table("seq", "time (UTC)", "actor", "role", "action", "target", "summary")
    for e in rows:
        body = e["summary"].get("body") or {k: v for k, v in e["summary"].items() if k not in ("method", "path")}
        table.add_row(str(e["seq"]), e["ts"][:19].replace("T", " "), e["actor"], e["role"], e["action"],
                      e["target"], json.dumps(body, ensure_ascii=False)[:80])
    console.print(table)


@app.command()
def verify(data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Check the hash chain and its signed anchors; exit 1 naming the first broken entry."""
    if _offline(data_dir, url, token):
        engine, home = _local(data_dir)
        from sqlmodel import Session

        try:
            signer = audit.AuditSigner.open(home / "keys", create=False)
        except audit.AuditError as exc:
            fail(str(exc))
        with Session(engine) as s:
            report = audit.verify(s, signer.keys() if signer else {}).to_dict()
        engine.dispose()
    else:
        report = call(api_client(data_dir, url, token).request, "GET", "/audit/verify")
    if report["ok"]:
        console.print(f"audit log ok: {report['entries']} entries, {report['anchors']} signed anchors "
                      f"(last at entry {report['last_anchor_seq']}), head at entry {report['head_seq']}")
        return
    first = report["problems"][0]
    err_console.print(f"[bold red]audit log broken at entry {first['seq']}: {first['kind']}[/] — {first['detail']}")
    for p in report["problems"][1:10]:
        err_console.print(f"  also entry {p['seq']}: {p['kind']} — {p['detail']}")
    if len(report["problems"]) > 10:
        err_console.print(f"  … {len(report['problems']) - 10} more")
    raise typer.Exit(1)


@app.command()
def export(
    out: Annotated[Path, typer.Argument(help="JSON lines file to write (- for stdout)")],
    actor: ActorOpt = None, action: ActionOpt = None, since: SinceOpt = None, until: UntilOpt = None,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Write matching entries, oldest first, one JSON object per line (hashes included)."""
    sink = typer.get_text_stream("stdout") if str(out) == "-" else None
    n = 0
    tmp = out.with_name(out.name + ".part") if sink is None else None
    opened: Any = open(tmp, "w", encoding="utf-8") if tmp else nullcontext(sink)  # noqa: SIM115  (closed by the with)
    with opened as f:
        if _offline(data_dir, url, token):
            engine, _ = _local(data_dir)
            from sqlmodel import Session

            with Session(engine) as s:
                for line in audit.export_lines(s, actor=actor, action=action, since=since, until=until):
                    f.write(line)
                    n += 1
            engine.dispose()
        else:
            client = api_client(data_dir, url, token)
            try:
                with client.http.stream("GET", "/audit/export", params=_params(actor, action, since, until)) as r:
                    if r.status_code >= 400:
                        r.read()
                        raise ApiError(r.status_code, r.json().get("detail", r.text))
                    for line in r.iter_lines():
                        if line:
                            f.write(line + "\n")
                            n += 1
            except ApiError as exc:
                if tmp:
                    tmp.unlink(missing_ok=True)
                fail(f"{exc.detail} (HTTP {exc.status_code})")
            except Exception as exc:  # transport errors: nothing half-written is left as OUT
                if tmp:
                    tmp.unlink(missing_ok=True)
                fail(f"export failed: {exc}")
    if tmp:
        tmp.replace(out)
        console.print(f"{n} entries written to {out}")
