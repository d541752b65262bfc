"""The upload endpoint on a real uvicorn server: stores verified clips, refuses bad requests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import httpx
import pytest

from edgefleet.protocols import encode

from .harness import ControllerUnderTest, clip_bytes, make_event

HTTP = httpx.Client(timeout=30)  # one client: building one costs ~35 ms (TLS context)
A = {"Authorization": "Bearer tok-a"}
B = {"Authorization": "Bearer tok-b"}


def _create(c: ControllerUnderTest, clip: bytes | None, keyframe: bytes | None = None, *,
            event=None, headers=A) -> httpx.Response:
    event = event or make_event("dev-a")
    body = {
        "event": json.loads(encode(event)),
        "clip": {"size": len(clip), "sha256": hashlib.sha256(clip).hexdigest(),
                 "content_type": "video/webm"} if clip else None,
        "keyframe": {"size": len(keyframe), "sha256": hashlib.sha256(keyframe).hexdigest(),
                     "content_type": "image/jpeg"} if keyframe else None,
    }
    return HTTP.post(f"{c.url}/api/v1/uploads", json=body, headers=headers)


def _put(c: ControllerUnderTest, upload_id: str, part: str, data: bytes, start: int, total: int,
         headers=A) -> httpx.Response:
    rng = f"bytes {start}-{start + len(data) - 1}/{total}"
    return HTTP.put(f"{c.url}/api/v1/uploads/{upload_id}/{part}", content=data,
                     headers={**headers, "Content-Range": rng})


def _upload(c: ControllerUnderTest, clip: bytes, keyframe: bytes, chunk: int = 100_000) -> dict:
    r = _create(c, clip, keyframe)
    assert r.status_code == 200, r.text
    uid = r.json()["upload_id"]
    for part, data in (("clip", clip), ("keyframe", keyframe)):
        for start in range(0, len(data), chunk):
            r = _put(c, uid, part, data[start:start + chunk], start, len(data))
            assert r.status_code == 200, r.text
            assert r.json()["offset"] == min(len(data), start + chunk)
    r = HTTP.post(f"{c.url}/api/v1/uploads/{uid}/complete", headers=A)
    assert r.status_code == 200, r.text
    return r.json()


def test_clip_uploaded_in_chunks_is_verified_stored_and_indexed(
    controller: ControllerUnderTest,
) -> None:
    clip, keyframe = clip_bytes(350_000, seed=1), clip_bytes(20_000, seed=2)
    done = _upload(controller, clip, keyframe)
    assert done["state"] == "completed" and done["clip_id"]
    (stored,) = controller.stored
    assert stored.clip_id == done["clip_id"] == stored.event.clip_id
    assert stored.device_id == "dev-a" and stored.clip_size == len(clip)
    assert controller.blob_store.get(stored.clip_digest) == clip  # type: ignore[arg-type]
    assert controller.blob_store.get(stored.keyframe_digest) == keyframe  # type: ignore[arg-type]
    # completing again is idempotent and indexes nothing twice
    uid = done["upload_id"]
    again = HTTP.post(f"{controller.url}/api/v1/uploads/{uid}/complete", headers=A)
    assert again.status_code == 200 and again.json()["clip_id"] == done["clip_id"]
    assert len(controller.stored) == 1


def test_create_is_idempotent_per_event_and_reports_the_offset(
    controller: ControllerUnderTest,
) -> None:
    clip = clip_bytes(300_000)
    event = make_event("dev-a")
    first = _create(controller, clip, event=event).json()
    assert _put(controller, first["upload_id"], "clip", clip[:120_000], 0, len(clip)).status_code == 200
    second = _create(controller, clip, event=event).json()
    assert second["upload_id"] == first["upload_id"] and second["offsets"] == {"clip": 120_000}
    status = HTTP.get(f"{controller.url}/api/v1/uploads/{first['upload_id']}", headers=A)
    assert status.json()["offsets"] == {"clip": 120_000}


def _bad_json(c, uid, clip):
    return HTTP.post(f"{c.url}/api/v1/uploads", content=b"{not json", headers=A)


def _event_missing_field(c, uid, clip):
    body = {"event": {"schema": "fleet.event/1", "device_id": "dev-a"}, "clip": None}
    return HTTP.post(f"{c.url}/api/v1/uploads", json=body, headers=A)


def _oversized_clip_declared(c, uid, clip):
    return _create(c, clip_bytes(9 * 1024 * 1024))


def _oversized_event(c, uid, clip):
    event = json.loads(encode(make_event()))
    event["control"]["scores"] = [0.123456789] * 1000
    event["candidate"]["scores"] = [0.123456789] * 1000
    return HTTP.post(f"{c.url}/api/v1/uploads", json={"event": event}, headers=A)


def _oversized_chunk(c, uid, clip):
    big = clip_bytes(2 * 1024 * 1024)  # over the server's 1 MiB chunk limit
    return HTTP.put(f"{c.url}/api/v1/uploads/{uid}/clip", content=big,
                     headers={**A, "Content-Range": f"bytes 0-99/{len(clip)}"})


def _no_content_range(c, uid, clip):
    return HTTP.put(f"{c.url}/api/v1/uploads/{uid}/clip", content=clip[:10], headers=A)


def _garbage_content_range(c, uid, clip):
    return HTTP.put(f"{c.url}/api/v1/uploads/{uid}/clip", content=clip[:10],
                     headers={**A, "Content-Range": "bytes=0-9"})


def _range_length_mismatch(c, uid, clip):
    return HTTP.put(f"{c.url}/api/v1/uploads/{uid}/clip", content=clip[:10],
                     headers={**A, "Content-Range": f"bytes 0-99/{len(clip)}"})


def _wrong_total(c, uid, clip):
    return _put(c, uid, "clip", clip[:10], 0, len(clip) + 1)


def _wrong_offset(c, uid, clip):
    return _put(c, uid, "clip", clip[50:60], 50, len(clip))


def _undeclared_part(c, uid, clip):
    return _put(c, uid, "keyframe", b"x" * 10, 0, 10)


def _unknown_part(c, uid, clip):
    return _put(c, uid, "secrets", b"x" * 10, 0, 10)


def _sha_mismatch(c, uid, clip):
    tampered = bytes([clip[0] ^ 0xFF]) + clip[1:]
    assert _put(c, uid, "clip", tampered, 0, len(clip)).status_code == 200
    return HTTP.post(f"{c.url}/api/v1/uploads/{uid}/complete", headers=A)


def _complete_too_early(c, uid, clip):
    return HTTP.post(f"{c.url}/api/v1/uploads/{uid}/complete", headers=A)


def _unknown_upload(c, uid, clip):
    return _put(c, "0" * 32, "clip", clip[:10], 0, len(clip))


@pytest.mark.parametrize(
    ("send", "status"),
    [
        (_bad_json, 400), (_event_missing_field, 400), (_oversized_clip_declared, 413),
        (_oversized_event, 413), (_oversized_chunk, 413), (_no_content_range, 400),
        (_garbage_content_range, 400), (_range_length_mismatch, 400), (_wrong_total, 400),
        (_wrong_offset, 409), (_undeclared_part, 400), (_unknown_part, 422),
        (_sha_mismatch, 422), (_complete_too_early, 409), (_unknown_upload, 404),
    ],
)
def test_malformed_or_oversized_upload_is_refused_and_stored_clip_stays_intact(
    controller: ControllerUnderTest, send: Callable, status: int,
) -> None:
    stored_clip, stored_kf = clip_bytes(200_000, seed=11), clip_bytes(5_000, seed=12)
    _upload(controller, stored_clip, stored_kf)
    (before,) = controller.stored
    clip = clip_bytes(150_000, seed=13)
    uid = _create(controller, clip).json()["upload_id"]

    r = send(controller, uid, clip)

    assert r.status_code == status, r.text
    assert controller.stored == [before]  # nothing indexed
    assert controller.blob_store.get(before.clip_digest) == stored_clip  # type: ignore[arg-type]
    assert controller.blob_store.get(before.keyframe_digest) == stored_kf  # type: ignore[arg-type]
    assert sorted(controller.blob_store.iter_digests()) == sorted(
        [before.clip_digest, before.keyframe_digest])


def test_sha_mismatch_restarts_the_part_and_a_correct_resend_completes(
    controller: ControllerUnderTest,
) -> None:
    clip = clip_bytes(150_000, seed=3)
    uid = _create(controller, clip).json()["upload_id"]
    assert _sha_mismatch(controller, uid, clip).json()["code"] == "digest_mismatch"
    status = HTTP.get(f"{controller.url}/api/v1/uploads/{uid}", headers=A).json()
    assert status["offsets"] == {"clip": 0}
    assert _put(controller, uid, "clip", clip, 0, len(clip)).status_code == 200
    r = HTTP.post(f"{controller.url}/api/v1/uploads/{uid}/complete", headers=A)
    assert r.status_code == 200
    assert controller.blob_store.get(controller.stored[0].clip_digest) == clip  # type: ignore[arg-type]


def test_device_cannot_upload_as_another_device(controller: ControllerUnderTest) -> None:
    clip = clip_bytes(50_000)
    # dev-b's token, dev-a's event
    r = _create(controller, clip, event=make_event("dev-a"), headers=B)
    assert r.status_code == 403
    # dev-b cannot touch, read or complete dev-a's upload
    uid = _create(controller, clip).json()["upload_id"]
    assert _put(controller, uid, "clip", clip, 0, len(clip), headers=B).status_code == 403
    assert HTTP.get(f"{controller.url}/api/v1/uploads/{uid}", headers=B).status_code == 403
    assert _put(controller, uid, "clip", clip, 0, len(clip)).status_code == 200
    assert HTTP.post(f"{controller.url}/api/v1/uploads/{uid}/complete",
                      headers=B).status_code == 403
    assert controller.stored == []


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}])
def test_upload_without_a_valid_device_token_is_401(
    controller: ControllerUnderTest, headers: dict,
) -> None:
    assert _create(controller, clip_bytes(1000), headers=headers).status_code == 401


def test_event_without_clip_is_indexed_with_no_clip_id(controller: ControllerUnderTest) -> None:
    r = _create(controller, None)
    uid = r.json()["upload_id"]
    done = HTTP.post(f"{controller.url}/api/v1/uploads/{uid}/complete", headers=A)
    assert done.status_code == 200
    (stored,) = controller.stored
    assert stored.clip_digest is None and stored.event.clip_id is None


def test_router_documents_every_operation_in_openapi(controller: ControllerUnderTest) -> None:
    spec = HTTP.get(f"{controller.url}/openapi.json").json()
    ops = [op for path in spec["paths"].values() for op in path.values()]
    assert len(ops) == 4 and all(op.get("summary") for op in ops)
