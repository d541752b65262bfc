"""Where private keys live at rest, and how a command unlocks the ones the controller lacks.

A keyring entry's private half is in one of four places (``KeyEntry.location``):

* ``None`` with a ``file2:`` URI relative to the keyring: a PEM in the data dir, online, 0600;
* ``{"kind": "file", "dir": "/abs" | None, "file": "x.pem", "encrypted": bool}``: a PEM in an
  *offline* directory (``dir``, written outside the data dir) or, with ``dir`` ``None``, a
  passphrase-encrypted PEM in the keyring directory (PKCS#8, ``BestAvailableEncryption``);
* ``{"kind": "uri", "uri": "<scheme>:…"}``: a securesystemslib signer URI (``file2:``,
  ``hsm:``, ``awskms:`` …) given at ``fleet keys init --root-signer``.

The controller signs only with online entries. Operations that need an offline key (root
rotation, re-signing root) get an ``Unlock`` from the command line (a directory, a
passphrase, signer URIs) and load signers with ``load_offline_signer``, which names where
the key is expected when it cannot be used. ``permission_problems`` finds key files that
group or others can read (and fixes them when asked).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from securesystemslib.signer import CryptoSigner, Key, Signer, SSlibKey

from .errors import KeyringError

ENCRYPTED_MARK = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"
KEY_FILE_MODE, KEY_DIR_MODE = 0o600, 0o700


@dataclass(frozen=True)
class Placement:
    """Where ``KeyRing.init`` puts the private halves of ``roles`` (in every repository).

    ``directory`` set: written there (offline). ``passphrase`` set: encrypted. ``external``
    set: those roles use these existing keys (signer URI, public key) instead of new ones.
    Nothing set: the default, online PEMs in the keyring directory. ``stage_dir``: where
    ``init`` writes the files meant for ``directory`` meanwhile (the first setup builds
    everything aside and moves it into place at the end); the keyring records ``directory``.
    """

    roles: frozenset[str] = frozenset({"root"})
    directory: Path | None = None
    passphrase: bytes | None = None
    external: tuple[tuple[str, Key], ...] = ()
    stage_dir: Path | None = None

    @property
    def active(self) -> bool:
        return self.directory is not None or self.passphrase is not None or bool(self.external)

    def summary(self) -> str:
        """Where the keys went, for the audit log and the console (never a secret)."""
        if self.external:
            return "signer URI " + ", ".join(sorted({uri_scheme(u) for u, _ in self.external}))
        if self.directory is not None:
            return f"offline dir {self.directory}" + (" (encrypted)" if self.passphrase else "")
        if self.passphrase is not None:
            return "encrypted in data dir"
        return "data dir (online, 0600)"


@dataclass
class Unlock:
    """What a command brings for the keys the controller does not hold."""

    directory: Path | None = None
    passphrase: bytes | None = None
    signer_uris: tuple[str, ...] = ()
    keyring_dir: Path | None = None  # the data dir's keyring, where readable from here
    _tried: list[str] = field(default_factory=list)

    @property
    def given(self) -> bool:
        return self.directory is not None or self.passphrase is not None or bool(self.signer_uris)


def uri_scheme(uri: str) -> str:
    return uri.partition(":")[0] + ":"


def new_key_pem(passphrase: bytes | None) -> tuple[SSlibKey, bytes]:
    """A fresh ed25519 key: (public key, PKCS#8 PEM, encrypted with ``passphrase`` if given)."""
    priv = Ed25519PrivateKey.generate()
    enc = BestAvailableEncryption(passphrase) if passphrase else NoEncryption()
    pem = priv.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, enc)
    return SSlibKey.from_crypto(priv.public_key()), pem


def signer_from_pem(pem: bytes, public: Key, passphrase: bytes | None, where: str) -> Signer:
    """Load a (possibly encrypted) PEM as a signer for ``public``.

    Raises:
        KeyringError: encrypted and no passphrase, wrong passphrase, or not this key.
    """
    encrypted = ENCRYPTED_MARK in pem
    if encrypted and not passphrase:
        raise KeyringError(f"{where} is encrypted: give the passphrase (--passphrase-file, --passphrase-env "
                           "or the prompt)")
    try:
        priv = load_pem_private_key(pem, passphrase if encrypted else None)
    except ValueError as exc:
        if encrypted:
            raise KeyringError(f"wrong passphrase for {where}") from None
        raise KeyringError(f"{where} is not a readable private key: {exc}") from None
    try:
        return CryptoSigner(priv, public)  # type: ignore[arg-type]
    except Exception:
        raise KeyringError(f"{where} holds another key, not {public.keyid[:16]}…") from None


def describe(public: Key, uri: str | None, location: dict[str, Any] | None,
             keyring_dir: Path | None) -> dict[str, Any]:
    """Where one private key lives: ``kind``, a human ``where``, the ``path`` and whether it is present."""
    if location is None:
        if uri is None:
            return {"kind": "none", "where": "no private key recorded (public key only)", "path": None, "present": None}
        scheme, _, rest = uri.partition(":")
        if scheme == CryptoSigner.SCHEME and not os.path.isabs(rest):
            path = keyring_dir / rest if keyring_dir else None
            return {"kind": "online", "where": "data dir (online, 0600)", "path": str(path) if path else None,
                    "present": path.exists() if path else None}
        return {"kind": "uri", "where": f"signer URI {scheme}:… (online)", "path": None, "present": None}
    if location.get("kind") == "uri":
        return {"kind": "uri", "where": f"signer URI {uri_scheme(str(location.get('uri', '')))}…",
                "path": None, "present": None}
    fname = str(location.get("file", ""))
    if location.get("dir"):
        path = Path(str(location["dir"])) / fname
        present = path.exists()
        enc = ", encrypted" if location.get("encrypted") else ""
        return {"kind": "offline", "where": f"offline dir {location['dir']} ({'present' if present else 'absent'}{enc})",
                "path": str(path), "present": present}
    path2 = keyring_dir / fname if keyring_dir else None
    return {"kind": "encrypted", "where": "encrypted in data dir", "path": str(path2) if path2 else None,
            "present": path2.exists() if path2 else None}


def load_offline_signer(label: str, public: Key, location: dict[str, Any] | None, unlock: Unlock) -> Signer:
    """The signer of one key the controller does not hold, from what the command brought.

    ``label`` names the key in messages (``image/root key 1a2b…``).

    Raises:
        KeyringError: the key cannot be used; the message says where it is expected.
    """
    if location is None:
        raise KeyringError(f"{label}: no offline location recorded")
    if location.get("kind") == "uri":
        for uri in unlock.signer_uris:
            try:
                return Signer.from_priv_key_uri(uri, public)
            except Exception:  # noqa: BLE001 - another key, or unreachable: try the next URI
                continue
        raise KeyringError(f"{label} is on signer URI {uri_scheme(str(location.get('uri', '')))}…: "
                           "give it with --root-signer URI")
    fname = str(location.get("file", ""))
    recorded = Path(str(location["dir"])) if location.get("dir") else None
    candidates = [d for d in (unlock.directory, recorded if recorded else unlock.keyring_dir) if d is not None]
    for d in candidates:
        path = d / fname
        if path.is_file():
            return signer_from_pem(path.read_bytes(), public, unlock.passphrase, f"{label} ({path})")
    expected = " or ".join(str(d / fname) for d in candidates) or fname
    hint = "--root-dir DIR" if recorded is not None else "--data-dir of the controller and the passphrase"
    raise KeyringError(f"{label} is offline and was not found: expected at {expected} (absent); "
                       f"bring it with {hint}")


def write_key_file(directory: Path, name: str, pem: bytes) -> Path:
    """Write a private key 0600 into ``directory`` (created 0700), atomically."""
    from ...atomicio import atomic_write

    directory.mkdir(parents=True, exist_ok=True, mode=KEY_DIR_MODE)
    os.chmod(directory, KEY_DIR_MODE)
    path = directory / name
    atomic_write(path, pem, mode=KEY_FILE_MODE)
    return path


def permission_problems(directory: Path, *, public_files: tuple[str, ...] = (), fix: bool = False) -> list[str]:
    """Key files group or others can read or write, and a key directory open to them.

    Args:
        public_files: names that may be world-readable (``keyring.json`` holds public keys only).
        fix: tighten what is found (directory 0700, files 0600).

    Returns:
        One line per problem (as found, before any fix).
    """
    out: list[str] = []
    if not directory.is_dir():
        return out
    mode = stat.S_IMODE(directory.stat().st_mode)
    if mode & 0o077:
        out.append(f"{directory}: directory mode {mode:04o}, should be 0700")
        if fix:
            os.chmod(directory, KEY_DIR_MODE)
    for p in sorted(directory.iterdir()):
        if not p.is_file() or p.name in public_files or p.name.endswith(".tmp"):
            continue
        m = stat.S_IMODE(p.stat().st_mode)
        if m & 0o077:
            out.append(f"{p}: mode {m:04o} ({_who(m)} can read it), should be 0600")
            if fix:
                os.chmod(p, KEY_FILE_MODE)
    return out


def _who(mode: int) -> str:
    who = [name for name, bits in (("group", 0o070), ("others", 0o007)) if mode & bits]
    return " and ".join(who)
