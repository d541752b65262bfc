"""Content-addressed, write-once blob storage on S3 or any S3-compatible store (cloud only).

Same contract as ``LocalBlobStore``: a blob is named by the sha256 of its bytes and lives
at ``{prefix}sha256/ab/abcd…`` (the local layout, so a local store can be synced to a
bucket as is). Bytes flow: caller → sha256 (+ ``expected_digest`` check) → HEAD (already
there? then no-op) → conditional PUT (``If-None-Match: *``) carrying an
``x-amz-checksum-sha256`` the server verifies. Files above ``multipart_threshold`` go up
as a multipart upload whose parts each carry their own SHA-256 and whose completion is
conditional too; the whole-file digest is recomputed while reading the parts and the
upload is aborted if the file changed. An object already at a key is never overwritten:
a racing writer's ``412 Precondition Failed`` means "already stored".

Reads: ``get`` and ``open`` verify the sha256 of what comes back (``open`` at EOF);
``read_range`` is a ranged GET for serving HTTP Range requests and cannot verify.

``boto3`` is imported only when a store builds its own client; this module must never
be imported by device-side code (``registry.stores.open_blob_store`` imports it lazily).
botocore errors are translated here: a missing key → ``BlobNotFound``; anything else
(network, permissions, missing bucket, throttling) → ``StorageError``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, BinaryIO

from botocore.exceptions import BotoCoreError, ClientError

from .blobstore import _HEX64, CHUNK, check_digest, sha256_bytes, sha256_file
from .errors import BlobNotFound, DigestMismatch, StorageError

MiB = 1024 * 1024
S3_MAX_PARTS = 10_000
S3_MIN_PART = 5 * MiB

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_PRECONDITION_FAILED = {"412", "PreconditionFailed"}
_CONDITIONAL_CONFLICT = {"409", "ConditionalRequestConflict"}
_INVALID_RANGE = {"416", "InvalidRange"}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def make_s3_client(
    *, endpoint_url: str | None = None, region: str | None = None, addressing_style: str | None = None
) -> Any:
    """A boto3 S3 client; credentials come from boto3's usual chain (env, profile, role).

    With a custom ``endpoint_url`` (MinIO, Ceph, moto …) path-style addressing is the
    default, since those rarely serve bucket-named virtual hosts.
    """
    import boto3
    from botocore.config import Config

    style = addressing_style or ("path" if endpoint_url else "auto")
    config = Config(s3={"addressing_style": style}, retries={"max_attempts": 5, "mode": "standard"})
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


class _VerifyingReader(io.RawIOBase):
    """Streams an S3 body, hashing it; at EOF refuses a body whose sha256 or length is wrong."""

    def __init__(self, body: Any, digest: str, size: int):
        self._body, self._digest, self._size = body, digest, size
        self._hash = hashlib.sha256()
        self._seen = 0
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = len(buffer)
        try:
            chunk = self._body.read(want)
        except (BotoCoreError, OSError) as exc:
            raise StorageError(f"reading blob {self._digest[:12]} failed: {exc}") from exc
        n = len(chunk)
        if n:
            buffer[:n] = chunk
            self._hash.update(chunk)
            self._seen += n
        elif not self._checked:
            self._checked = True
            actual = self._hash.hexdigest()
            if self._seen != self._size or actual != self._digest:
                raise DigestMismatch(self._digest, actual)
        return n

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class S3BlobStore:
    """Blobs in ``s3://bucket/{prefix}sha256/ab/abcd…``; implements ``BlobStore``.

    Args:
        bucket: an existing bucket.
        prefix: key prefix ("" or e.g. "edgefleet/prod"); a trailing "/" is added.
        endpoint_url: an S3-compatible endpoint (MinIO: ``http://host:9000``).
        region: the bucket's region.
        client: a ready boto3 S3 client (then endpoint_url/region/addressing_style are unused).
        multipart_threshold: ``put_file`` uses a multipart upload from this size on.
        part_size: multipart part size (raised automatically to stay under 10,000 parts).
        max_concurrency: parts uploaded in parallel (memory ≈ max_concurrency × part_size).
        addressing_style: "path", "virtual" or "auto" (default: "path" with endpoint_url).
        server_checksums: send ``x-amz-checksum-sha256`` so the server verifies the bytes;
            turn off only for an S3-compatible store that rejects those headers.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
        multipart_threshold: int = 16 * MiB,
        part_size: int = 8 * MiB,
        max_concurrency: int = 4,
        addressing_style: str | None = None,
        server_checksums: bool = True,
    ):
        if not bucket:
            raise ValueError("an S3 blob store needs a bucket name")
        if part_size < S3_MIN_PART:
            raise ValueError(f"part_size must be at least {S3_MIN_PART} bytes (S3 minimum)")
        self.bucket = bucket
        prefix = prefix.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        self.multipart_threshold = max(multipart_threshold, 1)
        self.part_size = part_size
        self.max_concurrency = max(max_concurrency, 1)
        self.server_checksums = server_checksums
        self.client = client if client is not None else make_s3_client(
            endpoint_url=endpoint_url, region=region, addressing_style=addressing_style
        )

    def __repr__(self) -> str:
        return f"S3BlobStore(s3://{self.bucket}/{self.prefix})"

    def key(self, digest: str) -> str:
        check_digest(digest)
        return f"{self.prefix}sha256/{digest[:2]}/{digest}"

    # -- reading ------------------------------------------------------------------

    def exists(self, digest: str) -> bool:
        try:
            self._head(digest)
        except BlobNotFound:
            return False
        return True

    def size(self, digest: str) -> int:
        return int(self._head(digest)["ContentLength"])

    def get(self, digest: str) -> bytes:
        with self._translate(digest):
            data: bytes = self.client.get_object(Bucket=self.bucket, Key=self.key(digest))["Body"].read()
        actual = sha256_bytes(data)
        if actual != digest:
            raise DigestMismatch(digest, actual)
        return data

    def open(self, digest: str) -> BinaryIO:
        """A streaming reader; raises ``DigestMismatch`` at EOF if the object was corrupted."""
        with self._translate(digest):
            resp = self.client.get_object(Bucket=self.bucket, Key=self.key(digest))
        raw = _VerifyingReader(resp["Body"], digest, int(resp["ContentLength"]))
        return io.BufferedReader(raw, CHUNK)  # type: ignore[return-value]

    def read_range(self, digest: str, start: int, length: int) -> bytes:
        """Up to ``length`` bytes from offset ``start`` (fewer at the end, b"" past it)."""
        if start < 0 or length < 0:
            raise ValueError("start and length must be >= 0")
        if length == 0:
            self.size(digest)  # BlobNotFound if absent
            return b""
        try:
            with self._translate(digest):
                resp = self.client.get_object(
                    Bucket=self.bucket, Key=self.key(digest), Range=f"bytes={start}-{start + length - 1}"
                )
                data: bytes = resp["Body"].read()
        except StorageError as exc:
            if isinstance(exc.__cause__, ClientError) and _code(exc.__cause__) in _INVALID_RANGE:
                return b""
            raise
        return data[:length]

    def iter_digests(self) -> Iterator[str]:
        root = f"{self.prefix}sha256/"
        paginator = self.client.get_paginator("list_objects_v2")
        with self._translate(None):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=root):
                for obj in page.get("Contents", ()):
                    rel = obj["Key"][len(root):]
                    shard, _, name = rel.partition("/")
                    if _HEX64.match(name) and shard == name[:2]:
                        yield name

    def presigned_url(self, digest: str, *, expires_s: int = 3600) -> str:
        """A time-limited GET URL, so a controller can redirect downloads to the bucket."""
        if not self.exists(digest):
            raise BlobNotFound(digest)
        with self._translate(digest):
            url: str = self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self.key(digest)}, ExpiresIn=expires_s
            )
        return url

    # -- writing ------------------------------------------------------------------

    def put(self, data: bytes, *, expected_digest: str | None = None) -> str:
        digest = sha256_bytes(data)
        if expected_digest is not None and digest != expected_digest:
            raise DigestMismatch(expected_digest, digest)
        if not self._already_stored(digest, len(data)):
            self._put_object(digest, data)
        return digest

    def put_file(self, path: str | os.PathLike[str], *, expected_digest: str | None = None) -> str:
        digest = sha256_file(path)
        if expected_digest is not None and digest != expected_digest:
            raise DigestMismatch(expected_digest, digest)
        size = os.path.getsize(path)
        if self._already_stored(digest, size):
            return digest
        if size < self.multipart_threshold:
            with open(path, "rb") as f:
                data = f.read()
            actual = sha256_bytes(data)
            if actual != digest:  # the file changed under us
                raise DigestMismatch(digest, actual)
            self._put_object(digest, data)
        else:
            self._multipart_upload(digest, path, size)
        return digest

    def _already_stored(self, digest: str, size: int) -> bool:
        """True if the blob is there; refuses (never repairs) an object of the wrong size."""
        try:
            head = self._head(digest)
        except BlobNotFound:
            return False
        if int(head["ContentLength"]) != size:
            raise StorageError(
                f"s3://{self.bucket}/{self.key(digest)} holds {head['ContentLength']} bytes, "
                f"expected {size}: corrupted object; write-once store will not overwrite it"
            )
        return True

    def _put_object(self, digest: str, data: bytes) -> None:
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self.key(digest),
            "Body": data,
            "IfNoneMatch": "*",
            "ContentType": "application/octet-stream",
        }
        if self.server_checksums:
            kwargs["ChecksumSHA256"] = _b64(digest)
        try:
            self.client.put_object(**kwargs)
        except ClientError as exc:
            self._after_conditional_write_error(exc, digest, len(data))
        except BotoCoreError as exc:
            raise StorageError(f"cannot store blob {digest[:12]}: {exc}") from exc

    def _after_conditional_write_error(self, exc: ClientError, digest: str, size: int) -> None:
        code = _code(exc)
        if code in _PRECONDITION_FAILED:  # someone stored this key first: same bytes by name
            self._already_stored(digest, size)
            return
        if code in _CONDITIONAL_CONFLICT and self._already_stored(digest, size):
            return
        raise StorageError(f"cannot store blob {digest[:12]}: {exc}") from exc

    def _multipart_upload(self, digest: str, path: str | os.PathLike[str], size: int) -> None:
        key = self.key(digest)
        part_size = max(self.part_size, -(-size // S3_MAX_PARTS))
        create: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "ContentType": "application/octet-stream"}
        if self.server_checksums:
            create["ChecksumAlgorithm"] = "SHA256"
        try:
            upload_id = self.client.create_multipart_upload(**create)["UploadId"]
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"cannot start upload of blob {digest[:12]}: {exc}") from exc
        try:
            parts = self._upload_parts(key, upload_id, path, part_size, digest)
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id,
                MultipartUpload={"Parts": parts}, IfNoneMatch="*",
            )
        except BaseException as exc:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except (ClientError, BotoCoreError):
                pass  # a lifecycle rule for incomplete uploads cleans up what is left
            if isinstance(exc, ClientError):
                self._after_conditional_write_error(exc, digest, size)
                return
            if isinstance(exc, BotoCoreError):
                raise StorageError(f"cannot store blob {digest[:12]}: {exc}") from exc
            raise

    def _upload_parts(
        self, key: str, upload_id: str, path: str | os.PathLike[str], part_size: int, digest: str
    ) -> list[dict[str, Any]]:
        h = hashlib.sha256()
        parts: list[dict[str, Any]] = []
        pending: deque[Future[dict[str, Any]]] = deque()
        with ThreadPoolExecutor(self.max_concurrency) as pool, open(path, "rb") as f:
            number = 0
            while chunk := f.read(part_size):
                number += 1
                h.update(chunk)
                pending.append(pool.submit(self._upload_part, key, upload_id, number, chunk))
                if len(pending) >= self.max_concurrency:
                    parts.append(pending.popleft().result())
            parts.extend(fut.result() for fut in pending)
        if h.hexdigest() != digest:  # the file changed between hashing and uploading
            raise DigestMismatch(digest, h.hexdigest())
        return parts

    def _upload_part(self, key: str, upload_id: str, number: int, chunk: bytes) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket, "Key": key, "UploadId": upload_id, "PartNumber": number, "Body": chunk,
        }
        part: dict[str, Any] = {"PartNumber": number}
        if self.server_checksums:
            kwargs["ChecksumSHA256"] = part["ChecksumSHA256"] = base64.b64encode(
                hashlib.sha256(chunk).digest()
            ).decode()
        part["ETag"] = self.client.upload_part(**kwargs)["ETag"]
        return part

    # -- errors -------------------------------------------------------------------

    def _head(self, digest: str) -> dict[str, Any]:
        with self._translate(digest):
            head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=self.key(digest))
        return head

    @contextmanager
    def _translate(self, digest: str | None) -> Iterator[None]:
        """botocore errors → registry errors (the httpx ``map_exceptions`` pattern)."""
        try:
            yield
        except ClientError as exc:
            if digest is not None and _code(exc) in _NOT_FOUND:
                raise BlobNotFound(digest) from None
            raise StorageError(f"S3 request to bucket {self.bucket!r} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 request to bucket {self.bucket!r} failed: {exc}") from exc
