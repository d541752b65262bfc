"""Device profiles: what a device is and what it can do, as plain data.

``detect.py`` gathers facts from the machine (device tree, L4T release, NVML, nvidia-smi)
and turns them into a ``DeviceProfile`` with the helpers here. Nothing in this module
does I/O: it holds the table of known Jetson modules, the compute-capability rules for
discrete GPUs, and the hardware-id slugs that rollouts and the director key on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FAMILY_JETSON_ORIN = "jetson-orin"
FAMILY_JETSON_XAVIER = "jetson-xavier"
FAMILY_JETSON_OTHER = "jetson-other"
FAMILY_X86_NVIDIA = "x86-nvidia"
FAMILY_CPU = "cpu"
JETSON_FAMILIES = (FAMILY_JETSON_ORIN, FAMILY_JETSON_XAVIER, FAMILY_JETSON_OTHER)


@dataclass(frozen=True)
class Capabilities:
    """What the accelerator can do. ``memory_mb`` is system RAM (shared with the GPU on Jetson)."""

    fp16: bool = False
    int8: bool = False
    dla_cores: int = 0
    memory_mb: int = 0
    gpu_name: str | None = None
    compute_capability: str | None = None  # "8.7"
    gpu_memory_mb: int | None = None  # dedicated GPU memory; None where memory is unified
    unified_memory: bool = False


@dataclass(frozen=True)
class DeviceProfile:
    """One device as the fleet sees it. ``hardware_id`` is what rollouts and the director use."""

    hardware_id: str
    family: str
    model: str
    arch: str
    capabilities: Capabilities
    cpu_count: int = 0
    l4t_release: str | None = None
    jetpack: str | None = None
    evidence: tuple[str, ...] = field(default=(), compare=False)

    @property
    def is_jetson(self) -> bool:
        return self.family in JETSON_FAMILIES

    @property
    def has_nvidia_gpu(self) -> bool:
        return self.family != FAMILY_CPU

    def as_dict(self) -> dict[str, object]:
        caps = self.capabilities
        return {
            "hardware_id": self.hardware_id, "family": self.family, "model": self.model,
            "arch": self.arch, "cpu_count": self.cpu_count, "l4t_release": self.l4t_release,
            "jetpack": self.jetpack, "fp16": caps.fp16, "int8": caps.int8,
            "dla_cores": caps.dla_cores, "memory_mb": caps.memory_mb, "gpu_name": caps.gpu_name,
            "compute_capability": caps.compute_capability, "gpu_memory_mb": caps.gpu_memory_mb,
        }


@dataclass(frozen=True)
class JetsonModule:
    """One row of the known-module table."""

    hardware_id: str
    family: str
    name: str
    compute_capability: str
    dla_cores: int
    int8: bool = True


# Matched against the lower-cased /proc/device-tree/model, first match wins.
_JETSON_MODELS: tuple[tuple[str, str], ...] = (
    ("agx orin", "agx-orin"),
    ("orin nx", "orin-nx"),
    ("orin nano", "orin-nano"),
    ("xavier nx", "xavier-nx"),
    ("agx xavier", "agx-xavier"),
    ("jetson-agx", "agx-xavier"),  # early AGX Xavier device trees say "Jetson-AGX"
)

# Module part numbers from /proc/device-tree/compatible ("nvidia,p3701-0005").
_PART_NUMBERS: dict[str, str] = {
    "p3701-0000": "agx-orin-32gb", "p3701-0004": "agx-orin-32gb", "p3701-0005": "agx-orin-64gb",
    "p3701-0008": "agx-orin-64gb",  # AGX Orin Industrial
    "p3767-0000": "orin-nx-16gb", "p3767-0001": "orin-nx-8gb",
    "p3767-0003": "orin-nano-8gb", "p3767-0005": "orin-nano-8gb", "p3767-0004": "orin-nano-4gb",
    "p3668-0000": "xavier-nx", "p3668-0001": "xavier-nx", "p3668-0003": "xavier-nx",
    "p2888-0001": "agx-xavier", "p2888-0004": "agx-xavier", "p2888-0006": "agx-xavier",
}

_SOC_CC = {"tegra234": "8.7", "tegra194": "7.2", "tegra186": "6.2", "tegra210": "5.3"}

# L4T release → JetPack, for the report only (from NVIDIA's JetPack archive).
_JETPACK = {
    "32.7": "4.6", "35.1": "5.0.2", "35.2": "5.1", "35.3": "5.1.1", "35.4": "5.1.2",
    "35.5": "5.1.3", "35.6": "5.1.4", "36.2": "6.0 DP", "36.3": "6.0", "36.4": "6.1/6.2",
}


def jetson_variant(model: str, compatible: list[str], memory_mb: int) -> str | None:
    """Which Jetson module: "agx-orin-64gb", "orin-nx-8gb", "orin-nano-8gb", "xavier-nx" …

    Part numbers in the device tree decide; the model string and the memory size are the
    fallback (AGX Orin 64 GB reports ~62 GB, 32 GB ~30 GB).
    """
    for entry in compatible:
        part = entry.split(",")[-1].split("+")[-1]
        if part in _PART_NUMBERS:
            return _PART_NUMBERS[part]
    lowered = model.lower()
    for needle, variant in _JETSON_MODELS:
        if needle in lowered:
            if variant == "agx-orin":
                return "agx-orin-64gb" if memory_mb > 40_000 else "agx-orin-32gb"
            if variant == "orin-nx":
                return "orin-nx-16gb" if memory_mb > 10_000 else "orin-nx-8gb"
            if variant == "orin-nano":
                return "orin-nano-8gb" if memory_mb > 5_000 else "orin-nano-4gb"
            return variant
    return None


def jetson_module(variant: str | None, compatible: list[str]) -> JetsonModule:
    """The module row for a variant; an unknown Jetson gets a generic row from its SoC."""
    table = {
        "agx-orin-64gb": JetsonModule("jetson-agx-orin-64gb", FAMILY_JETSON_ORIN, "Jetson AGX Orin 64GB", "8.7", 2),
        "agx-orin-32gb": JetsonModule("jetson-agx-orin-32gb", FAMILY_JETSON_ORIN, "Jetson AGX Orin 32GB", "8.7", 2),
        "orin-nx-16gb": JetsonModule("jetson-orin-nx", FAMILY_JETSON_ORIN, "Jetson Orin NX 16GB", "8.7", 2),
        "orin-nx-8gb": JetsonModule("jetson-orin-nx", FAMILY_JETSON_ORIN, "Jetson Orin NX 8GB", "8.7", 1),
        "orin-nano-8gb": JetsonModule("jetson-orin-nano", FAMILY_JETSON_ORIN, "Jetson Orin Nano 8GB", "8.7", 0),
        "orin-nano-4gb": JetsonModule("jetson-orin-nano", FAMILY_JETSON_ORIN, "Jetson Orin Nano 4GB", "8.7", 0),
        "xavier-nx": JetsonModule("jetson-xavier-nx", FAMILY_JETSON_XAVIER, "Jetson Xavier NX", "7.2", 2),
        "agx-xavier": JetsonModule("jetson-agx-xavier", FAMILY_JETSON_XAVIER, "Jetson AGX Xavier", "7.2", 2),
    }
    if variant in table:
        return table[variant]
    soc = next((s for c in compatible for s in _SOC_CC if c.endswith(s)), None)
    cc = _SOC_CC.get(soc or "", "5.3")
    family = {"tegra234": FAMILY_JETSON_ORIN, "tegra194": FAMILY_JETSON_XAVIER}.get(soc or "", FAMILY_JETSON_OTHER)
    return JetsonModule(f"jetson-{soc or 'generic'}", family, f"Jetson ({soc or 'unknown SoC'})", cc, 0,
                        int8=cc_tuple(cc) >= (6, 1))


def jetpack_for(l4t_release: str | None) -> str | None:
    if not l4t_release:
        return None
    major_minor = ".".join(l4t_release.split(".")[:2])
    return _JETPACK.get(major_minor)


def cc_tuple(cc: str | None) -> tuple[int, int]:
    if not cc:
        return (0, 0)
    major, _, minor = cc.partition(".")
    try:
        return (int(major), int(minor or 0))
    except ValueError:
        return (0, 0)


def gpu_precisions(cc: str | None) -> tuple[bool, bool]:
    """(fast FP16, INT8) for a compute capability, as TensorRT's platform checks see them.

    Fast FP16: 5.3, 6.0, 6.2 and 7.0+. INT8 (DP4A / tensor cores): 6.1+.
    """
    t = cc_tuple(cc)
    fp16 = t in ((5, 3), (6, 0), (6, 2)) or t >= (7, 0)
    return fp16, t >= (6, 1)


# Discrete GPUs by name when NVML/nvidia-smi do not say the compute capability.
_GPU_CC: tuple[tuple[str, str], ...] = (
    (r"\b(h100|h200|gh200)\b", "9.0"),
    (r"\b(l4|l40s?|rtx 40\d\d|rtx \d+ ada)\b", "8.9"),
    (r"\b(a100|a30|a800)\b", "8.0"),
    (r"\b(a10g?|a16|a2|a40|rtx a\d+|rtx 30\d\d)\b", "8.6"),
    (r"\b(t4|rtx 20\d\d|gtx 16\d\d|quadro rtx \d+|titan rtx)\b", "7.5"),
    (r"\b(v100|titan v)\b", "7.0"),
    (r"\b(p100)\b", "6.0"),
    (r"\b(p4|p40|gtx 10\d\d|titan xp?)\b", "6.1"),
)


def cc_from_gpu_name(name: str) -> str | None:
    lowered = name.lower()
    for pattern, cc in _GPU_CC:
        if re.search(pattern, lowered):
            return cc
    return None


def gpu_slug(name: str) -> str:
    """"NVIDIA GeForce RTX 3090" → "geforce-rtx-3090"; "NVIDIA A100-SXM4-80GB" → "a100-sxm4-80gb"."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    slug = re.sub(r"^nvidia-", "", slug)
    return slug or "unknown"
