"""Detect the device profile from the machine, or from a fixture tree that looks like one.

Flow: read files under ``root`` (``/proc/device-tree/model`` and ``compatible``,
``/etc/nv_tegra_release``, ``/proc/meminfo``, ``/proc/cpuinfo``,
``/proc/driver/nvidia/gpus/*/information``) → ask a GPU probe (NVML, then ``nvidia-smi``;
only on the real root unless one is passed in) → build a ``DeviceProfile`` with
``profiles.py``. The parsers are pure functions on text so tests feed them fixtures.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import DetectionError
from .profiles import (
    FAMILY_CPU,
    FAMILY_X86_NVIDIA,
    Capabilities,
    DeviceProfile,
    cc_from_gpu_name,
    gpu_precisions,
    gpu_slug,
    jetpack_for,
    jetson_module,
    jetson_variant,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuInfo:
    """One discrete GPU as NVML, nvidia-smi or /proc/driver/nvidia report it."""

    name: str
    memory_mb: int | None = None
    compute_capability: str | None = None


GpuProbe = Callable[[], "list[GpuInfo]"]


def _read(root: Path, rel: str) -> str | None:
    try:
        return (root / rel.lstrip("/")).read_bytes().decode("utf-8", "replace")
    except OSError:
        return None


def parse_device_tree_strings(raw: str | None) -> list[str]:
    """Device-tree string properties are NUL-separated and NUL-terminated."""
    return [s.strip() for s in (raw or "").split("\x00") if s.strip()]


_L4T = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)")


def parse_nv_tegra_release(text: str | None) -> str | None:
    """``# R35 (release), REVISION: 4.1, GCID: …`` → ``"35.4.1"``."""
    m = _L4T.search(text or "")
    return f"{m.group(1)}.{m.group(2)}" if m else None


def parse_meminfo_mb(text: str | None) -> int:
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", text or "", re.MULTILINE)
    return int(m.group(1)) // 1024 if m else 0


def parse_cpuinfo(text: str | None) -> tuple[str | None, int]:
    """(architecture, processor count) from /proc/cpuinfo; architecture None when unknown."""
    text = text or ""
    count = len(re.findall(r"^processor\s*:", text, re.MULTILINE))
    if re.search(r"^CPU architecture\s*:\s*8", text, re.MULTILINE) or re.search(r"^Features\s*:", text, re.MULTILINE):
        return "aarch64", count
    if re.search(r"^(vendor_id|flags)\s*:", text, re.MULTILINE):
        return "x86_64", count
    return None, count


def parse_nvidia_proc_information(text: str) -> GpuInfo | None:
    """/proc/driver/nvidia/gpus/<bus>/information → the ``Model:`` line."""
    m = re.search(r"^Model:\s*(.+?)\s*$", text, re.MULTILINE)
    return GpuInfo(name=m.group(1)) if m else None


NVIDIA_SMI_QUERY = "name,memory.total,compute_cap"


def parse_nvidia_smi_gpus(text: str) -> list[GpuInfo]:
    """Output of ``nvidia-smi --query-gpu=name,memory.total,compute_cap --format=csv,noheader,nounits``.

    Older drivers lack ``compute_cap``; callers then query ``name,memory.total`` only, so a
    row may have two fields.
    """
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if not parts or not parts[0]:
            continue
        if len(parts) < 2:
            raise DetectionError(f"unexpected nvidia-smi row: {line!r}")
        mem = int(float(parts[1])) if re.fullmatch(r"[\d.]+", parts[1]) else None
        cc = parts[2] if len(parts) > 2 and re.fullmatch(r"\d+\.\d+", parts[2]) else None
        gpus.append(GpuInfo(parts[0], mem, cc))
    return gpus


def probe_nvml() -> list[GpuInfo]:
    """Discrete GPUs through NVML (pynvml / nvidia-ml-py); [] when unavailable."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded …
        log.debug("NVML unavailable: %s", exc)
        return []
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            name = name.decode() if isinstance(name, bytes) else name
            mem = pynvml.nvmlDeviceGetMemoryInfo(h).total // (1024 * 1024)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
            gpus.append(GpuInfo(name, int(mem), f"{major}.{minor}"))
        return gpus
    finally:
        pynvml.nvmlShutdown()


def probe_nvidia_smi(executable: str = "nvidia-smi", timeout: float = 5.0) -> list[GpuInfo]:
    """Discrete GPUs through ``nvidia-smi``; [] when it is absent or fails."""
    exe = shutil.which(executable)
    if not exe:
        return []
    for query in (NVIDIA_SMI_QUERY, "name,memory.total"):
        try:
            out = subprocess.run(
                [exe, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=timeout, check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.debug("nvidia-smi failed: %s", exc)
            return []
        if out.returncode == 0:
            try:
                return parse_nvidia_smi_gpus(out.stdout)
            except DetectionError as exc:
                log.warning("%s", exc)
                return []
    return []


def probe_gpus() -> list[GpuInfo]:
    return probe_nvml() or probe_nvidia_smi()


def _proc_gpus(root: Path) -> list[GpuInfo]:
    base = root / "proc/driver/nvidia/gpus"
    gpus = []
    if base.is_dir():
        for info in sorted(base.glob("*/information")):
            gpu = parse_nvidia_proc_information(info.read_text(errors="replace"))
            if gpu:
                gpus.append(gpu)
    return gpus


def detect_profile(root: str | os.PathLike[str] = "/", *, gpu_probe: GpuProbe | None = None) -> DeviceProfile:
    """Detect this device (or the fixture tree at ``root``).

    Args:
        root: filesystem root to read; tests point it at a fixture tree.
        gpu_probe: returns the discrete GPUs. Defaults to NVML then nvidia-smi when
            ``root`` is ``/``, and to nothing for any other root (fixture trees are files).
    """
    rootp = Path(root)
    real_root = rootp.resolve() == Path("/")
    evidence: list[str] = []
    model = (parse_device_tree_strings(_read(rootp, "proc/device-tree/model")) or [""])[0]
    compatible = parse_device_tree_strings(_read(rootp, "proc/device-tree/compatible"))
    l4t = parse_nv_tegra_release(_read(rootp, "etc/nv_tegra_release"))
    memory_mb = parse_meminfo_mb(_read(rootp, "proc/meminfo"))
    arch, cpus = parse_cpuinfo(_read(rootp, "proc/cpuinfo"))
    if memory_mb == 0 and real_root:
        memory_mb = _psutil_memory_mb()
    if arch is None:
        arch = _normalise_arch(platform.machine()) if real_root else "unknown"
    if cpus == 0 and real_root:
        cpus = os.cpu_count() or 0

    is_tegra = bool(l4t) or "jetson" in model.lower() or any("tegra" in c for c in compatible)
    if is_tegra:
        evidence += [f"device-tree model: {model!r}" if model else "no device-tree model",
                     f"L4T {l4t}" if l4t else "no /etc/nv_tegra_release"]
        variant = jetson_variant(model, compatible, memory_mb)
        module = jetson_module(variant, compatible)
        fp16, int8 = gpu_precisions(module.compute_capability)
        caps = Capabilities(fp16=fp16, int8=int8 and module.int8, dla_cores=module.dla_cores,
                            memory_mb=memory_mb, gpu_name=f"{module.name} integrated GPU",
                            compute_capability=module.compute_capability, unified_memory=True)
        return DeviceProfile(module.hardware_id, module.family, model or module.name, "aarch64", caps,
                             cpu_count=cpus, l4t_release=l4t, jetpack=jetpack_for(l4t),
                             evidence=tuple(evidence))

    gpus = _proc_gpus(rootp)
    if gpus:
        evidence.append("/proc/driver/nvidia/gpus")
    probe = gpu_probe if gpu_probe is not None else (probe_gpus if real_root else None)
    if probe is not None:
        probed = probe()
        if probed:
            evidence.append("NVML/nvidia-smi")
            gpus = probed
    if gpus:
        gpu = gpus[0]
        cc = gpu.compute_capability or cc_from_gpu_name(gpu.name)
        fp16, int8 = gpu_precisions(cc)
        caps = Capabilities(fp16=fp16, int8=int8, memory_mb=memory_mb, gpu_name=gpu.name,
                            compute_capability=cc, gpu_memory_mb=gpu.memory_mb)
        prefix = "x86" if arch == "x86_64" else arch
        return DeviceProfile(f"{prefix}-nvidia-{gpu_slug(gpu.name)}", FAMILY_X86_NVIDIA, gpu.name, arch,
                             caps, cpu_count=cpus, evidence=tuple(evidence))

    evidence.append("no NVIDIA GPU found")
    m = re.search(r"^model name\s*:\s*(.+?)\s*$", _read(rootp, "proc/cpuinfo") or "", re.MULTILINE)
    return DeviceProfile(f"cpu-{arch}", FAMILY_CPU, m.group(1) if m else arch,
                         arch, Capabilities(memory_mb=memory_mb), cpu_count=cpus, evidence=tuple(evidence))


def _normalise_arch(machine: str) -> str:
    m = machine.lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m or "unknown")


def _psutil_memory_mb() -> int:
    try:
        import psutil
    except ImportError:
        return 0
    return int(psutil.virtual_memory().total // (1024 * 1024))
