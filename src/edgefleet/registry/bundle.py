"""Model bundles: a tar archive of ``manifest.json`` and the ONNX file it names.

Bundles are built deterministically (sorted members, zero mtimes, fixed owners), so the
same model and manifest always give the same bytes and therefore the same digest.
Unpacking refuses anything but the two expected regular files (no links, no paths), and
hashes each file as it writes it: a device keeps only the unpacked copy plus a small record
of those digests (``RECORD_FILE``), so what it runs can be re-verified without the tar.
Device-safe: no onnx, no boto3.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from ..protocols import MANIFEST_FILE, InvalidPayload, Manifest, parse_manifest
from .errors import InvalidBundle

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
RECORD_FILE = ".verified.json"  # in an unpacked bundle: the bundle digest and each file's size and sha256
RECORD_SCHEMA = "edgefleet.unpacked/1"


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def build_bundle(manifest: Manifest, model_bytes: bytes) -> bytes:
    """Pack a manifest and its ONNX bytes into deterministic bundle bytes."""
    manifest_bytes = manifest.to_json()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in sorted([(MANIFEST_FILE, manifest_bytes), (manifest.model_file, model_bytes)]):
            tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))
    return buf.getvalue()


@dataclass(frozen=True)
class UnpackedBundle:
    directory: Path
    manifest: Manifest
    files: dict[str, tuple[int, str]] = field(default_factory=dict)  # name → (size, sha256)

    @property
    def model_path(self) -> Path:
        return self.directory / self.manifest.model_file


def read_manifest(bundle: str | os.PathLike[str] | bytes) -> Manifest:
    """Read only the manifest of a bundle (file path or bytes)."""
    with _open_tar(bundle) as tar:
        member = _member(tar, MANIFEST_FILE)
        f = tar.extractfile(member)
        assert f is not None
        return _parse(f.read())


def unpack_bundle(bundle: str | os.PathLike[str] | bytes, dest: str | os.PathLike[str]) -> UnpackedBundle:
    """Unpack a bundle into ``dest`` (created; must not exist or be empty).

    Raises:
        InvalidBundle: not a tar, unexpected members, missing files, invalid manifest.
    """
    dest_path = Path(dest)
    with _open_tar(bundle) as tar:
        manifest = _parse(_read_member(tar, MANIFEST_FILE, MAX_MANIFEST_BYTES))
        names = sorted(m.name for m in tar.getmembers())
        expected = sorted({MANIFEST_FILE, manifest.model_file})
        if names != expected:
            raise InvalidBundle(f"bundle must contain exactly {expected}, found {names}")
        dest_path.mkdir(parents=True, exist_ok=True)
        files: dict[str, tuple[int, str]] = {}
        for name in expected:
            member = _member(tar, name)
            src = tar.extractfile(member)
            assert src is not None
            h, size = hashlib.sha256(), 0
            with open(dest_path / name, "wb") as out:
                while chunk := src.read(1024 * 1024):
                    out.write(chunk)
                    h.update(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            files[name] = (size, h.hexdigest())
    return UnpackedBundle(dest_path, manifest, files)


def unpacked_size(bundle: str | os.PathLike[str] | bytes) -> int:
    """Bytes the members of a bundle take once unpacked (read from the tar headers)."""
    with _open_tar(bundle) as tar:
        return sum(m.size for m in tar.getmembers() if m.isreg())


def record_bytes(digest: str, files: dict[str, tuple[int, str]]) -> bytes:
    """The record an unpacked bundle keeps: its bundle digest and each file's size and sha256."""
    return json.dumps({"schema": RECORD_SCHEMA, "bundle_digest": digest,
                       "files": {n: {"size": sz, "sha256": h} for n, (sz, h) in sorted(files.items())}},
                      indent=2, sort_keys=True).encode()


def hash_files(directory: str | os.PathLike[str], names: list[str]) -> dict[str, tuple[int, str]]:
    """(size, sha256) of each named file in ``directory``, streamed."""
    out: dict[str, tuple[int, str]] = {}
    for name in names:
        h, size = hashlib.sha256(), 0
        with open(Path(directory) / name, "rb") as f:
            while chunk := f.read(1024 * 1024):
                h.update(chunk)
                size += len(chunk)
        out[name] = (size, h.hexdigest())
    return out


def verify_unpacked(directory: str | os.PathLike[str], digest: str) -> bool:
    """Re-verify an unpacked bundle against its record; False when it has no record (an
    older layout).

    Raises:
        InvalidBundle: the record names another bundle, or a file's size or sha256 changed.
    """
    d = Path(directory)
    try:
        rec = json.loads((d / RECORD_FILE).read_bytes())
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as exc:
        raise InvalidBundle(f"unreadable record {d / RECORD_FILE}: {exc}") from None
    if not isinstance(rec, dict) or rec.get("schema") != RECORD_SCHEMA or rec.get("bundle_digest") != digest:
        raise InvalidBundle(f"{d}: record is not for bundle {digest}")
    files = rec.get("files")
    if not isinstance(files, dict) or not files:
        raise InvalidBundle(f"{d}: record lists no files")
    try:
        got = hash_files(d, sorted(files))
    except OSError as exc:
        raise InvalidBundle(f"{d}: cannot read a bundle file: {exc}") from None
    for name, want in files.items():
        if not isinstance(want, dict) or got[name] != (want.get("size"), want.get("sha256")):
            raise InvalidBundle(f"{d / name} changed on disk since it was verified")
    return True


def _open_tar(bundle: str | os.PathLike[str] | bytes) -> tarfile.TarFile:
    try:
        if isinstance(bundle, (bytes, bytearray)):
            return tarfile.open(fileobj=io.BytesIO(bundle), mode="r:")
        return tarfile.open(os.fspath(bundle), mode="r:")
    except (tarfile.TarError, OSError) as exc:
        raise InvalidBundle(f"not a model bundle (tar): {exc}") from None


def _member(tar: tarfile.TarFile, name: str) -> tarfile.TarInfo:
    try:
        member = tar.getmember(name)
    except KeyError:
        raise InvalidBundle(f"bundle has no {name}") from None
    if not member.isreg():
        raise InvalidBundle(f"bundle member {name} is not a regular file")
    return member


def _read_member(tar: tarfile.TarFile, name: str, limit: int) -> bytes:
    member = _member(tar, name)
    if member.size > limit:
        raise InvalidBundle(f"{name} is {member.size} bytes, over the {limit} limit")
    f = tar.extractfile(member)
    assert f is not None
    return f.read()


def _parse(data: bytes) -> Manifest:
    try:
        return parse_manifest(data)
    except InvalidPayload as exc:
        raise InvalidBundle(f"invalid manifest: {exc}") from None


def read_manifest_dir(directory: str | os.PathLike[str]) -> Manifest:
    """Read the manifest of an unpacked bundle directory."""
    path = Path(directory) / MANIFEST_FILE
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidBundle(f"cannot read {path}: {exc}") from None
    return _parse(data)
