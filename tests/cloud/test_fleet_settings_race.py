"""Two operators changing and resetting the fleet-wide capture/network policy at the same
time never get a server error (a PATCH racing a DELETE once raised StaleDataError → 500)."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlmodel import Session

from edgefleet.cloud.db import make_engine, migrate
from edgefleet.cloud.devices import fleet_settings
from edgefleet.protocols import CapturePolicy
from edgefleet.protocols.messages import NetworkPolicy


def test_concurrent_set_and_reset_of_fleet_policies_never_fail(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    migrate(engine)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for n in range(15):
                with Session(engine) as s:
                    if (i + n) % 3 == 0:
                        fleet_settings.reset_capture_policy(s, None, f"op{i}")
                        fleet_settings.reset_network_policy(s, None, f"op{i}")
                    else:
                        fleet_settings.set_capture_policy(s, None, CapturePolicy(sample_rate=n / 100), f"op{i}")
                        fleet_settings.set_network_policy(s, None, NetworkPolicy(max_download_bps=4096 + n), f"op{i}")
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Session(engine) as s:  # whatever won last is a readable policy (or none: the default)
        fleet_settings.capture_policy(s, CapturePolicy())
        fleet_settings.network_policy(s)
        fleet_settings.set_capture_policy(s, None, CapturePolicy(sample_rate=0.5), "final")
        assert fleet_settings.capture_policy(s, CapturePolicy()).sample_rate == 0.5
