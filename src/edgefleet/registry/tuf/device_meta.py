"""Sign many devices' director metadata in one pass, without a file per device.

The file-based ``Director.assign`` signs a device's targets, snapshot and timestamp and
writes each durably (three fsyncs per device). ``DeviceSigner`` produces the same three
documents, byte for byte the shape a device's python-tuf ``Updater`` verifies against the
director root, as plain ``bytes`` for the caller to store (the controller keeps them in its
database, one transaction per batch). It loads the director's online signers once and
never touches a store: versions come in (the caller sequences them), documents go out.

    signer = DeviceSigner(director)                        # keys loaded once
    t = director.desired_targets(device, hw, slots, ...)   # what the device must install
    signed = signer.sign(device, versions, targets=t)      # targets + snapshot + timestamp
    signed = signer.sign(device, versions, targets_meta=m) # expiry refresh: snapshot + timestamp

Each role's version must be above what the device already trusts (TUF refuses a rollback);
``Versions.next`` gives the versions of the following signature.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from securesystemslib.signer import Signer
from tuf.api.metadata import Metadata, MetaFile, Snapshot, Targets, Timestamp

from .director import DEVICE_FIELD, Director
from .errors import RepositoryStateError
from .signing import SPECIFICATION_VERSION_STR, _expires, metafile, sign

ROLES = ("targets", "snapshot", "timestamp")


@dataclass(frozen=True)
class Versions:
    """The versions of a device's three director roles (0: never signed)."""

    targets: int = 0
    snapshot: int = 0
    timestamp: int = 0

    def next(self, *, targets: bool) -> Versions:
        """The versions the next signature carries: snapshot and timestamp always move,
        targets only when ``targets`` (a new assignment, or its expiry)."""
        return Versions(self.targets + 1 if targets else self.targets, self.snapshot + 1, self.timestamp + 1)


@dataclass(frozen=True)
class SignedDevice:
    """One device's freshly signed director documents."""

    device_id: str
    versions: Versions
    snapshot: bytes
    timestamp: bytes
    targets_meta: dict[str, Any]  # the snapshot's entry for targets.json (version, length, hashes)
    expires: dict[str, datetime]  # role → expiry of what is current after this signature
    targets: bytes | None = None  # None: targets unchanged (an expiry refresh of snapshot/timestamp)

    def files(self) -> dict[str, tuple[int, bytes]]:
        """role → (version, bytes) of every document written by this signature."""
        out = {"snapshot": (self.versions.snapshot, self.snapshot), "timestamp": (self.versions.timestamp, self.timestamp)}
        if self.targets is not None:
            out["targets"] = (self.versions.targets, self.targets)
        return out


def decode_binding(targets: Targets) -> dict[str, Any]:
    """The device binding of ``targets`` with its settings decoded (as ``Director.binding``)."""
    binding = targets.unrecognized_fields.get(DEVICE_FIELD)
    if not isinstance(binding, dict):
        return {}
    out = dict(binding)
    if isinstance(out.get("settings"), str):
        try:
            out["settings"] = json.loads(out["settings"])
        except ValueError:
            out["settings"] = None
    return out


def assignment(targets: Targets) -> dict[str, str]:
    """{slot: image target name} that ``targets`` assigns."""
    return {slot: name for name, tf in targets.targets.items() for slot in tf.custom.get("slots", [])}


class DeviceSigner:
    """Sign devices' targets/snapshot/timestamp with the director's online keys, loaded once.

    Raises (from the constructor):
        KeyringError: the controller does not hold a threshold of an online director key.
    """

    def __init__(self, director: Director, *, now: datetime | None = None):
        self.director = director
        self.expiry = director.expiry
        self.now = now or director.clock()
        self._signers: dict[str, list[Signer]] = {r: director.keyring.signers("director", r) for r in ROLES}

    def sign(self, device_id: str, versions: Versions, *, targets: Targets | None = None,
             targets_meta: dict[str, Any] | None = None) -> SignedDevice:
        """Sign ``targets`` (its version set to ``versions.targets``), then a snapshot naming
        it and a timestamp naming the snapshot. Without ``targets``, the snapshot names the
        unchanged targets described by ``targets_meta`` (a ``MetaFile`` dict).

        Raises:
            RepositoryStateError: neither targets nor targets_meta, or a version below 1.
        """
        if min(versions.snapshot, versions.timestamp, versions.targets) < 1:
            raise RepositoryStateError(f"director versions for {device_id} must be at least 1: {versions}")
        expires: dict[str, datetime] = {}
        tdata = None
        if targets is not None:
            t = copy.copy(targets)
            t.version = versions.targets
            t.expires = expires["targets"] = _expires(self.now, self.expiry.for_role("targets"))
            tdata = sign(Metadata(t), self._signers["targets"])
            tmeta = metafile(tdata, t.version)
        elif targets_meta is not None:
            tmeta = MetaFile.from_dict(copy.deepcopy(targets_meta))
        else:
            raise RepositoryStateError(f"signing {device_id}: neither new targets nor the current ones")
        snap = Snapshot(version=versions.snapshot, spec_version=SPECIFICATION_VERSION_STR, meta={"targets.json": tmeta})
        snap.expires = expires["snapshot"] = _expires(self.now, self.expiry.snapshot)
        sdata = sign(Metadata(snap), self._signers["snapshot"])
        ts = Timestamp(version=versions.timestamp, spec_version=SPECIFICATION_VERSION_STR,
                       snapshot_meta=metafile(sdata, snap.version))
        ts.expires = expires["timestamp"] = _expires(self.now, self.expiry.timestamp)
        tsdata = sign(Metadata(ts), self._signers["timestamp"])
        return SignedDevice(device_id, versions, sdata, tsdata, tmeta.to_dict(), expires, tdata)


__all__ = ["ROLES", "DeviceSigner", "SignedDevice", "Versions", "assignment", "decode_binding"]
