"""Errors of the registry: bad data (``RegistryError`` leaves) vs. storage trouble."""

from __future__ import annotations


class RegistryError(Exception):
    """Root of every registry error."""


class BlobNotFound(RegistryError):
    def __init__(self, digest: str):
        self.digest = digest
        super().__init__(f"no blob with digest {digest}")


class DigestMismatch(RegistryError):
    def __init__(self, expected: str, actual: str):
        self.expected, self.actual = expected, actual
        super().__init__(f"digest mismatch: expected {expected}, got {actual}")


class InvalidBundle(RegistryError):
    """A bundle or ONNX file that cannot be accepted; the message says why."""


class VersionConflict(RegistryError):
    """A name+version that already exists with different content."""


class StorageError(RegistryError):
    """The backing store failed (disk full, permission, network). Usually retryable."""
