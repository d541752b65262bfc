"""The director: per device, signed metadata naming exactly what that device must install.

Uptane-style, each device gets its own small TUF repository under one shared director
root (online targets/snapshot/timestamp keys, offline root)::

    director/1.root.json, director/root.json                 shared by every device
    director/devices/<id>/N.targets.json                    what <id> must install
    director/devices/<id>/N.snapshot.json, .../timestamp.json

A device's targets metadata lists each assigned image target under its image-repository
name, with the image's length and hashes and ``custom`` = {device_id, hardware_id,
release_counter, slots, model, version}; the signed top level also carries the device
binding ``x-edgefleet: {device_id, hardware_id, generation, credentials_epoch, settings}``
(``settings`` as JSON text: canonical JSON has no floats)
so that even an empty assignment is bound to one device, and so that every setting that
changes device behaviour (capture policy, telemetry period, credentials epoch) and the
desired generation are signed too: the agent applies only these, never the MQTT hint's.
Its version is the ``director_version`` hint sent over MQTT. Per-device repositories
keep each download tiny and never show a device another device's plan.

Flow: ``create`` once → ``assign(device, hardware, {slot: image target name})`` per
change → ``refresh_expiring`` on a timer → ``rotate`` when a key changes.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from securesystemslib.signer import Signature
from tuf.api.metadata import TargetFile, Targets

from ...protocols import fast_json
from ...protocols.topics import is_valid_device_id
from .errors import RepositoryStateError
from .keys import KeyEntry, KeyRing
from .repository import ImageRepository, ImageTarget
from .signing import SPECIFICATION_VERSION_STR, Clock, Expiry, PendingRoot, SignedRepo, utcnow
from .store import MetadataStore

DEVICE_FIELD = "x-edgefleet"


def encode_settings(settings: Mapping[str, Any]) -> str:
    """Device settings as the JSON text the binding signs. TUF's canonical JSON has no
    floats (a telemetry period, a sample rate), so the settings travel as one string.

    Raises:
        RepositoryStateError: settings JSON cannot carry (NaN, a non-JSON value).
    """
    fast = fast_json.canonical_ascii(dict(settings))  # json.dumps's text, by orjson where they are equal
    if fast is not None:
        return fast.decode()
    try:
        return json.dumps(dict(settings), sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RepositoryStateError(f"device settings cannot be signed: {exc}") from None
DEFAULT_EXPIRY = Expiry(targets=timedelta(days=7))


class Director:
    """Sign per-device assignments (thread-safe within one process)."""

    def __init__(
        self,
        store: MetadataStore,
        keyring: KeyRing,
        image: ImageRepository,
        *,
        expiry: Expiry | None = None,
        clock: Clock = utcnow,
        prefix: str = "director",
    ):
        self.store = store
        self.keyring = keyring
        self.image = image
        self.expiry = expiry or DEFAULT_EXPIRY
        self.clock = clock
        self.prefix = prefix.strip("/")
        self._root = SignedRepo(store, keyring, "director", prefix=self.prefix, expiry=self.expiry, clock=clock)
        self._lock = threading.RLock()

    @classmethod
    def create(
        cls,
        store: MetadataStore,
        keyring: KeyRing,
        image: ImageRepository,
        *,
        expiry: Expiry | None = None,
        clock: Clock = utcnow,
        prefix: str = "director",
    ) -> Director:
        self = cls(store, keyring, image, expiry=expiry, clock=clock, prefix=prefix)
        if store.exists(self._root.name("root", None)):
            raise RepositoryStateError(f"a director exists already at {prefix!r}")
        root = self._root.new_root(self._root.root_keys_from_keyring())
        self._root.write_root(root, keyring.signers("director", "root"))
        return self

    def device_repo(self, device_id: str) -> SignedRepo:
        if not is_valid_device_id(device_id):
            raise RepositoryStateError(f"invalid device id {device_id!r}")
        return SignedRepo(
            self.store,
            self.keyring,
            "director",
            prefix=f"{self.prefix}/devices/{device_id}",
            root_prefix=self.prefix,
            expiry=self.expiry,
            clock=self.clock,
        )

    def root_bytes(self, version: int | None = None) -> bytes:
        """Director root metadata to provision devices with."""
        return self.store.read(self._root.name("root", version))

    def devices(self) -> list[str]:
        return [p.rsplit("/", 1)[-1] for p in self.store.list(f"{self.prefix}/devices")]

    def version(self, device_id: str) -> int:
        """The device's current director targets version (0 if never assigned): the MQTT hint."""
        repo = self.device_repo(device_id)
        if not repo.initialised():
            return 0
        return repo.targets().signed.version

    def assignment(self, device_id: str) -> dict[str, str]:
        """Current {slot: image target name} of a device."""
        repo = self.device_repo(device_id)
        if not repo.initialised():
            return {}
        out = {}
        for name, tf in repo.targets().signed.targets.items():
            for slot in tf.custom.get("slots", []):
                out[slot] = name
        return out

    def binding(self, device_id: str) -> dict[str, Any]:
        """The signed device binding (``x-edgefleet``) of the current version; {} if none."""
        repo = self.device_repo(device_id)
        if not repo.initialised():
            return {}
        binding = repo.targets().signed.unrecognized_fields.get(DEVICE_FIELD)
        if not isinstance(binding, dict):
            return {}
        out = dict(binding)
        if isinstance(out.get("settings"), str):
            try:
                out["settings"] = json.loads(out["settings"])
            except ValueError:
                out["settings"] = None
        return out

    def desired_targets(
        self,
        device_id: str,
        hardware_id: str,
        slots: Mapping[str, str | None],
        *,
        generation: int | None = None,
        settings: Mapping[str, Any] | None = None,
        credentials_epoch: int | None = None,
        version: int = 1,
        lookup: Callable[[str], ImageTarget | None] | None = None,
    ) -> Targets:
        """The unsigned targets ``assign`` signs (``version``; expiry set when signed): the
        assigned image targets with their custom fields and the device binding. Pure apart
        from reading the image repository's targets (``lookup``: a caller's memo of
        ``image.get_target`` for a batch of devices).

        Raises:
            RepositoryStateError: as ``assign``; also an invalid device id.
        """
        if not is_valid_device_id(device_id):
            raise RepositoryStateError(f"invalid device id {device_id!r}")
        binding: dict[str, Any] = {"device_id": device_id, "hardware_id": hardware_id}
        for key, value in (("generation", generation), ("credentials_epoch", credentials_epoch)):
            if value is not None:
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise RepositoryStateError(f"{key} must be a non-negative integer, not {value!r}")
                binding[key] = value
        if settings is not None:
            binding["settings"] = encode_settings(settings)
        by_name: dict[str, list[str]] = {}
        for slot, name in sorted(slots.items()):
            if name is not None:
                by_name.setdefault(name, []).append(slot)
        entries: dict[str, TargetFile] = {}
        for name, slot_list in by_name.items():
            target = (lookup or self.image.get_target)(name)
            if target is None:
                raise RepositoryStateError(f"image repository has no target {name!r}")
            if target.hardware_ids and hardware_id not in target.hardware_ids:
                raise RepositoryStateError(
                    f"{name} is built for {target.hardware_ids}, not {hardware_id!r}"
                )
            custom: dict[str, Any] = {
                "device_id": device_id,
                "hardware_id": hardware_id,
                "release_counter": target.release_counter,
                "slots": slot_list,
                "model": target.custom.get("model"),
                "version": target.custom.get("version"),
            }
            entries[name] = TargetFile(
                target.length, {"sha256": target.digest}, name, {"custom": custom}
            )
        t = Targets(version=version, spec_version=SPECIFICATION_VERSION_STR)
        t.targets = entries
        t.unrecognized_fields[DEVICE_FIELD] = binding
        return t

    def assign(
        self,
        device_id: str,
        hardware_id: str,
        slots: Mapping[str, str | None],
        *,
        generation: int | None = None,
        settings: Mapping[str, Any] | None = None,
        credentials_epoch: int | None = None,
    ) -> int:
        """Make ``slots`` ({slot: image target name or None}) the device's full desired state
        and sign it, with the desired ``generation``, the device ``settings`` (JSON object:
        telemetry period, capture policy) and the ``credentials_epoch`` in the device
        binding (omitted when None). Returns the new director version (the MQTT hint).

        Raises:
            RepositoryStateError: unknown image target, or one not built for ``hardware_id``,
                or a negative generation/epoch.
        """
        fresh = self.desired_targets(device_id, hardware_id, slots, generation=generation, settings=settings,
                                     credentials_epoch=credentials_epoch)
        with self._lock:
            repo = self.device_repo(device_id)
            if repo.initialised():
                t = copy.deepcopy(repo.targets().signed)
                t.version += 1
            else:
                t = Targets(version=1, spec_version=SPECIFICATION_VERSION_STR)
            t.targets = fresh.targets
            t.unrecognized_fields[DEVICE_FIELD] = fresh.unrecognized_fields[DEVICE_FIELD]
            repo.commit({"targets": t})
            return t.version

    def refresh_expiring(self, now: datetime | None = None) -> int:
        """Re-sign every device's metadata that would expire soon. Returns devices touched."""
        touched = 0
        with self._lock:
            for device_id in self.devices():
                repo = self.device_repo(device_id)
                if repo.initialised() and repo.refresh_expiring(now, roles=["targets"]):
                    touched += 1
        return touched

    def rotate(self, role: str, old_keyid: str | None = None) -> str:
        """Rotate one director key (root included); re-sign every device for online roles."""
        with self._lock:
            _, new_keyid = self._root.rotate_root_key(role, old_keyid)
            self._after_rotation(role)
            return new_keyid

    def prepare_rotation(self, role: str | None, old_keyid: str | None = None,
                         new: KeyEntry | None = None) -> PendingRoot:
        """The next director root, unsigned, for a command holding offline root keys
        (``role`` ``None``: re-sign root with a new expiry only)."""
        with self._lock:
            return self._root.prepare_root(role, old_keyid, new)

    def finish_rotation(self, pending: PendingRoot, signatures: dict[str, Signature]) -> None:
        """Publish a prepared director root and re-sign every device for a changed online key."""
        with self._lock:
            self._root.finish_root(pending, signatures)
            if pending.role is not None:
                self._after_rotation(pending.role)

    def _after_rotation(self, role: str) -> None:
        if role == "root":
            return
        for device_id in self.devices():
            repo = self.device_repo(device_id)
            if not repo.initialised():
                continue
            changed = {}
            if role == "targets":
                t = copy.deepcopy(repo.targets().signed)
                t.version += 1
                changed["targets"] = t
            repo.commit(changed)

    def metadata(self, device_id: str, name: str) -> bytes:
        """Bytes of one served file for a device (root files come from the shared root)."""
        repo = self.device_repo(device_id)
        if name.endswith(".root.json") or name == "root.json":
            return self.store.read(f"{self.prefix}/{name}")
        return self.store.read(f"{repo.prefix}/{name}")
