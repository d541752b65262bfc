"""Webhook signatures, event-type patterns and URL checks — pure, no I/O.

Signature (Stripe-style): for a body ``B`` sent at unix time ``t`` with the webhook's
secret ``S``, the header is::

    X-Edgefleet-Signature: t=<t>,v1=<hex(HMAC-SHA256(S, f"{t}.".encode() + B))>

A receiver recomputes the HMAC over the *raw* body bytes with its copy of the secret,
compares in constant time, and refuses a ``t`` more than ``tolerance`` (5 min) away from
its clock, so a captured request cannot be replayed later. ``verify`` does exactly that
and is what a Python receiver can import.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets as _secrets
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from ..errors import BadRequest

SIGNATURE_HEADER = "X-Edgefleet-Signature"
DELIVERY_HEADER = "X-Edgefleet-Delivery"
EVENT_HEADER = "X-Edgefleet-Event"
TOLERANCE_S = 300

#: Every event type a webhook can subscribe to (patterns: ``rollout.*``, ``*``).
EVENT_TYPES = (
    "rollout.started", "rollout.wave_advanced", "rollout.paused", "rollout.breached",
    "rollout.rolled_back", "rollout.completed", "rollout.aborted",
    "device.stale", "device.offline", "drift.breach", "capture.new", "webhook.test",
)
PATTERN = r"^[a-z*][a-z_.*]{0,63}$"
_PATTERN = re.compile(PATTERN)


class SignatureError(ValueError):
    """A webhook request whose signature header is missing, malformed, too old or wrong."""


def new_secret() -> str:
    return "whsec_" + _secrets.token_urlsafe(32)


def signature_header(secret: str, body: bytes, t: int) -> str:
    mac = hmac.new(secret.encode(), f"{int(t)}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={int(t)},v1={mac}"


def verify(secret: str, header: str | None, body: bytes, now: float, tolerance: float = TOLERANCE_S) -> int:
    """Check a received webhook; returns its timestamp.

    Raises:
        SignatureError: missing or malformed header, timestamp outside ``tolerance`` of
            ``now``, or no ``v1`` signature matching ``secret``.
    """
    if not header:
        raise SignatureError(f"no {SIGNATURE_HEADER} header")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            parts.setdefault(key, []).append(value)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        raise SignatureError("signature header has no t=<unix time>") from None
    if abs(now - t) > tolerance:
        raise SignatureError(f"signature timestamp {t} is more than {tolerance:g}s from now")
    expected = signature_header(secret, body, t).split("v1=", 1)[1]
    if not any(hmac.compare_digest(expected, v) for v in parts.get("v1", [])):
        raise SignatureError("signature does not match")
    return t


def check_patterns(patterns: list[str]) -> list[str]:
    """Normalised event patterns; each must match at least one known event type.

    Raises:
        BadRequest: empty, malformed or matching nothing.
    """
    out: list[str] = []
    for raw in patterns:
        p = raw.strip()
        if not p:
            continue
        if not _PATTERN.match(p):
            raise BadRequest(f"invalid event pattern {p!r}: lowercase letters, '.', '_' and '*'")
        if not any(fnmatchcase(t, p) for t in EVENT_TYPES):
            raise BadRequest(f"event pattern {p!r} matches no event; events are {', '.join(EVENT_TYPES)}")
        if p not in out:
            out.append(p)
    if not out:
        raise BadRequest("name at least one event (e.g. 'rollout.*,device.stale')")
    return out


def subscribed(patterns: list[str], event_type: str) -> bool:
    return event_type == "webhook.test" or any(fnmatchcase(event_type, p) for p in patterns)


_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})


def check_url(url: str, *, allow_private: bool = False, allow_loopback: bool = False) -> str:
    """A webhook URL the controller may call (a guard against SSRF).

    Refused always: schemes other than http/https, credentials in the URL, link-local
    addresses (169.254.0.0/16 and fe80::/10: cloud metadata services), well-known metadata
    host names, unspecified and multicast addresses. Refused unless allowed: loopback
    (``allow_loopback``) and private/unique-local ranges (``allow_private``). Host names
    are checked again after resolution at delivery time (``check_address``).

    Raises:
        BadRequest: with the reason.
    """
    if len(url) > 2048:
        raise BadRequest("webhook URL longer than 2048 characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise BadRequest(f"webhook URL must be http:// or https://, got {parts.scheme or 'no'} scheme")
    if parts.username or parts.password:
        raise BadRequest("webhook URL must not carry credentials (use the signing secret)")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise BadRequest("webhook URL has no host")
    try:
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise BadRequest("webhook URL has an invalid port") from None
    if host in _METADATA_HOSTS:
        raise BadRequest(f"webhook host {host} is a cloud metadata service")
    if host == "localhost" or host.endswith(".localhost"):
        if not allow_loopback:
            raise BadRequest("webhook URL points at loopback; set [controller] webhook_allow_loopback = true to allow it")
        return url
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return url  # a name: checked after resolution
    check_address(address, allow_private=allow_private, allow_loopback=allow_loopback)
    return url


def check_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_private: bool,
                  allow_loopback: bool) -> None:
    """Raises ``BadRequest`` for an address a webhook must not reach (see ``check_url``)."""
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    if address.is_link_local or address.is_unspecified or address.is_multicast or address.is_reserved:
        raise BadRequest(f"webhook address {address} is link-local/reserved (cloud metadata lives there)")
    if address.is_loopback:
        if not allow_loopback:
            raise BadRequest(f"webhook address {address} is loopback; set [controller] webhook_allow_loopback = true")
        return
    if address.is_private and not allow_private:
        raise BadRequest(f"webhook address {address} is private; set [controller] webhook_allow_private = true")
