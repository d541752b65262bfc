"""Offline bundles: the same TUF files a device fetches online, laid out in a directory.

An offline bundle (``fleet bundle export``) mirrors the controller's ``/tuf/`` paths for
one device, so that a device verifies it with exactly the online code path
(``DeviceVerifier.check`` and ``download``: signatures from its trusted roots, expiry
against the last trusted time, release counters, device and hardware id)::

    manifest.json                      what is inside (informational, never trusted)
    director/<N>.root.json ...         the director root chain, timestamp, snapshot, targets
    image/metadata/<N>.root.json ...   the image repository's chain
    image/targets/<dir>/<sha256>.<basename>   the bundles the director assigns

``DirFetcher`` is a ``tuf.ngclient`` fetcher that reads ``offline:///<path>`` URLs from
such a directory (a missing file is a 404, which ends ngclient's root walk), and copies
targets into part files the way ``ResumableFetcher.download_to`` downloads them — the
length cap and the hashes are computed while copying. Nothing here touches a network.

``export_files(resolver, device_id)`` (controller side) lists the files of a bundle by
walking the metadata the way a client does. Device-safe: tuf and the standard library.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO

from tuf.api import exceptions as tuf_exc
from tuf.ngclient.fetcher import FetcherInterface

from .errors import BadMetadata, LengthMismatch
from .names import hash_prefixed_path

if TYPE_CHECKING:
    from .server import Resolved, TufResolver

SCHEME = "offline:///"
MANIFEST = "manifest.json"
SCHEMA = "fleet.offline-bundle/1"
DIRECTOR = "director/"
IMAGE_METADATA = "image/metadata/"
IMAGE_TARGETS = "image/targets/"
CHUNK = 1024 * 1024
MAX_ROOTS = 10_000  # a root walk longer than this is refused (ngclient's own cap is 256 per refresh)


def urls() -> tuple[str, str, str]:
    """(director metadata, image metadata, image targets) base URLs for ``DeviceVerifier``."""
    return SCHEME + DIRECTOR, SCHEME + IMAGE_METADATA, SCHEME + IMAGE_TARGETS


@dataclass
class DirStats:
    bytes_read: int = 0
    files: int = 0


class DirFetcher(FetcherInterface):
    """Reads ``offline:///…`` URLs from ``root``; no path may leave it."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.stats = DirStats()

    def close(self) -> None:  # the ResumableFetcher interface
        pass

    def _path(self, url: str) -> Path:
        if not url.startswith(SCHEME):
            raise tuf_exc.DownloadHTTPError(f"{url}: not in the offline bundle", 404)
        rel = PurePosixPath(url[len(SCHEME):])
        if rel.is_absolute() or any(p in ("..", "") for p in rel.parts):
            raise tuf_exc.DownloadHTTPError(f"{url}: not a path inside the bundle", 404)
        path = (self.root / rel).resolve()
        if self.root not in path.parents or not path.is_file():
            raise tuf_exc.DownloadHTTPError(f"{url}: not in the offline bundle {self.root}", 404)
        return path

    def _fetch(self, url: str) -> Iterator[bytes]:
        path = self._path(url)
        self.stats.files += 1

        def chunks() -> Iterator[bytes]:
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    self.stats.bytes_read += len(chunk)
                    yield chunk

        return chunks()

    def download_to(self, url: str, part: Path, length: int,
                    hash_algorithms: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
        """Copy the bundle's file for ``url`` into ``part`` (never more than ``length`` bytes).

        Raises:
            LengthMismatch: the file is longer or shorter than the signed length.
            DownloadFailed (via ``tuf``'s 404): the file is not in the bundle.
        """
        try:
            src = self._path(url)
        except tuf_exc.DownloadHTTPError as exc:
            from .errors import DownloadFailed

            raise DownloadFailed(str(exc), status_code=404) from None
        hashers = {a: hashlib.new(a) for a in hash_algorithms}
        part.parent.mkdir(parents=True, exist_ok=True)
        have = 0
        with open(src, "rb") as f, open(part, "wb") as out:
            while chunk := f.read(CHUNK):
                self.stats.bytes_read += len(chunk)
                if have + len(chunk) > length:
                    raise LengthMismatch(f"{url}: the bundle's file is longer than the {length} signed bytes")
                out.write(chunk)
                for h in hashers.values():
                    h.update(chunk)
                have += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        if have != length:
            raise LengthMismatch(f"{url}: the bundle's file has {have} of the {length} signed bytes")
        self.stats.files += 1
        return {a: h.hexdigest() for a, h in hashers.items()}


# -- controller side: which files make a bundle ---------------------------------------


@dataclass(frozen=True)
class BundleFile:
    path: str  # inside the bundle
    resolved: Resolved


def _signed(res: Resolved, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(res.data or b"")
        signed = doc["signed"]
        if not isinstance(signed, dict):
            raise TypeError("signed is not an object")
        return signed
    except (ValueError, KeyError, TypeError) as exc:
        raise BadMetadata(f"{what}: {exc}") from None


def _chain(resolver: TufResolver, served: str, into: str) -> tuple[list[BundleFile], dict[str, Any], bool]:
    """Every root version, timestamp, snapshot and the roles the snapshot lists.

    Returns:
        (files, the top-level targets' signed part, consistent_snapshot)
    """
    files: list[BundleFile] = []
    root: Resolved | None = None
    for version in range(1, MAX_ROOTS):
        res = resolver.resolve(f"{served}{version}.root.json")
        if res is None:
            break
        root = res
        files.append(BundleFile(f"{into}{version}.root.json", res))
    if root is None:
        raise BadMetadata(f"no root metadata under /tuf/{served}")
    consistent = bool(_signed(root, "root").get("consistent_snapshot"))
    ts = resolver.resolve(f"{served}timestamp.json")
    if ts is None:
        raise BadMetadata(f"no timestamp under /tuf/{served}")
    files.append(BundleFile(f"{into}timestamp.json", ts))
    snap_version = _signed(ts, "timestamp")["meta"]["snapshot.json"]["version"]
    snap_name = f"{snap_version}.snapshot.json" if consistent else "snapshot.json"
    snap = resolver.resolve(f"{served}{snap_name}")
    if snap is None:
        raise BadMetadata(f"/tuf/{served}{snap_name} is missing")
    files.append(BundleFile(f"{into}{snap_name}", snap))
    targets: dict[str, Any] = {}
    for meta_name, meta in sorted(_signed(snap, "snapshot").get("meta", {}).items()):
        role = meta_name.removesuffix(".json")
        name = f"{meta['version']}.{role}.json" if consistent else meta_name
        res = resolver.resolve(f"{served}{name}")
        if res is None:
            raise BadMetadata(f"/tuf/{served}{name} is missing")
        files.append(BundleFile(f"{into}{name}", res))
        if role == "targets":
            targets = _signed(res, "targets")
    return files, targets, consistent


def export_files(resolver: TufResolver, device_id: str) -> tuple[list[BundleFile], dict[str, Any]]:
    """The files of ``device_id``'s offline bundle, and its manifest (without file digests).

    Raises:
        BadMetadata: the device has no director metadata, or a file it names is missing.
    """
    director, dtargets, _ = _chain(resolver, f"director/{device_id}/", DIRECTOR)
    image, itargets, consistent = _chain(resolver, "image/metadata/", IMAGE_METADATA)
    files = director + image
    assigned = []
    for name, info in sorted(dtargets.get("targets", {}).items()):
        signed = itargets.get("targets", {}).get(name)
        hashes = (signed or info).get("hashes", {})
        first = next(iter(hashes.values()), "")
        path = hash_prefixed_path(name, first) if consistent else name
        res = resolver.resolve(f"image/targets/{path}")
        if res is None:
            raise BadMetadata(f"the director assigns {name}, which the image repository does not serve")
        files.append(BundleFile(f"{IMAGE_TARGETS}{path}", res))
        custom = info.get("custom") or {}
        icustom = (signed or {}).get("custom") or {}
        assigned.append({"name": name, "model": icustom.get("model"), "version": icustom.get("version"),
                         "slots": list(custom.get("slots") or []), "length": info.get("length"),
                         "sha256": hashes.get("sha256"), "release_counter": custom.get("release_counter")})
    binding = dtargets.get("x-edgefleet") or {}
    manifest = {
        "schema": SCHEMA, "device_id": device_id, "hardware_id": binding.get("hardware_id"),
        "director_version": dtargets.get("version"), "image_version": itargets.get("version"),
        "expires": min(str(dtargets.get("expires", "")), str(itargets.get("expires", ""))),
        "targets": assigned,
    }
    return files, manifest


def write_tar(files: list[BundleFile], manifest: dict[str, Any], open_blob: Callable[[str], BinaryIO],
              out: BinaryIO) -> dict[str, Any]:
    """Write the bundle as an uncompressed tar to ``out`` (``manifest.json`` first).

    Returns:
        the manifest written, with each file's path, length and sha256.
    """
    listed = []
    for f in files:
        res = f.resolved
        sha = res.blob_digest if res.data is None else hashlib.sha256(res.data).hexdigest()
        listed.append({"path": f.path, "length": res.length, "sha256": sha})
    manifest = {**manifest, "files": listed}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, MANIFEST, len(body := json.dumps(manifest, indent=2, sort_keys=True).encode()), io.BytesIO(body))
        for f in files:
            res = f.resolved
            if res.data is not None:
                _add(tar, f.path, res.length, io.BytesIO(res.data))
            else:
                assert res.blob_digest is not None
                with open_blob(res.blob_digest) as blob:
                    _add(tar, f.path, res.length, blob)
    return manifest


def _add(tar: tarfile.TarFile, name: str, size: int, data: BinaryIO) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    tar.addfile(info, data)


def extract_tar(archive: Path, dest: Path) -> Path:
    """Unpack an offline bundle archive into ``dest`` (which must not exist).

    Only regular files under ``director/`` or ``image/`` and ``manifest.json`` are taken;
    anything else (links, devices, absolute or ``..`` paths) refuses the whole archive.

    Raises:
        BadMetadata: not a tar, or a member that is not allowed.
    """
    dest.mkdir(parents=True)
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                parts = member.name.split("/")
                if (not member.isfile() or any(p in ("..", "", ".") for p in parts)
                        or not (member.name == MANIFEST or parts[0] in ("director", "image"))):
                    raise BadMetadata(f"{archive}: member {member.name!r} is not allowed in an offline bundle")
                target = dest.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None
                with src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
    except (tarfile.TarError, OSError) as exc:
        raise BadMetadata(f"{archive}: not a readable offline bundle archive: {exc}") from None
    return dest


def read_manifest(root: Path) -> dict[str, Any]:
    """The bundle's manifest (what it claims; the verification does not rely on it).

    Raises:
        BadMetadata: no manifest, or not an offline bundle.
    """
    try:
        doc = json.loads((Path(root) / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise BadMetadata(f"{root} is not an offline bundle (no {MANIFEST})") from None
    except (OSError, ValueError) as exc:
        raise BadMetadata(f"{root / MANIFEST}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise BadMetadata(f"{root / MANIFEST}: not a {SCHEMA} manifest")
    return doc


__all__ = ["MANIFEST", "SCHEMA", "BundleFile", "DirFetcher", "export_files", "extract_tar", "read_manifest", "urls",
           "write_tar"]
