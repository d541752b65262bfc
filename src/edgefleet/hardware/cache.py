"""Engine cache: TensorRT engines on disk, keyed by everything that makes an engine valid.

Layout under ``root``::

    <model digest>/<key id>.engine     serialized engine (native TensorRT)
    <model digest>/<key id>.json       sidecar: the key fields, size and sha256 of the engine
    <model digest>/ort-<key id>/       engine cache dir of ONNX Runtime's TensorRT provider
    timing/<trt version>-sm<cc>.cache  TensorRT timing cache shared by builds on this device

An engine is only valid for one TensorRT version, one GPU compute capability, one
precision and one set of build options, so all of them are in the key. ``load`` checks
the sidecar's hash and removes a corrupt or truncated file rather than handing it to
TensorRT; ``get_or_build`` also rebuilds when TensorRT refuses to deserialize a file.
``gc`` removes the engines of models that left every slot. Writes are atomic
(temp file in the same directory, then ``os.replace``). A full disk (``ENOSPC``, ``EDQUOT``,
``EFBIG``) never costs the engine: ``get_or_build`` then uses the freshly built engine from
memory, uncached (``store_failures`` counts it; the next start builds it again).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..atomicio import atomic_write

log = logging.getLogger(__name__)
T = TypeVar("T")
_DIGEST = re.compile(r"^[0-9a-f]{8,128}$")
SIDECAR_SCHEMA = "edgefleet.engine/1"
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on. ``options`` holds the build options that matter."""

    model_digest: str
    backend: str
    trt_version: str
    compute_capability: str
    precision: str
    options: tuple[tuple[str, str], ...] = ()

    @property
    def id(self) -> str:
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:24]

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["options"] = dict(self.options)
        d["id"] = self.id
        return d


def file_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class EngineCache:
    """Engines on disk under ``root``; safe against crashes mid-write and corrupt files."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.store_failures = 0  # engines built but not cached because the disk was full

    def key(
        self,
        *,
        model_digest: str,
        trt_version: str,
        compute_capability: str | None,
        precision: str,
        backend: str = "tensorrt",
        **build_options: object,
    ) -> EngineKey:
        """Build a key. Options with value ``None`` are left out, so adding one later with a
        default of ``None`` does not invalidate existing engines."""
        if not _DIGEST.match(model_digest):
            raise ValueError(f"model digest must be lower-case hex, got {model_digest!r}")
        opts = tuple(sorted((k, str(v)) for k, v in build_options.items() if v is not None))
        return EngineKey(model_digest, backend, str(trt_version), str(compute_capability or "none"),
                         precision, opts)

    # paths -----------------------------------------------------------------------------
    def engine_path(self, key: EngineKey) -> Path:
        return self.root / key.model_digest / f"{key.id}.engine"

    def sidecar_path(self, key: EngineKey) -> Path:
        return self.root / key.model_digest / f"{key.id}.json"

    def provider_dir(self, key: EngineKey) -> Path:
        """A directory for ONNX Runtime's TensorRT provider to keep its engines for this key."""
        path = self.root / key.model_digest / f"ort-{key.id}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def timing_cache_path(self, trt_version: str, compute_capability: str | None) -> Path:
        cc = (compute_capability or "none").replace(".", "")
        return self.root / "timing" / f"trt{trt_version}-sm{cc}.cache"

    # engines ---------------------------------------------------------------------------
    def load(self, key: EngineKey) -> bytes | None:
        """The engine bytes, or None when absent. A file whose size or hash does not match
        its sidecar (truncated, corrupt, half-written) is removed and None returned."""
        engine, sidecar = self.engine_path(key), self.sidecar_path(key)
        if not engine.exists():
            return None
        try:
            meta = json.loads(sidecar.read_text())
            data = engine.read_bytes()
        except (OSError, ValueError) as exc:
            log.warning("engine cache: unreadable entry %s (%s); removing", engine, exc)
            self.invalidate(key)
            return None
        if (meta.get("schema") != SIDECAR_SCHEMA or meta.get("key_id") != key.id
                or meta.get("size") != len(data) or meta.get("sha256") != hashlib.sha256(data).hexdigest()):
            log.warning("engine cache: %s does not match its sidecar (corrupt or truncated); removing", engine)
            self.invalidate(key)
            return None
        return data

    def store(self, key: EngineKey, data: bytes) -> Path:
        meta = {"schema": SIDECAR_SCHEMA, "key_id": key.id, "key": key.describe(), "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest()}
        engine = self.engine_path(key)
        atomic_write(engine, data, mode=0o644)
        atomic_write(self.sidecar_path(key), json.dumps(meta, indent=2, sort_keys=True).encode(), mode=0o644)
        return engine

    def invalidate(self, key: EngineKey) -> None:
        self.engine_path(key).unlink(missing_ok=True)
        self.sidecar_path(key).unlink(missing_ok=True)

    def get_or_build(
        self,
        key: EngineKey,
        build: Callable[[], bytes],
        deserialize: Callable[[bytes], T],
    ) -> tuple[T, bool]:
        """Load and deserialize the cached engine, or build, store and deserialize a new one.

        ``deserialize`` raises (any exception) or returns None for an engine TensorRT will
        not take (built by another version, another GPU); that entry is rebuilt.

        Returns:
            (the deserialized engine, whether it was built now).
        """
        data = self.load(key)
        if data is not None:
            try:
                engine = deserialize(data)
            except Exception as exc:
                log.warning("engine cache: cannot deserialize %s (%s); rebuilding", self.engine_path(key), exc)
                engine = None
            if engine is not None:
                return engine, False
            self.invalidate(key)
        data = build()
        try:
            self.store(key, data)
        except OSError as exc:
            if exc.errno not in DISK_ERRNOS:
                raise
            self.invalidate(key)  # never a half-written entry
            self.store_failures += 1
            log.warning("engine cache: disk full (%s), engine of %d bytes not cached under %s; it runs "
                        "from memory and is built again at the next start", os.strerror(exc.errno), len(data), self.root)
        engine = deserialize(data)
        if engine is None:
            self.invalidate(key)
            raise ValueError("a freshly built engine could not be deserialized")
        return engine, True

    # housekeeping ----------------------------------------------------------------------
    def digests(self) -> set[str]:
        if not self.root.is_dir():
            return set()
        return {p.name for p in self.root.iterdir() if p.is_dir() and _DIGEST.match(p.name)}

    def entries(self) -> list[dict[str, Any]]:
        """Sidecars of every stored engine (for reports)."""
        out = []
        for digest in sorted(self.digests()):
            for sidecar in sorted((self.root / digest).glob("*.json")):
                try:
                    out.append(json.loads(sidecar.read_text()))
                except (OSError, ValueError):
                    continue
        return out

    def gc(self, keep_digests: Iterable[str]) -> list[Path]:
        """Remove engines of every model not in ``keep_digests`` (the models in any slot,
        last-known-good included) and leftover temp files. Returns what was removed."""
        keep = set(keep_digests)
        removed: list[Path] = []
        for digest in sorted(self.digests() - keep):
            path = self.root / digest
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        for digest in self.digests() & keep:
            for tmp in (self.root / digest).glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
        if removed:
            log.info("engine cache: removed %d stale entries", len(removed))
        return removed
