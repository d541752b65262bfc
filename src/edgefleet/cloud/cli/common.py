"""Shared options and helpers of the ``fleet`` CLI: where the controller is, and how to fail."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer
from rich.console import Console

from ..client import ApiClient, ApiError, load_cli_config
from ..settings import resolve_data_dir

console = Console()
err_console = Console(stderr=True)

DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", help="controller data directory [env: EDGEFLEET_HOME, default ~/.edgefleet]")]
UrlOpt = Annotated[Optional[str], typer.Option("--url", help="controller URL [env: EDGEFLEET_URL; default from `fleet cloud init`]")]
TokenOpt = Annotated[Optional[str], typer.Option("--token", help="API token [env: EDGEFLEET_TOKEN; default from `fleet cloud init`]")]


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def api_client(data_dir: Path | None, url: str | None, token: str | None) -> ApiClient:
    saved = load_cli_config(resolve_data_dir(data_dir))
    url = url or os.environ.get("EDGEFLEET_URL") or saved.get("url")
    token = token or os.environ.get("EDGEFLEET_TOKEN") or saved.get("token")
    if not url:
        fail("no controller URL: run `fleet cloud init`, or pass --url / set EDGEFLEET_URL")
    ca_file = os.environ.get("EDGEFLEET_CA_FILE") or saved.get("ca_file")  # the fleet CA, for an https:// URL
    return ApiClient(url, token, ca_file=ca_file)


def call(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    try:
        return fn(*args, **kwargs)
    except ApiError as exc:
        fail(f"{exc.detail} (HTTP {exc.status_code})" if exc.status_code else exc.detail)
