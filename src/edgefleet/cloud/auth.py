"""API and device tokens: random secrets shown once, stored as sha256 hashes.

Roles are ordered: viewer < reviewer < operator < admin; each includes the ones before.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

ROLES = ("viewer", "reviewer", "operator", "admin")


def new_token(prefix: str = "efk") -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, token_hash: str | None) -> bool:
    return token_hash is not None and hmac.compare_digest(hash_token(token), token_hash)


def role_allows(role: str, needed: str) -> bool:
    """True when ``role`` includes ``needed`` (admin ⊇ operator ⊇ reviewer ⊇ viewer)."""
    if role not in ROLES or needed not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(needed)
