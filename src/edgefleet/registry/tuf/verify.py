"""Device-side verification: director and image metadata must agree before a byte is used.

``DeviceVerifier.check()`` reads like the update it guards:

1. refresh the director's metadata for this device (``tuf.ngclient``, from the director
   root provisioned with the device), and require it to name this device and hardware;
2. refresh the image repository's metadata (from its provisioned root);
3. for each target the director assigns: the image repository must sign the same name
   with the same length, hashes and release counter, built for this hardware, with a
   release counter not lower than what the slot has installed;
4. record the time as the last trusted time.

``download()`` then fetches a verified target with the resumable fetcher into a part
file, checks length and hashes, and only then moves it atomically to its destination.
Every refusal raises a ``TufError`` with a stable ``code``; nothing is written to the
destination unless every check passed.

Clock: the reference time for expiry is ``max(clock(), last trusted time)``, so setting
the clock back cannot revive metadata that had expired by the time of the last
successful check (such a refusal carries ``E_CLOCK_ROLLBACK``).

Device-safe: imports tuf, httpx and the standard library only.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import Root, TargetFile, Targets
from tuf.ngclient import Updater, UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface

from .errors import (
    BadMetadata,
    ClockRollback,
    DirectorImageMismatch,
    DiskFull,
    DownloadFailed,
    DownloadTimeout,
    ExpiredMetadata,
    HardwareMismatch,
    HashMismatch,
    HintUnconfirmed,
    LengthMismatch,
    MetadataMismatch,
    NotProvisioned,
    ReleaseCounterTooLow,
    RollbackAttack,
    SignatureError,
    TargetMissing,
    TransportError,
    TufError,
    WrongDevice,
)
from .fetcher import ResumableFetcher
from .names import check_target_name, hash_prefixed_path

DEVICE_FIELD = "x-edgefleet"
STATE_FILE = "trust.json"
_HEX = re.compile(r"^[0-9a-f]{16,128}$")
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


# -- errors: tuf's exceptions → our codes ---------------------------------------------


def translate(exc: BaseException, *, clock_rolled_back: bool = False) -> TufError:
    """Map a python-tuf (or OS) exception to the trust core's error with its code."""
    if isinstance(exc, TufError):
        return exc
    msg = str(exc) or exc.__class__.__name__
    if isinstance(exc, tuf_exc.UnsignedMetadataError) or _duplicate_signatures(exc):
        return SignatureError(msg)
    if isinstance(exc, tuf_exc.ExpiredMetadataError):
        return ClockRollback(msg) if clock_rolled_back else ExpiredMetadata(msg)
    if isinstance(exc, tuf_exc.BadVersionNumberError):
        return RollbackAttack(msg)
    if isinstance(exc, (tuf_exc.LengthOrHashMismatchError, tuf_exc.DownloadLengthMismatchError)):
        return MetadataMismatch(msg)
    if isinstance(exc, tuf_exc.SlowRetrievalError):
        return DownloadTimeout(msg)
    if isinstance(exc, tuf_exc.DownloadHTTPError):
        return DownloadFailed(msg, status_code=exc.status_code)
    if isinstance(exc, tuf_exc.DownloadError):
        cause = exc.__cause__
        if isinstance(cause, TufError):
            return cause
        return DownloadFailed(f"{msg}: {cause}" if cause else msg)
    if isinstance(exc, tuf_exc.RepositoryError):
        return BadMetadata(msg)
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
        return DiskFull(msg)
    if isinstance(exc, OSError):
        return TransportError(f"local storage: {msg}")
    return BadMetadata(msg)


def _duplicate_signatures(exc: BaseException) -> bool:
    """Metadata listing one key's signature twice (python-tuf refuses it while parsing)."""
    seen: BaseException | None = exc
    while seen is not None:
        if "Multiple signatures found for keyid" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# -- one TUF repository, through tuf.ngclient -----------------------------------------


class TufRepoClient:
    """One ``tuf.ngclient.Updater`` with our fetcher, reference time and error codes.

    A client refreshes once (ngclient's rule); make a new one per check.
    """

    def __init__(
        self,
        metadata_dir: str | os.PathLike[str],
        metadata_url: str,
        fetcher: FetcherInterface,
        *,
        bootstrap: bytes | None,
        reference_time: datetime | None = None,
        clock_rolled_back: bool = False,
        config: UpdaterConfig | None = None,
    ):
        self._rolled_back = clock_rolled_back
        Path(metadata_dir).mkdir(parents=True, exist_ok=True)
        try:
            self._updater = Updater(
                str(metadata_dir), metadata_url, fetcher=fetcher, config=config, bootstrap=bootstrap
            )
        except FileNotFoundError as exc:
            raise NotProvisioned(f"no trusted root in {metadata_dir}") from exc
        except Exception as exc:
            raise translate(exc) from exc
        if reference_time is not None:
            # python-tuf reads "now" once, here; the conformance client sets it the same way
            self._updater._trusted_set.reference_time = reference_time

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:
            raise translate(exc, clock_rolled_back=self._rolled_back) from exc

    def refresh(self) -> None:
        self._call(self._updater.refresh)

    def get_targetinfo(self, name: str) -> TargetFile | None:
        return self._call(self._updater.get_targetinfo, name)

    @property
    def targets(self) -> Targets:
        """Trusted top-level targets (after ``refresh``)."""
        return self._updater._trusted_set.targets

    @property
    def root(self) -> Root:
        return self._updater._trusted_set.root

    def target_url(self, target: TargetFile, base_url: str) -> str:
        base = base_url if base_url.endswith("/") else base_url + "/"
        path = target.path
        if self.root.consistent_snapshot:
            path = hash_prefixed_path(path, next(iter(target.hashes.values())))
        return base + path


# -- downloading one verified target --------------------------------------------------


def download_verified(
    fetcher: ResumableFetcher,
    url: str,
    length: int,
    hashes: Mapping[str, str],
    dest: Path,
    part_dir: Path,
) -> Path:
    """Fetch ``url`` (resuming a previous part), check length and every hash, then move it
    atomically to ``dest``. On any refusal ``dest`` is untouched.

    Raises:
        HashMismatch, LengthMismatch, DownloadTimeout, DownloadFailed, DiskFull.
    """
    if not hashes:
        raise HashMismatch("target has no hashes")
    values = list(hashes.values())
    if not all(isinstance(v, str) and _HEX.match(v) for v in values):
        raise HashMismatch("target hashes are not hex digests")
    part = Path(part_dir) / f"{values[0]}.part"
    for attempt in (1, 2):
        resumed = part.exists()
        try:
            got = fetcher.download_to(url, part, length, tuple(hashes))
        except ValueError as exc:  # unsupported hash algorithm
            _unlink(part)
            raise HashMismatch(f"unsupported hash algorithm: {exc}") from exc
        except LengthMismatch:
            _unlink(part)
            raise
        if all(got[a] == v for a, v in hashes.items()):
            break
        _unlink(part)
        if not (resumed and attempt == 1):  # a stale part may be corrupt: retry once from 0
            raise HashMismatch(f"{url}: downloaded bytes do not match the signed hashes")
    return _install(part, Path(dest))


def _install(part: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        try:
            os.replace(part, dest)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as out, open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 1024 * 1024)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, dest)
            except BaseException:
                _unlink(Path(tmp))
                raise
            _unlink(part)
        _fsync_dir(dest.parent)
    except OSError as exc:
        raise translate(exc) from exc
    return dest


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink(p: Path) -> None:
    try:
        p.unlink()
    except FileNotFoundError:
        pass


# -- device state ---------------------------------------------------------------------


@dataclass
class InstalledSlot:
    name: str
    release_counter: int
    sha256: str


@dataclass
class DeviceTrustState:
    """What the device keeps between checks (``<state_dir>/trust.json``, written atomically)."""

    last_trusted_time: datetime | None = None
    director_version: int = 0
    installed: dict[str, InstalledSlot] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> DeviceTrustState:
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except ValueError as exc:
            raise BadMetadata(f"corrupt device trust state {path}: {exc}") from exc
        ltt = doc.get("last_trusted_time")
        return cls(
            last_trusted_time=datetime.fromisoformat(ltt) if ltt else None,
            director_version=int(doc.get("director_version", 0)),
            installed={k: InstalledSlot(**v) for k, v in doc.get("installed", {}).items()},
        )

    def save(self, path: Path) -> None:
        doc = {
            "last_trusted_time": self.last_trusted_time.isoformat() if self.last_trusted_time else None,
            "director_version": self.director_version,
            "installed": {k: vars(v) for k, v in self.installed.items()},
        }
        try:  # a full disk is DiskFull (retryable); the previous file stays
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(doc, f, indent=2, sort_keys=True)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                _unlink(Path(tmp))
                raise
        except OSError as exc:
            raise translate(exc) from exc


# -- metadata held, for reports --------------------------------------------------------


@dataclass(frozen=True)
class HeldMetadata:
    version: int  # top-level targets version
    timestamp_version: int | None
    expires: datetime | None  # the earliest expiry of the roles held


def _held(directory: Path) -> HeldMetadata | None:
    signed: dict[str, dict[str, Any]] = {}
    for role in ("timestamp", "snapshot", "targets"):
        try:
            doc = json.loads((directory / f"{role}.json").read_bytes())
            part = doc["signed"]
            if isinstance(part, dict):
                signed[role] = part
        except (OSError, ValueError, KeyError, TypeError):
            continue
    targets = signed.get("targets")
    version = targets.get("version") if targets else None
    if not isinstance(version, int):
        return None
    expiries = []
    for part in signed.values():
        try:
            expiries.append(datetime.fromisoformat(str(part["expires"]).replace("Z", "+00:00")))
        except (KeyError, ValueError):
            continue
    ts_version = signed.get("timestamp", {}).get("version")
    return HeldMetadata(
        version=version, timestamp_version=ts_version if isinstance(ts_version, int) else None,
        expires=min(expiries) if expiries else None,
    )


# -- the device verifier --------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedTarget:
    """A target both repositories sign identically for this device."""

    name: str
    length: int
    hashes: dict[str, str]
    release_counter: int
    slots: tuple[str, ...]
    model: str | None
    version: str | None
    device_id: str
    hardware_id: str
    director_version: int
    url: str
    image_custom: dict[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return self.hashes["sha256"]


@dataclass(frozen=True)
class CheckResult:
    """What one check verified. ``generation``, ``settings`` and ``credentials_epoch`` come
    from the director's signed device binding (None: the metadata does not carry them,
    e.g. signed by an older controller); only these may be applied, never a hint's."""

    targets: list[VerifiedTarget]
    director_version: int
    hint: int | None = None
    generation: int | None = None
    settings: dict[str, Any] | None = None
    credentials_epoch: int | None = None

    @property
    def hint_error(self) -> HintUnconfirmed | None:
        """An ``E_HINT_UNCONFIRMED`` error if an MQTT hint claimed a director version the
        signed director metadata does not reach (a forged or premature hint)."""
        if self.hint is not None and self.hint > self.director_version:
            return HintUnconfirmed(
                f"hint names director version {self.hint}, signed metadata is at {self.director_version}"
            )
        return None

    def for_slot(self, slot: str) -> VerifiedTarget | None:
        return next((t for t in self.targets if slot in t.slots), None)


def provision(
    state_dir: str | os.PathLike[str], *, director_root: bytes, image_root: bytes, overwrite: bool = False
) -> None:
    """Install the trusted roots a device ships with (``<state_dir>/trusted/*.json``).

    Raises:
        NotProvisioned: roots exist already and ``overwrite`` is False, or a root is not
        valid self-signed root metadata.
    """
    d = Path(state_dir) / "trusted"
    d.mkdir(parents=True, exist_ok=True)
    for name, data in (("director-root.json", director_root), ("image-root.json", image_root)):
        try:
            md = json.loads(data)
            if md["signed"]["_type"] != "root":
                raise ValueError("not root metadata")
        except (ValueError, KeyError, TypeError) as exc:
            raise NotProvisioned(f"{name}: {exc}") from exc
        p = d / name
        if p.exists() and not overwrite:
            raise NotProvisioned(f"{p} exists already")
        p.write_bytes(data)


class DeviceVerifier:
    """Check and download what the director assigns to one device.

    Args:
        device_id, hardware_id: this device.
        state_dir: persistent directory (trusted roots, metadata caches, part files, state).
        director_url: metadata URL of this device's director repository.
        image_url: metadata URL of the image repository.
        image_targets_url: base URL of image targets.
        fetcher: shared ``ResumableFetcher`` (gap timeout, deadline).
        clock: wall clock (UTC), for tests.
    """

    def __init__(
        self,
        device_id: str,
        hardware_id: str,
        state_dir: str | os.PathLike[str],
        director_url: str,
        image_url: str,
        image_targets_url: str,
        *,
        fetcher: ResumableFetcher | None = None,
        clock: Callable[[], datetime] = _utcnow,
        clock_tolerance: timedelta = timedelta(minutes=5),
        config: UpdaterConfig | None = None,
    ):
        self.device_id = device_id
        self.hardware_id = hardware_id
        self.state_dir = Path(state_dir)
        self.director_url = director_url
        self.image_url = image_url
        self.image_targets_url = image_targets_url
        self.fetcher = fetcher or ResumableFetcher()
        self.clock = clock
        self.clock_tolerance = clock_tolerance
        self.config = config
        self.state_dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def for_controller(
        cls, base_url: str, device_id: str, hardware_id: str, state_dir: str | os.PathLike[str], **kw: Any
    ) -> DeviceVerifier:
        """URLs as served by ``registry.tuf.server`` under ``<base_url>/tuf/``."""
        b = base_url.rstrip("/")
        return cls(
            device_id, hardware_id, state_dir,
            f"{b}/tuf/director/{device_id}/", f"{b}/tuf/image/metadata/", f"{b}/tuf/image/targets/",
            **kw,
        )

    # -- state ------------------------------------------------------------------------

    @property
    def _state_path(self) -> Path:
        return self.state_dir / STATE_FILE

    def state(self) -> DeviceTrustState:
        return DeviceTrustState.load(self._state_path)

    def mark_installed(self, target: VerifiedTarget, slot: str) -> None:
        """Record that ``target`` is now active in ``slot`` (its counter becomes the floor)."""
        st = self.state()
        st.installed[slot] = InstalledSlot(target.name, target.release_counter, target.digest)
        st.save(self._state_path)

    def _root(self, which: str) -> bytes:
        p = self.state_dir / "trusted" / f"{which}-root.json"
        try:
            return p.read_bytes()
        except FileNotFoundError:
            raise NotProvisioned(f"no trusted {which} root at {p}") from None

    def _reference_time(self, st: DeviceTrustState) -> tuple[datetime, bool]:
        now = self.clock()
        floor = st.last_trusted_time
        if floor is not None and now < floor - self.clock_tolerance:
            return floor, True
        return (max(now, floor) if floor else now), False

    # -- check ------------------------------------------------------------------------

    def check(self, hint: int | None = None) -> CheckResult:
        """Refresh both repositories and cross-check every target assigned to this device.

        Args:
            hint: the ``director_version`` of an MQTT desired message, if any. It only
                triggers the check; the result's ``hint_error`` says if it was not confirmed.

        Raises:
            TufError: any refusal (``.code`` says which); nothing is installed.
        """
        st = self.state()
        ref, rolled_back = self._reference_time(st)
        director = TufRepoClient(
            self.state_dir / "director", self.director_url, self.fetcher,
            bootstrap=self._root("director"), reference_time=ref,
            clock_rolled_back=rolled_back, config=self.config,
        )
        director.refresh()
        dtargets = director.targets
        binding = self._check_binding(dtargets)

        image = TufRepoClient(
            self.state_dir / "image", self.image_url, self.fetcher,
            bootstrap=self._root("image"), reference_time=ref,
            clock_rolled_back=rolled_back, config=self.config,
        )
        image.refresh()

        verified = [
            self._cross_check(name, dt, image, dtargets.version, st)
            for name, dt in sorted(dtargets.targets.items())
        ]
        st = self.state()
        st.last_trusted_time = max(ref, st.last_trusted_time) if st.last_trusted_time else ref
        st.director_version = dtargets.version
        st.save(self._state_path)
        return CheckResult(
            verified, dtargets.version, hint, generation=binding.get("generation"),
            settings=binding.get("settings"), credentials_epoch=binding.get("credentials_epoch"),
        )

    def _check_binding(self, dtargets: Targets) -> dict[str, Any]:
        """The signed device binding, checked: this device, this hardware, well-formed
        generation/epoch (non-negative integers) and settings (an object) where present."""
        binding = dtargets.unrecognized_fields.get(DEVICE_FIELD)
        if not isinstance(binding, dict) or binding.get("device_id") != self.device_id:
            who = binding.get("device_id") if isinstance(binding, dict) else None
            raise WrongDevice(f"director metadata is for device {who!r}, not {self.device_id!r}")
        if binding.get("hardware_id") != self.hardware_id:
            raise HardwareMismatch(
                f"director metadata is for hardware {binding.get('hardware_id')!r}, "
                f"this device is {self.hardware_id!r}"
            )
        for key in ("generation", "credentials_epoch"):
            value = binding.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise BadMetadata(f"director binding: {key} must be a non-negative integer, not {value!r}")
        binding = dict(binding)
        settings = binding.get("settings")
        if settings is not None:  # JSON text (canonical JSON has no floats)
            try:
                settings = json.loads(settings) if isinstance(settings, str) else None
            except ValueError:
                settings = None
            if not isinstance(settings, dict):
                raise BadMetadata("director binding: settings must be the JSON text of an object")
            binding["settings"] = settings
        return binding

    def _cross_check(
        self, name: str, dt: TargetFile, image: TufRepoClient, director_version: int, st: DeviceTrustState
    ) -> VerifiedTarget:
        check_target_name(name)
        custom = dt.custom if isinstance(dt.custom, dict) else {}
        if custom.get("device_id") != self.device_id:
            raise WrongDevice(f"{name} is assigned to {custom.get('device_id')!r}")
        if custom.get("hardware_id") != self.hardware_id:
            raise HardwareMismatch(f"{name} is assigned for hardware {custom.get('hardware_id')!r}")
        it = image.get_targetinfo(name)
        if it is None:
            raise TargetMissing(f"director names {name}, which the image repository does not sign")
        if it.length != dt.length:
            raise DirectorImageMismatch(f"{name}: length {dt.length} (director) vs {it.length} (image)")
        common = set(it.hashes) & set(dt.hashes)
        if not common or any(it.hashes[a] != dt.hashes[a] for a in common):
            raise DirectorImageMismatch(f"{name}: director and image hashes differ")
        icustom = it.custom if isinstance(it.custom, dict) else {}
        counter = custom.get("release_counter")
        if not isinstance(counter, int) or icustom.get("release_counter") != counter:
            raise DirectorImageMismatch(
                f"{name}: release counter {counter!r} (director) vs "
                f"{icustom.get('release_counter')!r} (image)"
            )
        hw = icustom.get("hardware_ids") or []
        if hw and self.hardware_id not in hw:
            raise HardwareMismatch(f"{name} is built for {hw}, not {self.hardware_id!r}")
        slots = tuple(custom.get("slots") or ())
        for slot in slots:
            installed = st.installed.get(slot)
            if installed is not None and counter < installed.release_counter:
                raise ReleaseCounterTooLow(
                    f"{name} has release counter {counter}, slot {slot!r} runs {installed.release_counter}"
                )
        return VerifiedTarget(
            name=name, length=it.length, hashes=dict(it.hashes), release_counter=counter,
            slots=slots, model=icustom.get("model"), version=icustom.get("version"),
            device_id=self.device_id, hardware_id=self.hardware_id,
            director_version=director_version,
            url=image.target_url(it, self.image_targets_url), image_custom=dict(icustom),
        )

    def held(self) -> dict[str, HeldMetadata]:
        """The metadata this device holds per repository (``director``, ``image``): targets
        version, timestamp version, earliest expiry. Read from the local metadata caches,
        which ``tuf.ngclient`` only ever writes after verifying; a repository never
        fetched is left out. For reports: never trusted for a decision."""
        out: dict[str, HeldMetadata] = {}
        for repo in ("director", "image"):
            held = _held(self.state_dir / repo)
            if held is not None:
                out[repo] = held
        return out

    # -- download ---------------------------------------------------------------------

    def download(self, target: VerifiedTarget, dest: str | os.PathLike[str]) -> Path:
        """Download ``target`` (resuming any part file) and move it to ``dest`` once its
        length and hashes match. Raises a ``TufError``; ``dest`` is untouched on refusal."""
        check_target_name(target.name)
        return download_verified(
            self.fetcher, target.url, target.length, target.hashes, Path(dest),
            self.state_dir / "downloads",
        )

    def part_path(self, target: VerifiedTarget) -> Path | None:
        """Where ``target``'s partial download is kept between attempts (None: bad hashes)."""
        values = list(target.hashes.values())
        if not values or not all(isinstance(v, str) and _HEX.match(v) for v in values):
            return None
        return self.state_dir / "downloads" / f"{values[0]}.part"

    def discard_part(self, target: VerifiedTarget) -> bool:
        """Remove ``target``'s part file, so the next download starts from byte 0."""
        values = list(target.hashes.values())
        if not values or not all(isinstance(v, str) and _HEX.match(v) for v in values):
            return False
        part = self.state_dir / "downloads" / f"{values[0]}.part"
        existed = part.exists()
        _unlink(part)
        return existed

    def discard_partial(self) -> int:
        """Remove leftover part files (e.g. after an assignment changed). Returns count."""
        d = self.state_dir / "downloads"
        n = 0
        for p in d.glob("*.part") if d.is_dir() else []:
            _unlink(p)
            n += 1
        return n
