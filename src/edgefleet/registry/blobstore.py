"""Content-addressed, write-once blob storage.

Blobs are named by the sha256 of their bytes. ``put`` writes to a temporary file in
the same directory and links it into place, so a reader never sees a partial blob and
an existing blob is never overwritten: storing the same bytes twice is a no-op.

``BlobStore`` is the interface; ``LocalBlobStore`` keeps blobs under a directory
(``blobs/sha256/ab/abcd…``). The S3 store lives in ``registry.s3store`` so that the
device side never imports boto3.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from .errors import BlobNotFound, DigestMismatch, StorageError

CHUNK = 1024 * 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_digest(digest: str) -> str:
    if not _HEX64.match(digest):
        raise BlobNotFound(digest)
    return digest


@runtime_checkable
class BlobStore(Protocol):
    def put(self, data: bytes, *, expected_digest: str | None = None) -> str: ...

    def put_file(self, path: str | os.PathLike[str], *, expected_digest: str | None = None) -> str: ...

    def exists(self, digest: str) -> bool: ...

    def size(self, digest: str) -> int: ...

    def get(self, digest: str) -> bytes: ...

    def open(self, digest: str) -> BinaryIO: ...

    def iter_digests(self) -> Iterator[str]: ...


class LocalBlobStore:
    """Blobs in a local directory, sharded by the first two hex digits."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        check_digest(digest)
        return self.root / "sha256" / digest[:2] / digest

    def exists(self, digest: str) -> bool:
        try:
            return self.path(digest).is_file()
        except BlobNotFound:
            return False

    def size(self, digest: str) -> int:
        p = self.path(digest)
        try:
            return p.stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def get(self, digest: str) -> bytes:
        with self.open(digest) as f:
            return f.read()

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def iter_digests(self) -> Iterator[str]:
        for shard in sorted((self.root / "sha256").iterdir()):
            if shard.is_dir():
                for p in sorted(shard.iterdir()):
                    if _HEX64.match(p.name):
                        yield p.name

    def put(self, data: bytes, *, expected_digest: str | None = None) -> str:
        digest = sha256_bytes(data)
        if expected_digest is not None and digest != expected_digest:
            raise DigestMismatch(expected_digest, digest)
        if self.exists(digest):
            return digest
        self._write(digest, [data])
        return digest

    def put_file(self, path: str | os.PathLike[str], *, expected_digest: str | None = None) -> str:
        digest = sha256_file(path)
        if expected_digest is not None and digest != expected_digest:
            raise DigestMismatch(expected_digest, digest)
        if self.exists(digest):
            return digest

        def chunks() -> Iterator[bytes]:
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk

        self._write(digest, chunks())
        return digest

    def _write(self, digest: str, chunks: Iterator[bytes] | list[bytes]) -> None:
        final = self.path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    h.update(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            if h.hexdigest() != digest:  # the source changed under us
                raise DigestMismatch(digest, h.hexdigest())
            os.chmod(tmp, 0o444)
            try:
                os.link(tmp, final)  # fails if present: never overwrite
            except FileExistsError:
                pass
        except OSError as exc:
            raise StorageError(f"cannot store blob {digest[:12]}: {exc}") from exc
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
