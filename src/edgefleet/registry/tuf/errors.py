"""Errors of the trust core, each with a stable ``code`` that the agent reports upstream.

Two roots, as in python-tuf: ``TrustError`` for data that must not be trusted (a bad
signature, an expired or rolled-back file, a target that does not match what was
signed) and ``TransportError`` for trouble getting bytes (timeouts, HTTP errors, a full
disk). A trust error is permanent for the metadata that caused it; a transport error is
worth retrying later (``retryable``). Repository-side (cloud) problems raise
``RepositoryStateError`` or ``KeyringError``.

Device-safe: imports nothing outside the standard library and ``registry.errors``.
"""

from __future__ import annotations

from ..errors import RegistryError


class TufError(RegistryError):
    """Root of every error of the trust core."""

    code = "E_TRUST"
    retryable = False

    def __init__(self, message: str = ""):
        super().__init__(message or self.__class__.__doc__ or self.code)

    def __str__(self) -> str:
        return f"{self.code}: {super().__str__()}"


# --- bad data: never trusted ---------------------------------------------------------


class TrustError(TufError):
    """Data failed verification; nothing it names may be installed."""

    code = "E_TRUST"


class SignatureError(TrustError):
    """Metadata not signed by a threshold of the keys its delegator trusts."""

    code = "E_SIGNATURE"


class ExpiredMetadata(TrustError):
    """Metadata past its expiry date."""

    code = "E_EXPIRED"


class ClockRollback(ExpiredMetadata):
    """The device clock reads earlier than the last trusted time and metadata expired in between."""

    code = "E_CLOCK_ROLLBACK"


class RollbackAttack(TrustError):
    """Metadata older than what the device already trusts (replayed timestamp/snapshot/targets)."""

    code = "E_ROLLBACK"


class MetadataMismatch(TrustError):
    """Metadata does not match the length/hash/version its parent signed (mix-and-match)."""

    code = "E_METADATA_MISMATCH"


class BadMetadata(TrustError):
    """Metadata that is malformed or otherwise refused by the TUF client workflow."""

    code = "E_METADATA"


class HashMismatch(TrustError):
    """Downloaded bytes do not hash to the signed value."""

    code = "E_HASH_MISMATCH"


class LengthMismatch(TrustError):
    """The server offers more or fewer bytes than signed."""

    code = "E_LENGTH"


class TargetMissing(TrustError):
    """The director names a target that the image repository does not sign."""

    code = "E_TARGET_MISSING"


class DirectorImageMismatch(TrustError):
    """Director and image repository disagree on length, hashes or release counter."""

    code = "E_DIRECTOR_IMAGE_MISMATCH"


class WrongDevice(TrustError):
    """Director metadata meant for another device."""

    code = "E_WRONG_DEVICE"


class HardwareMismatch(TrustError):
    """The target is not built for this device's hardware id."""

    code = "E_HARDWARE_MISMATCH"


class ReleaseCounterTooLow(TrustError):
    """The target's release counter is lower than the one installed in that slot."""

    code = "E_RELEASE_COUNTER"


class BadTargetName(TrustError):
    """A target name with ``..``, an absolute path, a backslash or an encoded separator."""

    code = "E_BAD_TARGET_NAME"


class NotProvisioned(TrustError):
    """The device holds no trusted root for a repository."""

    code = "E_NOT_PROVISIONED"


class HintUnconfirmed(TrustError):
    """An MQTT hint names a director version that the director's signed metadata does not reach."""

    code = "E_HINT_UNCONFIRMED"


# --- transport: retry later ----------------------------------------------------------


class TransportError(TufError):
    """Bytes could not be fetched or stored; nothing was trusted, retry later."""

    code = "E_DOWNLOAD"
    retryable = True


class DownloadFailed(TransportError):
    """An HTTP error status, a refused connection, or too many drops without progress."""

    code = "E_DOWNLOAD"

    def __init__(self, message: str = "", *, status_code: int | None = None):
        self.status_code = status_code
        super().__init__(message)


class DownloadTimeout(TransportError):
    """No byte arrived within the gap timeout, or the total deadline passed."""

    code = "E_DOWNLOAD_TIMEOUT"


class DiskFull(TransportError):
    """The disk (or the file-size limit) ran out while writing a download."""

    code = "E_DISK_FULL"


# --- repository side (cloud) ---------------------------------------------------------


class RepositoryStateError(TufError):
    """The repository cannot do what was asked (not initialised, target exists, ...)."""

    code = "E_REPOSITORY"


class KeyringError(TufError):
    """Keys missing, unreadable, or fewer signers than a role's threshold."""

    code = "E_KEYS"


ALL_CODES = sorted(
    {
        cls.code
        for cls in (
            SignatureError, ExpiredMetadata, ClockRollback, RollbackAttack, MetadataMismatch,
            BadMetadata, HashMismatch, LengthMismatch, TargetMissing, DirectorImageMismatch,
            WrongDevice, HardwareMismatch, ReleaseCounterTooLow, BadTargetName, NotProvisioned,
            HintUnconfirmed, DownloadFailed, DownloadTimeout, DiskFull, RepositoryStateError,
            KeyringError,
        )
    }
)

#: Codes of failures a device retries by itself with backoff (the link, the disk).
RETRYABLE_CODES = frozenset({cls.code for cls in (TransportError, DownloadFailed, DownloadTimeout, DiskFull)
                             if cls.retryable})
