"""A simulated fleet for scale tests and benchmarks: up to 100,000 devices on one machine.

Not the agent: the same MQTT messages an agent sends (topics, schemas, per-device Ed25519
signatures and sequence numbers, the desired → reported lifecycle), many devices per
connection and several processes. Imports only ``protocols`` and ``registry.report_sig``.

* ``keys``: ``public_key(device_id, seed)`` to enrol with, ``DeviceKey`` to sign with;
* ``device``: one device's lifecycle, pure;
* ``fleet``: ``SimFleet``, many devices over a few connections in one process;
* ``procs``: ``SimProcesses``, a fleet split over several processes.
"""

from .device import SimDevice
from .fleet import SimFleet
from .keys import DEFAULT_SEED, DeviceKey, public_key
from .procs import SimProcesses

PROFILES = ("jetson-orin-nano", "jetson-orin-agx", "jetson-xavier-nx", "jetson-agx-xavier", "jetson-nano")


def device_ids(n: int, prefix: str = "sim") -> list[tuple[str, str]]:
    """``n`` ``(device_id, hardware_id)`` pairs, hardware profiles in turn."""
    width = max(4, len(str(n - 1)))
    return [(f"{prefix}-{i:0{width}d}", PROFILES[i % len(PROFILES)]) for i in range(n)]


__all__ = ["DEFAULT_SEED", "PROFILES", "DeviceKey", "SimDevice", "SimFleet", "SimProcesses", "device_ids", "public_key"]
