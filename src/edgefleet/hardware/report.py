"""``fleet-agent hw``: a human-readable account of the device and the backend plan.

detect_profile(root) + probe_availability() → select_backend → text. Pure formatting
apart from the two probes, which callers may pass in.
"""

from __future__ import annotations

import os

from .detect import detect_profile
from .profiles import DeviceProfile
from .selection import Availability, probe_availability, select_backend


def render_hw_report(
    root: str | os.PathLike[str] = "/",
    *,
    profile: DeviceProfile | None = None,
    availability: Availability | None = None,
    precision: str | None = None,
) -> str:
    """Profile, capabilities, installed runtimes and the backend plan with reasons."""
    profile = profile or detect_profile(root)
    av = availability if availability is not None else probe_availability()
    plan = select_backend(profile, av, precision=precision)
    caps = profile.capabilities
    yes = {True: "yes", False: "no"}
    lines = [
        f"hardware id    {profile.hardware_id}",
        f"family         {profile.family}",
        f"model          {profile.model}",
        f"architecture   {profile.arch}, {profile.cpu_count} CPUs, {caps.memory_mb} MB RAM"
        + (" (shared with the GPU)" if caps.unified_memory else ""),
    ]
    if profile.l4t_release:
        lines.append(f"L4T            {profile.l4t_release}" + (f" (JetPack {profile.jetpack})" if profile.jetpack else ""))
    if caps.gpu_name:
        gpu_mem = f", {caps.gpu_memory_mb} MB" if caps.gpu_memory_mb else ""
        lines.append(f"GPU            {caps.gpu_name} (compute capability {caps.compute_capability or '?'}{gpu_mem})")
    lines += [
        f"precision      FP16 {yes[caps.fp16]}, INT8 {yes[caps.int8]}, DLA cores {caps.dla_cores}",
        f"detected from  {'; '.join(profile.evidence) or '-'}",
        "",
        "runtimes",
        f"  tensorrt     {av.tensorrt_version or av.tensorrt_error or 'absent'}",
        f"  pycuda       {'yes' if av.pycuda else (av.pycuda_error or 'absent')}",
        f"  onnxruntime  {av.ort_version or av.ort_error or 'absent'}"
        + (f" ({', '.join(av.ort_providers)})" if av.ort_providers else ""),
        "",
        f"backend plan (precision {plan.precision}: {plan.precision_reason})",
    ]
    chosen = plan.chosen
    for i, step in enumerate(plan.steps, 1):
        mark = "->" if step is chosen else ("ok" if step.usable else "--")
        lines.append(f"  {mark} {i}. {step.label:<13} {step.reason}")
    lines.append("")
    lines.append(f"would use: {chosen.label if chosen else 'nothing (no usable backend)'}")
    return "\n".join(lines) + "\n"
