"""Shared options and helpers of the ``fleet`` CLI: where the controller is, and how to fail."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape

from ..client import CLI_CONFIG, ApiClient, ApiError, load_cli_config
from ..settings import CONFIG_FILE, data_dir_candidates, resolve_data_dir

console = Console()
err_console = Console(stderr=True)

DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", help="controller data directory [env: EDGEFLEET_HOME; else the current directory if it holds controller.toml; else ~/.edgefleet]")]
UrlOpt = Annotated[Optional[str], typer.Option("--url", help="controller URL [env: EDGEFLEET_URL; default from `fleet cloud init`]")]
TokenOpt = Annotated[Optional[str], typer.Option("--token", help="API token [env: EDGEFLEET_TOKEN; default from `fleet cloud init`]")]


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {escape(message)}")  # messages name [sections] and hold user input
    raise typer.Exit(code)


def api_client(data_dir: Path | None, url: str | None, token: str | None) -> ApiClient:
    saved = load_cli_config(resolve_data_dir(data_dir))
    url = url or os.environ.get("EDGEFLEET_URL") or saved.get("url")
    token = token or os.environ.get("EDGEFLEET_TOKEN") or saved.get("token")
    if not url:
        fail(missing_controller_message(data_dir, CLI_CONFIG, what="no controller URL",
                                        remedy="pass --url (and --token) or set EDGEFLEET_URL"))
    ca_file = os.environ.get("EDGEFLEET_CA_FILE") or saved.get("ca_file")  # the fleet CA, for an https:// URL
    return ApiClient(url, token, ca_file=ca_file)


def missing_controller_message(data_dir: Path | None, file: str, *, what: str = "no controller",
                               remedy: str = "") -> str:
    """What is missing and every place that was looked at, e.g. for ``fleet device add`` without a controller."""
    looked = []
    for origin, path in data_dir_candidates(data_dir):
        if origin == "current directory" and not (path / CONFIG_FILE).is_file():
            looked.append(f"{path / CONFIG_FILE} (current directory): not there")
            continue
        looked.append(f"{path / file} ({origin}): " + ("not there" if not (path / file).exists() else "found"))
        break  # the first directory that exists by these rules is the one used
    fix = "pass --data-dir DIR, set EDGEFLEET_HOME=DIR, or run the command in DIR; run `fleet cloud init` to create one"
    return f"{what}: missing {file}; looked in " + "; ".join(looked) + f". {remedy + '; ' if remedy else ''}{fix}"


def call(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    try:
        return fn(*args, **kwargs)
    except ApiError as exc:
        fail(f"{exc.detail} (HTTP {exc.status_code})" if exc.status_code else exc.detail)
