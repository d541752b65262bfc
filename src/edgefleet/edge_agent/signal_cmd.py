"""``fleet-agent signal send KEY=VALUE ...``: write one sidecar sample to the agent's signal socket.

For trying campaigns by hand and for shell-script bridges; a CAN or ROS bridge that sends
at its own rate should keep its own socket open (``signal_source.send_signals`` or any
datagram client). ``VALUE`` is read as true/false, an integer, a number, or else text.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .config import load_config
from .errors import AgentError
from .signal_source import sample_line, send_signals
from .signals import SampleError, parse_sample

signal_app = typer.Typer(help="Sidecar signals (CAN, ROS, GPS) as per-frame context.", no_args_is_help=True)


def parse_assignment(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` → (key, typed value).

    Raises:
        ValueError: no ``=``, or a number that is not finite.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ValueError(f"{text!r}: use KEY=VALUE")
    low = raw.lower()
    if low in ("true", "false"):
        return key, low == "true"
    for kind in (int, float):
        try:
            value = kind(raw)
        except ValueError:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{text!r}: not a finite number")
        return key, value
    return key, raw


@signal_app.command("send")
def send(
    assignments: Annotated[list[str], typer.Argument(help="signals as KEY=VALUE, e.g. steering_deg=-25 speed_kmh=12")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="agent TOML file (where its [signals] socket is)")] = None,
    socket_spec: Annotated[Optional[str], typer.Option("--socket", help="unix:PATH or udp:127.0.0.1:PORT [default: the config's]")] = None,
    t: Annotated[Optional[float], typer.Option("--t", help="the sample's time in unix seconds [default: its arrival]")] = None,
) -> None:
    """Send one sample; the agent keeps each value as fresh for its [signals] max_age_s."""
    try:
        signals = dict(parse_assignment(a) for a in assignments)
        parse_sample(sample_line(signals, t).rstrip(b"\n"), math.inf if t is None else t)  # the agent's own check
    except (ValueError, SampleError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        cfg = load_config(config) if socket_spec is None else None
        spec = socket_spec if cfg is None else cfg.signals.socket
        send_signals(spec or "", signals, t=t, base_dir=cfg.agent.data_dir if cfg is not None else Path.cwd())
    except AgentError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        typer.echo(f"error: no agent reads signals on {spec}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"sent {len(signals)} signal(s) to {spec}")
