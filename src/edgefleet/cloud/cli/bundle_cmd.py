"""``fleet bundle``: offline bundles for devices without a link (USB stick, depot laptop).

``fleet bundle export --device ID OUT`` asks the controller for everything that device
needs (``GET /api/v1/devices/{id}/offline-bundle``: its director metadata chain, the image
repository's chain, the bundles assigned) and writes it to ``OUT`` — a ``.tar`` archive, or
a directory. On the device, ``fleet-agent install-offline OUT`` verifies it with the
device's own trusted roots, exactly as an online update, and installs it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from ...registry.tuf.errors import TufError
from ...registry.tuf.offline import extract_tar, read_manifest
from ..client import ApiError
from .common import DataDirOpt, TokenOpt, UrlOpt, api_client, console, fail

app = typer.Typer(help="Offline bundles: what one device needs to update without a network link.",
                  no_args_is_help=True)


@app.command("export")
def export(
    out: Annotated[Path, typer.Argument(help="where to write: a NAME.tar archive, or a directory (created; must be empty)",
                                        show_default=False)],
    device: Annotated[str, typer.Option("--device", "-d", help="device id the bundle is for (operator role)",
                                        show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="replace an existing OUT archive")] = False,
    data_dir: DataDirOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Write DEVICE's director and image metadata and assigned bundles to OUT (a .tar or a directory).

    Install it on the device with `fleet-agent install-offline OUT`; the device verifies every
    signature, expiry and release counter with its own trusted roots, as online.
    """
    archive = out.suffix == ".tar"
    if archive and out.exists() and not force:
        fail(f"{out} exists; pass --force to replace it")
    if not archive and out.exists() and (not out.is_dir() or any(out.iterdir())):
        fail(f"{out} exists and is not an empty directory; name a new directory or a .tar file")
    client = api_client(data_dir, url, token)
    parent = out.parent if archive else (out.parent if out.parent.exists() else Path.cwd())
    fd, tmp_name = tempfile.mkstemp(dir=parent, prefix=f".{out.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with console.status(f"exporting the offline bundle of {device} …"), os.fdopen(fd, "wb") as f:
            size = client.offline_bundle(device, f)
            f.flush()
            os.fsync(f.fileno())
        if archive:
            os.replace(tmp, out)
            with tempfile.TemporaryDirectory(dir=parent) as peek:
                manifest = read_manifest(extract_tar(out, Path(peek) / "b"))
        else:
            staged = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.name}."))
            try:
                extract_tar(tmp, staged / "b")
                if out.exists():
                    out.rmdir()
                os.replace(staged / "b", out)
            finally:
                shutil.rmtree(staged, ignore_errors=True)
            manifest = read_manifest(out)
    except ApiError as exc:
        fail(f"{exc.detail} (HTTP {exc.status_code})" if exc.status_code else exc.detail)
    except (TufError, OSError) as exc:
        fail(str(exc))
    finally:
        tmp.unlink(missing_ok=True)
        client.close()
    targets = ", ".join(f"{t.get('model')}:{t.get('version')} ({'+'.join(t.get('slots') or [])})"
                        for t in manifest.get("targets", [])) or "nothing assigned"
    console.print(f"offline bundle for [bold]{device}[/] written to {out} ({size} bytes): director metadata "
                  f"v{manifest.get('director_version')}, {targets}; valid until {manifest.get('expires')}")
    console.print(f"on the device: fleet-agent install-offline {out}")

