"""S3-only behaviour of ``S3BlobStore`` against moto's S3 server: write-once under races,
multipart uploads, verified reads, error translation."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from edgefleet.registry import BlobNotFound, DigestMismatch, StorageError, sha256_bytes
from edgefleet.registry.s3store import S3BlobStore

MiB = 1024 * 1024


def _big_file(tmp_path: Path, mib: int = 12) -> Path:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(mib * MiB))
    return path


def _head_missed_once(store: S3BlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulate a racing writer: our HEAD saw nothing, someone else stored the key since."""
    real = store._already_stored
    calls = {"n": 0}

    def already_stored(digest: str, size: int) -> bool:
        calls["n"] += 1
        return False if calls["n"] == 1 else real(digest, size)

    monkeypatch.setattr(store, "_already_stored", already_stored)


def test_blobs_live_under_the_prefix_in_the_local_layout(s3_store: S3BlobStore, s3_client: Any) -> None:
    digest = s3_store.put(b"layout")
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_store.bucket)["Contents"]]
    assert keys == [f"fleet/artifacts/sha256/{digest[:2]}/{digest}"]


def test_a_raw_conditional_put_cannot_overwrite_a_blob(s3_store: S3BlobStore, s3_client: Any) -> None:
    data = b"signed artifact"
    digest = s3_store.put(data)
    with pytest.raises(ClientError) as info:
        s3_client.put_object(Bucket=s3_store.bucket, Key=s3_store.key(digest), Body=b"evil", IfNoneMatch="*")
    assert info.value.response["Error"]["Code"] == "PreconditionFailed"
    assert s3_store.get(digest) == data


def test_a_racing_writer_wins_and_our_put_becomes_a_noop(
    s3_store: S3BlobStore, s3_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"same bytes from two controllers"
    digest = sha256_bytes(data)
    s3_client.put_object(Bucket=s3_store.bucket, Key=s3_store.key(digest), Body=data, Metadata={"writer": "other"})
    _head_missed_once(s3_store, monkeypatch)
    assert s3_store.put(data) == digest  # the conditional PUT got 412: already stored
    head = s3_client.head_object(Bucket=s3_store.bucket, Key=s3_store.key(digest))
    assert head["Metadata"] == {"writer": "other"}  # not rewritten


def test_a_racing_writer_wins_during_a_multipart_upload(
    s3_store: S3BlobStore, s3_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _big_file(tmp_path)
    data = path.read_bytes()
    digest = sha256_bytes(data)
    s3_client.put_object(Bucket=s3_store.bucket, Key=s3_store.key(digest), Body=data, Metadata={"writer": "other"})
    _head_missed_once(s3_store, monkeypatch)
    assert s3_store.put_file(path) == digest  # CompleteMultipartUpload got 412
    head = s3_client.head_object(Bucket=s3_store.bucket, Key=s3_store.key(digest))
    assert head["Metadata"] == {"writer": "other"}
    assert s3_client.list_multipart_uploads(Bucket=s3_store.bucket).get("Uploads", []) == []


def test_large_files_go_up_as_multipart_with_per_part_checksums(
    s3_store: S3BlobStore, s3_client: Any, tmp_path: Path
) -> None:
    path = _big_file(tmp_path)  # 12 MiB, 5 MiB parts → 3 parts
    digest = s3_store.put_file(path)
    head = s3_client.head_object(Bucket=s3_store.bucket, Key=s3_store.key(digest))
    assert head["ETag"].strip('"').endswith("-3")
    assert s3_store.get(digest) == path.read_bytes()


@pytest.mark.parametrize("size_mib", [1, 12])  # single PUT, multipart
def test_a_file_that_changes_while_uploading_is_refused_and_nothing_stored(
    s3_store: S3BlobStore, s3_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size_mib: int
) -> None:
    path = _big_file(tmp_path, size_mib)
    hashed_before_change = sha256_bytes(b"the file as it was when hashed")
    monkeypatch.setattr("edgefleet.registry.s3store.sha256_file", lambda p: hashed_before_change)
    with pytest.raises(DigestMismatch):
        s3_store.put_file(path)
    assert list(s3_store.iter_digests()) == []
    assert s3_client.list_multipart_uploads(Bucket=s3_store.bucket).get("Uploads", []) == []


def test_a_corrupted_object_is_detected_on_read_and_never_repaired(
    s3_store: S3BlobStore, s3_client: Any
) -> None:
    data = b"the real model"
    digest = sha256_bytes(data)
    s3_client.put_object(Bucket=s3_store.bucket, Key=s3_store.key(digest), Body=b"tampered bytes!!")
    with pytest.raises(DigestMismatch):
        s3_store.get(digest)
    with pytest.raises(DigestMismatch), s3_store.open(digest) as f:
        f.read()
    with pytest.raises(StorageError, match="will not overwrite"):
        s3_store.put(data)
    raw = s3_client.get_object(Bucket=s3_store.bucket, Key=s3_store.key(digest))["Body"].read()
    assert raw == b"tampered bytes!!"


def test_iter_digests_ignores_foreign_keys(s3_store: S3BlobStore, s3_client: Any) -> None:
    digest = s3_store.put(b"ours")
    for key in ["fleet/artifacts/sha256/zz/notes.txt", "fleet/artifacts/sha256/00/" + digest,
                "fleet/other/" + digest, "unrelated"]:
        s3_client.put_object(Bucket=s3_store.bucket, Key=key, Body=b"x")
    assert list(s3_store.iter_digests()) == [digest]


def test_a_presigned_url_serves_the_blob_over_http(s3_store: S3BlobStore) -> None:
    data = os.urandom(2048)
    digest = s3_store.put(data)
    assert httpx.get(s3_store.presigned_url(digest, expires_s=60)).content == data
    with pytest.raises(BlobNotFound):
        s3_store.presigned_url(sha256_bytes(b"absent"))


def test_a_missing_bucket_is_a_storage_error(s3_endpoint: str, aws_env: None) -> None:
    store = S3BlobStore("no-such-bucket-here", endpoint_url=s3_endpoint, region="us-east-1")
    with pytest.raises(StorageError):
        store.put(b"x")
    with pytest.raises(StorageError):
        list(store.iter_digests())


def test_an_unreachable_endpoint_is_a_storage_error(aws_env: None) -> None:
    import boto3
    from botocore.config import Config

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    client = boto3.client(
        "s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=1),
    )
    store = S3BlobStore("bucket", client=client)
    with pytest.raises(StorageError):
        store.put(b"x")
    with pytest.raises(StorageError):
        store.get(sha256_bytes(b"x"))


def test_a_part_size_below_the_s3_minimum_is_refused() -> None:
    with pytest.raises(ValueError):
        S3BlobStore("b", client=object(), part_size=1024)
