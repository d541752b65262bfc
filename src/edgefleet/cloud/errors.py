"""Errors of the controller: one root; the HTTP layer maps leaves to status codes."""

from __future__ import annotations


class CloudError(Exception):
    """Root of every controller error. ``code`` (``E_…``), when a leaf sets one, goes into
    the HTTP error body next to ``detail`` so clients can branch on it."""

    status_code = 400
    code: str | None = None


class NotFound(CloudError):
    status_code = 404


class Conflict(CloudError):
    status_code = 409


class ModelBlocked(Conflict):
    """The model version is blocked (``fleet model block``): it is never deployed or rolled
    out again until unblocked. The message names the version and the reason."""

    code = "E_MODEL_BLOCKED"


class BadRequest(CloudError):
    status_code = 400


class Forbidden(CloudError):
    status_code = 403


class ConfigError(CloudError):
    """Settings that cannot work (missing data dir, bad URL)."""


class PkiError(CloudError):
    """The fleet CA cannot do what was asked (cloud/pki.py)."""

    status_code = 500


class NoFleetCA(PkiError):
    """No fleet CA exists in the data directory (``fleet cloud init`` creates one)."""

    status_code = 409


class CAExists(PkiError):
    status_code = 409


class BadCertificateRequest(PkiError):
    status_code = 400


class DatabaseUnavailable(CloudError):
    """The database cannot be reached (connection refused or lost, server shutting down).

    Retryable: the MQTT bridge keeps the message unacknowledged and retries it with backoff;
    the API answers 503 ``E_DATABASE_UNAVAILABLE`` with ``Retry-After``.
    """

    status_code = 503
    code = "E_DATABASE_UNAVAILABLE"


class KeysOffline(Conflict):
    """A signing key the action needs is not held by the controller (root kept offline,
    encrypted, or on a signer URI): the command must bring it (``--root-dir``, a passphrase,
    ``--root-signer``). The message names where the key is expected."""

    code = "E_KEYS_OFFLINE"
