"""Gates and timeouts never count a device that waits for its maintenance window (pure)."""

from __future__ import annotations

from edgefleet.cloud.rollout.metrics import BAD, DeviceStatus, classify, wave_metrics
from edgefleet.cloud.rollout.model import DeviceObservation
from edgefleet.protocols import Phase

from ..rollout.fleetsim import V1, V2

TIMEOUT = 900.0
OPENS = 10_000.0


def _waiting(online: bool = True, **kw: object) -> DeviceObservation:
    return DeviceObservation(device_id="cam-1", online=online, installed=V1, reported_target=V2,
                             phase=Phase.WAITING_FOR_WINDOW, phase_since=0.0, dispatched_at=0.0, wave=0,
                             assigned_at=0.0, last_seen=0.0, window_opens_at=OPENS, **kw)  # type: ignore[arg-type]


def _status(obs: DeviceObservation, now: float) -> DeviceStatus:
    return classify(obs, model=V2, device_timeout_s=TIMEOUT, wave_started_at=0.0, now=now)


def test_a_device_waiting_for_its_window_is_pending_long_past_the_device_timeout() -> None:
    for now in (TIMEOUT + 1, 5 * TIMEOUT, OPENS - 1):
        assert _status(_waiting(), now) == DeviceStatus.WINDOW
        assert _status(_waiting(online=False), now) == DeviceStatus.WINDOW  # offline too: its window is closed
    m = wave_metrics(0, [(_waiting(), DeviceStatus.WINDOW)])
    assert m.bad == 0 and m.attempted == 0 and m.pending == 1 and m.failure is None
    assert DeviceStatus.WINDOW not in BAD


def test_the_timeout_clock_starts_when_the_window_opens() -> None:
    assert _status(_waiting(), OPENS + TIMEOUT - 1) == DeviceStatus.WINDOW
    assert _status(_waiting(), OPENS + TIMEOUT + 1) == DeviceStatus.TIMED_OUT
    assert _status(_waiting(online=False), OPENS + 10) == DeviceStatus.SILENT


def test_a_device_running_the_model_after_its_window_is_counted_as_usual() -> None:
    obs = DeviceObservation(device_id="cam-1", installed=V2, reported_target=V2, phase=Phase.HEALTHY,
                            dispatched_at=0.0, wave=0, assigned_at=0.0)
    assert _status(obs, OPENS + 5) == DeviceStatus.HEALTHY
