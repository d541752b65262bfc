"""Target names: what a safe TUF target path looks like, and how releases are named.

A target path is a relative URL path (``digits/1.2.0/r7.tar``). Both the repository
(before signing) and the device (before looking a name up or building a URL from it)
refuse anything that could escape a directory or smuggle a separator past a check:
``..`` or ``.`` segments, a leading ``/``, empty segments, backslashes, control
characters, and percent-encodings of ``/``, ``\\`` or ``.``.

Device-safe: standard library only.
"""

from __future__ import annotations

import re

from .errors import BadTargetName

MAX_TARGET_NAME = 512
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+\-]*$")
_ENCODED = re.compile(r"%(2f|5c|2e|00)", re.IGNORECASE)


def check_target_name(name: str, *, strict: bool = True) -> str:
    """Return ``name`` if it is a safe relative target path.

    ``strict`` (the default, used for everything edgefleet signs) also limits each
    segment to letters, digits and ``_.+-``; the conformance client passes
    ``strict=False`` and accepts any name that cannot escape or hide a separator.

    Raises:
        BadTargetName: the name could escape a directory or hides a separator.
    """
    if not isinstance(name, str) or not name:
        raise BadTargetName("empty target name")
    if len(name) > MAX_TARGET_NAME:
        raise BadTargetName(f"target name longer than {MAX_TARGET_NAME} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise BadTargetName(f"control character in target name {name!r}")
    if "\\" in name:
        raise BadTargetName(f"backslash in target name {name!r}")
    if _ENCODED.search(name) or (strict and "%" in name):
        raise BadTargetName(f"percent-encoding in target name {name!r}")
    if name.startswith("/"):
        raise BadTargetName(f"absolute target name {name!r}")
    for segment in name.split("/"):
        if segment in ("", ".", ".."):
            raise BadTargetName(f"empty, '.' or '..' segment in target name {name!r}")
        if strict and not _SEGMENT.match(segment):
            raise BadTargetName(f"unsafe characters in target name {name!r}")
    return name


def release_target_name(model: str, version: str, release_counter: int) -> str:
    """The image-repository name of one release: ``<model>/<version>/r<counter>.tar``.

    The counter is part of the name so that the same bytes can be re-released under a
    higher counter (a fleet-wide rollback) without ever overwriting a signed target.
    """
    if release_counter < 1:
        raise ValueError("release_counter must be >= 1")
    return check_target_name(f"{model}/{version}/r{release_counter}.tar")


def hash_prefixed_path(name: str, digest: str) -> str:
    """The consistent-snapshot path of a target: ``<dir>/<digest>.<basename>``."""
    dirname, sep, basename = name.rpartition("/")
    return f"{dirname}{sep}{digest}.{basename}"
