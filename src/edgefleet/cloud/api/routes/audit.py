"""/api/v1/audit — the audit log of control-plane actions (admin only).

``GET /audit`` lists entries newest first (filters: ``actor``, ``action`` as a prefix such
as ``rollout.``, ``since``/``until``, ``limit``/``offset``); ``GET /audit/export`` streams
every matching entry oldest first as JSON lines, hashes included, so the chain can be
checked elsewhere; ``GET /audit/verify`` walks the whole chain and its signed anchors and
says which entry broke and how (``cloud/audit.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from ... import audit
from ...db import session_scope
from ..deps import Admin, ControllerDep, SessionDep
from ..params import Offset, Timestamp

router = APIRouter(prefix="/audit", tags=["audit"])


class AuditFilter(BaseModel):
    actor: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def audit_filter(
    actor: Annotated[str | None, Query(max_length=128, description="exactly this actor (token name, reconciler, …)")] = None,
    action: Annotated[str | None, Query(max_length=64, description="action prefix: rollout., token.create, denied")] = None,
    since: Annotated[Timestamp | None, Query(description="entries at or after this time (ISO 8601)")] = None,
    until: Annotated[Timestamp | None, Query(description="entries before this time (ISO 8601)")] = None,
) -> AuditFilter:
    return AuditFilter(actor=actor or None, action=action or None, since=since, until=until)


Filter = Annotated[AuditFilter, Depends(audit_filter)]


@router.get("", summary="Audit entries, newest first")
def list_audit(session: SessionDep, _: Admin, f: Filter,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100,
               offset: Annotated[Offset, Query()] = 0) -> list[dict[str, Any]]:
    rows = audit.list_entries(session, **f.model_dump(), limit=limit, offset=offset)
    return [audit.entry_dict(e) for e in rows]


@router.get("/export", summary="Matching entries, oldest first, as JSON lines (hashes included)",
            response_class=StreamingResponse)
def export_audit(controller: ControllerDep, _: Admin, f: Filter) -> StreamingResponse:
    filters = f.model_dump()

    def lines() -> Any:
        with session_scope(controller.engine) as s:
            yield from audit.export_lines(s, **filters)

    return StreamingResponse(lines(), media_type="application/x-ndjson",
                             headers={"Content-Disposition": 'attachment; filename="audit.jsonl"'})


@router.get("/verify", summary="Check the hash chain and the signed anchors")
def verify_audit(session: SessionDep, controller: ControllerDep, _: Admin) -> dict[str, Any]:
    log = audit.for_controller(controller)
    return audit.verify(session, log.signer.keys() if log.signer else {}).to_dict()
