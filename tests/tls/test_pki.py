"""The fleet CA: files and modes, chains that verify, CN/EKU/expiry, and a CRL that lists revocations."""

from __future__ import annotations

import shutil
import stat
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from edgefleet.cloud.errors import BadCertificateRequest, CAExists, CloudError, NoFleetCA, PkiError
from edgefleet.cloud.pki import CRL_DAYS, FleetCA

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def ca(tmp_path: Path) -> FleetCA:
    return FleetCA.create(tmp_path / "pki", "test fleet CA")


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_create_writes_a_private_key_0600_in_a_0700_dir_and_never_overwrites(ca: FleetCA, tmp_path: Path) -> None:
    assert _mode(ca.dir) == 0o700
    assert _mode(ca.dir / "ca.key") == 0o600
    assert ca.crl_file.is_file() and list(ca.crl()) == []
    with pytest.raises(CAExists):
        FleetCA.create(ca.dir)
    again = FleetCA.open(ca.dir)
    assert again.ca_pem == ca.ca_pem
    assert issubclass(PkiError, CloudError)


def test_open_refuses_missing_ca_and_a_key_readable_by_others(tmp_path: Path, ca: FleetCA) -> None:
    with pytest.raises(NoFleetCA, match="fleet cloud init"):
        FleetCA.open(tmp_path / "nothing")
    assert FleetCA.open_if_exists(tmp_path / "nothing") is None
    (ca.dir / "ca.key").chmod(0o644)
    with pytest.raises(PkiError, match="readable by others"):
        FleetCA.open(ca.dir)


def test_device_cert_chains_to_the_ca_with_cn_and_client_auth(ca: FleetCA) -> None:
    issued = ca.issue_device_cert("cam-7")
    cert = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "cam-7"
    assert cert.serial_number == issued.serial
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    store = Store([x509.load_pem_x509_certificate(ca.ca_pem.encode())])
    chain = PolicyBuilder().store(store).build_client_verifier().verify(cert, [])
    assert chain.chain[-1].subject == ca.cert.subject
    # the key belongs to the certificate
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(issued.key_pem.encode(), password=None)
    assert key.public_key() == cert.public_key()
    assert ca.issued()[issued.serial]["cn"] == "cam-7"


def test_device_cert_does_not_verify_against_another_ca(ca: FleetCA, tmp_path: Path) -> None:
    other = FleetCA.create(tmp_path / "other")
    cert = x509.load_pem_x509_certificate(ca.issue_device_cert("cam-1").cert_pem.encode())
    store = Store([other.cert])
    with pytest.raises(VerificationError):
        PolicyBuilder().store(store).build_client_verifier().verify(cert, [])


def test_device_cert_expires_after_its_validity(tmp_path: Path) -> None:
    ca = FleetCA.create(tmp_path / "dated", now=NOW - timedelta(days=1))
    issued = ca.issue_device_cert("cam-2", days=30, now=NOW)
    assert issued.not_after == NOW + timedelta(days=30)
    cert = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    store = Store([ca.cert])
    inside = PolicyBuilder().store(store).time(NOW + timedelta(days=29)).build_client_verifier()
    inside.verify(cert, [])
    after = PolicyBuilder().store(store).time(NOW + timedelta(days=31)).build_client_verifier()
    with pytest.raises(VerificationError, match="expired|not valid|validity"):
        after.verify(cert, [])


def test_bad_device_ids_are_refused(ca: FleetCA) -> None:
    for bad in ("", "a/b", "x" * 200, "#"):
        with pytest.raises(BadCertificateRequest):
            ca.issue_device_cert(bad)


def test_server_cert_names_verify_and_others_do_not(ca: FleetCA) -> None:
    cert_path, key_path = ca.issue_server_cert(["localhost", "fleet.example.org"], ["127.0.0.1"])
    assert _mode(key_path) == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    store = Store([ca.cert])
    import ipaddress

    for name in (x509.DNSName("fleet.example.org"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        PolicyBuilder().store(store).build_server_verifier(name).verify(cert, [])
    with pytest.raises(VerificationError):
        PolicyBuilder().store(store).build_server_verifier(x509.DNSName("evil.example.org")).verify(cert, [])
    with pytest.raises(BadCertificateRequest):
        ca.issue_server_cert([], [])
    with pytest.raises(BadCertificateRequest):
        ca.issue_server_cert(["x"], ["not-an-ip"])


def test_revoke_lists_the_serial_in_a_crl_signed_by_the_ca(ca: FleetCA) -> None:
    keep, gone = ca.issue_device_cert("cam-a"), ca.issue_device_cert("cam-b")
    ca.revoke(gone.serial, now=NOW)
    ca.revoke(gone.serial, now=NOW)  # twice: no-op
    crl = FleetCA.open(ca.dir).crl()
    assert crl.is_signature_valid(ca.cert.public_key())
    assert crl.get_revoked_certificate_by_serial_number(gone.serial) is not None
    assert crl.get_revoked_certificate_by_serial_number(keep.serial) is None
    assert [r.serial_number for r in crl] == [gone.serial]
    assert ca.is_revoked(gone.serial) and not ca.is_revoked(keep.serial)
    with pytest.raises(PkiError, match="not issued"):
        ca.revoke(12345)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_openssl_refuses_a_revoked_cert_with_the_crl(ca: FleetCA, tmp_path: Path) -> None:
    good, bad = ca.issue_device_cert("cam-ok"), ca.issue_device_cert("cam-bad")
    ca.revoke(bad.serial)
    for name, issued in (("good", good), ("bad", bad)):
        (tmp_path / f"{name}.pem").write_text(issued.cert_pem)

    def verify(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["openssl", "verify", "-CAfile", str(ca.ca_file), "-crl_check", "-CRLfile",
                               str(ca.crl_file), "-purpose", "sslclient", str(tmp_path / f"{name}.pem")],
                              capture_output=True, text=True)

    assert verify("good").returncode == 0
    refused = verify("bad")
    assert refused.returncode != 0 and "revoked" in (refused.stdout + refused.stderr)


def test_crl_is_re_signed_before_it_expires(ca: FleetCA) -> None:
    ca.revoke(ca.issue_device_cert("cam-x").serial, now=NOW)
    first = ca.crl()
    assert first.next_update_utc == NOW + timedelta(days=CRL_DAYS)
    assert ca.refresh_crl(now=NOW + timedelta(days=1)) is False  # plenty of time left
    later = NOW + timedelta(days=CRL_DAYS - 3)
    assert ca.refresh_crl(now=later) is True
    fresh = ca.crl()
    assert fresh.next_update_utc == later + timedelta(days=CRL_DAYS)
    assert len(list(fresh)) == 1  # the revocation survives the re-signing
