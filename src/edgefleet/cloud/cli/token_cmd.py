"""``fleet token create|ls|revoke``: API tokens and their roles (needs an admin token)."""

from __future__ import annotations

import json
import re
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..auth import ROLES
from .common import DataDirOpt, TokenOpt, UrlOpt, api_client, call, console, fail

_DURATION = re.compile(r"^(\d+)([smhd])$")


def parse_duration(text: str) -> int:
    """``90d`` / ``12h`` / ``30m`` / ``45s`` → seconds."""
    match = _DURATION.match(text.strip())
    if match is None or int(match.group(1)) <= 0:
        fail(f"--expires must look like 90d, 12h, 30m or 45s, got {text!r}")
    assert match is not None
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


app = typer.Typer(help="Manage API tokens: viewer < reviewer < operator < admin.", no_args_is_help=True)


@app.command()
def create(
    role: Annotated[str, typer.Option("--role", help=f"one of {', '.join(ROLES)}")],
    name: Annotated[str, typer.Option("--name", help="who or what uses the token")],
    expires: Annotated[Optional[str], typer.Option("--expires", help="lifetime such as 90d, 12h, 30m (default: until revoked)")] = None,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Create a token and print it (shown once; stored hashed)."""
    if role not in ROLES:
        fail(f"--role must be one of {', '.join(ROLES)}, got {role!r}")
    seconds = parse_duration(expires) if expires else None
    res = call(api_client(data_dir, url, token).create_token, name, role, seconds)
    until = f", expires {res['expires_at'][:19]}" if res.get("expires_at") else ""
    console.print(f"token {res['id']} ({res['name']}, role {res['role']}{until}) created; the token (shown once):")
    console.print(res["token"], highlight=False, soft_wrap=True)


@app.command("ls")
def list_tokens(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """List tokens (never their secrets)."""
    rows = call(api_client(data_dir, url, token).list_tokens)
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table("id", "name", "role", "created", "expires", "revoked")
    for t in rows:
        table.add_row(str(t["id"]), t["name"], t["role"], t["created_at"][:19], (t.get("expires_at") or "-")[:19],
                      (t.get("revoked_at") or "-")[:19])
    console.print(table)


@app.command()
def revoke(
    token_id: Annotated[int, typer.Argument(help="the token's id (fleet token ls)")],
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Revoke a token: it stops working at once."""
    res = call(api_client(data_dir, url, token).revoke_token, token_id)
    console.print(f"token {res['id']} ({res['name']}, role {res['role']}) revoked")
