"""The controller over HTTPS on loopback: the agent's HTTP clients verify it against the fleet CA
and fail closed, with a clear error, against any other trust."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from tuf.api import exceptions as tuf_exc

from edgefleet.cloud.api import create_app
from edgefleet.cloud.broker import free_port
from edgefleet.cloud.cli.cloud_cmd import create_admin_token
from edgefleet.cloud.client import ApiClient, ApiError
from edgefleet.cloud.pki import FleetCA
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings
from edgefleet.edge_agent.errors import ConfigError
from edgefleet.edge_agent.tls import http_verify
from edgefleet.registry.tuf.errors import DownloadFailed
from edgefleet.registry.tuf.fetcher import ResumableFetcher

from .conftest import HttpsThread, make_ca


@dataclass
class Https:
    ca: FleetCA
    url: str
    token: str
    controller: Controller


@pytest.fixture
def https(tmp_path: Path) -> Iterator[Https]:
    """The controller's app (no MQTT) over HTTPS with a certificate from its fleet CA."""
    data_dir = tmp_path / "controller"
    ca = make_ca(data_dir / "pki")
    port = free_port()
    settings = load_settings(data_dir, env={}, http_port=port, tls_cert_file=ca.server_cert_file,
                             tls_key_file=ca.server_key_file, tls_ca_file=ca.ca_file)
    controller = Controller(settings)
    controller.migrate()
    token = create_admin_token(controller)
    server = HttpsThread(create_app(controller), "127.0.0.1", port, ca.server_cert_file, ca.server_key_file)
    server.start()
    yield Https(ca, settings.base_url, token, controller)
    server.stop()
    controller.engine.dispose()


def _fetch(fetcher: ResumableFetcher, url: str) -> bytes:
    try:
        return b"".join(fetcher.fetch(url))
    finally:
        fetcher.close()


def test_base_url_is_https_with_a_certificate(https: Https) -> None:
    assert https.url.startswith("https://127.0.0.1:")


def test_agent_fetcher_with_the_fleet_ca_reaches_the_controller(https: Https) -> None:
    body = _fetch(ResumableFetcher(verify=http_verify(https.ca.ca_file)), f"{https.url}/api/v1/health")
    assert b'"status"' in body


@pytest.mark.parametrize("trust", ["system CAs", "another CA"])
def test_agent_fetcher_without_the_fleet_ca_fails_closed_with_a_clear_error(https: Https, tmp_path: Path, trust: str) -> None:
    verify = http_verify(None) if trust == "system CAs" else http_verify(make_ca(tmp_path / "other").ca_file)
    with pytest.raises(tuf_exc.DownloadError, match=r"TLS: the controller at 127\.0\.0\.1:\d+ is not trusted"):
        _fetch(ResumableFetcher(verify=verify), f"{https.url}/api/v1/health")


def test_target_download_with_a_wrong_ca_fails_at_once_and_writes_nothing(https: Https, tmp_path: Path) -> None:
    fetcher = ResumableFetcher(verify=http_verify(make_ca(tmp_path / "other").ca_file), max_stalls=50, backoff=1.0)
    part = tmp_path / "dl" / "bundle.part"
    try:
        with pytest.raises(DownloadFailed, match="not trusted") as err:
            fetcher.download_to(f"{https.url}/api/v1/health", part, 100)
    finally:
        fetcher.close()
    assert "ca_file" in str(err.value)
    assert fetcher.stats.bytes_received == 0 and fetcher.stats.resumes == 0  # no retry loop
    assert not part.exists() or part.stat().st_size == 0


def test_a_certificate_for_another_host_name_is_refused(https: Https, tmp_path: Path) -> None:
    ca = FleetCA.create(tmp_path / "named")
    cert, key = ca.issue_server_cert(["fleet.example.org"])  # not localhost / 127.0.0.1
    port = free_port()
    server = HttpsThread(create_app(https.controller), "127.0.0.1", port, cert, key)
    server.start()
    try:
        with pytest.raises(tuf_exc.DownloadError, match="not trusted.*(match|mismatch)"):
            _fetch(ResumableFetcher(verify=http_verify(ca.ca_file)), f"https://127.0.0.1:{port}/api/v1/health")
    finally:
        server.stop()


def test_uploader_with_a_wrong_ca_reports_the_link_down_and_keeps_the_item(https: Https, tmp_path: Path) -> None:
    from edgefleet.edge_agent.outbox import Outbox
    from edgefleet.edge_agent.uploader import Uploader

    from ..uploads.harness import clip_bytes, make_event

    outbox = Outbox(tmp_path / "outbox", max_bytes=64 * 1024 * 1024, min_free_bytes=0)
    event = make_event(priority=5)
    outbox.put(event, clip_bytes(50_000, seed=1), clip_bytes(2000, seed=2), priority=5)
    other = http_verify(make_ca(tmp_path / "other").ca_file)
    up = Uploader(https.url, event.device_id, "efd_x", outbox, max_bytes_per_day=1 << 40, verify=other)
    report = up.run_once(datetime.now(timezone.utc))
    assert report.offline and "CERTIFICATE_VERIFY_FAILED" in (report.error or "")
    assert len(outbox.pending(10)) == 1  # nothing lost, retried later


def test_bad_ca_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="ca_file"):
        http_verify(tmp_path / "junk.pem")
    with pytest.raises(ConfigError, match="ca_file"):
        http_verify(tmp_path / "missing.pem")


def test_trust_roots_carry_the_fleet_ca(https: Https) -> None:
    client = ApiClient(https.url, https.token, ca_file=https.ca.ca_file)
    try:
        roots = client.request("GET", "/trust/roots")
    finally:
        client.close()
    assert roots["fleet_ca_pem"] == https.ca.ca_pem and roots["director_root"]["signed"]
    plain = ApiClient(https.url, https.token)  # system CAs: refused
    try:
        with pytest.raises(ApiError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            plain.request("GET", "/trust/roots")
    finally:
        plain.close()


def test_issue_device_certificate_from_the_controller(https: Https) -> None:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    issued = https.controller.issue_device_certificate("cam-9")
    cert = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "cam-9"
    assert "PRIVATE KEY" in issued.key_pem
