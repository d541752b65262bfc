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


@app.command("hw")
def hardware(
    root: Annotated[Path, typer.Option("--root", help="filesystem root to inspect (for fixture trees)")] = Path("/"),
) -> None:
    """Print the detected device profile, its capabilities, and which inference backend would run models (and why)."""
    from ..hardware.report import render_hw_report

    typer.echo(render_hw_report(root))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
