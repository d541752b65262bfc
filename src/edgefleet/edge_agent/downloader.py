"""Resumable HTTP download of a bundle into ``<dest>.part``, then a sha256 check.

A partial file survives restarts: the next attempt asks for ``Range: bytes=<size>-``.
Never more bytes than expected are written; a mismatching digest deletes the partial
file (the bytes are wrong, resuming them would not help).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import httpx

from .errors import DigestMismatch, DiskFull, DownloadFailed

log = logging.getLogger(__name__)
CHUNK = 256 * 1024


def _hash_existing(path: Path) -> tuple[hashlib._Hash, int]:
    h = hashlib.sha256()
    size = 0
    if path.exists():
        with open(path, "rb") as f:
            while chunk := f.read(1024 * 1024):
                h.update(chunk)
                size += len(chunk)
    return h, size


def download(
    client: httpx.Client,
    url: str,
    dest: Path,
    *,
    expected_size: int,
    expected_digest: str,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Fetch ``url`` into ``dest`` (atomically), resuming a previous partial download.

    Raises:
        DownloadFailed: transport errors, HTTP errors, a server sending too much.
        DigestMismatch: the complete file does not hash to ``expected_digest``.
        DiskFull: no space left while writing.
    """
    if dest.exists():
        return dest
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    h, have = _hash_existing(part)
    if have > expected_size:
        part.unlink()
        h, have = hashlib.sha256(), 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        if have < expected_size:
            with client.stream("GET", url, headers=headers) as resp:
                if resp.status_code == 200 and have:
                    part.unlink()  # server ignored Range: start over
                    h, have = hashlib.sha256(), 0
                elif resp.status_code not in (200, 206):
                    raise DownloadFailed(f"GET {url}: HTTP {resp.status_code}")
                with open(part, "ab") as f:
                    for chunk in resp.iter_bytes(CHUNK):
                        if have + len(chunk) > expected_size:
                            raise DownloadFailed(f"GET {url}: server sent more than the expected {expected_size} bytes")
                        f.write(chunk)
                        h.update(chunk)
                        have += len(chunk)
                        if progress:
                            progress(have, expected_size)
                    f.flush()
                    os.fsync(f.fileno())
    except httpx.HTTPError as exc:
        raise DownloadFailed(f"GET {url}: {exc}") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFull(f"disk full while downloading {url}") from None
        raise DownloadFailed(f"writing {part}: {exc}") from None
    if have != expected_size:
        raise DownloadFailed(f"GET {url}: got {have} of {expected_size} bytes; will resume")
    digest = h.hexdigest()
    if digest != expected_digest:
        part.unlink(missing_ok=True)
        raise DigestMismatch(f"bundle from {url} hashes to {digest[:12]}…, expected {expected_digest[:12]}…")
    os.replace(part, dest)
    return dest
