"""Malformed input never gets a 5xx: every operation of ``/api/v1/openapi.json`` is swept with
hostile values in each path and query parameter, each body field and the body itself.

The sweep reads the operations from the live controller's own schema, so a route added
later is covered without editing this file. Values: ``../x``, 5,000-character strings, NUL
bytes, non-UTF-8 bytes, 400-digit integers, negative and non-finite numbers, 5,000-deep
JSON, malformed ``Range`` headers. Requests go with an admin token, so they reach the
handlers rather than stopping at authentication.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from .conftest import Fleet

BAD_STRINGS = ["../x", "../../etc/passwd", "a" * 5000, "x\x00y", "\udcff\udcfe", "%ff%fe", "9" * 400, "-1",
               "-99999999999999999999", "", " ", "digits:../1", "::", "a:b:c", "NaN", "1e999"]
BAD_NUMBERS: list[Any] = [-1, -(10**30), 10**400, 1e308, -1e308, "nan", "inf", "-inf", 0.5, "x"]
DEEP = "[" * 5000 + "]" * 5000
DEEP_OBJECT = '{"a":' * 5000 + "1" + "}" * 5000
RAW_BODIES: list[bytes] = [
    DEEP.encode(), DEEP_OBJECT.encode(), b"\xff\xfe\xfd", b'{"x": "\x00"}', b'{"x": 1' + b"0" * 5000 + b"}",
    b"[" * 60 + b"]" * 60, b"{", b"null", b"[]", b'"string"', b"1e999999", b'{"a": NaN}',
]
BAD_RANGES = ["bytes=99999999999999999999999-", "bytes=-0", "bytes=5-1", "bytes=-99999999999999999999", "bytes=a-b",
              "bytes=0-0,1-1", "items=0-1"]


@dataclass
class Req:
    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    files: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    note: str = ""
    op: str = ""  # the operation's path template

    def describe(self) -> str:
        return f"{self.method} {self.path[:120]} {self.note[:80]}"


def _quote(value: str) -> str:
    return quote(value.encode("utf-8", "surrogateescape"), safe="%") if value else "%20"


def _plausible(name: str, schema: dict[str, Any]) -> str:
    if name == "digest":
        return "0" * 64
    if schema.get("type") == "integer":
        return "1"
    return "x1"


def _string_fields(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    if "$ref" in schema:
        schema = _resolve(schema["$ref"], spec)
    return dict(schema.get("properties", {}))


def _resolve(ref: str, spec: dict[str, Any]) -> dict[str, Any]:
    node: Any = spec
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node  # type: ignore[no-any-return]


def malformed_requests(spec: dict[str, Any], upload: bytes = b"\x00\xff not onnx") -> Iterator[Req]:
    """Every hostile request for every operation in ``spec`` (an OpenAPI document); file
    fields carry ``upload`` (a valid ONNX model reaches the name and version checks)."""
    for path, ops in spec["paths"].items():
        for req in _operation_requests(path, ops, spec, upload):
            req.op = path
            yield req


def _operation_requests(path: str, ops: dict[str, Any], spec: dict[str, Any], upload: bytes) -> Iterator[Req]:
    for method, op in ops.items():
        method = method.upper()
        params = op.get("parameters", [])
        path_params = {p["name"]: p.get("schema", {}) for p in params if p["in"] == "path"}
        query = {p["name"]: p.get("schema", {}) for p in params if p["in"] == "query"}
        base = {n: _plausible(n, s) for n, s in path_params.items()}

        def url(values: dict[str, str], path: str = path) -> str:
            out = path
            for n, v in values.items():
                out = out.replace("{" + n + "}", v)
            return out

        for name in path_params:
            for bad in BAD_STRINGS:
                yield Req(method, url({**base, name: _quote(bad)}), note=f"path {name}={bad[:20]!r}")
        for name in query:
            for bad in [*BAD_STRINGS, *BAD_NUMBERS]:
                yield Req(method, url(base), params={name: str(bad)}, note=f"query {name}={str(bad)[:20]!r}")
        if method == "GET" and ("bundles" in path or "clips" in path):
            for rng in BAD_RANGES:
                yield Req(method, url(base), headers={"Range": rng}, note=f"range {rng}")
        body = op.get("requestBody", {}).get("content", {})
        if "application/json" in body:
            yield from _json_bodies(method, url(base), body["application/json"].get("schema", {}), spec)
        if "multipart/form-data" in body or "application/x-www-form-urlencoded" in body:
            kind = "multipart/form-data" if "multipart/form-data" in body else "application/x-www-form-urlencoded"
            yield from _form_bodies(method, url(base), body[kind].get("schema", {}), spec, upload)


def _json_bodies(method: str, path: str, schema: dict[str, Any], spec: dict[str, Any]) -> Iterator[Req]:
    json_header = {"Content-Type": "application/json"}
    for raw in RAW_BODIES:
        yield Req(method, path, content=raw, headers=json_header, note=f"body {raw[:20]!r}")
        yield Req(method, path, content=raw, note=f"body without content-type {raw[:20]!r}")
    fields = _string_fields(schema, spec)
    for name in fields:
        for bad in [*BAD_STRINGS, *BAD_NUMBERS, [DEEP], {"k": "../x"}, ["../x"] * 3, None]:
            try:
                text = json.dumps({name: bad})
            except ValueError:
                continue
            yield Req(method, path, content=text.encode("utf-8", "surrogateescape"), headers=json_header,
                      note=f"field {name}={str(bad)[:20]!r}")


def _form_bodies(method: str, path: str, schema: dict[str, Any], spec: dict[str, Any], upload: bytes) -> Iterator[Req]:
    fields = _string_fields(schema, spec)
    plain = {n: "x1" for n, s in fields.items() if s.get("format") != "binary"}
    files = {n: ("m.onnx", upload, "application/octet-stream") for n, s in fields.items()
             if s.get("format") == "binary"}
    for name in plain:
        for bad in BAD_STRINGS:
            yield Req(method, path, data={**plain, name: bad}, files=files or None, note=f"form {name}={bad[:20]!r}")
    for name in files:
        yield Req(method, path, data=plain, files={**files, name: ("m.onnx", DEEP.encode(), "application/json")},
                  note=f"form file {name}")


def _send(client: httpx.Client, req: Req) -> httpx.Response:
    """Send ``req`` with its query string percent-encoded by hand (raw non-UTF-8 bytes included)."""
    path = req.path
    if req.params:
        path += "?" + "&".join(f"{quote(k)}={_quote(str(v))}" for k, v in req.params.items())
    if req.files is not None or req.data is not None:
        data = {k: v.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for k, v in (req.data or {}).items()}
        return client.request(req.method, path, data=data, files=req.files)
    return client.request(req.method, path, content=req.content, headers=req.headers)


def test_the_sweep_covers_every_operation_of_the_schema(fleet: Fleet) -> None:
    spec = fleet.get("/api/v1/openapi.json", fleet.user["admin"]).json()
    operations = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    swept = {(r.method, r.op) for r in malformed_requests(spec)}
    bodiless_and_paramless = operations - swept
    assert len(operations) >= 30
    for method, path in bodiless_and_paramless:  # nothing to spoil there but the method itself
        op = spec["paths"][path][method.lower()]
        assert not op.get("parameters") and not op.get("requestBody"), (method, path)


def test_no_malformed_request_to_any_operation_gets_a_5xx(fleet: Fleet, digit_models) -> None:  # type: ignore[no-untyped-def]
    spec = fleet.get("/api/v1/openapi.json", fleet.user["admin"]).json()
    onnx_bytes = digit_models[0].path.read_bytes()
    wrong, sent = [], 0
    with httpx.Client(base_url=fleet.url, headers={"Authorization": f"Bearer {fleet.user['admin']}"}, timeout=60) as c:
        for req in malformed_requests(spec, onnx_bytes):
            r = _send(c, req)
            sent += 1
            if r.status_code >= 500:
                wrong.append(f"{req.describe()}: {r.status_code} {r.text[:120]}")
    assert sent > 1000
    assert wrong == []


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT, '{"model": ' * 3000 + "1" + "}" * 3000])
def test_a_deeply_nested_json_body_is_400_before_it_is_parsed(fleet: Fleet, body: str) -> None:
    r = httpx.post(fleet.url + "/api/v1/deployments", content=body, timeout=30,
                   headers={"Authorization": f"Bearer {fleet.user['operator']}", "Content-Type": "application/json"})
    assert r.status_code == 400 and "nested deeper" in r.json()["detail"]


@pytest.mark.parametrize("ref", ["../x:1", "digits:../1", "a/b:1", "digits:1/../2", ".hidden:1", "x" * 200 + ":1", "digits"])
def test_a_malformed_model_reference_is_refused_with_4xx_naming_it(fleet: Fleet, ref: str) -> None:
    r = httpx.post(fleet.url + "/api/v1/deployments", json={"model": ref, "slot": "control", "devices": ["dev-a"]},
                   headers={"Authorization": f"Bearer {fleet.user['operator']}"}, timeout=30)
    assert r.status_code in (400, 422), r.text
    assert "model" in r.text


@pytest.mark.parametrize(("name", "version"), [("../x", "1"), ("digits", "../1"), ("a/b", "1"), ("d\x00", "1"),
                                              ("-x", "1"), ("x" * 200, "1")])
def test_a_malformed_model_name_or_version_at_push_is_400(fleet: Fleet, name: str, version: str, digit_models) -> None:  # type: ignore[no-untyped-def]
    control, _ = digit_models
    r = httpx.post(fleet.url + "/api/v1/models", data={"name": name, "version": version},
                   files={"model": ("m.onnx", control.path.read_bytes(), "application/octet-stream")},
                   headers={"Authorization": f"Bearer {fleet.user['operator']}"}, timeout=60)
    assert r.status_code in (400, 422), r.text
    names = [m["name"] for m in httpx.get(fleet.url + "/api/v1/models", timeout=30,
                                         headers={"Authorization": f"Bearer {fleet.user['viewer']}"}).json()]
    assert names and set(names) == {"digits"}  # nothing was stored
