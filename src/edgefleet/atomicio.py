"""Crash-safe file writes shared by every package (device state, keys, metadata, engines, uploads).

``atomic_write`` writes to a temporary file in the same directory, fsyncs it, sets its
mode and renames it over the destination, so a reader sees the old bytes or the new ones,
never a mix; with ``fsync_dir`` the rename itself is made durable too. Imports nothing
of ours, so ``protocols``-only layers (``hardware``, ``shadow``) may use it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    mode: int | None = None,
    fsync: bool = True,
    fsync_dir: bool = False,
    temp_prefix: str | None = None,
) -> None:
    """Replace ``path`` with ``data`` atomically (parent directories are created).

    Args:
        mode: permission bits of the new file (``mkstemp``'s 0o600 when None).
        fsync: flush the file to disk before the rename.
        fsync_dir: also fsync the directory, so the rename survives a power cut.
        temp_prefix: name prefix of the temporary file (default ``.<name>.``).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=temp_prefix or f".{final.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if fsync_dir:
        dir_fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
