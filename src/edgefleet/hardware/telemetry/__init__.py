"""Device telemetry: one flat dict of hardware stats per telemetry period.

``collect_hardware_stats(profile, root)`` layers the sources, later ones overriding:

1. sysfs/procfs under ``root`` (memory, load, thermal zones and their passive trip points),
2. psutil (CPU load, memory) on the real root,
3. on a Jetson: the running ``TegrastatsReader``'s latest sample, else jtop when installed;
   on a discrete GPU: NVML, else ``nvidia-smi``,

and adds ``hardware_id``, ``source`` and ``throttled`` (a thermal zone at its passive trip
point, or an NVML throttle reason for power or temperature). The dict goes into
``Telemetry.hardware`` unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..profiles import DeviceProfile
from .sources import (
    jtop_available,
    jtop_stats,
    nvidia_smi_stats,
    nvml_stats,
    parse_nvidia_smi_stats,
    psutil_stats,
    stats_from_jtop,
    sysfs_stats,
)
from .tegrastats import TegrastatsReader, parse_tegrastats

Stats = dict[str, "float | int | str | bool"]


def collect_hardware_stats(
    profile: DeviceProfile,
    root: str | os.PathLike[str] = "/",
    *,
    tegrastats: TegrastatsReader | None = None,
    use_jtop: bool = True,
) -> Stats:
    """Hardware stats of this device (or of the fixture tree at ``root``).

    Args:
        profile: the detected device.
        root: filesystem root; probes of the live machine (psutil, jtop, NVML, nvidia-smi)
            run only when this is ``/``.
        tegrastats: a started reader on a Jetson; its latest sample wins over jtop.
        use_jtop: try jtop on a Jetson when no tegrastats sample is at hand.
    """
    real_root = Path(root).resolve() == Path("/")
    stats: Stats = {"hardware_id": profile.hardware_id}
    stats.update(sysfs_stats(Path(root)))
    source = "sysfs"
    sysfs_throttled = bool(stats.get("throttled"))
    if real_root:
        ps = psutil_stats()
        if ps:
            stats.update(ps)
            source = "psutil"
    extra: Stats = {}
    if profile.is_jetson:
        sample = tegrastats.latest() if tegrastats is not None else None
        if sample:
            extra, source = sample, "tegrastats"
        elif real_root and use_jtop and jtop_available():
            extra = jtop_stats()
            source = "jtop" if extra else source
    elif profile.has_nvidia_gpu and real_root:
        extra = nvml_stats()
        source = "nvml" if extra else source
        if not extra:
            extra = nvidia_smi_stats()
            source = "nvidia-smi" if extra else source
    stats.update(extra)
    stats["throttled"] = sysfs_throttled or bool(extra.get("throttled"))
    stats["source"] = source
    return stats


__all__ = [
    "TegrastatsReader", "collect_hardware_stats", "jtop_stats", "nvidia_smi_stats", "nvml_stats",
    "parse_nvidia_smi_stats", "parse_tegrastats", "psutil_stats", "stats_from_jtop", "sysfs_stats",
]
