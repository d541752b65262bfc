"""/api/v1/tokens — API tokens and their roles (admin only).

A token carries one role: viewer reads; reviewer also labels; operator also runs
rollouts and deploys; admin also manages tokens and keys. The secret is returned once by
``POST`` and stored as a sha256 hash; ``DELETE`` revokes (the row stays, for the audit
trail). The last active admin token cannot be revoked, so the fleet is never locked out.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal

from fastapi import APIRouter, Path
from pydantic import BeforeValidator, Field
from sqlmodel import Session, SQLModel, select

from ...auth import ROLES, hash_token, new_token
from ...errors import BadRequest, Conflict, NotFound
from ...tables import ApiToken
from ..deps import Admin, SessionDep
from ..problems import responses

router = APIRouter(prefix="/tokens", tags=["tokens"])


def _known_role(value: object) -> object:
    if isinstance(value, str) and value not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {value[:40]!r}")
    return value


class TokenCreate(SQLModel):
    name: str = Field(min_length=1, max_length=128)
    role: Annotated[Literal["viewer", "reviewer", "operator", "admin"], BeforeValidator(_known_role)] = "viewer"
    expires_in_s: int | None = Field(default=None, gt=0, le=10 * 365 * 86400,
                                     description="seconds until the token stops working; none = until revoked")


class TokenPublic(SQLModel):
    id: int
    name: str
    role: Literal["viewer", "reviewer", "operator", "admin"]
    created_at: datetime
    revoked_at: datetime | None = None
    expires_at: datetime | None = None

    @classmethod
    def of(cls, t: ApiToken) -> TokenPublic:
        return cls(id=t.id or 0, name=t.name, role=t.role, created_at=t.created_at, revoked_at=t.revoked_at,
                   expires_at=t.expires_at)


class TokenCreated(TokenPublic):
    token: str


# ----- service functions (also used by the web UI) -----


def create_token(session: Session, name: str, role: str, expires_in_s: int | None = None) -> tuple[ApiToken, str]:
    """Create a token; returns the row and the secret (shown once)."""
    if role not in ROLES:
        raise BadRequest(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    secret = new_token("efk")
    expires = datetime.now(timezone.utc) + timedelta(seconds=expires_in_s) if expires_in_s else None
    row = ApiToken(name=name, role=role, token_hash=hash_token(secret), expires_at=expires)
    session.add(row)
    session.commit()
    session.refresh(row)
    return row, secret


def list_tokens(session: Session, *, include_revoked: bool = True) -> list[ApiToken]:
    q = select(ApiToken).order_by(ApiToken.id)  # type: ignore[arg-type]
    if not include_revoked:
        q = q.where(ApiToken.revoked_at == None)  # noqa: E711
    return list(session.exec(q).all())


def revoke_token(session: Session, token_id: int, now: datetime | None = None) -> ApiToken:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFound(f"no token {token_id}")
    if row.revoked_at is not None:
        return row
    if row.role == "admin":
        admins = [t for t in list_tokens(session, include_revoked=False) if t.role == "admin"]
        if len(admins) <= 1:
            raise Conflict("this is the last active admin token; create another admin token first")
    row.revoked_at = now or datetime.now(timezone.utc)
    session.add(row)
    session.commit()
    return row


# ----- routes -----


@router.post("", response_model=TokenCreated, status_code=201, summary="Create an API token; its secret is shown once")
def create(body: TokenCreate, session: SessionDep, _: Admin) -> TokenCreated:
    row, secret = create_token(session, body.name, body.role, body.expires_in_s)
    return TokenCreated(**TokenPublic.of(row).model_dump(), token=secret)


@router.get("", response_model=list[TokenPublic], summary="All API tokens (never their secrets)")
def list_all(session: SessionDep, _: Admin) -> list[TokenPublic]:
    return [TokenPublic.of(t) for t in list_tokens(session)]


TokenId = Annotated[int, Path(ge=1, le=2**53, description="the token's id (fleet token ls)")]


@router.delete("/{token_id}", response_model=TokenPublic, summary="Revoke an API token",
               responses=responses(409, _409="the last active admin token cannot be revoked"))
def revoke(token_id: TokenId, session: SessionDep, _: Admin) -> TokenPublic:
    return TokenPublic.of(revoke_token(session, token_id))
