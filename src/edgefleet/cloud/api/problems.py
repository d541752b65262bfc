"""One error body for every error the HTTP API answers, the handlers that produce it, and
the OpenAPI pass that declares it on every operation.

Every error (4xx, 5xx) is ``{"code": "E_…", "message": "…", "detail": …}``:

* ``code`` — stable and machine-readable: a leaf's own code where it has one
  (``E_MODEL_BLOCKED``, ``E_DATABASE_UNAVAILABLE``, ``E_KEYS_OFFLINE``, the uploads'
  ``too_large``/``malformed``…), else the status's (``CODES``: ``E_UNAUTHORIZED``, …);
* ``message`` — one sentence for a person;
* ``detail`` — the message again for plain errors (clients written against the older
  ``{"detail": "…"}`` bodies keep working), the list of field errors for a 422.

Extra fields where they help: ``retry_after_s`` (429, 503), ``offset`` (uploads).

``install_error_handlers(app)`` maps ``CloudError``, ``HTTPException`` (auth deps, 404,
405), ``RequestValidationError``, a database outage, numeric overflow and any unexpected
exception (500, logged as before) to that body.
``finish_openapi(schema)`` is the pure pass ``docs.py`` runs over FastAPI's document so
that every operation declares the errors it can answer without each route listing them:
401/403/429 where the operation is authenticated, 400/422 where it takes input, 404 where
its path names something, 413 where it takes a JSON body, 503 (database) everywhere under
``/api/v1`` — routes add what only they know (409, or 404 for a body reference) with
``responses(409)``. It also makes ``dict[Key, Value]`` schemas say that keys must match
(``propertyNames``), which pydantic's ``patternProperties`` alone does not.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..db import is_unavailable
from ..errors import CloudError, DatabaseUnavailable
from .hygiene import json_safe

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5  # Retry-After of a 503 during a database outage

CODES: dict[int, str] = {
    400: "E_BAD_REQUEST", 401: "E_UNAUTHORIZED", 403: "E_FORBIDDEN", 404: "E_NOT_FOUND",
    405: "E_METHOD_NOT_ALLOWED", 409: "E_CONFLICT", 413: "E_TOO_LARGE", 415: "E_UNSUPPORTED_MEDIA_TYPE",
    416: "E_RANGE_NOT_SATISFIABLE", 422: "E_VALIDATION", 429: "E_THROTTLED", 500: "E_INTERNAL",
    503: "E_UNAVAILABLE",
}
DESCRIPTIONS: dict[int, str] = {
    400: "bad input the schema cannot state (a number out of range, a JSON body nested too deep)",
    401: "no, unknown, revoked or expired bearer token (code E_UNAUTHORIZED)",
    403: "the token's role (or kind: device vs API token) does not allow this (code E_FORBIDDEN)",
    404: "what the request names does not exist (code E_NOT_FOUND)",
    409: "the request conflicts with the current state; the message says how (e.g. E_MODEL_BLOCKED)",
    413: "the request body is too large (code E_TOO_LARGE)",
    416: "the Range header is outside the content",
    422: "the request does not match the schema; `detail` lists the fields (code E_VALIDATION)",
    429: "too many failed authentications from this address or with this token; see Retry-After (E_THROTTLED)",
    503: "the controller's database is unavailable; nothing was changed, retry after Retry-After "
         "(E_DATABASE_UNAVAILABLE)",
}


def code_for(status: int) -> str:
    return CODES.get(status, "E_ERROR" if status < 500 else "E_INTERNAL")


class ErrorBody(BaseModel):
    """Every error body of the API."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"code": "E_NOT_FOUND", "message": "no device 'cam-9'", "detail": "no device 'cam-9'"}]})

    code: str = Field(min_length=1, max_length=64, description="stable, machine-readable: E_… (uploads: snake_case)")
    message: str = Field(description="what went wrong, for a person")
    detail: Any = Field(default=None, description="the message again, or the field errors of a 422")


def error_body(status: int, message: str, *, code: str | None = None, detail: Any = None,
               **extra: Any) -> dict[str, Any]:
    """The body of an error; ``detail`` defaults to ``message``."""
    return {"code": code or code_for(status), "message": message,
            "detail": message if detail is None else detail, **extra}


def error_response(status: int, message: str, *, code: str | None = None, detail: Any = None,
                   headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(status, message, code=code, detail=detail, **extra), status_code=status,
                        headers=headers)


def responses(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status with the error body and its description
    (override one with ``_409="…"``)."""
    return {s: {"model": ErrorBody, "description": descriptions.get(f"_{s}", DESCRIPTIONS.get(s, "error"))}
            for s in statuses}


def _validation_message(errors: list[Any]) -> str:
    if not errors:
        return "the request does not match the schema"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"the request does not match the schema: {where}: {first.get('msg', 'invalid')}{more}"


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error the app raises with ``ErrorBody``."""

    @app.exception_handler(CloudError)
    async def _cloud_error(_request: Request, exc: CloudError) -> JSONResponse:
        extra = {"retry_after_s": RETRY_AFTER_S} if isinstance(exc, DatabaseUnavailable) else {}
        headers = {"Retry-After": str(RETRY_AFTER_S)} if extra else None
        return error_response(exc.status_code, str(exc), code=exc.code, headers=headers, **extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(json_safe(exc.detail))
        headers = dict(exc.headers) if exc.headers else None
        extra: dict[str, Any] = {}
        if exc.status_code == 429 and headers and headers.get("Retry-After", "").isdigit():
            extra["retry_after_s"] = int(headers["Retry-After"])
        return error_response(exc.status_code, message, headers=headers, **extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = json_safe(exc.errors())
        return error_response(422, _validation_message(errors), detail=errors)

    @app.exception_handler(SQLAlchemyError)
    async def _database(_request: Request, exc: SQLAlchemyError) -> JSONResponse:
        # an outage is the service's state, not a fault in the request: 503 with the reason, retry later
        if not is_unavailable(exc):
            raise exc
        return error_response(503, "the controller's database is unavailable; nothing was changed, retry later",
                              code=DatabaseUnavailable.code, headers={"Retry-After": str(RETRY_AFTER_S)},
                              retry_after_s=RETRY_AFTER_S)

    @app.exception_handler(Exception)
    async def _internal(_request: Request, _exc: Exception) -> JSONResponse:
        # a fault of ours: the same body (Starlette still re-raises it, so it is logged with its traceback)
        return error_response(500, "internal error; the controller's log has the details")

    @app.exception_handler(OverflowError)
    async def _overflow(_request: Request, _exc: OverflowError) -> JSONResponse:
        # a number past what the database stores (e.g. ?limit=10**30): the client's input, not a fault
        return error_response(400, "a number in the request is out of range")


# ----- the OpenAPI pass -----

_REF = "#/components/schemas/ErrorBody"
_FASTAPI_422 = "#/components/schemas/HTTPValidationError"
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def _error_response(status: int) -> dict[str, Any]:
    return {"description": DESCRIPTIONS.get(status, "error"),
            "content": {"application/json": {"schema": {"$ref": _REF}}}}


def _statuses_for(path: str, op: dict[str, Any], secured_globally: bool) -> list[int]:
    params = op.get("parameters", [])
    body = op.get("requestBody")
    out: list[int] = []
    if op.get("security", [{}] if secured_globally else []):
        out += [401, 403, 429]
    if params or body:
        out += [400, 422]
    if any(p.get("in") == "path" for p in params):
        out.append(404)
    if body and any(m == "application/json" or m.endswith("+json") for m in body.get("content", {})):
        out.append(413)
    if path.startswith("/api/v1/"):
        out.append(503)
    return out


def _key_constraints(node: Any) -> None:
    """``{"patternProperties": {P: S}}`` with no ``additionalProperties`` lets any other key
    through; pydantic means "keys match P": say so with ``propertyNames``."""
    if isinstance(node, dict):
        pp = node.get("patternProperties")
        if isinstance(pp, dict) and len(pp) == 1 and "additionalProperties" not in node:
            (pattern, value_schema), = pp.items()
            names = dict(node.get("propertyNames") or {})
            names["pattern"] = pattern
            node["propertyNames"] = names
            node["additionalProperties"] = value_schema
            del node["patternProperties"]
        for v in node.values():
            _key_constraints(v)
    elif isinstance(node, list):
        for v in node:
            _key_constraints(v)


def finish_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Declare the errors every operation can answer with ``ErrorBody`` (in place; returned).

    An error a route declared itself keeps its description; its body becomes ``ErrorBody``
    unless the route named another model.
    """
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ErrorBody"] = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    secured_globally = bool(schema.get("security"))
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            if method not in _METHODS or not isinstance(op, dict):
                continue
            resp = op.setdefault("responses", {})
            for status in _statuses_for(path, op, secured_globally):
                resp.setdefault(str(status), _error_response(status))
            for status, r in resp.items():
                if not status.isdigit() or int(status) < 400:
                    continue
                content = r.get("content")
                schema_ref = (content or {}).get("application/json", {}).get("schema", {}).get("$ref")
                if content is None and path.startswith("/api/v1/health"):
                    continue  # health's 503 is the health body itself (load balancers read it)
                if content is None or schema_ref == _FASTAPI_422:
                    r["content"] = {"application/json": {"schema": {"$ref": _REF}}}
                    if schema_ref == _FASTAPI_422:
                        r["description"] = DESCRIPTIONS[422]
    text = repr(schema["paths"])
    for name in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{name}" not in text:
            components.pop(name, None)
    _key_constraints(components)
    _key_constraints(schema.get("paths", {}))
    return schema


__all__ = ["CODES", "ErrorBody", "RETRY_AFTER_S", "code_for", "error_body", "error_response", "finish_openapi",
           "install_error_handlers", "responses"]
