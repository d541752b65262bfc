"""``fleet-agent``: the device daemon and its tools."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .config import load_config
from .errors import AgentError

app = typer.Typer(
    name="fleet-agent",
    help="edgefleet device agent: receives models over MQTT, verifies and runs them, shadow-compares candidates.",
    no_args_is_help=True,
    add_completion=False,
)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
def run(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="agent TOML file; EDGEFLEET_AGENT_<SECTION>_<KEY> variables override it")] = None,
) -> None:
    """Run the agent daemon until SIGTERM or Ctrl-C."""
    try:
        cfg = load_config(config)
    except AgentError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    _setup_logging(cfg.agent.log_level)
    from .daemon import Agent

    agent = Agent(cfg)

    def _stop(signum: int, _frame: object) -> None:
        agent.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    agent.run()


@app.command("state")
def show_state(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="agent TOML file")] = None,
) -> None:
    """Print what is installed in each slot, as recorded on disk."""
    from .state import StateStore

    cfg = load_config(config)
    typer.echo(StateStore(cfg.agent.data_dir).load().model_dump_json(indent=2))


@app.command()
def provision(
    bundle: Annotated[Optional[Path], typer.Argument(help="bundle directory from `fleet device add --out` (installs everything in it)", show_default=False)] = None,
    bundle_opt: Annotated[Optional[Path], typer.Option("--bundle", help="same as the BUNDLE argument")] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="with a bundle: the agent's data directory [default: the bundle's agent.toml]")] = None,
    write_config_to: Annotated[Optional[Path], typer.Option("--write-config", help="with a bundle: where to write the installed agent.toml [default: DATA_DIR/agent.toml]")] = None,
    director_root: Annotated[Optional[Path], typer.Option("--director-root", exists=True, dir_okay=False, help="director root metadata (from `fleet device add --out`)")] = None,
    image_root: Annotated[Optional[Path], typer.Option("--image-root", exists=True, dir_okay=False, help="image repository root metadata")] = None,
    credentials: Annotated[Optional[Path], typer.Option("--credentials", exists=True, dir_okay=False, help="credentials.json from `fleet device add --out` (token, broker account, certificate); stored 0600 in data_dir/identity")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="agent TOML file")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace roots or credentials already provisioned")] = False,
) -> None:
    """Install this device's bundle (`fleet-agent provision DIR`), or its trusted roots and credentials one by one."""
    from ..registry.tuf import TufError
    from ..registry.tuf import provision as tuf_provision
    from .identity import provision_credentials

    if bundle is not None or bundle_opt is not None:
        from .provision import install_bundle

        try:
            result = install_bundle(bundle or bundle_opt, data_dir=data_dir, config_out=write_config_to,  # type: ignore[arg-type]
                                    force=force)
        except AgentError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        for line in result.lines:
            typer.echo(line)
        return
    if credentials is None and (director_root is None or image_root is None):
        typer.echo("error: give a bundle directory (fleet-agent provision DIR), or --director-root and --image-root, "
                   "and/or --credentials", err=True)
        raise typer.Exit(2)
    try:
        cfg = load_config(config)
    except AgentError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if director_root is not None and image_root is not None:
        try:
            tuf_provision(cfg.agent.data_dir / "trust", director_root=director_root.read_bytes(), image_root=image_root.read_bytes(), overwrite=force)
        except TufError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"device {cfg.agent.device_id} provisioned: trusted roots in {cfg.agent.data_dir / 'trust' / 'trusted'}")
    if credentials is not None:
        try:
            provision_credentials(cfg.agent.data_dir, credentials, device_id=cfg.agent.device_id, overwrite=force)
        except AgentError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"device {cfg.agent.device_id}: credentials stored in {cfg.agent.data_dir / 'identity'} (0600); "
                   f"you may now delete {credentials}")
    from .report_signer import KEY_FILE, ensure_key

    public_key, created = ensure_key(cfg.agent.data_dir)  # signs reported/telemetry; never leaves the device
    typer.echo(f"device {cfg.agent.device_id}: report key {'made' if created else 'already'} in "
               f"{cfg.agent.data_dir / 'identity' / KEY_FILE} (0600); its public key "
               "(the agent registers it on start, or `fleet device add --report-key`):")
    typer.echo(public_key)


@app.command("hw")
def hardware(
    root: Annotated[Path, typer.Option("--root", help="filesystem root to inspect (for fixture trees)")] = Path("/"),
) -> None:
    """Print the detected device profile, its capabilities, and which inference backend would run models (and why)."""
    from ..hardware.report import render_hw_report

    typer.echo(render_hw_report(root))


def _mount_tuf_client() -> None:
    from .tuf_client import app as tuf_client_app

    app.add_typer(tuf_client_app, name="tuf-client", help="TUF conformance-suite client (same fetcher and verification as the daemon).")


_mount_tuf_client()


def _mount_install_service() -> None:
    from .service_cmd import install_service

    app.command("install-service")(install_service)


_mount_install_service()


def _mount_offline() -> None:
    from .offline import install_offline_cmd

    app.command("install-offline")(install_offline_cmd)
    from .depot import cache_app

    app.add_typer(cache_app, name="cache")


_mount_offline()


def _mount_signal() -> None:
    from .signal_cmd import signal_app

    app.add_typer(signal_app, name="signal")


_mount_signal()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
