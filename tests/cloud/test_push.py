"""Push-time validation through the real HTTP API."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.cloud.client import ApiError

from ..conftest import push


def test_push_prints_digest_and_is_idempotent(stack, digit_models) -> None:
    control, _ = digit_models
    first = push(stack, control)
    assert len(first["digest"]) == 64
    assert push(stack, control)["digest"] == first["digest"]
    assert [m["version"] for m in stack.client.list_models()] == ["1.0"]
    assert stack.controller.store.exists(first["digest"])


def test_same_version_with_other_content_is_refused(stack, digit_models) -> None:
    control, candidate = digit_models
    push(stack, control)
    m = control.manifest
    with pytest.raises(ApiError) as exc:
        stack.client.push_model(candidate.path, name=m.name, version=m.version, manifest=m.model_dump(mode="json", by_alias=True))
    assert exc.value.status_code == 409
    assert "already exists" in exc.value.detail


def test_corrupt_onnx_is_refused_with_a_clear_message(stack, tmp_path: Path, digit_models) -> None:
    control, _ = digit_models
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(control.path.read_bytes()[:200])
    with pytest.raises(ApiError) as exc:
        stack.client.push_model(bad, name="digits", version="9.9", labels=[str(i) for i in range(10)])
    assert exc.value.status_code == 400
    assert "ONNX" in exc.value.detail
    assert stack.client.list_models() == []


def test_manifest_that_does_not_match_the_graph_is_refused(stack, digit_models) -> None:
    control, _ = digit_models
    manifest = control.manifest.model_dump(mode="json", by_alias=True)
    manifest["input"]["shape"] = [None, 3, 224, 224]
    with pytest.raises(ApiError) as exc:
        stack.client.push_model(control.path, name="digits", version="1.0", manifest=manifest)
    assert "shape" in exc.value.detail
    manifest = control.manifest.model_dump(mode="json", by_alias=True)
    manifest["labels"] = ["a", "b"]
    with pytest.raises(ApiError) as exc:
        stack.client.push_model(control.path, name="digits", version="1.0", manifest=manifest)
    assert "labels" in exc.value.detail


def test_manifest_is_inferred_when_not_given(stack, digit_models) -> None:
    control, _ = digit_models
    mv = stack.client.push_model(control.path, name="inferred", version="1")
    assert mv["labels"] == [str(i) for i in range(10)]


def test_unauthenticated_push_is_refused(stack, digit_models) -> None:
    from edgefleet.cloud.client import ApiClient

    control, _ = digit_models
    anon = ApiClient(stack.url, None)
    with pytest.raises(ApiError) as exc:
        anon.push_model(control.path, name="x", version="1")
    assert exc.value.status_code == 401
    assert anon.health()["status"] == "ok"
