"""Fixtures for the storage tests: a real moto S3 server on loopback, and both blob stores.

The S3 store talks to moto's standalone server over HTTP with unchanged boto3 code
(``endpoint_url``), never through in-process patching.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgefleet.registry import BlobStore, LocalBlobStore

pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mlflow: needs MLflow and a local tracking store")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def s3_client(s3_endpoint: str, aws_env: None) -> Any:
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


@pytest.fixture
def bucket(s3_client: Any) -> str:
    name = f"blobs-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_store(s3_endpoint: str, bucket: str, aws_env: None) -> Any:
    from edgefleet.registry.s3store import S3BlobStore

    # small parts so the multipart path runs on a modest file
    return S3BlobStore(
        bucket, "fleet/artifacts", endpoint_url=s3_endpoint, region="us-east-1",
        multipart_threshold=6 * 1024 * 1024, part_size=5 * 1024 * 1024,
    )


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    return request.getfixturevalue("s3_store")  # type: ignore[no-any-return]
