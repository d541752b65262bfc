"""``fleet-agent tuf-client``: the TUF conformance suite's client CLI, on the agent's code.

Implements tuf-conformance's client-under-test protocol with the same fetcher
(``ResumableFetcher``) and verification path (``TufRepoClient``, ``download_verified``)
as the agent daemon::

    tuf-client --metadata-dir D init TRUSTED_ROOT
    tuf-client --metadata-dir D --metadata-url U refresh
    tuf-client --metadata-dir D --metadata-url U --target-name P [--target-name P2 ...] \\
               --target-base-url T --target-dir O download

Exit 0 on success, 1 on any failure (the error code and reason go to stderr). Metadata is
kept under non-versioned names (``root.json``, ``timestamp.json`` ...); time comes from
the system clock. Downloaded targets are stored as ``O/<url-quoted target path>`` and
not downloaded again while their hashes match.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Optional
from urllib.parse import quote

import typer

from edgefleet.registry.tuf.errors import NotProvisioned, TargetMissing, TufError
from edgefleet.registry.tuf.fetcher import ResumableFetcher
from edgefleet.registry.tuf.names import check_target_name
from edgefleet.registry.tuf.verify import TufRepoClient, download_verified

PARTIAL_DIR = ".partial"

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="TUF conformance client (tuf-conformance CLIENT-CLI protocol).",
)


class _Opts:
    def __init__(self, metadata_dir: Path, metadata_url: str | None, target_names: list[str],
                 target_base_url: str | None, target_dir: Path | None):
        self.metadata_dir = metadata_dir
        self.metadata_url = metadata_url
        self.target_names = target_names
        self.target_base_url = target_base_url
        self.target_dir = target_dir


@app.callback()
def main(
    ctx: typer.Context,
    metadata_dir: Annotated[Path, typer.Option("--metadata-dir", help="trusted local metadata")],
    metadata_url: Annotated[Optional[str], typer.Option("--metadata-url")] = None,  # noqa: UP045
    target_name: Annotated[Optional[list[str]], typer.Option("--target-name")] = None,  # noqa: UP045
    target_base_url: Annotated[Optional[str], typer.Option("--target-base-url")] = None,  # noqa: UP045
    target_dir: Annotated[Optional[Path], typer.Option("--target-dir")] = None,  # noqa: UP045
) -> None:
    ctx.obj = _Opts(metadata_dir, metadata_url, list(target_name or []), target_base_url, target_dir)


def _fail(exc: Exception) -> typer.Exit:
    code = exc.code if isinstance(exc, TufError) else type(exc).__name__
    typer.echo(f"error: {code}: {exc}", err=True)
    return typer.Exit(1)


def _client(opts: _Opts, fetcher: ResumableFetcher) -> TufRepoClient:
    if not opts.metadata_url:
        raise NotProvisioned("--metadata-url is required")
    if not (opts.metadata_dir / "root.json").exists():
        raise NotProvisioned(f"no root.json in {opts.metadata_dir}: run init first")
    return TufRepoClient(opts.metadata_dir, opts.metadata_url, fetcher, bootstrap=None)


@app.command()
def init(ctx: typer.Context, trusted_root: Annotated[Path, typer.Argument()]) -> None:
    """Install TRUSTED_ROOT as the local trusted root.json (no network)."""
    opts: _Opts = ctx.obj
    try:
        opts.metadata_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(trusted_root, opts.metadata_dir / "root.json")
    except OSError as exc:
        raise _fail(exc) from None


@app.command()
def refresh(ctx: typer.Context) -> None:
    """Update top-level metadata following the TUF client workflow."""
    fetcher = ResumableFetcher()
    try:
        _client(ctx.obj, fetcher).refresh()
    except (TufError, OSError) as exc:
        raise _fail(exc) from None
    finally:
        fetcher.close()


@app.command()
def download(ctx: typer.Context) -> None:
    """Refresh, then download and verify every --target-name into --target-dir."""
    opts: _Opts = ctx.obj
    if not opts.target_names or not opts.target_base_url or opts.target_dir is None:
        raise _fail(ValueError("download needs --target-name, --target-base-url and --target-dir"))
    fetcher = ResumableFetcher()
    try:
        client = _client(opts, fetcher)
        client.refresh()
        part_dir = opts.target_dir / PARTIAL_DIR
        for name in opts.target_names:
            check_target_name(name, strict=False)
            info = client.get_targetinfo(name)
            if info is None:
                raise TargetMissing(f"{name} is not in the repository")
            dest = opts.target_dir / quote(name, safe="")
            if _cached(dest, info):
                continue
            download_verified(
                fetcher, client.target_url(info, opts.target_base_url), info.length,
                dict(info.hashes), dest, part_dir,
            )
        shutil.rmtree(part_dir, ignore_errors=True)
    except (TufError, OSError) as exc:
        raise _fail(exc) from None
    finally:
        fetcher.close()


def _cached(dest: Path, info: object) -> bool:
    try:
        with open(dest, "rb") as f:
            info.verify_length_and_hashes(f)  # type: ignore[attr-defined]
        return True
    except Exception:
        return False


if __name__ == "__main__":
    app()
