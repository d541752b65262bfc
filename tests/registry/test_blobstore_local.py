from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from edgefleet.registry import BlobNotFound, DigestMismatch, LocalBlobStore


def test_put_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    d1 = store.put(b"hello")
    assert d1 == hashlib.sha256(b"hello").hexdigest()
    mtime = store.path(d1).stat().st_mtime_ns
    assert store.put(b"hello") == d1
    assert store.path(d1).stat().st_mtime_ns == mtime  # not rewritten
    assert store.get(d1) == b"hello" and store.size(d1) == 5
    assert list(store.iter_digests()) == [d1]


def test_existing_blob_is_never_overwritten(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    digest = store.put(b"original")
    store._write(digest, [b"original"])  # a racing second writer: link fails, nothing changes
    assert store.get(digest) == b"original"
    assert not (store.path(digest).stat().st_mode & 0o222)  # read-only on disk


def test_expected_digest_mismatch_stores_nothing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    with pytest.raises(DigestMismatch):
        store.put(b"data", expected_digest="0" * 64)
    assert list(store.iter_digests()) == []
    assert not list(tmp_path.rglob(".tmp-*"))


def test_missing_and_malformed_digests(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    with pytest.raises(BlobNotFound):
        store.get("a" * 64)
    with pytest.raises(BlobNotFound):
        store.get("../../etc/passwd")
    assert not store.exists("../x")


def test_put_file_streams(tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(b"x" * (3 * 1024 * 1024 + 7))
    store = LocalBlobStore(tmp_path / "store")
    digest = store.put_file(src)
    assert store.size(digest) == src.stat().st_size
