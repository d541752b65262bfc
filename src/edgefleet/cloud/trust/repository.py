"""The controller's side of the trust model: sign releases, sign per-device assignments.

``Trust`` owns the keyring (``{data_dir}/keys``), the TUF metadata (``{data_dir}/tuf``),
the image repository and the director. ``fleet keys init`` (or the first start) creates
them; afterwards they are loaded. Model bundles stay in the blob store; the image
repository signs them as ``<model>/<version>/r<counter>.tar`` targets. Every time a
device's desired state changes, the director signs exactly what that device must
install, and the settings and generation it must apply; MQTT only carries the director
version as a hint.

Keys at rest: ``fleet keys init`` can keep the root keys off the controller (an offline
directory, encrypted with a passphrase, or a signer URI; ``registry.tuf.keyplace``). The
controller then runs on its online keys (snapshot, timestamp, targets); what needs root
(rotation, re-signing root) goes through ``prepare_root_change`` → the command signs the
unsigned root with the keys it brought → ``commit_root_change``. On load, key files that
group or others can read are tightened to 0600 (directory 0700) with a WARNING each.

Release counters only go up on a device. When the controller sends a device back to an
older model (a rollback), ``target_for`` re-releases that model's bytes under a new,
higher counter, so the device accepts it without ever accepting an *older* signature.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from securesystemslib.signer import Key, Signature
from sqlalchemy.engine import Engine
from sqlmodel import Session

from ...registry import BlobStore
from ...registry.tuf import (
    Director,
    ImageRepository,
    ImageTarget,
    KeyRing,
    KeyringError,
    LocalMetadataStore,
    RepositoryStateError,
    SignatureError,
    TufResolver,
)
from ...registry.tuf.keyplace import Placement, permission_problems
from ...registry.tuf.keys import KEYRING_FILE, KeyEntry
from ...registry.tuf.signing import PendingRoot
from ..errors import BadRequest, Conflict, KeysOffline

if TYPE_CHECKING:
    from .image_store import DatabaseImageStore
from . import first_setup

log = logging.getLogger(__name__)

KEYS_DIR = "keys"
TUF_DIR = "tuf"


@dataclass(frozen=True)
class Roots:
    director: bytes
    image: bytes


class Trust:
    def __init__(self, data_dir: Path, blobs: BlobStore, keyring: KeyRing, store: LocalMetadataStore):
        self.data_dir = data_dir
        self.blobs = blobs
        self.keyring = keyring
        self.store = store
        self.image = ImageRepository(store, blobs, keyring)
        self.director = Director(store, keyring, self.image)
        self._lock = threading.RLock()
        self._pending: dict[str, PendingRoot] = {}  # repo → root change waiting for offline signatures
        self.engine: Engine | None = None  # set by attach_database: per-device director metadata lives there
        self.image_store: DatabaseImageStore | None = None  # set by attach_database: image metadata too

    def attach_database(self, engine: Engine) -> None:
        """Keep and serve per-device director metadata and the image repository's online
        metadata in the controller's database (``signing``, ``director_store``,
        ``image_store``) rather than in files, so every replica signs and serves the same:
        the resolver reads them there, pushes, expiry refreshes and key rotations sign them
        there. Touches no table (the controller migrates afterwards); the image metadata
        is read from the files until ``import_image_files`` (or the first signature)
        copies it into the database."""
        from .image_store import DatabaseImageStore

        self.engine = engine
        self.image_store = DatabaseImageStore(engine, self.store, prefix=self.image.repo.prefix)
        self.image = ImageRepository(self.image_store, self.blobs, self.keyring,
                                     expiry=self.image.repo.expiry, clock=self.image.repo.clock)
        self.director.image = self.image
        self.image_store.on_abort.append(self._forget_unsaved_image)

    def _forget_unsaved_image(self) -> None:
        """A signing transaction rolled back: drop what the repository cached or staged from it."""
        self.image.repo._cache.clear()
        self.image._staged.clear()

    @contextmanager
    def _image_writing(self, session: Session | None = None) -> Iterator[None]:
        """One locked transaction for the image repository (the caller's ``session`` when
        given); nothing without a database."""
        if self.image_store is None:
            yield
            return
        with self.image_store.writing(session):
            yield

    def import_image_files(self, session: Session) -> bool:
        """Copy the file-based image metadata into the database once (an upgraded
        controller; a replica that finds it there already does nothing), so signing
        continues above the versions devices trust. Commits. Returns whether it imported."""
        if self.image_store is None:
            return False
        done = self.image_store.import_files(session)
        session.commit()
        if done:
            log.info("image repository metadata imported into the database (timestamp v%d)",
                     self.image.repo.timestamp().signed.version)
        return done

    def image_expiry(self) -> dict[str, dict[str, Any]]:
        """role → {"version", "expires"} of the image repository's current targets,
        snapshot and timestamp (wherever they are kept), for ``fleet keys status``."""
        repo = self.image.repo
        out: dict[str, dict[str, Any]] = {}
        for role, md in (("timestamp", repo.timestamp()), ("snapshot", repo.snapshot()), ("targets", repo.targets())):
            out[role] = {"version": md.signed.version,
                         "expires": md.signed.expires.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        return out

    # ----- set-up -----

    @staticmethod
    def exists(data_dir: Path) -> bool:
        return (data_dir / KEYS_DIR / "keyring.json").exists()

    @classmethod
    def init(cls, data_dir: Path, blobs: BlobStore, *, root_threshold: int = 1, root_keys: int = 1,
             placement: Placement | None = None) -> Trust:
        """Create keys and empty image and director repositories (``fleet keys init``).

        With ``placement``, root private keys go where it says and are forgotten once root
        v1 is signed: this process (and the controller) cannot use them afterwards.
        The setup is all or nothing (``first_setup``): built aside and moved into place last, so a
        process killed at any point leaves a whole setup or none.

        Raises:
            KeyringError: keys exist already, bad threshold, or an unusable signer URI.
            PartialTrustSetup: an older version's interrupted setup is there (never overwritten).
        """
        with first_setup.setup_lock(data_dir):
            first_setup.recover(data_dir)
            if cls.exists(data_dir):
                raise KeyringError(f"a keyring exists already in {data_dir / KEYS_DIR}")
            first_setup.refuse_partial(data_dir)
            first_setup.build(data_dir, blobs, root_threshold=root_threshold, root_keys=root_keys,
                              placement=placement)
        keyring = KeyRing.load(data_dir / KEYS_DIR)
        log.info("trust initialised in %s (root threshold %d of %d, root in %s)", data_dir, root_threshold,
                 len(keyring.role("image", "root").keys), placement.summary() if placement else "data dir")
        return cls(data_dir, blobs, keyring, LocalMetadataStore(data_dir / TUF_DIR))

    @classmethod
    def load(cls, data_dir: Path, blobs: BlobStore) -> Trust:
        """Load keys and metadata; key files group or others can read are tightened, with a WARNING.

        Raises:
            PartialTrustSetup: key files or roots the keyring needs are missing (named).
        """
        with first_setup.setup_lock(data_dir):
            first_setup.recover(data_dir)
            first_setup.refuse_partial(data_dir)
        for problem in permission_problems(data_dir / KEYS_DIR, public_files=(KEYRING_FILE,), fix=True):
            log.warning("signing keys were exposed: %s; fixed (0600 files, 0700 directory). "
                        "Rotate keys someone may have copied: fleet keys rotate", problem)
        return cls(data_dir, blobs, KeyRing.load(data_dir / KEYS_DIR), LocalMetadataStore(data_dir / TUF_DIR))

    @classmethod
    def open(cls, data_dir: Path, blobs: BlobStore) -> Trust:
        """Load the trust state, creating a 1-of-1 demo setup (every key online) on first use.

        An interrupted setup is finished or removed first; a partial one is refused (``first_setup``).
        """
        with first_setup.setup_lock(data_dir):
            first_setup.recover(data_dir)
        if cls.exists(data_dir):
            return cls.load(data_dir, blobs)
        log.warning("no signing keys in %s: creating a 1-of-1 demo setup with the root key online; for "
                    "production run `fleet keys init --offline-dir DIR` before the first start", data_dir / KEYS_DIR)
        try:
            return cls.init(data_dir, blobs)
        except KeyringError:
            if cls.exists(data_dir):  # another process set it up meanwhile
                return cls.load(data_dir, blobs)
            raise

    def roots(self) -> Roots:
        return Roots(director=self.director.root_bytes(), image=self.image.root_bytes())

    def resolver(self) -> TufResolver:
        if self.engine is None:
            return TufResolver(self.image, self.director)
        from .director_store import make_reader

        return TufResolver(self.image, self.director, director_reader=make_reader(self.engine, self.director))

    def _resign_database(self, role: str) -> None:
        """After a director key rotation: re-sign the devices kept in the database."""
        if self.engine is None or role == "root":
            return
        from .signing import resign_all

        with Session(self.engine, expire_on_commit=False) as s:
            n = resign_all(s, self, role)
        log.info("director %s key rotated: %d devices' metadata re-signed in the database", role, n)

    # ----- releases -----

    def release(self, digest: str, manifest: dict, *, session: Session | None = None) -> ImageTarget:
        """Sign a bundle as a new image target under the next global release counter.

        With a database, one locked transaction: ``session``'s (the caller commits: the push
        and its signed metadata together), else its own, committed here."""
        manifest_digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
        with self._lock, self._image_writing(session):
            return self.image.release(
                digest, model=manifest["name"], version=manifest["version"],
                hardware_ids=list(manifest.get("hardware_ids") or []), manifest_digest=manifest_digest,
                provenance=manifest.get("provenance") or {},
            )

    def assign(
        self, device_id: str, hardware_id: str, slots: dict[str, str | None], *,
        generation: int | None = None, settings: dict[str, Any] | None = None,
        credentials_epoch: int | None = None,
    ) -> int:
        """Sign the device's full desired state (slots, and the desired generation, settings
        and credentials epoch in its signed binding); returns the director version (the
        MQTT hint).

        Raises:
            BadRequest: a target not built for this device's hardware, or unknown.
        """
        with self._lock:
            try:
                version = self.director.assign(
                    device_id, hardware_id, slots, generation=generation, settings=settings,
                    credentials_epoch=credentials_epoch,
                )
            except RepositoryStateError as exc:
                raise BadRequest(f"cannot assign to {device_id}: {exc}") from None
        log.info("director v%d signed for device %s (%s): %s", version, device_id, hardware_id, slots)
        return version

    def rotate(self, role: str, repo: str = "both") -> dict[str, str]:
        """Rotate ``role``'s key (root included) in the image repository and/or the director.

        Devices follow a root rotation through the chain of signed root versions.
        """
        done: dict[str, str] = {}
        with self._lock:
            for name in _repos(repo):
                if not self.keyring.online(name, "root"):
                    raise KeysOffline(_offline_message(self.keyring, name, f"rotating the {role} key"))
            if repo in ("image", "both"):
                with self._image_writing():
                    done["image"] = self.image.rotate(role)
            if repo in ("director", "both"):
                done["director"] = self.director.rotate(role)
                self._resign_database(role)
        log.info("rotated %s key(s): %s", role, done)
        return done

    # ----- root changes signed by keys the controller does not hold -----

    def prepare_root_change(self, role: str | None, repo: str = "both",
                            new_root_keys: dict[str, KeyEntry] | None = None) -> dict[str, dict]:
        """Prepare the next root of each repository in ``repo``: ``role``'s key replaced
        (a new online key, or for ``root`` the caller's ``new_root_keys[repo]``, whose
        private half the caller keeps), or with ``role`` ``None`` only a new expiry.

        Returns:
            repo → the unsigned new root (``{"signed": …, "signatures": []}``) to sign.

        Raises:
            BadRequest: a root rotation without the new root key.
        """
        out: dict[str, dict] = {}
        with self._lock:
            for name in _repos(repo):
                new = (new_root_keys or {}).get(name) if role == "root" else None
                if role == "root" and new is None:
                    raise BadRequest(f"rotating {name} root offline needs the new root public key")
                target = self.image if name == "image" else self.director
                try:
                    pending = target.prepare_rotation(role, None, new)
                except (KeyringError, RepositoryStateError) as exc:
                    raise Conflict(str(exc)) from None
                self._pending[name] = pending
                out[name] = pending.unsigned()
        return out

    def commit_root_change(self, signatures: dict[str, list[dict]]) -> dict[str, str | None]:
        """Publish the prepared roots with ``signatures`` (repo → ``[{"keyid", "sig"}]``);
        then online metadata is re-signed for a changed online key.

        Returns:
            repo → the new keyid (``None`` when only root's expiry changed).

        Raises:
            Conflict: nothing prepared for a repository, or root changed meanwhile.
            BadRequest: below the threshold of the current or the new root's keys.
        """
        done: dict[str, str | None] = {}
        with self._lock:
            for name, sigs in signatures.items():
                pending = self._pending.get(name)
                if pending is None:
                    raise Conflict(f"no root change prepared for {name}: prepare it first")
                try:
                    parsed = {s["keyid"]: Signature.from_dict(dict(s)) for s in sigs}
                except (KeyError, TypeError, ValueError) as exc:
                    raise BadRequest(f"bad signature entry for {name}: {exc}") from None
                target = self.image if name == "image" else self.director
                try:
                    with self._image_writing() if name == "image" else nullcontext():
                        target.finish_rotation(pending, parsed)
                except SignatureError as exc:
                    raise BadRequest(str(exc)) from None
                except RepositoryStateError as exc:
                    raise Conflict(str(exc)) from None
                del self._pending[name]
                if name == "director" and pending.role is not None:
                    self._resign_database(pending.role)
                done[name] = pending.new.keyid if pending.new is not None else None
        log.info("root change committed with offline signatures: %s", done)
        return done

    def root_expiring(self, now: datetime | None = None) -> list[str]:
        """Repositories whose root is within its refresh window (re-sign with ``fleet keys resign-root``)."""
        now = now or datetime.now(timezone.utc)
        out = []
        for name, repo in (("image", self.image.repo), ("director", self.director._root)):
            if repo.expiry.due("root", repo.root().signed.expires, now):
                out.append(name)
        return out

    def refresh_expiring(self) -> None:
        with self._lock:
            with self._image_writing():  # two replicas: one re-signs, the other then finds it fresh
                renewed = self.image.refresh_expiring()
            devices = self.director.refresh_expiring()  # files left by an older controller, if any
        if self.engine is not None:
            from .signing import refresh_expiring

            with Session(self.engine, expire_on_commit=False) as s:
                devices += refresh_expiring(s, self)
        if renewed or devices:
            log.info("re-signed expiring metadata: image %s, director devices %s", renewed, devices)


def _repos(repo: str) -> tuple[str, ...]:
    return ("image", "director") if repo == "both" else (repo,)


def _offline_message(keyring: KeyRing, repo: str, what: str) -> str:
    try:
        keyring.signers(repo, "root")
    except KeyringError as exc:
        detail = str(exc)
    else:  # pragma: no cover - only called when offline
        detail = f"{repo}/root is online"
    return (f"{what} needs the {repo} root key, which the controller does not hold ({detail}); "
            "run the command with --root-dir DIR, --passphrase-file F / --passphrase-env VAR, or --root-signer URI")


def key_entry_from_wire(d: dict) -> KeyEntry:
    """A new root key sent by a command: public half and where it keeps the private half."""
    try:
        public = Key.from_dict(str(d["keyid"]), dict(d["public"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRequest(f"bad public key: {exc}") from None
    location = d.get("location")
    return KeyEntry(public, None, dict(location) if isinstance(location, dict) else None)
