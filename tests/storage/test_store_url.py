"""Choosing a blob store from a URL / ``EDGEFLEET_STORE_URL``, and keeping boto3 off devices."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgefleet.registry import LocalBlobStore
from edgefleet.registry.stores import STORE_URL_ENV, blob_store_from_env, open_blob_store


def test_a_plain_path_opens_a_local_store(tmp_path: Path) -> None:
    store = open_blob_store(str(tmp_path / "blobs"))
    assert isinstance(store, LocalBlobStore)
    assert store.root == tmp_path / "blobs"
    digest = store.put(b"x")
    assert (tmp_path / "blobs" / "sha256" / digest[:2] / digest).read_bytes() == b"x"


def test_a_file_url_opens_a_local_store(tmp_path: Path) -> None:
    store = open_blob_store((tmp_path / "with space").as_uri())
    assert isinstance(store, LocalBlobStore)
    assert store.root == tmp_path / "with space"


def test_an_s3_url_opens_a_working_s3_store(s3_endpoint: str, bucket: str, s3_client: Any) -> None:
    from edgefleet.registry.s3store import S3BlobStore

    store = open_blob_store(f"s3://{bucket}/prod/models/?endpoint_url={s3_endpoint}&region=us-east-1")
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix) == (bucket, "prod/models/")
    digest = store.put(b"via url")
    assert s3_client.get_object(Bucket=bucket, Key=f"prod/models/sha256/{digest[:2]}/{digest}")["Body"].read() == b"via url"


def test_the_env_var_wins_over_the_default(s3_endpoint: str, bucket: str, tmp_path: Path, aws_env: None) -> None:
    from edgefleet.registry.s3store import S3BlobStore

    env = {STORE_URL_ENV: f"s3://{bucket}?endpoint_url={s3_endpoint}"}
    assert isinstance(blob_store_from_env(str(tmp_path), env), S3BlobStore)
    assert isinstance(blob_store_from_env(str(tmp_path), {}), LocalBlobStore)
    assert isinstance(blob_store_from_env(str(tmp_path), {STORE_URL_ENV: ""}), LocalBlobStore)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "gs://bucket/x",
        "s3:///no-bucket",
        "s3://bucket/x?endpoint=http://typo",
        "file://remotehost/path",
    ],
)
def test_a_bad_store_url_is_refused_with_a_clear_error(url: str) -> None:
    with pytest.raises(ValueError):
        open_blob_store(url)


def test_the_device_side_never_imports_boto3(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from edgefleet.registry.stores import open_blob_store, read_range\n"
        f"s = open_blob_store({str(tmp_path)!r})\n"
        "d = s.put(b'abc')\n"
        "assert read_range(s, d, 1, 5) == b'bc'\n"
        "bad = [m for m in ('boto3', 'botocore', 'mlflow') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
