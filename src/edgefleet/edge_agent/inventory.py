"""What this device is, for the controller's device page: ``collect(...) -> Inventory``.

The slow parts (importing TensorRT/ONNX Runtime to read their versions and providers,
reading /etc/nv_tegra_release) run once (``StaticInventory.probe``); disk and memory are
read each time a ``reported`` goes out (``statvfs`` and ``/proc/meminfo``: microseconds).
Never raises: what cannot be read is left empty.
"""

from __future__ import annotations

import platform
import shutil
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

from ..hardware.detect import parse_nv_tegra_release
from ..hardware.profiles import jetpack_for
from ..protocols.messages import Inventory


@dataclass(frozen=True)
class StaticInventory:
    agent_version: str = ""
    os: str = ""
    kernel: str = ""
    l4t: str | None = None
    jetpack: str | None = None
    python: str = ""
    tensorrt: str | None = None
    onnxruntime: str | None = None
    providers: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def probe(cls, agent_version: str, root: str | PathLike[str] = "/") -> StaticInventory:
        from ..hardware.selection import probe_availability

        try:
            av = probe_availability()
            trt, ort, providers = av.tensorrt_version, av.ort_version, tuple(av.ort_providers)
        except Exception:
            trt, ort, providers = None, None, ()
        l4t = None
        try:
            l4t = parse_nv_tegra_release((Path(root) / "etc/nv_tegra_release").read_text(errors="replace"))
        except OSError:
            pass
        return cls(agent_version=agent_version, os=_os_name(root), kernel=platform.release(), l4t=l4t,
                   jetpack=jetpack_for(l4t), python=platform.python_version(), tensorrt=trt,
                   onnxruntime=ort, providers=providers)


def _os_name(root: str | PathLike[str]) -> str:
    try:
        for line in (Path(root) / "etc/os-release").read_text(errors="replace").splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')[:256]
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}"[:256]


def _meminfo(path: str = "/proc/meminfo") -> tuple[int | None, int | None]:
    total = avail = None
    try:
        for line in Path(path).read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                value = int(rest.split()[0]) * 1024
                total, avail = (value, avail) if key == "MemTotal" else (total, value)
    except (OSError, ValueError, IndexError):
        pass
    return total, avail


def collect(static: StaticInventory, data_dir: Path) -> Inventory:
    disk_total: int | None = None
    disk_free: int | None = None
    try:
        disk = shutil.disk_usage(data_dir)
        disk_total, disk_free = disk.total, disk.free
    except OSError:
        pass
    mem_total, mem_avail = _meminfo()
    return Inventory(
        agent_version=static.agent_version, os=static.os, kernel=static.kernel[:256], l4t=static.l4t,
        jetpack=static.jetpack, python=static.python, tensorrt=static.tensorrt, onnxruntime=static.onnxruntime,
        providers=[p[:256] for p in static.providers[:32]], disk_total_bytes=disk_total, disk_free_bytes=disk_free,
        memory_total_bytes=mem_total, memory_available_bytes=mem_avail,
    )
