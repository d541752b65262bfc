"""Device selection expressions: ``--select tag:depot=7,hw:orin-agx``.

Text flows in through ``parse_selector``, which returns an immutable ``Selector``; the
reconciler then asks ``selector.matches(device)`` of each device it knows. Nothing here
touches a database: a device is anything with ``device_id``, ``hardware_id`` and ``tags``.

Grammar (whitespace around terms is ignored)::

    expr   := term ("," term)*            comma = AND
    term   := ["!"] atom                  "!" negates one term
    atom   := "all"
            | "tag:" KEY                  the device has tag KEY (any value)
            | "tag:" KEY "=" V ("|" V)*   tag KEY equals one of the values
            | "hw:" P ("|" P)*            hardware profile, see below
            | "device:" ID ("|" ID)*      exact device ids
            | "id:" GLOB ("|" GLOB)*      device id glob (fnmatch: * ? [..]), case-sensitive

``hw:P`` matches a profile equal to ``P`` or starting with ``P-``: ``hw:jetson-orin`` matches
``jetson-orin``, ``jetson-orin-nano`` and ``jetson-orin-agx`` but not ``jetson-orinx``. A ``P``
containing glob characters is matched as a glob instead (``hw:*-nano``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Protocol

from .errors import SelectorSyntaxError

_KEY = re.compile(r"[A-Za-z0-9_.\-/]+\Z")
_VALUE = re.compile(r"[^\s,|=!]+\Z")
_PROFILE = re.compile(r"[A-Za-z0-9_.\-*?\[\]]+\Z")
_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}\Z")
_GLOB = re.compile(r"[A-Za-z0-9_.\-*?\[\]!]+\Z")
_GLOB_CHARS = frozenset("*?[")
KINDS = ("tag", "hw", "device", "id")


class Selectable(Protocol):
    """What a selector looks at. ``DeviceInfo`` and ``DeviceObservation`` both qualify."""

    @property
    def device_id(self) -> str: ...
    @property
    def hardware_id(self) -> str: ...
    @property
    def tags(self) -> Mapping[str, str]: ...


@dataclass(frozen=True)
class DeviceInfo:
    """The static facts about one device that selection and wave assignment use."""

    device_id: str
    hardware_id: str = "cpu-generic"
    tags: Mapping[str, str] = field(default_factory=dict)
    online: bool = True


@dataclass(frozen=True)
class Term:
    """One comma-separated term. ``values`` is empty for ``all`` and for bare ``tag:KEY``."""

    kind: str  # "all" | "tag" | "hw" | "device" | "id"
    key: str | None = None
    values: tuple[str, ...] = ()
    negated: bool = False

    def matches(self, device: Selectable) -> bool:
        return self._raw_match(device) != self.negated

    def _raw_match(self, device: Selectable) -> bool:
        if self.kind == "all":
            return True
        if self.kind == "tag":
            assert self.key is not None
            if self.key not in device.tags:
                return False
            return not self.values or device.tags[self.key] in self.values
        if self.kind == "hw":
            return any(_profile_matches(p, device.hardware_id) for p in self.values)
        if self.kind == "device":
            return device.device_id in self.values
        return any(fnmatchcase(device.device_id, g) for g in self.values)

    def __str__(self) -> str:
        bang = "!" if self.negated else ""
        if self.kind == "all":
            return f"{bang}all"
        if self.kind == "tag":
            tail = f"={'|'.join(self.values)}" if self.values else ""
            return f"{bang}tag:{self.key}{tail}"
        return f"{bang}{self.kind}:{'|'.join(self.values)}"


def _profile_matches(pattern: str, profile: str) -> bool:
    if _GLOB_CHARS.intersection(pattern):
        return fnmatchcase(profile, pattern)
    return profile == pattern or profile.startswith(pattern + "-")


@dataclass(frozen=True)
class Selector:
    """An AND of terms. ``str(selector)`` is the canonical text; it parses back to an equal one."""

    terms: tuple[Term, ...]

    def matches(self, device: Selectable) -> bool:
        return all(t.matches(device) for t in self.terms)

    def select(self, devices: Iterable[Selectable]) -> list[Selectable]:
        """The devices that match, in the order given."""
        return [d for d in devices if self.matches(d)]

    def __str__(self) -> str:
        return ",".join(str(t) for t in self.terms)


def parse_selector(text: str) -> Selector:
    """Parse a selection expression.

    Raises:
        SelectorSyntaxError: the message names the problem and points at it.
    """
    if not isinstance(text, str) or not text.strip():
        raise SelectorSyntaxError(
            "empty selector; use 'all' to select every device", text=text if text else ""
        )
    terms: list[Term] = []
    pos = 0
    for raw in text.split(","):
        lead = len(raw) - len(raw.lstrip())
        terms.append(_parse_term(raw.strip(), text, pos + lead))
        pos += len(raw) + 1
    return Selector(tuple(terms))


def _parse_term(term: str, text: str, at: int) -> Term:
    if not term:
        raise SelectorSyntaxError("empty term (two commas in a row, or a trailing comma)",
                                  text=text, position=at)
    negated = term.startswith("!")
    if negated:
        term, at = term[1:].lstrip(), at + 1
    if term == "all":
        return Term("all", negated=negated)
    kind, colon, body = term.partition(":")
    if not colon:
        raise SelectorSyntaxError(
            f"term {term!r} is not KIND:VALUE; kinds are {', '.join(KINDS)} (or 'all')",
            text=text, position=at)
    if kind not in KINDS:
        raise SelectorSyntaxError(
            f"unknown selector kind {kind!r}; kinds are {', '.join(KINDS)} (or 'all')",
            text=text, position=at)
    body_at = at + len(kind) + 1
    if kind == "tag":
        key, eq, rest = body.partition("=")
        _check(key, _KEY, "tag key", text, body_at)
        if not eq:
            return Term("tag", key=key, negated=negated)
        values = _alternatives(rest, _VALUE, "tag value", text, body_at + len(key) + 1)
        return Term("tag", key=key, values=values, negated=negated)
    pattern, what = {
        "hw": (_PROFILE, "hardware profile"),
        "device": (_DEVICE_ID, "device id"),
        "id": (_GLOB, "device id glob"),
    }[kind]
    return Term(kind, values=_alternatives(body, pattern, what, text, body_at), negated=negated)


def _alternatives(body: str, pattern: re.Pattern[str], what: str, text: str,
                  at: int) -> tuple[str, ...]:
    out: list[str] = []
    for part in body.split("|"):
        _check(part, pattern, what, text, at)
        if part not in out:
            out.append(part)
        at += len(part) + 1
    return tuple(out)


def _check(value: str, pattern: re.Pattern[str], what: str, text: str, at: int) -> None:
    if not value:
        raise SelectorSyntaxError(f"missing {what}", text=text, position=at)
    if not pattern.match(value):
        bad = next((i for i in range(len(value)) if not pattern.match(value[: i + 1])), 0)
        raise SelectorSyntaxError(f"invalid character in {what} {value!r}",
                                  text=text, position=at + bad)
