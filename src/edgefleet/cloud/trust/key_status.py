"""What ``fleet keys status`` and ``GET /api/v1/trust/keys`` report: for each repository and
role, the key ids, the threshold, where each private key lives, file permission problems and
the expiry of the signed metadata.

Reads only the keyring (``{data_dir}/keys/keyring.json``), the key files' modes and the TUF
metadata (``{data_dir}/tuf``); it needs neither the database nor a running controller, so the
CLI can run it on a stopped controller's data dir.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from ...registry.tuf.keyplace import describe, permission_problems
from ...registry.tuf.keys import KEYRING_FILE, REPOS, ROLES, KeyRing

KEYS_DIR = "keys"
TUF_DIR = "tuf"


def _expiry(path: Path) -> tuple[int | None, str | None]:
    try:
        signed = json.loads(path.read_bytes())["signed"]
        return int(signed["version"]), str(signed["expires"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


def _role_metadata(tuf_dir: Path, repo: str, role: str,
                   director_db: dict[str, dict[str, Any]] | None = None,
                   image_db: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Version and expiry of one role's current metadata (director online roles: the
    earliest expiry over the devices, with their count; ``director_db``: the same figures
    for devices whose metadata lives in the database, from ``director_store.expiry_summary``)."""
    if role == "root":
        version, expires = _expiry(tuf_dir / repo / "root.json")
        return {"version": version, "expires": expires}
    if repo == "image" and image_db is not None and role in image_db:
        return dict(image_db[role])  # kept in the database (a running controller: Trust.image_expiry)
    if repo == "image":
        version, expires = _expiry(tuf_dir / "image" / "timestamp.json")
        if role == "timestamp":
            return {"version": version, "expires": expires}
        return _via_timestamp(tuf_dir / "image", role)
    devices_dir = tuf_dir / "director" / "devices"
    earliest: str | None = None
    count = 0
    for d in sorted(devices_dir.iterdir()) if devices_dir.is_dir() else []:
        got = _expiry(d / "timestamp.json")[1] if role == "timestamp" else _via_timestamp(d, role)["expires"]
        if got is not None:
            count += 1
            earliest = got if earliest is None or got < earliest else earliest
    db = (director_db or {}).get(role)
    if db and db.get("devices"):
        count += int(db["devices"])
        got = db.get("expires")
        earliest = got if earliest is None or (got is not None and got < earliest) else earliest
    return {"version": None, "expires": earliest, "devices": count}


def _via_timestamp(base: Path, role: str) -> dict[str, Any]:
    try:
        ts = json.loads((base / "timestamp.json").read_bytes())["signed"]
        snap_v = ts["meta"]["snapshot.json"]["version"]
        if role == "snapshot":
            return dict(zip(("version", "expires"), _expiry(base / f"{snap_v}.snapshot.json"), strict=True))
        snap = json.loads((base / f"{snap_v}.snapshot.json").read_bytes())["signed"]
        tv = snap["meta"][f"{role}.json"]["version"]
        return dict(zip(("version", "expires"), _expiry(base / f"{tv}.{role}.json"), strict=True))
    except (OSError, ValueError, KeyError, TypeError):
        return {"version": None, "expires": None}


def key_status(data_dir: Path, *, now: datetime | None = None,
               director_db: dict[str, dict[str, Any]] | None = None,
               image_db: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The status document (JSON-ready). ``now`` marks expired metadata; ``None``: not judged.
    ``director_db``: per-device director expiry kept in the database (a running controller);
    ``image_db``: role → {version, expires} of the image metadata kept there."""
    keys_dir = data_dir / KEYS_DIR
    if not (keys_dir / KEYRING_FILE).exists():
        return {"keys_dir": str(keys_dir), "initialised": False, "problems": [], "roles": []}
    ring = KeyRing.load(keys_dir)
    problems = permission_problems(keys_dir, public_files=(KEYRING_FILE,))
    offline_dirs: set[Path] = set()
    rows = []
    for repo in REPOS:
        for role in ROLES:
            rk = ring.role(repo, role)
            keys = []
            for entry in rk.keys:
                d = describe(entry.public, entry.uri, entry.location, keys_dir)
                if d["kind"] == "offline" and d["present"]:
                    offline_dirs.add(Path(str(d["path"])).parent)
                keys.append({"keyid": entry.keyid, "public": entry.public.to_dict(),
                             "location": entry.location, **d})
            md = _role_metadata(data_dir / TUF_DIR, repo, role, director_db, image_db)
            expired = None
            if now is not None and md.get("expires"):
                expired = datetime.fromisoformat(str(md["expires"]).replace("Z", "+00:00")) <= now
            rows.append({"repo": repo, "role": role, "threshold": rk.threshold, "online": ring.online(repo, role),
                         "keys": keys, "metadata": {**md, "expired": expired}})
    for offline in sorted(offline_dirs):
        problems += permission_problems(offline)
    return {"keys_dir": str(keys_dir), "initialised": True, "problems": problems, "roles": rows}
