"""Choosing a blob store from configuration, and store-independent helpers.

``open_blob_store(url)`` turns one configuration string into a ``BlobStore``:

* ``/var/lib/edgefleet/blobs``, ``./blobs`` or ``file:///var/lib/edgefleet/blobs`` → ``LocalBlobStore``
* ``s3://bucket/some/prefix?endpoint_url=http://127.0.0.1:9000&region=us-east-1`` → ``S3BlobStore``
  (query keys: ``endpoint_url``, ``region``, ``addressing_style``, ``server_checksums``)

The controller reads the URL once at its entry point from ``EDGEFLEET_STORE_URL``
(``blob_store_from_env``); AWS credentials come from boto3's usual chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, instance roles).
boto3 is imported only when an ``s3://`` URL is opened, so importing this module stays
device-safe.

``read_range(store, digest, start, length)`` serves HTTP Range requests from either
store: a ranged GET on S3, ``open`` + ``seek`` elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from .blobstore import CHUNK, BlobStore, LocalBlobStore

STORE_URL_ENV = "EDGEFLEET_STORE_URL"
_S3_QUERY_KEYS = {"endpoint_url", "region", "addressing_style", "server_checksums"}
_FALSE = {"0", "false", "no", "off"}


def open_blob_store(url: str) -> BlobStore:
    """A blob store for ``url`` (see the module docstring).

    Raises:
        ValueError: an unsupported scheme, a missing bucket, or an unknown query key.
    """
    url = url.strip()
    if not url:
        raise ValueError("empty blob store URL")
    if "://" not in url:
        return LocalBlobStore(Path(url).expanduser())
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URL must be file:///absolute/path, got {url!r}")
        if parts.query:
            raise ValueError(f"file URL takes no query: {url!r}")
        return LocalBlobStore(unquote(parts.path))
    if scheme == "s3":
        return _open_s3(url, parts.netloc, unquote(parts.path), parts.query)
    raise ValueError(f"unsupported blob store URL scheme {parts.scheme!r} (use a path, file:// or s3://)")


def _open_s3(url: str, bucket: str, path: str, query: str) -> BlobStore:
    if not bucket:
        raise ValueError(f"S3 URL needs a bucket: s3://BUCKET/prefix, got {url!r}")
    options = dict(parse_qsl(query, keep_blank_values=False, strict_parsing=False))
    unknown = set(options) - _S3_QUERY_KEYS
    if unknown:
        raise ValueError(f"unknown S3 URL option(s) {sorted(unknown)}; known: {sorted(_S3_QUERY_KEYS)}")
    from .s3store import S3BlobStore  # lazily: pulls in boto3

    return S3BlobStore(
        bucket,
        path.strip("/"),
        endpoint_url=options.get("endpoint_url"),
        region=options.get("region"),
        addressing_style=options.get("addressing_style"),
        server_checksums=options.get("server_checksums", "true").lower() not in _FALSE,
    )


def blob_store_from_env(default_url: str, environ: Mapping[str, str] | None = None) -> BlobStore:
    """The store named by ``$EDGEFLEET_STORE_URL``, else ``default_url`` (e.g. the data dir)."""
    env = os.environ if environ is None else environ
    return open_blob_store(env.get(STORE_URL_ENV) or default_url)


def read_range(store: BlobStore, digest: str, start: int, length: int) -> bytes:
    """Up to ``length`` bytes of blob ``digest`` from offset ``start``.

    Fewer bytes come back at the end of the blob and ``b""`` from past its end, so a
    caller answering an HTTP Range request checks ``store.size(digest)`` first. Range
    reads are not verified against the digest: the downloader verifies the whole file.

    Raises:
        BlobNotFound: no such blob.
        ValueError: a negative start or length.
    """
    if start < 0 or length < 0:
        raise ValueError("start and length must be >= 0")
    ranged = getattr(store, "read_range", None)
    if callable(ranged):
        data: bytes = ranged(digest, start, length)
        return data
    with store.open(digest) as f:
        if length == 0:
            return b""
        if f.seekable():
            f.seek(start)
        else:
            _skip(f, start)
        out = bytearray()
        while len(out) < length:
            chunk = f.read(min(CHUNK, length - len(out)))
            if not chunk:
                break
            out += chunk
        return bytes(out)


def _skip(f: object, n: int) -> None:
    read = f.read  # type: ignore[attr-defined]
    while n > 0:
        chunk = read(min(CHUNK, n))
        if not chunk:
            return
        n -= len(chunk)
