"""``fleet-agent install-service``: write the agent's systemd unit (edgefleet/service_units)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..service_units import (
    DEFAULT_DEST,
    UnitError,
    find_executable,
    install,
    next_steps,
    render_agent,
)


def install_service(
    config: Annotated[Path, typer.Option("--config", "-c", help="the agent TOML file the service runs with (keep it 0600: it holds the token)")] = Path("/etc/edgefleet/agent.toml"),
    user: Annotated[str, typer.Option("--user", help="system account the agent runs as (created with useradd, see the printed steps)")] = "edgefleet",
    dynamic_user: Annotated[bool, typer.Option("--dynamic-user", help="DynamicUser=yes instead of --user (data dir must lie under /var/lib)")] = False,
    data_dir: Annotated[Path, typer.Option("--data-dir", help="agent state (slots, models, outbox): the one writable path; overrides the file's data_dir")] = Path("/var/lib/edgefleet"),
    dest: Annotated[Path, typer.Option("--dest", help="where the unit is written")] = DEFAULT_DEST,
    executable: Annotated[Optional[Path], typer.Option("--exec", help="fleet-agent executable [default: the one beside this Python, else on PATH]")] = None,
    devices: Annotated[bool, typer.Option("--devices/--no-devices", help="cameras (/dev/video*) and the GPU reachable; --no-devices: PrivateDevices=yes")] = True,
    group: Annotated[Optional[list[str]], typer.Option("--group", help="supplementary group (repeatable) [default: video]")] = None,
    writable: Annotated[Optional[list[Path]], typer.Option("--writable", help="one more writable path (repeatable), e.g. an outbox on another disk")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the unit, write nothing")] = False,
) -> None:
    """Write edgefleet-agent.service (sandboxed: ProtectSystem=strict, only the data dir writable, no capabilities).

    Prints the file written and the `systemctl enable --now` line; never runs systemctl.
    """
    try:
        unit = render_agent(config=config, data_dir=data_dir, user=user, dynamic_user=dynamic_user,
                            executable=find_executable("fleet-agent", executable), devices=devices,
                            groups=group, extra_rw=writable)
    except UnitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for warning in unit.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if dry_run:
        typer.echo(unit.text, nl=False)
        return
    try:
        path = install(unit, dest)
    except (UnitError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {path}")
    typer.echo("then, as root:")
    for step in next_steps(unit, readable=config):
        typer.echo(f"  {step}")
