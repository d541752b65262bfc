"""Content-addressed artifact storage, model bundles, the TUF repository and the director.

Device-safe: importing this package pulls in no cloud-only dependency (boto3, MLflow, onnx).
"""

from .blobstore import BlobStore, LocalBlobStore, sha256_bytes, sha256_file
from .errors import (
    BlobNotFound,
    DigestMismatch,
    InvalidBundle,
    RegistryError,
    StorageError,
    VersionConflict,
)

__all__ = [
    "BlobNotFound", "BlobStore", "DigestMismatch", "InvalidBundle", "LocalBlobStore",
    "RegistryError", "StorageError", "VersionConflict", "sha256_bytes", "sha256_file",
]
