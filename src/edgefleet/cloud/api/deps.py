"""FastAPI dependencies: the controller, a DB session, and authentication.

Operators authenticate with an API token (``Authorization: Bearer efk_…``) whose role
must include the one a route needs; devices authenticate with their device token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session, select

from ..auth import hash_token, role_allows
from ..runtime import Controller
from ..tables import ApiToken, Device
from . import throttle

bearer = HTTPBearer(auto_error=False, description="API token (fleet cloud init / fleet token create) or device token")


def get_controller(request: Request) -> Controller:
    return request.app.state.controller  # type: ignore[no-any-return]


ControllerDep = Annotated[Controller, Depends(get_controller)]


def get_session(controller: ControllerDep) -> Iterator[Session]:
    with controller.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


class Principal:
    def __init__(self, kind: str, name: str, role: str):
        self.kind, self.name, self.role = kind, name, role


def _unauthorized(detail: str = "missing or invalid bearer token") -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def authenticate(session: Session, creds: HTTPAuthorizationCredentials | None) -> Principal:
    if creds is None or not creds.credentials:
        raise _unauthorized()
    h = hash_token(creds.credentials)
    token = session.exec(select(ApiToken).where(ApiToken.token_hash == h)).first()
    if token is not None and token.revoked_at is None:
        if token.expires_at is not None and _aware(token.expires_at) <= datetime.now(timezone.utc):
            raise _unauthorized(f"API token {token.name!r} expired at {_aware(token.expires_at).isoformat()}")
        return Principal("user", token.name, token.role)
    device = session.exec(select(Device).where(Device.token_hash == h)).first()
    if device is not None and device.revoked_at is None:
        return Principal("device", device.id, "device")
    # a rotation's new token, good only for confirming the rotation (routes/devices.py)
    pending = session.exec(select(Device).where(Device.pending_token_hash == h)).first()
    if pending is not None and pending.revoked_at is None:
        return Principal(PENDING_DEVICE, pending.id, "device")
    raise _unauthorized()


PENDING_DEVICE = "device-pending"


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=timezone.utc)


def authenticate_request(request: Request, session: Session, creds: HTTPAuthorizationCredentials | None) -> Principal:
    """``authenticate``, with failures throttled (api/throttle.py): a refused token counts
    against the client's address and the token's prefix, and is answered 429 (not 401)
    while either is locked. A valid token always passes."""
    try:
        return authenticate(session, creds)
    except HTTPException as exc:
        wait = throttle.refused(request, creds.credentials if creds is not None else None) if exc.status_code == 401 else None
        if wait is not None:
            raise throttle.too_many(wait) from None
        raise


def require(role: str) -> Callable[..., Principal]:
    def dep(request: Request, session: SessionDep, creds: Credentials) -> Principal:
        principal = authenticate_request(request, session, creds)
        request.state.principal = principal  # who acted or was refused, for the audit log
        if principal.kind != "user" or not role_allows(principal.role, role):
            raise HTTPException(status_code=403, detail=f"this action needs the {role} role")
        return principal

    return dep


def any_principal(request: Request, session: SessionDep, creds: Credentials) -> Principal:
    request.state.principal = principal = authenticate_request(request, session, creds)
    return principal


def device_id_of(request: Request, session: SessionDep, creds: Credentials) -> str:
    """For device-only routes: the authenticated device's id."""
    principal = authenticate_request(request, session, creds)
    if principal.kind != "device":
        raise HTTPException(status_code=403, detail="this route is for devices")
    return principal.name


Viewer = Annotated[Principal, Depends(require("viewer"))]
Operator = Annotated[Principal, Depends(require("operator"))]
Admin = Annotated[Principal, Depends(require("admin"))]
AnyPrincipal = Annotated[Principal, Depends(any_principal)]
