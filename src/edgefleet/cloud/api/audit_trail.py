"""Recording API calls in the audit log: one dependency on the ``/api/v1`` router.

``record_api_call`` wraps every route of ``api_router`` (routes/__init__.py). Before the
route runs it notes the request (method, route template, path parameters, query and a
summary of the body — JSON fields or form fields with file names and sizes, never file
bytes, secret fields replaced by ``[redacted]``); after the route returns it appends an
entry for each successful ``POST``/``PUT``/``PATCH``/``DELETE`` made with an API token.
A refused authorisation (403) on any method is appended as action ``denied`` with the
action that was attempted. Device-token calls (uploads, TUF reads, credential rotation)
are not control-plane actions and are skipped; failed actions (4xx/5xx other than 403)
change nothing and are not recorded. The entry is appended after the action committed,
in its own transaction, before the response is sent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from .. import audit
from ..errors import CloudError

log = logging.getLogger(__name__)

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PREFIX = "/api/v1"
MAX_BODY_BYTES = 64 * 1024  # bodies larger than this are summarised by their size only

# (method, route path under /api/v1) → action; everything else is derived from the path
NAMED = {
    ("POST", "/models"): "model.push",
    ("POST", "/devices"): "device.enrol",
    ("DELETE", "/devices/{device_id}"): "device.revoke",
    ("POST", "/devices/{device_id}/rotate-credentials"): "device.rotate",
    ("POST", "/deployments"): "deploy",
    ("POST", "/rollouts"): "rollout.start",
    ("POST", "/tokens"): "token.create",
    ("DELETE", "/tokens/{token_id}"): "token.revoke",
    ("POST", "/trust/rotate/{role}"): "keys.rotate",
    ("POST", "/trust/rotate/{role}/prepare"): "keys.prepare",
    ("POST", "/trust/rotate/{role}/commit"): "keys.rotate",
    ("POST", "/trust/resign-root/{repo}/prepare"): "keys.prepare",
    ("POST", "/trust/resign-root/{repo}/commit"): "keys.resign",
    ("POST", "/webhooks"): "webhook.add",
    ("DELETE", "/webhooks/{webhook_id}"): "webhook.rm",
    ("POST", "/webhooks/{webhook_id}/test"): "webhook.test",
    ("POST", "/webhooks/deliveries/{delivery_id}/redeliver"): "webhook.redeliver",
    ("PATCH", "/devices/{device_id}/tags"): "device.tag",
    ("PUT", "/policies/{name}"): "policy.set",
    ("DELETE", "/policies/{name}"): "policy.rm",
}
_VERBS = {"POST": "create", "PUT": "set", "PATCH": "set", "DELETE": "delete"}


def action_name(method: str, route_path: str, body: dict[str, Any] | None = None) -> str:
    """``rollout.pause``, ``capture.set``, ``review.label`` … from the route template."""
    path = route_path.removeprefix(PREFIX) or "/"
    named = NAMED.get((method, path))
    if named == "model.push" and body and body.get("provenance"):
        return "model.import"
    if named:
        return named
    static = [p for p in path.strip("/").split("/") if p and not p.startswith("{")]
    if not static:
        return f"api.{_VERBS.get(method, method.lower())}"
    if static[0] == "settings" and len(static) > 1:
        return f"{static[1]}.{'reset' if method == 'DELETE' else 'set'}"
    resource = static[0][:-1] if static[0].endswith("s") else static[0]
    verb = static[-1] if len(static) > 1 else _VERBS.get(method, method.lower())
    return f"{resource}.{verb}"


async def _body_summary(request: Request) -> dict[str, Any]:
    """The request's fields (as FastAPI already read them: cached, not read twice)."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form()
        out: dict[str, Any] = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                out[key] = {"file": value.filename, "bytes": value.size}
            else:
                out[key] = _maybe_json(str(value))
        return out
    length = int(request.headers.get("content-length") or 0)
    if length > MAX_BODY_BYTES:
        return {"body_bytes": length}
    raw = await request.body()
    if not raw:
        return {}
    if len(raw) > MAX_BODY_BYTES:
        return {"body_bytes": len(raw)}
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {"body_bytes": len(raw)}
    return parsed if isinstance(parsed, dict) else {"body": parsed}


def _maybe_json(text: str) -> Any:
    if text[:1] in "{[":
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def _target(path_params: dict[str, Any], body: dict[str, Any]) -> str:
    if path_params:
        return "/".join(str(v) for v in path_params.values())
    for key in ("id", "device_id", "name", "model"):
        value = body.get(key)
        if isinstance(value, str) and value:
            version = body.get("version") if key == "name" else None
            return f"{value}:{version}" if isinstance(version, str) else value
    return ""


def _append(request: Request, principal: Any, action: str, target: str, summary: dict[str, Any]) -> None:
    try:
        audit.for_controller(request.app.state.controller).record(
            actor=principal.name, role=principal.role, action=action, target=target, summary=summary)
    except Exception:  # the action itself is done; a failed record is loud, not a 500
        log.exception("audit: could not record %s %s by %s", action, target, principal.name)


async def record_api_call(request: Request) -> AsyncIterator[None]:
    """Router dependency (scope ``function``: the entry is written before the response)."""
    route = request.scope.get("route")
    route_path = getattr(route, "path", request.url.path)
    mutating = request.method in MUTATING
    body = await _body_summary(request) if mutating else {}
    action = action_name(request.method, route_path, body)
    path_params = dict(request.path_params)
    summary: dict[str, Any] = {"method": request.method, "path": route_path}
    if request.query_params:
        summary["query"] = dict(request.query_params)
    if body:
        summary["body"] = body
    try:
        yield
    except (HTTPException, CloudError) as exc:
        principal = getattr(request.state, "principal", None)
        if getattr(exc, "status_code", None) == 403 and principal is not None:
            detail = str(exc.detail if isinstance(exc, HTTPException) else exc)[:200]
            await run_in_threadpool(_append, request, principal, "denied", _target(path_params, body),
                                    {**summary, "attempted": action, "reason": detail})
        raise
    principal = getattr(request.state, "principal", None)
    if not mutating or principal is None or principal.kind != "user":
        return
    await run_in_threadpool(_append, request, principal, action, _target(path_params, body), summary)
