"""The ``BlobStore`` contract, pinned once and run against every store (local dir, S3 via moto)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from edgefleet.registry import BlobNotFound, BlobStore, DigestMismatch, sha256_bytes
from edgefleet.registry.stores import read_range

MiB = 1024 * 1024


def test_put_then_get_returns_the_same_bytes(store: BlobStore) -> None:
    data = b"model bytes \x00\x01\x02" * 100
    digest = store.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.exists(digest)
    assert store.size(digest) == len(data)
    assert store.get(digest) == data
    with store.open(digest) as f:
        assert f.read() == data


def test_empty_blob_roundtrips(store: BlobStore) -> None:
    digest = store.put(b"")
    assert store.get(digest) == b""
    assert store.size(digest) == 0


def test_storing_the_same_bytes_twice_is_a_noop(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(4096)
    first = store.put(data)
    second = store.put(data, expected_digest=first)
    path = tmp_path / "same.bin"
    path.write_bytes(data)
    third = store.put_file(path)
    assert first == second == third
    assert list(store.iter_digests()) == [first]
    assert store.get(first) == data


def test_expected_digest_mismatch_is_refused_and_nothing_stored(store: BlobStore, tmp_path: Path) -> None:
    data = b"what the operator pushed"
    wrong = sha256_bytes(b"what the signed metadata says")
    with pytest.raises(DigestMismatch) as info:
        store.put(data, expected_digest=wrong)
    assert info.value.expected == wrong and info.value.actual == sha256_bytes(data)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    with pytest.raises(DigestMismatch):
        store.put_file(path, expected_digest=wrong)
    assert not store.exists(wrong)
    assert not store.exists(sha256_bytes(data))
    assert list(store.iter_digests()) == []


def test_an_existing_blob_is_never_overwritten_through_the_store(store: BlobStore) -> None:
    original = b"signed artifact v1"
    digest = store.put(original)
    with pytest.raises(DigestMismatch):
        store.put(b"something else entirely", expected_digest=digest)
    assert store.get(digest) == original
    assert sha256_bytes(store.get(digest)) == digest


@pytest.mark.parametrize("op", ["get", "size", "open", "read_range"])
def test_a_missing_blob_raises_blob_not_found(store: BlobStore, op: str) -> None:
    digest = sha256_bytes(b"never stored")
    assert not store.exists(digest)
    with pytest.raises(BlobNotFound) as info:
        if op == "open":
            store.open(digest).close()
        elif op == "read_range":
            read_range(store, digest, 0, 10)
        else:
            getattr(store, op)(digest)
    assert info.value.digest == digest


@pytest.mark.parametrize("bad", ["", "abc", "G" * 64, "../" + "a" * 61, "A" * 64])
def test_a_malformed_digest_is_not_found_and_never_a_path(store: BlobStore, bad: str) -> None:
    assert not store.exists(bad)
    with pytest.raises(BlobNotFound):
        store.get(bad)


def test_iter_digests_lists_every_blob_once_in_order(store: BlobStore) -> None:
    digests = {store.put(f"blob {i}".encode()) for i in range(25)}
    listed = list(store.iter_digests())
    assert listed == sorted(digests)


def test_a_large_file_roundtrips_through_put_file(store: BlobStore, tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for i in range(20):
            f.write(block[i:] + block[:i])
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    digest = store.put_file(path, expected_digest=expected)
    assert digest == expected
    assert store.size(digest) == 20 * MiB
    h = hashlib.sha256()
    with store.open(digest) as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    assert h.hexdigest() == expected
    assert store.put_file(path) == digest  # second time: no-op


@pytest.mark.parametrize(
    ("start", "length", "want"),
    [
        (0, 10, slice(0, 10)),
        (1000, 5000, slice(1000, 6000)),
        (9990, 100, slice(9990, 10000)),  # runs past the end: what is there
        (0, 10000, slice(0, 10000)),
        (10000, 10, slice(0, 0)),  # past the end
        (500, 0, slice(0, 0)),
    ],
)
def test_read_range_returns_the_requested_slice(store: BlobStore, start: int, length: int, want: slice) -> None:
    data = os.urandom(10000)
    digest = store.put(data)
    assert read_range(store, digest, start, length) == data[want]


def test_read_range_refuses_negative_offsets(store: BlobStore) -> None:
    digest = store.put(b"x")
    with pytest.raises(ValueError):
        read_range(store, digest, -1, 1)
