"""Where signed metadata lives: a small key→bytes store with atomic replacement.

The repositories write every versioned file (``3.snapshot.json``) once and replace only
the non-versioned pointers (``timestamp.json``, ``root.json``), each write atomic, so an
HTTP reader never sees half a file. ``LocalMetadataStore`` keeps files under a directory
and can hand out a path for zero-copy serving; an S3 implementation only needs the four
methods of ``MetadataStore``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

from ...atomicio import atomic_write
from .errors import RepositoryStateError


@runtime_checkable
class MetadataStore(Protocol):
    def read(self, name: str) -> bytes:
        """Raises FileNotFoundError if absent."""
        ...

    def write(self, name: str, data: bytes) -> None: ...

    def exists(self, name: str) -> bool: ...

    def list(self, prefix: str) -> list[str]: ...


def check_store_name(name: str) -> str:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in name:
        raise RepositoryStateError(f"bad metadata name {name!r}")
    return name


class LocalMetadataStore:
    """Metadata files under a directory; ``fsync`` makes each write durable before rename."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync

    def path(self, name: str) -> Path:
        return self.root / check_store_name(name)

    def read(self, name: str) -> bytes:
        return self.path(name).read_bytes()

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.root)) for p in base.iterdir() if not p.name.startswith(".")
        )

    def write(self, name: str, data: bytes) -> None:
        atomic_write(self.path(name), data, mode=0o644, fsync=self.fsync, temp_prefix=".tmp-")
