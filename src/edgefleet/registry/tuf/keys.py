"""Signing keys of the image repository and the director, and where their private halves live.

A *keyring* is a directory with ``keyring.json``: for each repository (``image``,
``director``) and each top-level role (``root``, ``targets``, ``snapshot``,
``timestamp``) a threshold and a list of keys, each key with its public half and a
securesystemslib private-key URI. ``KeyRing.init`` generates ed25519 keys into PEM files
(``file2:<name>.pem``, 0600, relative to the keyring directory); any other signer URI
(``hsm:``, ``awskms:``, ``gcpkms:``, ``azurekms:``, ``hashivault:`` ...) can be added
with ``add_key`` and is loaded through ``Signer.from_priv_key_uri``. A key whose URI
is ``None`` is *offline*: its public half is trusted, but this process cannot sign with
it (the usual case for production root keys, k-of-n on separate hardware). Such an
entry records where its private half is (``location``: an offline directory, encrypted in
the keyring directory, or a signer URI; see ``keyplace``) so that status can report it and
a command that brings the key can load it.

Flow: ``KeyRing.init(dir, root_threshold=k, root_keys=n)`` → repositories call
``signers(repo, role)`` to sign, ``public(repo, role)`` to build root metadata;
``rotate`` swaps one key for a fresh one and returns (old keyid, new key).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner, Key, SecretsHandler, Signer, SSlibKey

from ...atomicio import atomic_write
from .errors import KeyringError
from .keyplace import Placement, describe, new_key_pem, signer_from_pem, write_key_file

KEYRING_FILE = "keyring.json"
KEYRING_SCHEMA = "edgefleet.keyring/1"
REPOS = ("image", "director")
ROLES = ("root", "targets", "snapshot", "timestamp")


@dataclass
class KeyEntry:
    public: Key
    uri: str | None  # None: offline, public half only
    location: dict[str, Any] | None = None  # where an offline private half is (keyplace)

    @property
    def keyid(self) -> str:
        return self.public.keyid

    def to_dict(self) -> dict[str, Any]:
        d = {"keyid": self.keyid, "public": self.public.to_dict(), "uri": self.uri}
        if self.location is not None:
            d["location"] = dict(self.location)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KeyEntry:
        loc = d.get("location")
        return cls(public=Key.from_dict(d["keyid"], dict(d["public"])), uri=d.get("uri"),
                   location=dict(loc) if isinstance(loc, dict) else None)


@dataclass
class RoleKeys:
    threshold: int = 1
    keys: list[KeyEntry] = field(default_factory=list)


class KeyRing:
    """Keys per repository and role, persisted as ``<dir>/keyring.json``."""

    def __init__(self, path: str | os.PathLike[str], roles: dict[str, dict[str, RoleKeys]]):
        self.path = Path(path)
        self._roles = roles
        self._cache: dict[str, Signer] = {}
        self._offline: dict[str, Signer] = {}  # offline signers held only while ``init`` signs
        self.secrets_handler: SecretsHandler | None = None

    # -- creation and persistence -----------------------------------------------------

    @classmethod
    def init(
        cls,
        path: str | os.PathLike[str],
        *,
        root_threshold: int = 1,
        root_keys: int = 1,
        repos: tuple[str, ...] = REPOS,
        overwrite: bool = False,
        placement: Placement | None = None,
    ) -> KeyRing:
        """Generate a fresh keyring: ``root_keys`` root keys (threshold ``root_threshold``)
        and one key for each other role, per repository.

        ``placement`` keeps some roles' private halves off the data dir (offline directory,
        encrypted, or existing signer URIs: then ``root_keys`` is the number of URIs). Their
        signers stay usable until ``forget_offline`` (the caller signs the first metadata).

        Raises:
            KeyringError: a keyring exists already (unless ``overwrite``) or bad threshold.
        """
        if placement is not None and placement.external:
            root_keys = len(placement.external)
        if not 1 <= root_threshold <= root_keys:
            raise KeyringError(f"root threshold {root_threshold} must be in 1..{root_keys}")
        p = Path(path)
        if (p / KEYRING_FILE).exists() and not overwrite:
            raise KeyringError(f"a keyring exists already in {p}")
        p.mkdir(parents=True, exist_ok=True)
        os.chmod(p, 0o700)
        ring = cls(p, {})
        place = placement if placement is not None and placement.active else None
        for repo in repos:
            ring._roles[repo] = {}
            for role in ROLES:
                n = root_keys if role == "root" else 1
                if place is not None and role in place.roles:
                    entries = ring._placed(repo, role, n, place)
                else:
                    entries = [ring._generate(repo, role) for _ in range(n)]
                ring._roles[repo][role] = RoleKeys(root_threshold if role == "root" else 1, entries)
        ring.save()
        return ring

    def _placed(self, repo: str, role: str, n: int, place: Placement) -> list[KeyEntry]:
        if place.external:
            out = []
            for uri, public in place.external:
                try:
                    self._offline[public.keyid] = Signer.from_priv_key_uri(uri, public, self.secrets_handler)
                except Exception as exc:  # foreign signer errors: translate at the boundary
                    raise KeyringError(f"cannot use signer {uri.partition(':')[0]}: for {repo}/{role}: {exc}") from exc
                out.append(KeyEntry(public, None, {"kind": "uri", "uri": uri}))
            return out
        return [self._generate(repo, role, place) for _ in range(n)]

    def forget_offline(self) -> None:
        """Drop the offline signers ``init`` held: from now on this process cannot use them."""
        self._offline.clear()

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KeyRing:
        p = Path(path)
        try:
            doc = json.loads((p / KEYRING_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise KeyringError(f"cannot read keyring in {p}: {exc}") from exc
        if doc.get("schema") != KEYRING_SCHEMA:
            raise KeyringError(f"{p / KEYRING_FILE}: unknown schema {doc.get('schema')!r}")
        roles = {
            repo: {
                role: RoleKeys(int(rk["threshold"]), [KeyEntry.from_dict(k) for k in rk["keys"]])
                for role, rk in by_role.items()
            }
            for repo, by_role in doc["repos"].items()
        }
        return cls(p, roles)

    def save(self) -> None:
        doc = {
            "schema": KEYRING_SCHEMA,
            "repos": {
                repo: {
                    role: {"threshold": rk.threshold, "keys": [k.to_dict() for k in rk.keys]}
                    for role, rk in by_role.items()
                }
                for repo, by_role in self._roles.items()
            },
        }
        atomic_write(self.path / KEYRING_FILE, json.dumps(doc, indent=2, sort_keys=True).encode(), mode=0o644)

    # -- queries ----------------------------------------------------------------------

    def role(self, repo: str, role: str) -> RoleKeys:
        try:
            return self._roles[repo][role]
        except KeyError:
            raise KeyringError(f"no keys for {repo}/{role}") from None

    def public(self, repo: str, role: str) -> list[Key]:
        return [k.public for k in self.role(repo, role).keys]

    def signers(self, repo: str, role: str, *, require_threshold: bool = True) -> list[Signer]:
        """Load every signer this process can use for ``repo``/``role``.

        Raises:
            KeyringError: fewer usable signers than the role's threshold.
        """
        rk = self.role(repo, role)
        out = [s for s in (self._signer(k) for k in rk.keys) if s is not None]
        if require_threshold and len(out) < rk.threshold:
            elsewhere = sorted({self.where(k) for k in rk.keys if self._signer(k) is None})
            raise KeyringError(
                f"{repo}/{role}: the controller holds {len(out)} of the {rk.threshold} key(s) needed; "
                f"the private key is kept in {', '.join(elsewhere)}"
            )
        return out

    def where(self, entry: KeyEntry) -> str:
        """Where ``entry``'s private half lives, in words (``offline dir /x (absent)`` …)."""
        return str(describe(entry.public, entry.uri, entry.location, self.path)["where"])

    def online(self, repo: str, role: str) -> bool:
        """Whether this process can sign a threshold of ``repo``/``role`` by itself."""
        try:
            self.signers(repo, role)
        except KeyringError:
            return False
        return True

    def _signer(self, entry: KeyEntry) -> Signer | None:
        if entry.keyid in self._offline:
            return self._offline[entry.keyid]
        if entry.uri is None:
            return None
        if entry.keyid not in self._cache:
            try:
                self._cache[entry.keyid] = Signer.from_priv_key_uri(
                    self._resolve(entry.uri), entry.public, self.secrets_handler
                )
            except Exception as exc:  # foreign signer errors: translate at the boundary
                raise KeyringError(f"cannot load signer {entry.uri}: {exc}") from exc
        return self._cache[entry.keyid]

    def _resolve(self, uri: str) -> str:
        scheme, _, rest = uri.partition(":")
        if scheme == CryptoSigner.SCHEME and not os.path.isabs(rest):
            return f"{scheme}:{self.path / rest}"
        return uri

    # -- changes ----------------------------------------------------------------------

    def _generate(self, repo: str, role: str, place: Placement | None = None) -> KeyEntry:
        if place is None:
            signer = CryptoSigner.generate_ed25519()
            name = f"{repo}-{role}-{signer.public_key.keyid[:12]}.pem"
            atomic_write(self.path / name, signer.private_bytes, mode=0o600)
            self._cache[signer.public_key.keyid] = signer
            return KeyEntry(signer.public_key, f"{CryptoSigner.SCHEME}:{name}")
        public, pem = new_key_pem(place.passphrase)
        name = f"{repo}-{role}-{public.keyid[:12]}.pem"
        write_key_file(place.stage_dir or place.directory or self.path, name, pem)
        self._offline[public.keyid] = signer_from_pem(pem, public, place.passphrase, name)
        location = {"kind": "file", "dir": str(place.directory) if place.directory else None, "file": name,
                    "encrypted": bool(place.passphrase)}
        return KeyEntry(public, None, location)

    def add_key(self, repo: str, role: str, public: Key, uri: str | None) -> KeyEntry:
        """Trust one more key for ``repo``/``role`` (any signer URI, or ``None`` if offline)."""
        entry = KeyEntry(public, uri)
        self._roles.setdefault(repo, {}).setdefault(role, RoleKeys()).keys.append(entry)
        self.save()
        return entry

    def set_threshold(self, repo: str, role: str, threshold: int) -> None:
        rk = self.role(repo, role)
        if not 1 <= threshold <= len(rk.keys):
            raise KeyringError(f"threshold {threshold} must be in 1..{len(rk.keys)}")
        rk.threshold = threshold
        self.save()

    def rotate(self, repo: str, role: str, old_keyid: str | None = None,
               new: KeyEntry | None = None) -> tuple[KeyEntry, KeyEntry]:
        """Replace one key of ``repo``/``role`` with ``new`` or a freshly generated online one
        (not saved yet: the caller saves once the new metadata is published, see
        ``commit_rotation``).

        Returns:
            (old entry, new entry)
        """
        old = self.pick(repo, role, old_keyid)
        return old, (new if new is not None else self._generate(repo, role))

    def pick(self, repo: str, role: str, old_keyid: str | None = None) -> KeyEntry:
        """The key ``old_keyid`` of ``repo``/``role`` (its first key when ``None``)."""
        rk = self.role(repo, role)
        if old_keyid is None:
            if not rk.keys:
                raise KeyringError(f"{repo}/{role} has no key to rotate")
            old = rk.keys[0]
        else:
            matches = [k for k in rk.keys if k.keyid == old_keyid]
            if not matches:
                raise KeyringError(f"{repo}/{role} has no key {old_keyid}")
            old = matches[0]
        return old

    def commit_rotation(self, repo: str, role: str, old: KeyEntry, new: KeyEntry) -> None:
        rk = self.role(repo, role)
        rk.keys = [new if k.keyid == old.keyid else k for k in rk.keys]
        self.save()


def public_key_from_dict(keyid: str, d: dict[str, Any]) -> SSlibKey:
    return SSlibKey.from_dict(keyid, dict(d))
