"""Back up a controller's state into one archive, and restore it into a fresh data directory.

What goes in (``fleet cloud backup OUT``), in this order, so the pieces agree with each other
while the controller keeps running:

1. the database: SQLite through its online backup API (one read transaction: a consistent
   snapshot beside live writers), PostgreSQL with ``pg_dump --format=custom`` (one
   snapshot transaction);
2. the data directory's files as they are, mode kept: ``controller.toml``, ``cli.toml``,
   ``keys/`` (online signing keys, the audit key; a root key whose private half is offline
   is not there, and the output says so), ``pki/`` (the fleet CA), ``secrets/``;
3. the TUF metadata (``tuf/image``, ``tuf/director``): the replaced pointers
   (``timestamp.json``, ``root.json``) before the versioned files, so every pointer in the
   archive names files that are in it too, and metadata at least as new as the database;
4. the blob index (digest and size of every blob in the store) and, with ``with_blobs``
   and a local store, the blobs themselves; blobs in S3 are referenced, never copied.

Left out, because the controller rebuilds them: the broker's password file and ACL
(written from the device table at start), upload staging, the embedded broker's files.

``MANIFEST.json`` (the last member) lists every other member with its size, sha256 and
mode, and the backup time. ``restore`` extracts into a private directory beside the target,
checks every member against the manifest (an unlisted, missing, changed, truncated or
unsafe member refuses the whole archive), loads the database, and only then renames the
directory into place: a refused archive leaves nothing behind. The archive holds secrets:
it is written 0600.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from sqlalchemy.engine import make_url

from .. import __version__
from .errors import CloudError
from .settings import CloudSettings

SCHEMA = "edgefleet.backup/1"
MANIFEST = "MANIFEST.json"
BLOB_INDEX = "blob-index.json"
SQLITE_MEMBER = "database/controller.db"
PG_MEMBER = "database/controller.pgdump"
DATA = "data/"
# rebuilt by the controller, or live/in-flight state: never in a backup
EXCLUDED_TOP = {"controller.db", "controller.db-wal", "controller.db-shm", "controller.db-journal",
                "broker-auth", "uploads-staging", "mosquitto", "auth", "blobs"}
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
CHUNK = 1024 * 1024
SMALL_FILE = 16 * 1024 * 1024


class BackupError(CloudError):
    """A backup cannot be made, or an archive is refused (damaged, tampered, unsafe)."""

    status_code = 400


@dataclass
class BackupResult:
    path: Path
    sha256: str
    files: int
    bytes: int
    database: str
    blobs_indexed: int
    blobs_copied: int
    notes: list[str] = field(default_factory=list)


@dataclass
class RestoreResult:
    data_dir: Path
    database: str
    files: int
    created: str
    blobs_missing: int
    notes: list[str] = field(default_factory=list)


# ----- helpers --------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


class _HashingReader(io.RawIOBase):
    """Hashes what ``tarfile`` reads from a file on its way into the archive."""

    def __init__(self, f: IO[bytes]):
        self._f = f
        self.sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.sha.update(data)
        return data


def find_pg_tool(name: str, pg_bin: Path | None = None) -> Path:
    """``pg_dump`` / ``pg_restore``: in ``pg_bin``, else the newest /usr/lib/postgresql/*/bin, else PATH.

    Raises:
        BackupError: not found.
    """
    candidates = [pg_bin / name] if pg_bin else []
    candidates += [p / name for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                                            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
                                            reverse=True)]
    found = shutil.which(name)
    if found:
        candidates.append(Path(found))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise BackupError(f"{name} not found (PostgreSQL client tools): install them or pass --pg-bin DIR")


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A libpq URI without the password (it goes in PGPASSWORD, never on a command line)."""
    u = make_url(url)
    env = dict(os.environ)
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    u = u.set(drivername="postgresql", password=None)
    return u.render_as_string(hide_password=False), env


def _is_postgres(url: str) -> bool:
    return url.startswith(("postgres://", "postgresql"))


def _run(cmd: list[str], env: dict[str, str], what: str) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BackupError(f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")


def offline_root_keys(data_dir: Path) -> list[str]:
    """``repo/role`` of every root key whose private half is not here (offline)."""
    try:
        doc = json.loads((data_dir / "keys" / "keyring.json").read_text())
    except (OSError, ValueError):
        return []
    out = []
    for repo, roles in doc.get("repos", {}).items():
        for k in roles.get("root", {}).get("keys", []):
            if k.get("uri") is None:
                out.append(f"{repo}/root {k.get('keyid', '')[:12]}")
    return out


def _outside_files(data_dir: Path) -> list[str]:
    """Absolute paths in ``controller.toml`` that exist outside ``data_dir`` (a PKI of your own, password files)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        doc = tomllib.loads((data_dir / "controller.toml").read_text())
    except (OSError, ValueError):
        return []
    out = []
    for value in doc.get("controller", {}).values():
        if (isinstance(value, str) and value.startswith("/") and Path(value).exists()
                and not Path(value).resolve().is_relative_to(data_dir.resolve())):
            out.append(value)
    return sorted(out)


def _ordered_data_files(data_dir: Path, skip: set[Path]) -> tuple[list[Path], list[str]]:
    """Files of the data dir to back up: keys and settings first, TUF pointers before versioned files."""
    notes: list[str] = []
    files: list[Path] = []
    for root, dirs, names in os.walk(data_dir):
        rel_root = Path(root).relative_to(data_dir)
        if rel_root == Path("."):
            dirs[:] = [d for d in dirs if d not in EXCLUDED_TOP]
            names = [n for n in names if n not in EXCLUDED_TOP]
        dirs.sort()
        for n in sorted(names):
            p = Path(root) / n
            if p in skip or (n.startswith(".") and n.endswith(".tmp")):
                continue
            if p.is_symlink() or not p.is_file():
                notes.append(f"skipped {p.relative_to(data_dir)} (not a regular file)")
                continue
            files.append(p)

    def order(p: Path) -> tuple[int, str]:
        rel = p.relative_to(data_dir).as_posix()
        if not rel.startswith("tuf/"):
            return (0, rel)
        return (1 if not p.name[:1].isdigit() else 2, rel)  # pointers, then versioned files

    return sorted(files, key=order), notes


# ----- backup ---------------------------------------------------------------------------------


def _sqlite_snapshot(db_file: Path, out: Path) -> None:
    if not db_file.is_file():
        raise BackupError(f"no database at {db_file}")
    src = sqlite3.connect(str(db_file), timeout=30)
    dst = sqlite3.connect(str(out))
    try:
        src.execute("PRAGMA busy_timeout=30000")
        src.backup(dst)  # one read transaction: consistent while the controller writes
        dst.execute("PRAGMA journal_mode=DELETE")
        ok = dst.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            raise BackupError(f"database snapshot failed its integrity check: {ok}")
    finally:
        dst.close()
        src.close()


def _blob_index(settings: CloudSettings, store: Any) -> dict[str, Any]:
    digests = {}
    for d in store.iter_digests():
        try:
            digests[d] = store.size(d)
        except Exception:  # vanished while listing: not referenced any more
            continue
    where = "local" if not settings.store_url else settings.store_url.split("?")[0]
    return {"store": where, "digests": digests}


def create_backup(settings: CloudSettings, out: Path, *, with_blobs: bool = False, pg_bin: Path | None = None,
                  store: Any = None, now: datetime | None = None) -> BackupResult:
    """Write a backup archive of this controller to ``out`` (0600, atomically).

    Raises:
        BackupError: ``out`` exists, the database cannot be read or dumped.
    """
    from .runtime import open_store

    out = Path(os.path.abspath(out))
    data_dir = settings.data_dir
    if out.exists():
        raise BackupError(f"{out} exists: choose a new name (a backup never overwrites one)")
    if not data_dir.is_dir():
        raise BackupError(f"no controller data directory at {data_dir}")
    store = store if store is not None else open_store(settings)
    now = now or datetime.now(timezone.utc)
    notes: list[str] = []
    entries: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix=".edgefleet-backup-", dir=out.parent))  # 0700, same filesystem as out
    tmp_out = work / "archive.tar.gz"
    try:
        url = settings.db_url
        if _is_postgres(url):
            db_kind, db_member, db_file = "postgresql", PG_MEMBER, work / "controller.pgdump"
            uri, env = _libpq(url)
            _run([str(find_pg_tool("pg_dump", pg_bin)), "--format=custom", "--no-owner", "--no-privileges",
                  f"--file={db_file}", f"--dbname={uri}"], env, "pg_dump")
        elif url.startswith("sqlite"):
            db_kind, db_member, db_file = "sqlite", SQLITE_MEMBER, work / "controller.db"
            database = make_url(url).database
            _sqlite_snapshot(Path(database or ""), db_file)
        else:
            raise BackupError(f"cannot back up database {url.split('://')[0]}: SQLite and PostgreSQL only")
        fd = os.open(tmp_out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        blobs_copied = 0
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6) as tar:

            def add_file(member: str, path: Path) -> None:
                st = path.stat()
                info = tarfile.TarInfo(member)
                info.size, info.mode, info.mtime = st.st_size, st.st_mode & 0o7777, int(st.st_mtime)
                with open(path, "rb") as f:
                    reader = _HashingReader(f)
                    tar.addfile(info, reader)  # type: ignore[arg-type]
                entries.append({"path": member, "size": st.st_size, "sha256": reader.sha.hexdigest(),
                                "mode": f"{st.st_mode & 0o7777:04o}"})

            def add_bytes(member: str, data: bytes, mode: int = 0o600) -> None:
                info = tarfile.TarInfo(member)
                info.size, info.mode, info.mtime = len(data), mode, int(now.timestamp())
                tar.addfile(info, io.BytesIO(data))
                if member != MANIFEST:
                    entries.append({"path": member, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                                    "mode": f"{mode:04o}"})

            add_file(db_member, db_file)
            files, skipped = _ordered_data_files(data_dir, skip={out})
            notes += skipped
            for p in files:
                rel = p.relative_to(data_dir).as_posix()
                st = p.stat()
                if st.st_size <= SMALL_FILE:  # replaced atomically: read once, hash and store the same bytes
                    add_bytes(DATA + rel, p.read_bytes(), st.st_mode & 0o7777)
                else:
                    add_file(DATA + rel, p)
            index = _blob_index(settings, store)
            add_bytes(BLOB_INDEX, json.dumps(index, indent=1, sort_keys=True).encode())
            if with_blobs:
                if settings.store_url and not Path(settings.store_url).is_absolute():
                    notes.append(f"blobs live in {index['store']}: referenced in {BLOB_INDEX}, not copied "
                                 "(use the bucket's versioning or replication)")
                else:
                    root = Path(settings.store_url) if settings.store_url else settings.blobs_dir
                    for digest in sorted(index["digests"]):
                        add_file(f"blobs/sha256/{digest[:2]}/{digest}", root / "sha256" / digest[:2] / digest)
                        blobs_copied += 1
            elif index["digests"]:
                notes.append(f"{len(index['digests'])} blob(s) indexed, not copied (add --with-blobs for a local store)")
            outside = _outside_files(data_dir)
            if outside:
                notes.append("controller.toml names files outside the data directory, not in this backup "
                             "(back them up with the host): " + ", ".join(outside))
            offline = offline_root_keys(data_dir)
            if offline:
                notes.append("root key(s) offline, therefore not in this backup: " + ", ".join(offline))
            elif (data_dir / "keys").is_dir():
                notes.append("the root signing key(s) are in this backup: keep the archive offline, or move root keys offline")
            manifest = {
                "schema": SCHEMA, "created": now.isoformat().replace("+00:00", "Z"), "edgefleet": __version__,
                "data_dir": str(data_dir), "database": {"kind": db_kind, "member": db_member},
                "store": index["store"], "blobs_included": blobs_copied > 0,
                "root_keys_offline": offline, "files": entries,
            }
            add_bytes(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
        digest = file_sha256(tmp_out)
        size = tmp_out.stat().st_size
        os.link(tmp_out, out)  # never replaces a file that appeared meanwhile
        return BackupResult(out, digest, len(entries), size, db_kind, len(index["digests"]), blobs_copied, notes)
    except OSError as exc:
        raise BackupError(f"backup failed: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ----- restore --------------------------------------------------------------------------------


def _safe_member(name: str) -> str:
    parts = name.split("/")
    if not name or name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
        raise BackupError(f"archive refused: unsafe member name {name!r}")
    return name


def _extract_verified(archive: Path, staging: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    """Stream every member into ``staging``, then check the set against the manifest.

    Raises:
        BackupError: damaged, truncated, unsafe or not matching its manifest.
    """
    seen: dict[str, tuple[int, str]] = {}
    paths: dict[str, Path] = {}
    manifest_bytes: bytes | None = None
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for m in tar:
                name = _safe_member(m.name)
                if m.isdir():
                    continue
                if not m.isreg():
                    raise BackupError(f"archive refused: {name} is not a regular file")
                if name in seen or (name == MANIFEST and manifest_bytes is not None):
                    raise BackupError(f"archive refused: {name} appears twice")
                src = tar.extractfile(m)
                assert src is not None
                if name == MANIFEST:
                    if m.size > MAX_MANIFEST_BYTES:
                        raise BackupError("archive refused: manifest too large")
                    manifest_bytes = src.read()
                    continue
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                h, n = hashlib.sha256(), 0
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    while chunk := src.read(CHUNK):
                        h.update(chunk)
                        n += len(chunk)
                        f.write(chunk)
                seen[name] = (n, h.hexdigest())
                paths[name] = target
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:  # zlib errors are OSError/zlib.error
        raise BackupError(f"archive refused: damaged or truncated ({exc})") from exc
    except Exception as exc:  # zlib.error and friends
        if isinstance(exc, BackupError):
            raise
        raise BackupError(f"archive refused: damaged or truncated ({exc})") from exc
    if manifest_bytes is None:
        raise BackupError(f"archive refused: no {MANIFEST} (truncated, or not an edgefleet backup)")
    try:
        manifest = json.loads(manifest_bytes)
    except ValueError as exc:
        raise BackupError(f"archive refused: {MANIFEST} is not JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise BackupError(f"archive refused: unknown manifest schema {manifest.get('schema') if isinstance(manifest, dict) else None!r}")
    listed = {e["path"]: e for e in manifest.get("files", [])}
    missing = sorted(set(listed) - set(seen))
    extra = sorted(set(seen) - set(listed))
    if missing:
        raise BackupError(f"archive refused: {len(missing)} file(s) in the manifest are missing, e.g. {missing[0]} (truncated?)")
    if extra:
        raise BackupError(f"archive refused: {len(extra)} file(s) not in the manifest, e.g. {extra[0]}")
    for name, (size, sha) in seen.items():
        e = listed[name]
        if e["size"] != size or e["sha256"] != sha:
            raise BackupError(f"archive refused: {name} does not match its manifest entry (sha256 or size changed)")
    return manifest, paths


def restore_backup(archive: Path, data_dir: Path, *, database_url: str | None = None, expect_sha256: str | None = None,
                   pg_bin: Path | None = None) -> RestoreResult:
    """Restore ``archive`` into the new data directory ``data_dir`` (absent or empty).

    A PostgreSQL backup goes into ``database_url`` (an empty database), in one transaction.

    Raises:
        BackupError: the archive is refused, the target is not empty, or the database load fails;
            nothing is left in ``data_dir`` then.
    """
    archive, data_dir = Path(os.path.abspath(archive)), Path(os.path.abspath(data_dir))
    if not archive.is_file():
        raise BackupError(f"no archive at {archive}")
    if expect_sha256 is not None and file_sha256(archive) != expect_sha256.lower():
        raise BackupError(f"archive refused: its sha256 is not {expect_sha256}")
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise BackupError(f"{data_dir} is not an empty directory: restore into a new data directory")
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.restore-", dir=data_dir.parent))
    notes: list[str] = []
    try:
        manifest, paths = _extract_verified(archive, staging)
        new_data = staging / "data"
        new_data.mkdir(exist_ok=True, mode=0o700)
        for e in manifest["files"]:
            os.chmod(paths[e["path"]], int(e["mode"], 8) & 0o7777)
        db = manifest["database"]
        if db["kind"] == "sqlite":
            if database_url and _is_postgres(database_url):
                raise BackupError("this backup holds a SQLite database; unset DATABASE_URL to restore it, "
                                  "or restore it as it is and migrate to PostgreSQL afterwards")
            os.replace(paths[db["member"]], new_data / "controller.db")
            os.chmod(new_data / "controller.db", 0o600)
        elif db["kind"] == "postgresql":
            if not database_url or not _is_postgres(database_url):
                raise BackupError("this backup holds a PostgreSQL dump: set DATABASE_URL (or --database-url) "
                                  "to an empty PostgreSQL database to restore into")
            _pg_restore(paths[db["member"]], database_url, pg_bin)
            _set_database_url(new_data / "controller.toml", database_url, notes)
        else:
            raise BackupError(f"archive refused: unknown database kind {db['kind']!r}")
        if "blobs/sha256" in {"/".join(p.split("/")[:2]) for p in paths}:
            os.replace(staging / "blobs", new_data / "blobs")
        (new_data / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        _repoint(new_data, manifest.get("data_dir"), data_dir, notes)
        index = json.loads((staging / BLOB_INDEX).read_text())
        missing = _missing_blobs(index, new_data, manifest)
        if missing:
            notes.append(f"{missing} blob(s) the database refers to are not in the local store: copy "
                         f"the old blobs/ into {data_dir / 'blobs'} (or set store_url to the store that holds them)")
        if manifest.get("root_keys_offline"):
            notes.append("root keys were offline at backup time: keep them for the next root rotation")
        notes.append("broker password file and ACL are written from the database when the controller starts")
        os.chmod(new_data, 0o700)
        if data_dir.exists():
            data_dir.rmdir()  # empty (checked above)
        os.rename(new_data, data_dir)
    except OSError as exc:
        raise BackupError(f"restore failed, nothing restored: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return RestoreResult(data_dir, db["kind"], len(manifest["files"]), manifest.get("created", "?"), missing, notes)


def _pg_restore(dump: Path, url: str, pg_bin: Path | None) -> None:
    from sqlalchemy import inspect

    from .db import make_engine

    engine = make_engine(url)
    try:
        if inspect(engine).get_table_names():
            raise BackupError("the PostgreSQL database is not empty: restore into a new, empty database")
    except BackupError:
        raise
    except Exception as exc:
        raise BackupError(f"cannot reach the PostgreSQL database: {exc}") from exc
    finally:
        engine.dispose()
    uri, env = _libpq(url)
    _run([str(find_pg_tool("pg_restore", pg_bin)), "--no-owner", "--no-privileges", "--single-transaction",
          "--exit-on-error", f"--dbname={uri}", str(dump)], env, "pg_restore")


def _repoint(new_data: Path, old: str | None, new: Path, notes: list[str]) -> None:
    """Paths into the old data directory in controller.toml / cli.toml now name the new one."""
    if not old or Path(old) == new:
        return
    for name in ("controller.toml", "cli.toml"):
        p = new_data / name
        if p.is_file():
            text = p.read_text()
            changed = text.replace(f'"{old}/', f'"{new}/').replace(f'"{old}"', f'"{new}"')
            if changed != text:
                mode = p.stat().st_mode & 0o777
                p.write_text(changed)
                os.chmod(p, mode)
                notes.append(f"{name}: paths under {old} now point to {new}")


def _set_database_url(cfg: Path, url: str, notes: list[str]) -> None:
    """A restored ``controller.toml`` that names a database names the one restored into."""
    if not cfg.is_file():
        return
    lines = cfg.read_text().splitlines(keepends=True)
    changed = False
    for i, line in enumerate(lines):
        key, sep, value = line.partition("=")
        if sep and key.strip() == "database_url" and value.strip() != json.dumps(url):
            lines[i] = f"database_url = {json.dumps(url)}\n"
            changed = True
    if changed:
        mode = cfg.stat().st_mode & 0o777
        cfg.write_text("".join(lines))
        os.chmod(cfg, mode)
        notes.append("controller.toml: database_url now names the database restored into")


def _missing_blobs(index: dict[str, Any], new_data: Path, manifest: dict[str, Any]) -> int:
    if index.get("store") != "local":
        return 0
    root = new_data / "blobs" / "sha256"
    return sum(1 for d in index.get("digests", {}) if not (root / d[:2] / d).is_file())
