"""``fleet token create|ls|revoke``: API tokens and their roles (needs an admin token)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from ..auth import ROLES
from .common import DataDirOpt, TokenOpt, UrlOpt, api_client, call, console, fail

app = typer.Typer(help="Manage API tokens: viewer < reviewer < operator < admin.", no_args_is_help=True)


@app.command()
def create(
    role: Annotated[str, typer.Option("--role", help=f"one of {', '.join(ROLES)}")],
    name: Annotated[str, typer.Option("--name", help="who or what uses the token")],
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Create a token and print it (shown once; stored hashed)."""
    if role not in ROLES:
        fail(f"--role must be one of {', '.join(ROLES)}, got {role!r}")
    res = call(api_client(data_dir, url, token).create_token, name, role)
    console.print(f"token {res['id']} ({res['name']}, role {res['role']}) created; the token (shown once):")
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
    table = Table("id", "name", "role", "created", "revoked")
    for t in rows:
        table.add_row(str(t["id"]), t["name"], t["role"], t["created_at"][:19], (t.get("revoked_at") or "-")[:19])
    console.print(table)


@app.command()
def revoke(
    token_id: Annotated[int, typer.Argument(help="the token's id (fleet token ls)")],
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Revoke a token: it stops working at once."""
    res = call(api_client(data_dir, url, token).revoke_token, token_id)
    console.print(f"token {res['id']} ({res['name']}, role {res['role']}) revoked")
