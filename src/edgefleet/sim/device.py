"""One simulated device's deployment state, as pure logic: what it does with a ``desired`` hint.

``SimDevice.on_desired(desired, now)`` returns the steps to schedule; ``advance(step)``
moves the lifecycle on and says whether a ``reported`` is due. The lifecycle is the
agent's: ``notified → downloading → verifying → preparing → active`` (one step each,
``step_s`` apart, scheduled by the fleet), then ``healthy`` after ``health_s``. It trusts
the hint (no TUF, no download): what a simulated fleet measures is the controller side.
No I/O and no clock here: ``SimFleet`` (fleet.py) does the MQTT and the timing.
"""

from __future__ import annotations

from ..protocols import (
    Desired,
    LatencyStats,
    ModelRef,
    Phase,
    Reported,
    SlotReport,
    Status,
    Telemetry,
)
from .keys import DeviceKey, utc_iso

STEPS = (Phase.NOTIFIED, Phase.DOWNLOADING, Phase.VERIFYING, Phase.PREPARING, Phase.ACTIVE)
HEALTHY = len(STEPS)  # the step after the last lifecycle step


class SimDevice:
    __slots__ = ("device_id", "hardware_id", "key", "conn", "installed", "target", "lkg", "phase", "generation",
                 "telemetry_period_s", "period_end", "latency_ms", "desired_at", "desired_generation", "epoch")

    def __init__(self, device_id: str, hardware_id: str, conn: int, *, seed: str, telemetry_period_s: float):
        self.device_id, self.hardware_id, self.conn = device_id, hardware_id, conn
        self.key = DeviceKey(device_id, seed)
        self.installed: ModelRef | None = None
        self.target: ModelRef | None = None
        self.lkg: ModelRef | None = None
        self.phase = Phase.IDLE
        self.generation = 0
        self.telemetry_period_s = telemetry_period_s
        self.period_end: float | None = None  # epoch seconds: telemetry periods follow each other
        self.latency_ms = 2.0
        self.desired_at: float | None = None  # monotonic time of the last desired hint
        self.desired_generation: int | None = None
        self.epoch = 0  # bumped by every new target: steps of an older one are ignored

    # ----- messages it sends -----

    def status(self, online: bool) -> Status:
        return Status(device_id=self.device_id, online=online, hardware_id=self.hardware_id)

    def reported(self) -> Reported:
        slot = SlotReport(installed=self.installed, target=self.target, last_known_good=self.lkg, phase=self.phase)
        return Reported(device_id=self.device_id, generation=self.generation, hardware_id=self.hardware_id,
                        slots={"control": slot})

    def telemetry(self, now: float) -> Telemetry:
        """The aggregates of the period that ends ``now`` (epoch seconds)."""
        start = self.period_end if self.period_end is not None else now - self.telemetry_period_s
        self.period_end = now
        frames = int(5 * (now - start)) if self.installed else 0
        lat = self.latency_ms
        return Telemetry(device_id=self.device_id, period_start=utc_iso(start), period_end=utc_iso(now),  # type: ignore[arg-type]
                         control=self.installed, frames=frames, fps=5.0 if self.installed else 0.0,
                         latency_ms=LatencyStats(p50=lat, p95=lat * 1.2, p99=lat * 1.5, mean=lat, max=lat * 2))

    # ----- what it does -----

    def on_desired(self, desired: Desired, now: float) -> tuple[bool, int | None]:
        """Take a hint: returns (report now?, first step to schedule or None)."""
        self.desired_at, self.desired_generation = now, desired.generation
        self.telemetry_period_s = desired.settings.telemetry_period_s
        self.generation = desired.generation
        t = desired.slots.get("control")
        want = ModelRef(name=t.name, version=t.version, digest=t.digest) if t else None
        if (want.digest if want else None) == (self.installed.digest if self.installed else None):
            if self.phase in STEPS[:-1]:  # it was installing something else: abandoned
                self.phase = Phase.IDLE
                self.epoch += 1
            self.target = self.installed  # active: its health check stays due
            return True, None
        if want is None:
            self.epoch += 1
            self.installed, self.target, self.phase = None, None, Phase.IDLE
            return True, None
        if self.target is not None and self.target.digest == want.digest and self.phase in STEPS[:-1]:
            return False, None  # already on its way there: a repeated hint changes nothing
        self.epoch += 1  # a new target: steps scheduled for an older one are void
        self.target = want
        return False, 0

    def advance(self, step: int, epoch: int) -> bool:
        """Run lifecycle step ``step`` of target ``epoch``; True when a ``reported`` is due."""
        if epoch != self.epoch or self.target is None:
            return False
        if step < len(STEPS) - 1:
            self.phase = STEPS[step]
            return True
        if step == len(STEPS) - 1:
            if self.installed is not None and self.installed.digest != self.target.digest:
                self.lkg = self.installed
            self.installed, self.phase = self.target, Phase.ACTIVE
            return True
        if step == HEALTHY and self.phase == Phase.ACTIVE:
            self.phase = Phase.HEALTHY
            return True
        return False

    def sign(self, msg: Reported | Telemetry, now: float) -> bytes:
        return self.key.sign(msg, now=now)
