"""The trust core: a TUF image repository, an Uptane-style director, and device verification.

Cloud side: ``KeyRing`` (keys), ``ImageRepository`` (sign releases), ``Director``
(per-device assignments), ``TufResolver`` (HTTP paths → bytes; ``registry.tuf.http``
has the FastAPI router). Device side: ``DeviceVerifier``, ``provision``,
``ResumableFetcher`` and the error classes — importing those pulls in only tuf,
securesystemslib, httpx and the standard library.
"""

from .director import Director
from .errors import (
    ALL_CODES,
    RETRYABLE_CODES,
    BadMetadata,
    BadTargetName,
    ClockRollback,
    DirectorImageMismatch,
    DiskFull,
    DownloadFailed,
    DownloadTimeout,
    ExpiredMetadata,
    HardwareMismatch,
    HashMismatch,
    HintUnconfirmed,
    KeyringError,
    LengthMismatch,
    MetadataMismatch,
    NotProvisioned,
    ReleaseCounterTooLow,
    RepositoryStateError,
    RollbackAttack,
    SignatureError,
    TargetMissing,
    TransportError,
    TrustError,
    TufError,
    WrongDevice,
)
from .fetcher import FetchStats, ResumableFetcher
from .keys import KeyRing
from .names import check_target_name, release_target_name
from .repository import ImageRepository, ImageTarget
from .server import Resolved, TufResolver, make_handler
from .signing import Expiry
from .store import LocalMetadataStore, MetadataStore
from .verify import (
    CheckResult,
    DeviceTrustState,
    DeviceVerifier,
    TufRepoClient,
    VerifiedTarget,
    download_verified,
    provision,
)

__all__ = [
    "ALL_CODES", "RETRYABLE_CODES", "BadMetadata", "BadTargetName", "CheckResult", "ClockRollback",
    "DeviceTrustState", "DeviceVerifier", "Director", "DirectorImageMismatch", "DiskFull",
    "DownloadFailed", "DownloadTimeout", "ExpiredMetadata", "Expiry", "FetchStats",
    "HardwareMismatch", "HashMismatch", "HintUnconfirmed", "ImageRepository", "ImageTarget",
    "KeyRing", "KeyringError", "LengthMismatch", "LocalMetadataStore", "MetadataMismatch",
    "MetadataStore", "NotProvisioned", "ReleaseCounterTooLow", "RepositoryStateError",
    "Resolved", "ResumableFetcher", "RollbackAttack", "SignatureError", "TargetMissing",
    "TransportError", "TrustError", "TufError", "TufRepoClient", "TufResolver",
    "VerifiedTarget", "WrongDevice", "check_target_name", "download_verified",
    "make_handler", "provision", "release_target_name",
]
