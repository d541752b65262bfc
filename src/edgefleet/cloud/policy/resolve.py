"""Policies scoped to a selector: which scope gives each setting of one device ("most specific wins").

Pure: ``resolve(scopes, device, fleet)`` takes the scopes (``Scope``: a selector, a priority
and the fields it sets), one device (anything ``Selectable``) and the fleet-wide values,
and returns a ``Resolved`` — the capture policy, network policy and maintenance windows
the device gets, and for every field the name of the scope it came from.

Specificity, deterministic: a rollout's own policy (``rollout`` set, applied to its member
devices while it runs) beats every selector scope; among selector scopes the higher
``priority`` wins, then the selector with more terms (``tag:site=a,hw:orin`` beats
``hw:orin``; ``all`` counts 0), then the name in alphabetical order. Fleet-wide settings
(``fleet capture set``, ``fleet network set`` without ``--select``, controller.toml) are the
least specific scope, ``fleet``.

Resolution is per field: a scope that sets only ``sample_rate`` leaves the other capture
fields to less specific scopes. Fields that only make sense together resolve as one:
``download`` with ``interfaces``; the window list as a whole (``windows``).

The per-device byte budget and other readers use ``resolve(...).capture`` (and
``.sources`` to say why); nothing here touches the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...protocols import CapturePolicy
from ...protocols.messages import NetworkPolicy
from ...protocols.windows import MaintenancePolicy, MaintenanceWindow
from ..rollout.selector import Selectable, Selector

FLEET = "fleet"  # the name of the fleet-wide scope in ``Resolved.sources``
#: Network fields resolved together (a scope's ``download`` brings its ``interfaces``).
NETWORK_GROUPS: tuple[tuple[str, ...], ...] = (("download", "interfaces"), ("max_download_bps",), ("max_upload_bps",))


@dataclass(frozen=True)
class Scope:
    """One scoped policy. ``capture``/``network``: only the fields it sets; ``windows``:
    None = not set here (an empty tuple sets "no windows": switch any time)."""

    name: str
    selector: Selector
    priority: int = 0
    capture: Mapping[str, Any] = field(default_factory=dict)
    network: Mapping[str, Any] = field(default_factory=dict)
    windows: tuple[MaintenanceWindow, ...] | None = None
    rollout: str | None = None  # a rollout's own policy: applies to the devices named in ``members``
    members: frozenset[str] = frozenset()

    @property
    def terms(self) -> int:
        return sum(1 for t in self.selector.terms if t.kind != "all")

    def matches(self, device: Selectable) -> bool:
        if self.rollout is not None:
            return device.device_id in self.members
        return self.selector.matches(device)

    def rank(self) -> tuple[int, int, int, str]:
        """Sort key, most specific first."""
        return (0 if self.rollout is not None else 1, -self.priority, -self.terms, self.name)


@dataclass(frozen=True)
class Resolved:
    capture: CapturePolicy
    network: NetworkPolicy
    maintenance: MaintenancePolicy
    sources: dict[str, str]  # "capture.sample_rate" → scope name (or "fleet"); also "windows"
    scopes: tuple[str, ...]  # the scopes that match the device, most specific first


def matching(scopes: Iterable[Scope], device: Selectable) -> list[Scope]:
    """The scopes that apply to ``device``, most specific first."""
    return sorted((s for s in scopes if s.matches(device)), key=Scope.rank)


def resolve(scopes: Sequence[Scope], device: Selectable, *, capture: CapturePolicy,
            network: NetworkPolicy, windows: Sequence[MaintenanceWindow] = ()) -> Resolved:
    """What ``device`` gets: each field from the most specific scope that sets it, else fleet-wide.

    Args:
        capture, network, windows: the fleet-wide values (scope ``fleet``).
    """
    ordered = matching(scopes, device)
    sources: dict[str, str] = {}
    cap = capture.model_dump()
    for name in CapturePolicy.model_fields:
        owner = next((s for s in ordered if name in s.capture), None)
        sources[f"capture.{name}"] = owner.name if owner else FLEET
        if owner is not None:
            cap[name] = owner.capture[name]
    net = network.model_dump()
    for group in NETWORK_GROUPS:
        owner = next((s for s in ordered if group[0] in s.network), None)
        for name in group:
            sources[f"network.{name}"] = owner.name if owner else FLEET
            if owner is not None:
                net[name] = owner.network.get(name, NetworkPolicy.model_fields[name].get_default(call_default_factory=True))
    win_owner = next((s for s in ordered if s.windows is not None), None)
    sources["windows"] = win_owner.name if win_owner else FLEET
    chosen = list(win_owner.windows or ()) if win_owner is not None else list(windows)
    return Resolved(
        capture=CapturePolicy.model_validate(cap), network=NetworkPolicy.model_validate(net),
        maintenance=MaintenancePolicy(windows=chosen), sources=sources, scopes=tuple(s.name for s in ordered),
    )
