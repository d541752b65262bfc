"""Errors of the agent. Each deployment failure carries a stable ``code`` for ``reported``.

Retryable failures (the link, the disk) derive from ``RetryableError``; everything else
is permanent for that target: retrying the same bytes gives the same answer.
"""

from __future__ import annotations


class AgentError(Exception):
    """Root of every agent error."""

    code = "E_AGENT"


class DeploymentError(AgentError):
    """A new model could not be installed; the running model stays."""

    code = "E_DEPLOY"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        if code:
            self.code = code


class RetryableError(DeploymentError):
    code = "E_DOWNLOAD"


class DownloadFailed(RetryableError):
    code = "E_DOWNLOAD"


class DiskFull(RetryableError):
    """The disk (or a quota, or the file-size limit) ran out. Retried with backoff; the
    running model stays. ``needed``/``free``: bytes the step needs and bytes free (None
    where unknown); ``what``: the step (``download``, ``unpack``, ``state``, ``outbox`` …)."""

    code = "E_DISK_FULL"

    def __init__(self, message: str, *, needed: int | None = None, free: int | None = None,
                 path: str | None = None, what: str | None = None, code: str | None = None):
        super().__init__(message, code=code)
        self.needed, self.free, self.path, self.what = needed, free, path, what


class DamagedDownload(DeploymentError):
    """Downloaded bytes did not match the signed length or hashes. Possibly damaged in
    transit: the updater retries a few times from a clean fetch before it is final."""

    code = "E_HASH_MISMATCH"


class DigestMismatch(DeploymentError):
    code = "E_DIGEST"


class BadBundle(DeploymentError):
    code = "E_BUNDLE"


class ModelLoadFailed(DeploymentError):
    code = "E_LOAD"


class InputMismatch(DeploymentError):
    code = "E_INPUT_SHAPE"


class SelfTestFailed(DeploymentError):
    code = "E_SELFTEST"


class ConfigError(AgentError):
    code = "E_CONFIG"


class SourceError(AgentError):
    """The frame source (camera, video) cannot be opened or read."""

    code = "E_SOURCE"


class OfflineRefused(DeploymentError):
    """An offline bundle that did not verify or install; ``code`` is the online refusal's
    (``E_HASH_MISMATCH``, ``E_EXPIRED``, ``E_WRONG_DEVICE`` …)."""

    code = "E_OFFLINE"


class LinkDeferred(DeploymentError):
    """The network policy does not allow this transfer on the current link (a metered link
    under ``unmetered``: ``E_LINK_METERED``; an interface not listed: ``E_LINK_INTERFACE``).
    Not a failure: the deployment waits and goes on when the link allows (``network.py``)."""

    code = "E_LINK_METERED"
