"""``fleet keys init|rotate``: the signing keys of the image repository and the director."""

from __future__ import annotations

from typing import Annotated

import typer

from ...registry import LocalBlobStore
from ...registry.tuf import KeyringError
from .. import audit
from ..settings import load_settings
from ..trust import Trust
from .common import DataDirOpt, TokenOpt, UrlOpt, api_client, call, console, fail

app = typer.Typer(help="Signing keys (TUF image repository and director).", no_args_is_help=True)


@app.command()
def init(
    root_threshold: Annotated[int, typer.Option(help="root signatures required (k of n)")] = 1,
    root_keys: Annotated[int, typer.Option(help="root keys to create (n)")] = 1,
    data_dir: DataDirOpt = None,
) -> None:
    """Create root, targets, snapshot and timestamp keys and empty signed repositories.

    Run before the controller's first start to choose a k-of-n root (the first start
    otherwise creates a 1-of-1 setup, fine for a demo). Move root keys offline afterwards.
    """
    settings = load_settings(data_dir)
    if Trust.exists(settings.data_dir):
        fail(f"keys exist already in {settings.data_dir / 'keys'}; use `fleet keys rotate`")
    try:
        trust = Trust.init(settings.data_dir, LocalBlobStore(settings.blobs_dir), root_threshold=root_threshold, root_keys=root_keys)
    except KeyringError as exc:
        fail(str(exc))
    audit.record_local(settings, "keys.init", "image+director", {"root_threshold": root_threshold, "root_keys": root_keys})
    console.print(f"keys in {trust.keyring.path} (root {root_threshold} of {root_keys}); signed metadata in {settings.data_dir / 'tuf'}")


@app.command()
def rotate(
    role: Annotated[str, typer.Argument(help="root, targets, snapshot or timestamp")],
    repo: Annotated[str, typer.Option(help="image, director or both")] = "both",
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Rotate a role's key on the running controller; agents follow (root rotation included)."""
    if role not in ("root", "targets", "snapshot", "timestamp"):
        fail("role must be root, targets, snapshot or timestamp")
    res = call(api_client(data_dir, url, token).request, "POST", f"/trust/rotate/{role}", params={"repo": repo})
    for which, keyid in res["new_keyids"].items():
        console.print(f"{which}: new {role} key {keyid[:16]}…")
