"""The fleet CA: server certificates for the controller and brokers, client certificates for devices.

Everything lives in ``<data_dir>/pki/`` (directory 0700)::

    ca.key        the CA's private key (ECDSA P-256, 0600) — never leaves this directory
    ca.pem        the CA certificate: what devices, brokers and the CLI verify against
    crl.pem       the certificate revocation list, re-signed on every revoke and before it expires
    issued.json   serial -> {cn, kind, not_after, revoked_at}: what this CA has signed
    server.pem    the controller's/broker's certificate (``issue_server_cert``), server.key (0600)

Data flow: ``FleetCA.create`` once (``fleet cloud init``); afterwards ``FleetCA.open`` reads
the key and certificate; ``issue_*`` sign a fresh key pair and record the serial;
``revoke`` marks a serial and re-signs ``crl.pem``, which brokers load (``crlfile``).
Every write is atomic (temp file + rename); a lock file serialises writers on one host.
Pure X.509 work through ``cryptography``; time comes in as ``now`` where it matters.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..atomicio import atomic_write
from ..protocols import is_valid_device_id
from .errors import BadCertificateRequest, CAExists, NoFleetCA, PkiError

log = logging.getLogger(__name__)

CA_KEY, CA_CERT, CRL, INDEX = "ca.key", "ca.pem", "crl.pem", "issued.json"
SERVER_CERT, SERVER_KEY = "server.pem", "server.key"
CA_DAYS, SERVER_DAYS, DEVICE_DAYS = 3650, 825, 365
CRL_DAYS = 30
CRL_REFRESH_BEFORE = timedelta(days=10)  # re-sign the CRL when less than this is left


@dataclass(frozen=True)
class IssuedCert:
    """A certificate and its fresh private key, both PEM; the key is not kept by the CA."""

    cert_pem: str
    key_pem: str
    serial: int
    not_after: datetime


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(timezone.utc)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class FleetCA:
    """One fleet CA on disk. Use ``FleetCA.create`` or ``FleetCA.open``, not the constructor."""

    def __init__(self, directory: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate):
        self.dir = directory
        self._key = key
        self.cert = cert

    # ----- opening -----

    @classmethod
    def exists(cls, directory: str | os.PathLike[str]) -> bool:
        d = Path(directory)
        return (d / CA_KEY).is_file() and (d / CA_CERT).is_file()

    @classmethod
    def create(cls, directory: str | os.PathLike[str], name: str = "edgefleet fleet CA", *,
               days: int = CA_DAYS, now: datetime | None = None) -> FleetCA:
        """Make a new CA (key, self-signed certificate, empty CRL) in ``directory``.

        Raises:
            CAExists: there is already a CA there (it is never overwritten).
        """
        d = Path(directory)
        if (d / CA_KEY).exists() or (d / CA_CERT).exists():
            raise CAExists(f"a fleet CA already exists in {d}; it is never overwritten")
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(d, 0o700)
        now = _now(now)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgefleet")])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        with _locked(d):
            atomic_write(d / CA_KEY, _key_pem(key), mode=0o600, fsync_dir=True)
            atomic_write(d / CA_CERT, _cert_pem(cert), mode=0o644, fsync_dir=True)
            ca = cls(d, key, cert)
            ca._write_index({})
            ca._sign_crl({}, now)
        log.info("fleet CA %r created in %s (valid until %s)", name, d, cert.not_valid_after_utc.date())
        return ca

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> FleetCA:
        """Read the CA in ``directory``.

        Raises:
            NoFleetCA: no CA there (run ``fleet cloud init``).
            PkiError: the key is readable by others, or the files do not parse.
        """
        d = Path(directory)
        if not cls.exists(d):
            raise NoFleetCA(f"no fleet CA in {d}: run `fleet cloud init` to create one")
        mode = stat.S_IMODE((d / CA_KEY).stat().st_mode)
        if mode & 0o077:
            raise PkiError(f"{d / CA_KEY} is readable by others (mode {mode:o}); chmod 600 it")
        try:
            key = serialization.load_pem_private_key((d / CA_KEY).read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate((d / CA_CERT).read_bytes())
        except ValueError as exc:
            raise PkiError(f"fleet CA in {d} does not parse: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise PkiError(f"{d / CA_KEY} does not belong to {d / CA_CERT}")
        return cls(d, key, cert)

    @classmethod
    def open_if_exists(cls, directory: str | os.PathLike[str]) -> FleetCA | None:
        return cls.open(directory) if cls.exists(directory) else None

    # ----- what others read -----

    @property
    def ca_pem(self) -> str:
        return _cert_pem(self.cert).decode()

    @property
    def ca_file(self) -> Path:
        return self.dir / CA_CERT

    @property
    def crl_file(self) -> Path:
        return self.dir / CRL

    @property
    def server_cert_file(self) -> Path:
        return self.dir / SERVER_CERT

    @property
    def server_key_file(self) -> Path:
        return self.dir / SERVER_KEY

    def issued(self) -> dict[int, dict[str, object]]:
        """serial -> {cn, kind, not_after, revoked_at} for everything this CA signed."""
        return {int(k): v for k, v in self._read_index().items()}

    def crl(self) -> x509.CertificateRevocationList:
        return x509.load_pem_x509_crl(self.crl_file.read_bytes())

    # ----- issuing -----

    def issue_server_cert(self, dns_names: Iterable[str], ip_addresses: Iterable[str] = (), *,
                          days: int = SERVER_DAYS, now: datetime | None = None) -> tuple[Path, Path]:
        """Sign a serverAuth certificate for these names; writes ``server.pem`` and ``server.key`` (0600).

        Raises:
            BadCertificateRequest: no name at all, or an IP address that does not parse.
        """
        dns = [n.strip() for n in dns_names if n.strip()]
        try:
            ips = [ipaddress.ip_address(a.strip()) for a in ip_addresses if a.strip()]
        except ValueError as exc:
            raise BadCertificateRequest(f"bad IP address for a server certificate: {exc}") from None
        if not dns and not ips:
            raise BadCertificateRequest("a server certificate needs at least one DNS name or IP address")
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
        sans += [x509.IPAddress(ip) for ip in ips]
        cert_pem, key_pem, _serial, _ = self._issue(
            dns[0] if dns else str(ips[0]), ExtendedKeyUsageOID.SERVER_AUTH, "server", days, now,
            san=x509.SubjectAlternativeName(sans),
        )
        atomic_write(self.server_key_file, key_pem, mode=0o600, fsync_dir=True)
        atomic_write(self.server_cert_file, cert_pem, mode=0o644, fsync_dir=True)
        return self.server_cert_file, self.server_key_file

    def issue_device_cert(self, device_id: str, *, days: int = DEVICE_DAYS, now: datetime | None = None) -> IssuedCert:
        """Sign a clientAuth certificate with CN = ``device_id`` (the broker's identity for it).

        Raises:
            BadCertificateRequest: ``device_id`` is not a valid device id.
        """
        if not is_valid_device_id(device_id):
            raise BadCertificateRequest(f"not a valid device id: {device_id!r}")
        return self.issue_client_cert(device_id, kind="device", days=days, now=now)

    def issue_client_cert(self, common_name: str, *, kind: str = "client", days: int = DEVICE_DAYS,
                          now: datetime | None = None) -> IssuedCert:
        """Sign a clientAuth certificate for any MQTT identity (e.g. the controller's broker account)."""
        if not common_name or len(common_name) > 64 or any(c in common_name for c in "/+#\0\n"):
            raise BadCertificateRequest(f"not a usable client name: {common_name!r}")
        cert_pem, key_pem, serial, not_after = self._issue(
            common_name, ExtendedKeyUsageOID.CLIENT_AUTH, kind, days, now,
            san=x509.SubjectAlternativeName([x509.DNSName(common_name)]) if kind == "device" else None,
        )
        return IssuedCert(cert_pem.decode(), key_pem.decode(), serial, not_after)

    def _issue(self, cn: str, eku: x509.ObjectIdentifier, kind: str, days: int, now: datetime | None,
               san: x509.SubjectAlternativeName | None) -> tuple[bytes, bytes, int, datetime]:
        now = _now(now)
        not_after = min(now + timedelta(days=days), self.cert.not_valid_after_utc)
        key = ec.generate_private_key(ec.SECP256R1())
        serial = x509.random_serial_number()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.cert.subject).public_key(key.public_key()).serial_number(serial)
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                         crl_sign=False, content_commitment=False, data_encipherment=False,
                                         key_agreement=True, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                           critical=False)
        )
        if san is not None:
            builder = builder.add_extension(san, critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        with _locked(self.dir):
            index = self._read_index()
            index[str(serial)] = {"cn": cn, "kind": kind, "not_after": not_after.isoformat(), "revoked_at": None}
            self._write_index(index)
        log.info("fleet CA issued a %s certificate for %s (serial %x, until %s)", kind, cn, serial, not_after.date())
        return _cert_pem(cert), _key_pem(key), serial, not_after

    # ----- revocation -----

    def revoke(self, serial: int, *, now: datetime | None = None) -> None:
        """Put ``serial`` on the CRL and re-sign ``crl.pem`` (revoking twice is a no-op).

        Raises:
            PkiError: this CA never issued ``serial``.
        """
        now = _now(now)
        with _locked(self.dir):
            index = self._read_index()
            entry = index.get(str(serial))
            if entry is None:
                raise PkiError(f"serial {serial:x} was not issued by this fleet CA")
            if entry.get("revoked_at") is None:
                entry["revoked_at"] = now.isoformat()
                self._write_index(index)
                log.warning("fleet CA revoked the certificate of %s (serial %x)", entry.get("cn"), serial)
            self._sign_crl(index, now)

    def is_revoked(self, serial: int) -> bool:
        entry = self._read_index().get(str(serial))
        return bool(entry and entry.get("revoked_at"))

    def refresh_crl(self, *, now: datetime | None = None) -> bool:
        """Re-sign the CRL if it expires within ``CRL_REFRESH_BEFORE``; returns whether it did."""
        now = _now(now)
        try:
            next_update = self.crl().next_update_utc
        except (OSError, ValueError):
            next_update = None
        if next_update is not None and next_update - now > CRL_REFRESH_BEFORE:
            return False
        with _locked(self.dir):
            self._sign_crl(self._read_index(), now)
        return True

    def _sign_crl(self, index: dict[str, dict[str, object]], now: datetime) -> None:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - timedelta(minutes=5)).next_update(now + timedelta(days=CRL_DAYS))
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), critical=False)
        )
        for serial, entry in sorted(index.items()):
            revoked_at = entry.get("revoked_at")
            if revoked_at:
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder().serial_number(int(serial))
                    .revocation_date(datetime.fromisoformat(str(revoked_at))).build()
                )
        crl = builder.sign(self._key, hashes.SHA256())
        atomic_write(self.crl_file, crl.public_bytes(serialization.Encoding.PEM), mode=0o644, fsync_dir=True)

    # ----- the index -----

    def _read_index(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads((self.dir / INDEX).read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise PkiError(f"{self.dir / INDEX} is corrupt: {exc}") from None
        if not isinstance(data, dict):
            raise PkiError(f"{self.dir / INDEX} is corrupt: not an object")
        return data

    def _write_index(self, index: dict[str, dict[str, object]]) -> None:
        atomic_write(self.dir / INDEX, json.dumps(index, indent=1, sort_keys=True).encode(), mode=0o600)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on ``<dir>/.lock`` while the index or the CRL is rewritten."""
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
