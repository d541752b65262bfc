"""A simulated fleet split over several processes (one ``SimFleet`` each), driven from the parent.

One Python process signs and publishes for a few tens of thousands of devices before its
GIL is the limit; ``SimProcesses`` starts ``processes`` children (``spawn``), gives each
an equal share of the devices, and answers queries by asking every child and adding up:
``on(digest)``, ``stats()``, ``desired_since(t)`` (``t`` from ``mark()``: a wall clock,
as children do not share the parent's monotonic clock).
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
from collections import Counter
from typing import Any

from .fleet import SimFleet


def _child(host: str, port: int, devices: list[tuple[str, str]], kwargs: dict[str, Any], ctl: Any, out: Any) -> None:
    fleet = SimFleet(host, port, devices, **kwargs)
    fleet.start()
    try:
        fleet.wait_ready(timeout=kwargs.get("connections", 8) * 10 + 120)
    except TimeoutError as exc:
        out.put(("error", str(exc)))
        fleet.stop()
        return
    out.put(("ready", None))
    while True:
        cmd, arg = ctl.get()
        if cmd == "stop":
            fleet.stop()
            out.put(("stopped", None))
            return
        if cmd == "on":
            out.put(("on", fleet.on(arg)))
        elif cmd == "healthy_on":
            out.put(("healthy_on", fleet.healthy_on(arg)))
        elif cmd == "stats":
            out.put(("stats", fleet.stats()))
        elif cmd == "desired_since":  # arg: wall-clock time; the child converts to its monotonic clock
            out.put(("desired_since", fleet.desired_since(time.monotonic() - (time.time() - arg))))
        elif cmd == "ready":
            out.put(("ready", fleet.ready()))


class SimProcesses:
    def __init__(self, host: str, port: int, devices: list[tuple[str, str]], *, processes: int = 2, **fleet_kwargs: Any):
        """``fleet_kwargs`` go to each child's ``SimFleet`` (``auth``, ``connections`` per child, …)."""
        ctx = mp.get_context("spawn")
        self.n = len(devices)
        self.children = []
        for k in range(processes):
            share = devices[k::processes]
            ctl, out = ctx.Queue(), ctx.Queue()
            kwargs = {**fleet_kwargs, "name": f"{fleet_kwargs.get('name', 'simfleet')}{k}"}
            proc = ctx.Process(target=_child, args=(host, port, share, kwargs, ctl, out), daemon=True)
            self.children.append((proc, ctl, out))

    def start(self, timeout: float = 300.0) -> None:
        for proc, _, _ in self.children:
            proc.start()
        for _, _, out in self.children:
            kind, arg = out.get(timeout=timeout)
            if kind != "ready":
                raise TimeoutError(f"a simulator process did not start: {arg}")

    def _ask(self, cmd: str, arg: Any = None, timeout: float = 60.0) -> list[Any]:
        for _, ctl, _ in self.children:
            ctl.put((cmd, arg))
        return [out.get(timeout=timeout)[1] for _, _, out in self.children]

    def on(self, digest: str) -> int:
        return sum(self._ask("on", digest))

    def healthy_on(self, digest: str) -> int:
        return sum(self._ask("healthy_on", digest))

    def ready(self) -> bool:
        return all(self._ask("ready"))

    @staticmethod
    def mark() -> float:
        return time.time()

    def desired_since(self, t: float) -> tuple[int, float | None]:
        """(devices that got a desired hint since wall time ``t``, seconds until the last did when all have)."""
        parts = self._ask("desired_since", t)
        count = sum(c for c, _ in parts)
        spans = [s for _, s in parts]
        return count, (max(s for s in spans if s is not None) if None not in spans else None)  # type: ignore[type-var]

    def stats(self) -> dict[str, Any]:
        sent: Counter[str] = Counter()
        received: Counter[str] = Counter()
        skipped = connected = connections = 0
        for s in self._ask("stats"):
            sent.update(s["sent"])
            received.update(s["received"])
            skipped += s["telemetry_skipped"]
            connected += s["connected"]
            connections += s["connections"]
        return {"devices": self.n, "sent": dict(sent), "received": dict(received), "telemetry_skipped": skipped,
                "connected": connected, "connections": connections}

    def messages(self) -> int:
        s = self.stats()
        return sum(s["sent"].values()) + s["received"].get("desired", 0)

    def stop(self) -> None:
        for proc, ctl, _out in self.children:
            if proc.is_alive():
                ctl.put(("stop", None))
        for proc, _, out in self.children:
            try:
                out.get(timeout=60)
            except (queue.Empty, EOFError, OSError):
                pass
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
