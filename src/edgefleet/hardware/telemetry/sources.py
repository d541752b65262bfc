"""Telemetry sources other than tegrastats: sysfs/procfs, psutil, NVML, nvidia-smi, jtop.

Each returns a flat dict with the keys of ``tegrastats.parse_tegrastats`` where the
meaning is the same (``ram_used_mb``, ``cpu_percent``, ``gpu_util_percent``,
``temp_<sensor>_c``, ``power_total_mw``, ``throttled``) and returns ``{}`` when the source
is absent. The parsers of foreign output (nvidia-smi CSV, jtop's ``stats`` dict, sysfs
files under a root) are pure and tested with fixtures; the probes that import pynvml or
jtop only run where those are installed.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
Stats = dict[str, "float | int | str | bool"]

# NVML clock throttle reasons that mean "slowed down against our will".
NVML_THROTTLE_SW_POWER_CAP = 0x4
NVML_THROTTLE_HW_SLOWDOWN = 0x8
NVML_THROTTLE_SW_THERMAL = 0x20
NVML_THROTTLE_HW_THERMAL = 0x40
NVML_THROTTLE_HW_POWER_BRAKE = 0x80
NVML_THROTTLING = (NVML_THROTTLE_SW_POWER_CAP | NVML_THROTTLE_HW_SLOWDOWN | NVML_THROTTLE_SW_THERMAL
                   | NVML_THROTTLE_HW_THERMAL | NVML_THROTTLE_HW_POWER_BRAKE)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _sensor_name(zone_type: str) -> str:
    name = re.sub(r"[-_ ]?thermal$", "", zone_type.strip().lower())
    return re.sub(r"[^a-z0-9]+", "_", name).strip("_") or "zone"


def sysfs_stats(root: str | Path = "/") -> Stats:
    """Memory (/proc/meminfo), load (/proc/loadavg) and thermal zones with their passive
    trip points (/sys/class/thermal): a zone at or above its lowest passive trip point is
    being throttled by the kernel's thermal governor."""
    rootp = Path(root)
    out: Stats = {}
    meminfo = _read(rootp / "proc/meminfo") or ""
    fields = {k: int(v) for k, v in re.findall(r"^(\w+):\s+(\d+)\s*kB", meminfo, re.MULTILINE)}
    if "MemTotal" in fields:
        total = fields["MemTotal"] // 1024
        available = fields.get("MemAvailable", fields.get("MemFree", 0)) // 1024
        out["ram_total_mb"] = total
        out["ram_used_mb"] = total - available
    if "SwapTotal" in fields:
        out["swap_total_mb"] = fields["SwapTotal"] // 1024
        out["swap_used_mb"] = (fields["SwapTotal"] - fields.get("SwapFree", 0)) // 1024
    loadavg = _read(rootp / "proc/loadavg")
    if loadavg:
        try:
            out["load_1m"] = float(loadavg.split()[0])
        except (ValueError, IndexError):
            pass
    throttled, zones = False, []
    base = rootp / "sys/class/thermal"
    for zone in sorted(base.glob("thermal_zone*")) if base.is_dir() else []:
        zone_type, temp = _read(zone / "type"), _read(zone / "temp")
        if not zone_type or not temp or not re.fullmatch(r"-?\d+", temp):
            continue
        celsius = int(temp) / 1000.0
        if celsius <= -40.0:  # disabled sensors read -256 °C or similar
            continue
        out[f"temp_{_sensor_name(zone_type)}_c"] = celsius
        zones.append(celsius)
        passive = []
        for trip in zone.glob("trip_point_*_type"):
            if _read(trip) == "passive":
                t = _read(trip.with_name(trip.name.replace("_type", "_temp")))
                if t and re.fullmatch(r"-?\d+", t) and int(t) > 0:
                    passive.append(int(t) / 1000.0)
        if passive and celsius >= min(passive):
            throttled = True
            out.setdefault("throttle_reason", f"{zone_type} at {celsius:.1f}C >= passive trip {min(passive):.1f}C")
    if zones:
        out["temp_max_c"] = max(zones)
    out["throttled"] = throttled
    return out


def psutil_stats() -> Stats:
    """CPU load and memory of this machine through psutil; {} without psutil."""
    try:
        import psutil
    except ImportError:
        return {}
    vm = psutil.virtual_memory()
    out: Stats = {
        "cpu_percent": float(psutil.cpu_percent(interval=None)),
        "cpu_cores": int(psutil.cpu_count() or 0),
        "ram_total_mb": int(vm.total // (1024 * 1024)),
        "ram_used_mb": int((vm.total - vm.available) // (1024 * 1024)),
    }
    sw = psutil.swap_memory()
    out["swap_total_mb"] = int(sw.total // (1024 * 1024))
    out["swap_used_mb"] = int(sw.used // (1024 * 1024))
    return out


NVIDIA_SMI_STATS_QUERY = (
    "temperature.gpu,power.draw,utilization.gpu,memory.used,memory.total,clocks.sm,"
    "clocks_throttle_reasons.active"
)


def parse_nvidia_smi_stats(text: str) -> Stats:
    """First GPU's row of ``nvidia-smi --query-gpu=<NVIDIA_SMI_STATS_QUERY>
    --format=csv,noheader,nounits``; ``[N/A]`` fields are left out."""
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    parts = [p.strip() for p in line.split(",")]
    if len(parts) < 7:
        raise ValueError(f"unexpected nvidia-smi stats row: {line!r}")

    def num(s: str) -> float | None:
        try:
            return float(s)
        except ValueError:
            return None

    out: Stats = {}
    for key, value, cast in (("temp_gpu_c", parts[0], float), ("power_gpu_mw", parts[1], None),
                             ("gpu_util_percent", parts[2], int), ("gpu_mem_used_mb", parts[3], int),
                             ("gpu_mem_total_mb", parts[4], int), ("gpu_freq_mhz", parts[5], int)):
        n = num(value)
        if n is None:
            continue
        out[key] = int(round(n * 1000)) if key == "power_gpu_mw" else cast(n)  # type: ignore[misc]
    if "power_gpu_mw" in out:
        out["power_total_mw"] = out["power_gpu_mw"]
        out["power_total_source"] = "gpu-board"
    if parts[6].lower().startswith("0x"):
        mask = int(parts[6], 16)
        out["throttle_reasons"] = parts[6]
        out["throttled"] = bool(mask & NVML_THROTTLING)
    return out


def nvidia_smi_stats(executable: str = "nvidia-smi", timeout: float = 5.0) -> Stats:
    exe = shutil.which(executable)
    if not exe:
        return {}
    try:
        res = subprocess.run([exe, f"--query-gpu={NVIDIA_SMI_STATS_QUERY}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=timeout, check=False)
        return parse_nvidia_smi_stats(res.stdout) if res.returncode == 0 else {}
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        log.debug("nvidia-smi stats failed: %s", exc)
        return {}


def nvml_stats(index: int = 0) -> Stats:
    """First discrete GPU through NVML; {} without pynvml or a driver."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        log.debug("NVML unavailable: %s", exc)
        return {}
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        mem = pynvml.nvmlDeviceGetMemoryInfo(h)
        out: Stats = {
            "temp_gpu_c": float(pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)),
            "gpu_util_percent": int(pynvml.nvmlDeviceGetUtilizationRates(h).gpu),
            "gpu_mem_used_mb": int(mem.used // (1024 * 1024)),
            "gpu_mem_total_mb": int(mem.total // (1024 * 1024)),
            "gpu_freq_mhz": int(pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)),
        }
        try:
            out["power_gpu_mw"] = out["power_total_mw"] = int(pynvml.nvmlDeviceGetPowerUsage(h))
            out["power_total_source"] = "gpu-board"
        except Exception:  # not supported on some boards
            pass
        reasons = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            pynvml.nvmlDeviceGetCurrentClocksThrottleReasons
        mask = int(reasons(h))
        out["throttle_reasons"] = hex(mask)
        out["throttled"] = bool(mask & NVML_THROTTLING)
        return out
    except Exception as exc:
        log.debug("NVML query failed: %s", exc)
        return {}
    finally:
        pynvml.nvmlShutdown()


def stats_from_jtop(stats: dict[str, Any]) -> Stats:
    """Map jtop's ``jetson.stats`` dict (jetson-stats 4.x) to our keys.

    jtop keys: ``CPU1``… (percent or ``"OFF"``), ``RAM``/``SWAP`` (fraction of total),
    ``GPU`` (percent), ``Temp <sensor>`` (°C, -256 when absent), ``Power <rail>`` and
    ``Power TOT`` (mW), ``jetson_clocks``, ``nvp model``.
    """
    out: Stats = {}
    cpus = [v for k, v in stats.items() if re.fullmatch(r"CPU\d+", k)]
    loads = [float(v) for v in cpus if isinstance(v, (int, float))]
    if cpus:
        out["cpu_cores"] = len(cpus)
        out["cpu_cores_online"] = len(loads)
    if loads:
        out["cpu_percent"] = round(sum(loads) / len(loads), 2)
    if isinstance(stats.get("GPU"), (int, float)):
        out["gpu_util_percent"] = float(stats["GPU"])
    for key, name in (("RAM", "ram_used_percent"), ("SWAP", "swap_used_percent")):
        if isinstance(stats.get(key), (int, float)):
            out[name] = round(float(stats[key]) * 100.0, 2)
    temps = []
    for key, value in stats.items():
        if key.startswith("Temp ") and isinstance(value, (int, float)) and value > -40:
            sensor = re.sub(r"[^a-z0-9]+", "_", key[5:].lower()).strip("_")
            if sensor == "pmic":
                continue
            out[f"temp_{sensor}_c"] = float(value)
            temps.append(float(value))
        elif key.startswith("Power ") and isinstance(value, (int, float)):
            rail = key[6:]
            if rail == "TOT":
                out["power_total_mw"] = int(value)
                out["power_total_source"] = "jtop"
            else:
                out[f"power_{rail.lower()}_mw"] = int(value)
    if temps:
        out["temp_max_c"] = max(temps)
    if "nvp model" in stats:
        out["power_mode"] = str(stats["nvp model"])
    if "jetson_clocks" in stats:
        out["jetson_clocks"] = str(stats["jetson_clocks"]).upper() in ("ON", "TRUE", "1")
    return out


def jtop_stats() -> Stats:
    """One sample through jtop (jetson-stats); {} when it is not installed or not running."""
    try:
        from jtop import jtop  # type: ignore[import-not-found]
    except ImportError:
        return {}
    try:
        with jtop(interval=0.5) as jetson:
            if jetson.ok(spin=True):
                return stats_from_jtop(dict(jetson.stats))
    except Exception as exc:  # jtop raises JtopException when its service is down
        log.debug("jtop failed: %s", exc)
    return {}


def jtop_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("jtop") is not None
