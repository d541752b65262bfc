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
    director_root: Annotated[Path, typer.Option("--director-root", exists=True, dir_okay=False, help="director root metadata (from `fleet device add --out`)")],
    image_root: Annotated[Path, typer.Option("--image-root", exists=True, dir_okay=False, help="image repository root metadata")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="agent TOML file")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace roots already provisioned")] = False,
) -> None:
    """Install the trusted root metadata this device verifies every model against."""
    from ..registry.tuf import TufError
    from ..registry.tuf import provision as tuf_provision

    cfg = load_config(config)
    try:
        tuf_provision(cfg.agent.data_dir / "trust", director_root=director_root.read_bytes(), image_root=image_root.read_bytes(), overwrite=force)
    except TufError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"device {cfg.agent.device_id} provisioned: trusted roots in {cfg.agent.data_dir / 'trust' / 'trusted'}")


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
