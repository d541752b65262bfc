"""The ``fleet demo`` command."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..cli.common import console, err_console


def demo(
    agents: Annotated[int, typer.Option("--agents", min=1, max=50, help="number of agent processes")] = 3,
    duration: Annotated[float, typer.Option("--duration", min=10, help="seconds to run (from agent start) before stopping")] = 60.0,
    no_ui: Annotated[bool, typer.Option("--no-ui", help="print plain lines instead of the live table")] = False,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="keep everything here (default: a new temp dir)")] = None,
    fps: Annotated[float, typer.Option("--fps", min=1, help="frames per second per synthetic camera")] = 15.0,
    loop: Annotated[bool, typer.Option("--loop", help="the whole loop: find the weak class, collect it with a campaign, "
                                       "label (oracle: the camera's ground truth), retrain, replay-gate, shadow, promote")] = False,
    loop_find: Annotated[float, typer.Option("--loop-find", min=5, help="with --loop: seconds of shadow to find the weak class")] = 30.0,
    loop_quota: Annotated[int, typer.Option("--loop-quota", min=5, max=1000, help="with --loop: captures the campaign collects")] = 300,
    loop_measure: Annotated[float, typer.Option("--loop-measure", min=5, help="with --loop: seconds of shadow to measure the new candidate")] = 30.0,
) -> None:
    """Run a whole fleet on this machine: broker, controller, agents, a control model and a candidate in shadow.

    With --loop, go on to improve the candidate end to end and print one line: the weak class's
    disagreement before and after, captures uploaded / frames seen, and the time from finding to promotion.
    """
    from .orchestrator import Demo, DemoError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if loop:
        from .loop import DemoLoop, LoopSizes

        sizes = LoopSizes(find_s=loop_find, quota=loop_quota, measure_s=loop_measure)
        run: Demo = DemoLoop(sizes=sizes, agents=agents, data_dir=data_dir, fps=fps, console=console)
    else:
        run = Demo(agents=agents, duration=duration, data_dir=data_dir, ui=not no_ui, fps=fps, console=console)

    def _interrupt(_signum: int, _frame: object) -> None:
        console.print("demo: stopping…")
        run.stop_requested.set()

    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = run.run()
    except DemoError as exc:
        err_console.print(f"demo: FAILED {exc}")
        raise typer.Exit(1) from None
    raise typer.Exit(code)
