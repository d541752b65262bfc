"""Operator input for scoped policies → checked values; a bad field is a ``BadRequest`` naming it.

The API body and the CLI both arrive here as plain values (``days`` as names or ranges,
``start`` as ``HH:MM``, ``duration`` with units, ``timezone`` as an IANA name or
``device``); what comes out is what the table stores and the devices get.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from ...protocols import CapturePolicy
from ...protocols.messages import NetworkPolicy
from ...protocols.windows import (
    DEVICE_ZONE,
    MAX_WINDOW_S,
    MAX_WINDOWS,
    START_PATTERN,
    MaintenanceWindow,
    parse_days,
    parse_duration,
)
from ..errors import BadRequest
from ..rollout.errors import SelectorSyntaxError
from ..rollout.selector import Selector, parse_selector

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_ZONE_CHARS = re.compile(r"^[A-Za-z0-9_+\-/]{1,64}$")
RESERVED = ("fleet",)


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name) or name in RESERVED or name.startswith("rollout:"):
        raise BadRequest(f"name: invalid policy name {name[:80]!r}; use 1–64 letters, digits, '.', '_', ':' or '-' "
                         f"(not 'fleet', not starting 'rollout:')")
    return name


def check_selector(text: str) -> Selector:
    try:
        return parse_selector(text)
    except SelectorSyntaxError as exc:
        raise BadRequest(f"select: {exc}") from None


def check_zone(name: str, where: str) -> str:
    if name == DEVICE_ZONE:
        return name
    hint = "use an IANA name such as Europe/Berlin or America/New_York, or 'device' for the device's own zone"
    if not _ZONE_CHARS.match(name) or name.startswith("/") or ".." in name:
        raise BadRequest(f"{where}.timezone: {name[:80]!r} is not a time zone name; {hint}")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise BadRequest(f"{where}.timezone: unknown time zone {name!r}; {hint}") from None
    return name


def check_window(raw: Mapping[str, Any], where: str) -> MaintenanceWindow:
    days = raw.get("days")
    if isinstance(days, str):
        days = [days]
    if not isinstance(days, list) or not days or not all(isinstance(d, str) for d in days):
        raise BadRequest(f"{where}.days: name at least one day (mon … sun, or a range such as mon-fri)")
    try:
        names = parse_days(",".join(days))
    except ValueError as exc:
        raise BadRequest(f"{where}.days: {exc}") from None
    start = raw.get("start")
    if not isinstance(start, str) or not re.match(START_PATTERN, start):
        raise BadRequest(f"{where}.start: {str(start)[:40]!r} is not a local time HH:MM (00:00 to 23:59)")
    duration = raw.get("duration")
    if not isinstance(duration, str):
        raise BadRequest(f"{where}.duration: give the duration with a unit, e.g. '2h' or '90m'")
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise BadRequest(f"{where}.duration: {exc}") from None
    if not 60 <= seconds <= MAX_WINDOW_S:
        raise BadRequest(f"{where}.duration: {duration!r} is outside 1m to 7d")
    zone = check_zone(str(raw.get("timezone") or DEVICE_ZONE), where)
    return MaintenanceWindow(days=names, start=start, duration_s=seconds, timezone=zone)  # type: ignore[arg-type]


def check_windows(raw: Sequence[Mapping[str, Any]]) -> list[MaintenanceWindow]:
    if len(raw) > MAX_WINDOWS:
        raise BadRequest(f"windows: at most {MAX_WINDOWS} windows per policy, got {len(raw)}")
    return [check_window(w, f"windows[{i}]") for i, w in enumerate(raw)]


def _problems(exc: ValidationError, prefix: str) -> str:
    return "; ".join(f"{prefix}.{'.'.join(str(p) for p in e['loc']) or '?'}: {e['msg']}" for e in exc.errors())


def check_network(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The network fields a scope sets (a subset of ``NetworkPolicy``'s), checked together."""
    unknown = sorted(set(raw) - set(NetworkPolicy.model_fields))
    if unknown:
        raise BadRequest(f"network: unknown setting(s) {', '.join(unknown)[:200]}; known: {', '.join(NetworkPolicy.model_fields)}")
    if "interfaces" in raw and "download" not in raw:
        raise BadRequest("network.interfaces: set download = 'interfaces' with the interface names")
    try:
        checked = NetworkPolicy.model_validate(dict(raw))
    except ValidationError as exc:
        raise BadRequest(f"invalid network policy: {_problems(exc, 'network')}") from None
    return {k: v for k, v in checked.model_dump(mode="json").items() if k in raw or (k == "interfaces" and "download" in raw)}


def check_capture(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The capture fields a scope sets (a subset of ``CapturePolicy``'s)."""
    unknown = sorted(set(raw) - set(CapturePolicy.model_fields))
    if unknown:
        raise BadRequest(f"capture: unknown setting(s) {', '.join(unknown)[:200]}; known: {', '.join(CapturePolicy.model_fields)}")
    try:
        checked = CapturePolicy.model_validate({**CapturePolicy().model_dump(), **raw})
    except ValidationError as exc:
        raise BadRequest(f"invalid capture policy: {_problems(exc, 'capture')}") from None
    return {k: v for k, v in checked.model_dump(mode="json").items() if k in raw}
