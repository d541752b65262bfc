"""What a device token may read: its own director metadata and the bundles it is meant to have.

API tokens (viewer and up) read everything the TUF and bundle routes serve. A device reads

* ``/tuf/director/<own id>/…`` only (another device's plan is none of its business);
* ``/tuf/image/metadata/…`` (the shared, signed image repository every device verifies);
* an image target (``/tuf/image/targets/…``) or ``/api/v1/bundles/<sha256>`` only when the
  digest is one of ``device_digests``: what its current signed director targets name, what
  its slots are assigned in the database now, and what its last report says it has
  installed or keeps as last known good — the latter only where the digest is a model
  bundle, so a device cannot name a clip (or any other blob) and read it.

Anything else is a 403 naming the rule. ``tuf_authorizer`` is the callback handed to
``registry.tuf.http.tuf_router`` (the registry never imports cloud).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import HTTPException
from sqlmodel import Session, col, select

from ...registry.tuf.http import TufAccess
from ..auth import role_allows
from ..devices.fleet import assignments_of
from ..runtime import Controller
from ..tables import Device, ModelVersion
from ..trust.director_store import signed_digests
from .deps import Principal


def device_digests(session: Session, controller: Controller, device_id: str) -> set[str]:
    """Bundle digests device ``device_id`` may download now."""
    allowed = signed_digests(session, controller.trust.director, device_id)  # database, else older files
    allowed |= {mv.digest for _a, mv in assignments_of(session, device_id).values()}
    device = session.get(Device, device_id)
    reported: set[str] = set()
    for slot in ((device.reported or {}).get("slots") or {}).values() if device is not None else ():
        for key in ("installed", "last_known_good"):
            ref = slot.get(key) if isinstance(slot, dict) else None
            if isinstance(ref, dict) and isinstance(ref.get("digest"), str):
                reported.add(ref["digest"])
    reported -= allowed
    if reported:  # only model bundles: a report cannot open a clip or any other blob
        allowed |= set(session.exec(select(ModelVersion.digest).where(col(ModelVersion.digest).in_(reported))).all())
    return allowed


def forbidden(detail: str) -> HTTPException:
    return HTTPException(status_code=403, detail=detail)


def check_read_digest(session: Session, controller: Controller, principal: Principal, digest: str) -> None:
    """Raises 403 unless ``principal`` may read the bundle (or image target) ``digest``."""
    if principal.kind == "user":
        if not role_allows(principal.role, "viewer"):
            raise forbidden("this action needs the viewer role")
        return
    if digest not in device_digests(session, controller, principal.name):
        raise forbidden(f"device {principal.name!r} may only download the bundles its own director "
                        f"targets or slots name; {digest[:16]}… is not one of them")


def tuf_authorizer(controller: Controller) -> Callable[[Any, TufAccess], None]:
    """The ``authorize`` callback of the TUF router: devices see only their own plan and targets."""

    def authorize(principal: Principal, access: TufAccess) -> None:
        if principal.kind == "user":
            if not role_allows(principal.role, "viewer"):
                raise forbidden("this action needs the viewer role")
            return
        if access.kind == "image-metadata":
            return
        if access.kind == "director":
            if access.device_id != principal.name:
                raise forbidden(f"device {principal.name!r} may only read its own director metadata "
                                f"(/tuf/director/{principal.name}/…)")
            return
        if access.kind == "image-target" and access.digest is not None:
            with controller.session() as session:
                check_read_digest(session, controller, principal, access.digest)
            return
        raise forbidden(f"device {principal.name!r} may not read /tuf/{access.path}")

    return authorize
