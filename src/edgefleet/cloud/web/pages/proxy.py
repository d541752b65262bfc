"""/ui/api/v1/… — the page scripts' way into the real API, with the cookie's token.

The cookie is HttpOnly, so scripts cannot put it in an ``Authorization`` header; they
call ``/ui/api/v1/<path>`` instead and this forwards the request in-process to
``/api/v1/<path>`` with ``Authorization: Bearer <cookie>``. The API's own role checks
answer (a viewer gets the API's 403). State-changing methods must carry
``X-Edgefleet-Request: 1``: a cross-site form cannot set that header, and the cookie is
SameSite=Strict — together the CSRF defence.
"""

from __future__ import annotations

import httpx
from fastapi import APIRouter, HTTPException, Request, Response

from ..auth import COOKIE, principal_for_token

router = APIRouter(prefix="/ui/api")
CSRF_HEADER = "x-edgefleet-request"
FORWARDED = ("content-type", "accept", "range", "if-range")
RETURNED = ("content-range", "accept-ranges", "content-disposition", "cache-control")


@router.api_route("/v1/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def forward(path: str, request: Request) -> Response:
    token = request.cookies.get(COOKIE)
    with request.app.state.controller.session() as session:
        valid = principal_for_token(session, token) is not None
    if not valid:
        raise HTTPException(status_code=401, detail="not logged in", headers={"WWW-Authenticate": "Bearer"})
    if request.method != "GET" and request.headers.get(CSRF_HEADER) != "1":
        raise HTTPException(status_code=403, detail=f"missing {CSRF_HEADER} header")
    headers = {k: v for k, v in request.headers.items() if k in FORWARDED}
    headers["authorization"] = f"Bearer {token}"
    transport = httpx.ASGITransport(app=request.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ui-proxy") as client:
        upstream = await client.request(request.method, f"/api/v1/{path}", params=request.query_params,
                                        content=await request.body(), headers=headers)
    passed = {k: v for k, v in upstream.headers.items() if k in RETURNED}  # clips seek with Range
    return Response(upstream.content, status_code=upstream.status_code,
                    media_type=upstream.headers.get("content-type"), headers=passed)
