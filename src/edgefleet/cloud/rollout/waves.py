"""Wave membership: which devices get a rollout's model in which wave.

``assign_waves(rollout_id, devices, percents)`` turns the devices a selector picked into a
``{device_id: wave_index}`` map. It is a pure function of the rollout id, the set of
(device id, hardware profile) pairs and the cumulative percents, so every controller replica
and every restart computes the same answer, in any input order:

* each device gets a rank from sha256(rollout_id, device_id) — stable across processes and
  Python versions (``hash()`` is salted per process and is not used);
* devices are stratified by hardware profile: within each profile the first
  ``ceil(p_i% of the profile)`` devices by rank are in waves ``0..i``, and wave 0 holds at
  least one device of every profile, so a model that breaks only one kind of hardware is
  caught in the first wave;
* rounding is upwards, so wave 0 is never empty while any device is selected. With many
  small profiles wave 0 is therefore larger than its percentage (one device per profile).

The assignment is persisted by the caller. Devices that join the selection later do not
reshuffle anybody: ``assign_late_joiners`` puts them in the current wave.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Protocol

from .errors import WavesSyntaxError


class Placeable(Protocol):
    @property
    def device_id(self) -> str: ...
    @property
    def hardware_id(self) -> str: ...


def parse_waves(text: str | Sequence[float]) -> tuple[float, ...]:
    """Parse cumulative wave percents: ``"1,10,50,100"`` or ``[1, 10, 50, 100]``.

    Percents must be > 0, strictly increasing, and end at 100 (every selected device is
    covered when the last wave passes).

    Raises:
        WavesSyntaxError
    """
    shown = text if isinstance(text, str) else ",".join(f"{p:g}" for p in text)
    if isinstance(text, str):
        parts = [p.strip().rstrip("%") for p in text.split(",")]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise WavesSyntaxError(
                "waves are comma-separated cumulative percents, for example 1,10,50,100",
                text=shown) from None
    else:
        values = [float(p) for p in text]
    if not values:
        raise WavesSyntaxError("at least one wave is needed (100 = everything at once)",
                               text=shown)
    prev = 0.0
    for v in values:
        if not math.isfinite(v) or v <= 0 or v > 100:
            raise WavesSyntaxError(f"wave percent {v:g} is outside (0, 100]", text=shown)
        if v <= prev:
            raise WavesSyntaxError("wave percents are cumulative and must increase "
                                   f"({prev:g} then {v:g})", text=shown)
        prev = v
    if values[-1] != 100:
        raise WavesSyntaxError(f"the last wave must be 100 (got {values[-1]:g})", text=shown)
    return tuple(values)


def stable_rank(rollout_id: str, device_id: str) -> int:
    """A device's position in a rollout's shuffle: the first 8 bytes of a sha256."""
    digest = hashlib.sha256(f"{rollout_id}\x00{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def cumulative_counts(n: int, percents: Sequence[float]) -> list[int]:
    """How many of ``n`` devices are in waves ``0..i``: ceil, monotone, wave 0 >= 1 if n > 0."""
    counts: list[int] = []
    for p in percents:
        k = math.ceil(Fraction(str(p)) * n / 100)
        k = max(k, counts[-1] if counts else 0, 1 if n else 0)
        counts.append(min(k, n))
    return counts


def assign_waves(rollout_id: str, devices: Iterable[Placeable],
                 percents: Sequence[float]) -> dict[str, int]:
    """Map each device id to its wave index (0-based). See the module docstring.

    Args:
        rollout_id: salts the shuffle, so different rollouts pick different first waves.
        devices: the selected devices; duplicates (same id) count once.
        percents: cumulative percents as returned by ``parse_waves``.
    """
    by_profile: dict[str, set[str]] = defaultdict(set)
    seen: set[str] = set()
    for d in devices:
        if d.device_id not in seen:
            seen.add(d.device_id)
            by_profile[d.hardware_id].add(d.device_id)
    out: dict[str, int] = {}
    for ids in by_profile.values():
        ranked = sorted(ids, key=lambda i: (stable_rank(rollout_id, i), i))
        counts = cumulative_counts(len(ranked), percents)
        wave = 0
        for pos, device_id in enumerate(ranked):
            while pos >= counts[wave]:
                wave += 1
            out[device_id] = wave
    return out


def assign_late_joiners(existing: Mapping[str, int], devices: Iterable[Placeable],
                        current_wave: int) -> dict[str, int]:
    """Assignments for devices not in ``existing``: all join ``current_wave``.

    Existing members never move. Returns only the new devices.
    """
    return {d.device_id: current_wave for d in devices if d.device_id not in existing}


def wave_sizes(assignment: Mapping[str, int], n_waves: int) -> list[int]:
    """Members per wave index."""
    sizes = [0] * n_waves
    for w in assignment.values():
        if 0 <= w < n_waves:
            sizes[w] += 1
    return sizes
