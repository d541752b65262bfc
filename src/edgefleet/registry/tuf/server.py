"""Map HTTP paths under ``/tuf/`` to signed metadata bytes or target blobs.

Paths (relative to the mount point)::

    image/metadata/<file>          image repository metadata (timestamp.json, N.role.json)
    image/targets/<dir>/<sha256>.<basename>   a target, served from the blob store
    director/<device_id>/<file>    one device's director metadata (root files are shared)

``TufResolver.resolve(path)`` returns a ``Resolved`` (bytes for metadata, a blob digest
for targets) or None, with cache headers: versioned files and targets are immutable,
``timestamp.json``/``root.json`` must be revalidated. ``make_handler`` wraps a resolver
in a standard-library ``http.server`` handler with HTTP Range support, for tests, the
demo and plain deployments; the FastAPI controller mounts ``registry.tuf.http`` instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

from ..blobstore import BlobStore
from .director import Director
from .errors import RepositoryStateError
from .repository import ImageRepository

_METADATA_FILE = re.compile(r"^(?:[1-9][0-9]{0,9}\.)?[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*\.json$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


@dataclass(frozen=True)
class Resolved:
    data: bytes | None = None
    blob_digest: str | None = None
    length: int = 0
    content_type: str = "application/json"
    cache_control: str = REVALIDATE


class TufResolver:
    """Args:
        director_reader: ``(device_id, file name) -> bytes`` (raises FileNotFoundError) where a
            device's director metadata lives elsewhere than the director's store (the
            controller's database); default: ``director.metadata``.
    """

    def __init__(self, image: ImageRepository, director: Director | None = None, *,
                 director_reader: Callable[[str, str], bytes] | None = None):
        self.image = image
        self.director = director
        self.director_reader = director_reader

    def resolve(self, path: str) -> Resolved | None:
        parts = path.lstrip("/").split("/", 2)
        try:
            if len(parts) == 3 and parts[0] == "image" and parts[1] == "metadata":
                return self._metadata(parts[2], lambda n: self.image.metadata(n))
            if len(parts) == 3 and parts[0] == "image" and parts[1] == "targets":
                t = self.image.resolve_target_path(parts[2])
                if t is None:
                    return None
                return Resolved(
                    blob_digest=t.digest, length=t.length,
                    content_type="application/octet-stream", cache_control=IMMUTABLE,
                )
            if len(parts) == 3 and parts[0] == "director" and self.director is not None:
                device_id, name = parts[1], parts[2]
                read = self.director_reader or self.director.metadata
                return self._metadata(name, lambda n: read(device_id, n))
        except (FileNotFoundError, RepositoryStateError):
            return None
        return None

    @staticmethod
    def _metadata(name: str, read: Any) -> Resolved | None:
        if not _METADATA_FILE.match(name):
            return None
        data = read(name)
        versioned = name[0].isdigit()
        return Resolved(data=data, length=len(data), cache_control=IMMUTABLE if versioned else REVALIDATE)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=a-b`` range → (start, end inclusive); None if absent/ignored.

    Raises:
        ValueError: unsatisfiable range (answer 416).
    """
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    if m.group(1):
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) else size - 1
    else:
        start, end = max(size - int(m.group(2)), 0), size - 1
    end = min(end, size - 1)
    if start >= size or start > end:
        raise ValueError("unsatisfiable")
    return start, end


def make_handler(resolver: TufResolver, blobs: BlobStore, *, prefix: str = "/tuf") -> type[BaseHTTPRequestHandler]:
    """A ``BaseHTTPRequestHandler`` class serving ``resolver`` under ``prefix``."""

    class TufHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0]
            if not path.startswith(prefix + "/"):
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            res = resolver.resolve(path[len(prefix) + 1 :])
            if res is None:
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            try:
                self.send_resolved(res)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client went away mid-body: it will resume

        def send_resolved(self, res: Resolved) -> None:
            try:
                rng = parse_range(self.headers.get("Range"), res.length)
            except ValueError:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{res.length}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, end = rng if rng else (0, res.length - 1)
            self.send_response(HTTPStatus.PARTIAL_CONTENT if rng else HTTPStatus.OK)
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{end}/{res.length}")
            self.send_header("Content-Type", res.content_type)
            self.send_header("Content-Length", str(max(end - start + 1, 0)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Cache-Control", res.cache_control)
            self.end_headers()
            self.write_body(res, start, end)

        def write_body(self, res: Resolved, start: int, end: int) -> None:
            if res.data is not None:
                self.wfile.write(res.data[start : end + 1])
                return
            assert res.blob_digest is not None
            with blobs.open(res.blob_digest) as f:
                f.seek(start)
                remaining = end - start + 1
                while remaining > 0:
                    chunk = f.read(min(1024 * 1024, remaining))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    remaining -= len(chunk)

    return TufHandler


__all__ = ["Resolved", "TufResolver", "make_handler", "parse_range"]
