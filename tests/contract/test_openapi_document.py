"""The OpenAPI document: every error declared with the one error body, every operation
reachable from the typed client, and routes added later get both by default."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, FastAPI, Query
from pydantic import BaseModel

from edgefleet.cloud.api import create_app
from edgefleet.cloud.api.deps import Viewer
from edgefleet.cloud.api.docs import install_docs, operation_id
from edgefleet.cloud.api.problems import ErrorBody, finish_openapi
from edgefleet.cloud.client import ApiClient, operations
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings

ERROR_REF = "#/components/schemas/ErrorBody"
METHODS = {"get", "put", "post", "delete", "patch"}


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data_dir: Path = tmp_path_factory.mktemp("controller")
    controller = Controller(load_settings(data_dir, env={}))
    yield create_app(controller).openapi()


def _ops(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield method, path, op


def test_every_operation_has_a_client_method_and_every_client_method_an_operation(spec: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in _ops(spec)]
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    mapped = operations()
    missing = sorted(set(ids) - set(mapped))
    assert not missing, f"operations without an ApiClient method (mark one with @operation): {missing}"
    stale = sorted(set(mapped) - set(ids))
    assert not stale, f"ApiClient methods marked with operations the API does not have: {stale}"
    for op_id, name in mapped.items():
        assert callable(getattr(ApiClient, name)), (op_id, name)


def test_every_error_status_is_declared_with_the_one_error_body(spec: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # FastAPI's 422 body is replaced
    for method, path, op in _ops(spec):
        where = f"{method.upper()} {path}"
        responses = op["responses"]
        if op.get("security"):
            assert {"401", "403", "429"} <= set(responses), where
        if op.get("parameters") or op.get("requestBody"):
            assert {"400", "422"} <= set(responses), where
        if any(p["in"] == "path" for p in op.get("parameters", [])):
            assert "404" in responses, where
        if path.startswith("/api/v1/"):
            assert "503" in responses, where
        for status, r in responses.items():
            if int(status) < 400 or (path.startswith("/api/v1/health") and status == "503"):
                continue  # health's 503 is the health body (load balancers read it)
            ref = r["content"]["application/json"]["schema"]["$ref"]
            assert ref in (ERROR_REF, "#/components/schemas/UploadErrorBody"), (where, status, ref)


def test_enums_patterns_and_bounds_reach_the_schema(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert schemas["TokenCreate"]["properties"]["role"]["enum"] == ["viewer", "reviewer", "operator", "admin"]
    assert schemas["LabelBody"]["properties"]["verdict"]["enum"][0] == "control_right"
    assert "pattern" in schemas["DeploymentCreate"]["properties"]["model"]
    assert schemas["DeviceCreate"]["properties"]["id"]["pattern"].startswith("^[A-Za-z0-9]")
    tags = schemas["DeviceCreate"]["properties"]["tags"]
    assert "pattern" in tags["propertyNames"] and "patternProperties" not in tags  # keys constrained, not just typed
    assert schemas["CapturePatch"]["additionalProperties"] is False
    events = {p["name"]: p["schema"] for p in spec["paths"]["/api/v1/events"]["get"]["parameters"]}
    until = events["until"]["anyOf"][0]
    assert until["format"] == "date-time"
    assert events["limit"]["maximum"] == 1000 and events["offset"]["maximum"] >= 1
    assert "pattern" in events["pair"]["anyOf"][0] and "pattern" in events["control"]["anyOf"][0]


def test_a_route_added_later_gets_the_errors_by_default() -> None:
    """A new router with an authenticated route and a query: 401/403/422… with ErrorBody, no
    HTTPValidationError, without the route declaring any of them."""

    class Out(BaseModel):
        ok: bool

    router = APIRouter(prefix="/api/v1/things", tags=["things"])

    @router.get("/{thing_id}", response_model=Out)
    def get_thing(thing_id: str, _: Viewer, n: Annotated[int, Query(ge=1, le=5)] = 1) -> Out:
        return Out(ok=True)

    app = FastAPI(generate_unique_id_function=operation_id, openapi_url=None, docs_url=None, redoc_url=None)
    app.include_router(router)
    install_docs(app)
    op = app.openapi()["paths"]["/api/v1/things/{thing_id}"]["get"]
    assert op["operationId"] == "things_get_thing"
    assert {"400", "401", "403", "404", "422", "429", "503"} <= set(op["responses"])
    for status in ("401", "403", "404", "422"):
        assert op["responses"][status]["content"]["application/json"]["schema"]["$ref"] == ERROR_REF


def test_finish_openapi_constrains_dict_keys_and_keeps_declared_models() -> None:
    schema: dict[str, Any] = {
        "paths": {"/x": {"post": {"responses": {"409": {"description": "c", "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Other"}}}}},
            "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/B"}}}}}}},
        "components": {"schemas": {"B": {"type": "object", "properties": {"tags": {
            "type": "object", "patternProperties": {"^[a-z]+$": {"type": "string"}}}}}}},
    }
    out = finish_openapi(schema)
    tags = out["components"]["schemas"]["B"]["properties"]["tags"]
    assert tags["propertyNames"]["pattern"] == "^[a-z]+$" and tags["additionalProperties"] == {"type": "string"}
    responses = out["paths"]["/x"]["post"]["responses"]
    assert responses["409"]["content"]["application/json"]["schema"]["$ref"].endswith("/Other")  # the route's own
    assert {"400", "413", "422"} <= set(responses) and "401" not in responses  # no security: no 401
    ErrorBody.model_validate({"code": "E_X", "message": "m", "detail": [1]})
