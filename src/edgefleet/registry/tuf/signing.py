"""The signing core shared by the image repository and the director.

``SignedRepo`` is one TUF repository inside a ``MetadataStore``: root under
``root_prefix`` (``N.root.json`` plus the current ``root.json``), the other roles under
``prefix`` (``N.snapshot.json``, ``N.<targets role>.json`` and the non-versioned
``timestamp.json``). Repositories edit targets roles in memory and call ``commit``,
which signs each changed role as a new version, then a new snapshot listing them, then a
new timestamp: the timestamp write is the commit point, so a crash before it leaves
only unreferenced files. Consistent snapshots are always on.

Pure apart from the store: time comes in through ``clock``; signers come from a
``KeyRing``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from securesystemslib.signer import Key, Signature, Signer
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import (
    SPECIFICATION_VERSION,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from ...protocols import fast_json
from .canonical import canonical_json
from .errors import KeyringError, RepositoryStateError, SignatureError
from .keys import KeyEntry, KeyRing
from .store import MetadataStore

Clock = Callable[[], datetime]
TOP_ROLES = ("root", "targets", "snapshot", "timestamp")
_SERIALIZER = JSONSerializer(compact=True)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Expiry:
    """How long each role's metadata is valid; re-signed when less than
    ``refresh_fraction`` of that lifetime is left."""

    root: timedelta = timedelta(days=365)
    targets: timedelta = timedelta(days=365)
    delegated: timedelta = timedelta(days=365)
    snapshot: timedelta = timedelta(days=7)
    timestamp: timedelta = timedelta(days=1)
    refresh_fraction: float = 0.5

    def for_role(self, role: str) -> timedelta:
        return getattr(self, role) if role in TOP_ROLES else self.delegated

    def due(self, role: str, expires: datetime, now: datetime) -> bool:
        return expires - now <= self.for_role(role) * self.refresh_fraction


def _expires(now: datetime, life: timedelta) -> datetime:
    return (now + life).replace(microsecond=0)


def metafile(md_bytes: bytes, version: int) -> MetaFile:
    return MetaFile(
        version=version, length=len(md_bytes), hashes={"sha256": hashlib.sha256(md_bytes).hexdigest()}
    )


@dataclass
class PendingRoot:
    """A new root version waiting for its signatures: a key change (``role``, ``old`` →
    ``new``) or, with ``role`` ``None``, only a new expiry (re-signing root)."""

    repo: str
    role: str | None
    old: KeyEntry | None
    new: KeyEntry | None
    md: Metadata[Root]

    def unsigned(self) -> dict:
        """The new root as JSON with no signatures: what an offline signer signs."""
        d = self.md.to_dict()
        d["signatures"] = []
        return d


def sign(md: Metadata, signers: Iterable[Signer]) -> bytes:
    """Sign ``md`` with each of ``signers`` (its signatures replaced); returns its bytes.

    The same bytes as ``md.sign(s, append=True)`` for each signer then
    ``md.to_bytes(JSONSerializer(compact=True))``, with the signed part turned into a dict
    once instead of once per signer and again for the bytes (a device's three documents
    are signed per wave: issue 14); ``canonical_json`` writes what the signatures cover.

    Raises:
        UnsignedMetadataError: a signer failed.
    """
    md.signatures.clear()
    signed = md.signed.to_dict()
    payload = canonical_json(signed)
    for signer in signers:
        try:
            signature = signer.sign(payload)
        except Exception as exc:
            raise UnsignedMetadataError(f"Failed to sign: {exc}") from exc
        md.signatures[signature.keyid] = signature
    doc = {"signatures": [sig.to_dict() for sig in md.signatures.values()], "signed": signed,
           **md.unrecognized_fields}
    fast = fast_json.canonical_ascii(doc)  # json.dumps's bytes, by orjson where they are equal
    return fast if fast is not None else json.dumps(doc, separators=(",", ":"), sort_keys=True).encode("utf-8")


class SignedRepo:
    """One TUF repository (root, timestamp, snapshot, targets [+ delegated roles])."""

    def __init__(
        self,
        store: MetadataStore,
        keyring: KeyRing,
        keyring_repo: str,
        *,
        prefix: str,
        root_prefix: str | None = None,
        expiry: Expiry | None = None,
        clock: Clock = utcnow,
        delegated_signing_role: str = "targets",
    ):
        self.store = store
        self.keyring = keyring
        self.keyring_repo = keyring_repo
        self.prefix = prefix.strip("/")
        self.root_prefix = (root_prefix if root_prefix is not None else prefix).strip("/")
        self.expiry = expiry or Expiry()
        self.clock = clock
        self.delegated_signing_role = delegated_signing_role
        self._cache: dict[tuple[str, int], Metadata] = {}

    # -- names ------------------------------------------------------------------------

    def name(self, role: str, version: int | None) -> str:
        base = self.root_prefix if role == Root.type else self.prefix
        fname = f"{role}.json" if version is None else f"{version}.{role}.json"
        return f"{base}/{fname}" if base else fname

    def signers(self, role: str) -> list[Signer]:
        key_role = role if role in TOP_ROLES else self.delegated_signing_role
        return self.keyring.signers(self.keyring_repo, key_role)

    # -- reading ----------------------------------------------------------------------

    def _load(self, role: str, version: int | None) -> Metadata:
        if version is not None and (role, version) in self._cache:
            return self._cache[(role, version)]
        try:
            md = Metadata.from_bytes(self.store.read(self.name(role, version)))
        except FileNotFoundError:
            raise RepositoryStateError(
                f"{self.name(role, version)} not found: repository not initialised?"
            ) from None
        self._cache[(role, md.signed.version)] = md
        return md

    def root(self) -> Metadata[Root]:
        return self._load(Root.type, None)

    def timestamp(self) -> Metadata[Timestamp]:
        return Metadata.from_bytes(self.store.read(self.name(Timestamp.type, None)))

    def snapshot(self) -> Metadata[Snapshot]:
        return self._load(Snapshot.type, self.timestamp().signed.snapshot_meta.version)

    def targets(self, role: str = Targets.type, snapshot: Snapshot | None = None) -> Metadata[Targets]:
        snap = snapshot or self.snapshot().signed
        meta = snap.meta.get(f"{role}.json")
        if meta is None:
            raise RepositoryStateError(f"role {role} is not in the snapshot")
        return self._load(role, meta.version)

    def initialised(self) -> bool:
        return self.store.exists(self.name(Timestamp.type, None))

    # -- writing ----------------------------------------------------------------------

    def write_root(self, md: Metadata[Root], signers: Iterable[Signer]) -> bytes:
        data = sign(md, signers)
        self.store.write(self.name(Root.type, md.signed.version), data)
        self.store.write(self.name(Root.type, None), data)
        self._cache[(Root.type, md.signed.version)] = Metadata.from_bytes(data)
        return data

    def new_root(self, role_keys: dict[str, tuple[list[Key], int]]) -> Metadata[Root]:
        now = self.clock()
        root = Root(
            version=1,
            spec_version=SPECIFICATION_VERSION_STR,
            expires=_expires(now, self.expiry.root),
            consistent_snapshot=True,
        )
        for role, (keys, threshold) in role_keys.items():
            for key in keys:
                root.add_key(key, role)
            root.roles[role].threshold = threshold
        return Metadata(root)

    def root_keys_from_keyring(self) -> dict[str, tuple[list[Key], int]]:
        out = {}
        for role in TOP_ROLES:
            rk = self.keyring.role(self.keyring_repo, role)
            out[role] = ([k.public for k in rk.keys], rk.threshold)
        return out

    def commit(
        self,
        changed: dict[str, Targets],
        *,
        new_snapshot: bool = True,
        snapshot: Snapshot | None = None,
    ) -> tuple[int, int]:
        """Sign ``changed`` targets roles as new versions, then snapshot and timestamp.

        Each ``Targets`` in ``changed`` must already carry its new version number.
        Returns (snapshot version, timestamp version).
        """
        now = self.clock()
        if snapshot is None:
            snap = copy.deepcopy(self.snapshot().signed) if self.initialised() else None
        else:
            snap = snapshot
        first = snap is None
        if snap is None:
            snap = Snapshot(version=1, spec_version=SPECIFICATION_VERSION_STR, meta={})
        for role, signed in changed.items():
            signed.expires = _expires(now, self.expiry.for_role(role))
            md = Metadata(signed)
            data = sign(md, self.signers(role))
            self.store.write(self.name(role, signed.version), data)
            self._cache[(role, signed.version)] = md
            snap.meta[f"{role}.json"] = metafile(data, signed.version)
        if new_snapshot or changed:
            if not first:
                snap.version += 1
            snap.expires = _expires(now, self.expiry.snapshot)
            smd = Metadata(snap)
            sdata = sign(smd, self.signers(Snapshot.type))
            self.store.write(self.name(Snapshot.type, snap.version), sdata)
            self._cache[(Snapshot.type, snap.version)] = smd
            snap_meta = metafile(sdata, snap.version)
        else:
            current = self.timestamp().signed.snapshot_meta
            snap_meta = current
        return snap.version, self.write_timestamp(snap_meta)

    def write_timestamp(self, snap_meta: MetaFile | None = None) -> int:
        now = self.clock()
        if self.initialised():
            ts = self.timestamp().signed
            ts.version += 1
            if snap_meta is not None:
                ts.snapshot_meta = snap_meta
        else:
            if snap_meta is None:
                raise RepositoryStateError("first timestamp needs a snapshot")
            ts = Timestamp(version=1, spec_version=SPECIFICATION_VERSION_STR, snapshot_meta=snap_meta)
        ts.expires = _expires(now, self.expiry.timestamp)
        data = sign(Metadata(ts), self.signers(Timestamp.type))
        self.store.write(self.name(Timestamp.type, None), data)
        return ts.version

    # -- maintenance ------------------------------------------------------------------

    def refresh_expiring(self, now: datetime | None = None, *, roles: Iterable[str] = ()) -> list[str]:
        """Re-sign whatever would expire soon: ``roles`` (targets roles to check), snapshot,
        timestamp. Root is never re-signed here (its keys are offline). Returns the roles
        re-signed."""
        now = now or self.clock()
        snapshot = self.snapshot().signed
        changed: dict[str, Targets] = {}
        for role in roles:
            t = copy.deepcopy(self.targets(role, snapshot).signed)
            if self.expiry.due(role, t.expires, now):
                t.version += 1
                changed[role] = t
        snap_due = self.expiry.due(Snapshot.type, snapshot.expires, now)
        ts_due = self.expiry.due(Timestamp.type, self.timestamp().signed.expires, now)
        if changed or snap_due:
            self.commit(changed)
            return [*changed, Snapshot.type, Timestamp.type]
        if ts_due:
            self.write_timestamp()
            return [Timestamp.type]
        return []

    def rotate_root_key(self, role: str, old_keyid: str | None = None) -> tuple[str, str]:
        """Replace one key of ``role`` in a new root version, signed by a threshold of the
        old root's keys and of the new root's keys. Returns (old keyid, new keyid).

        Raises:
            KeyringError: this process does not hold a threshold of the root keys (offline).
        """
        old_root_signers = self.keyring.signers(self.keyring_repo, Root.type)  # before a key is made
        pending = self.prepare_root(role, old_keyid)
        signers: list[Signer] = list(old_root_signers)
        if role == Root.type:
            # the new root must carry a threshold of the old root's keys (checked by
            # clients against the old root) and of its own keys: old signers + the new key
            assert pending.new is not None
            new_signer = self.keyring._signer(pending.new)
            if new_signer is None:
                raise KeyringError("the new root key has no signer")
            signers.append(new_signer)
        md = copy.deepcopy(pending.md)
        sign(md, _dedupe(signers))
        self.finish_root(pending, dict(md.signatures))
        assert pending.old is not None and pending.new is not None
        return pending.old.keyid, pending.new.keyid

    def prepare_root(self, role: str | None, old_keyid: str | None = None,
                     new: KeyEntry | None = None) -> PendingRoot:
        """The next root version, unsigned: ``role``'s key ``old_keyid`` replaced by ``new``
        (a fresh online key when ``None``), or only a new expiry when ``role`` is ``None``."""
        repo = self.keyring_repo
        root_md = copy.deepcopy(self.root())
        root_md.signatures.clear()
        root = root_md.signed
        old_entry = new_entry = None
        if role is not None:
            old_entry, new_entry = self.keyring.rotate(repo, role, old_keyid, new)
            root.revoke_key(old_entry.keyid, role)
            root.add_key(new_entry.public, role)
        root.version += 1
        root.expires = _expires(self.clock(), self.expiry.root)
        return PendingRoot(repo, role, old_entry, new_entry, root_md)

    def finish_root(self, pending: PendingRoot, signatures: dict[str, Signature]) -> bytes:
        """Publish ``pending`` with ``signatures`` once a threshold of the current root's
        keys and of the new root's own keys verify; then the keyring records the change.

        Raises:
            SignatureError: too few valid signatures (nothing is written).
            RepositoryStateError: root changed since ``pending`` was prepared.
        """
        current = self.root().signed
        md = copy.deepcopy(pending.md)
        if md.signed.version != current.version + 1:
            raise RepositoryStateError(
                f"{pending.repo} root is at version {current.version} now; prepare the change again")
        md.signatures.clear()
        md.signatures.update(signatures)
        payload = md.signed_bytes
        for name, trusted in (("current", current), ("new", md.signed)):
            try:
                trusted.verify_delegate(Root.type, payload, md.signatures)
            except Exception as exc:  # tuf's UnsignedMetadataError: below threshold
                raise SignatureError(f"{pending.repo} root v{md.signed.version}: not signed by a threshold "
                                     f"of the {name} root keys ({exc})") from None
        data = md.to_bytes(_SERIALIZER)
        self.store.write(self.name(Root.type, md.signed.version), data)
        self.store.write(self.name(Root.type, None), data)
        self._cache[(Root.type, md.signed.version)] = Metadata.from_bytes(data)
        if pending.role is not None and pending.old is not None and pending.new is not None:
            self.keyring.commit_rotation(self.keyring_repo, pending.role, pending.old, pending.new)
        return data


def _dedupe(signers: list[Signer]) -> list[Signer]:
    seen: set[str] = set()
    out = []
    for s in signers:
        if s.public_key.keyid not in seen:
            seen.add(s.public_key.keyid)
            out.append(s)
    return out


SPECIFICATION_VERSION_STR = ".".join(SPECIFICATION_VERSION)
