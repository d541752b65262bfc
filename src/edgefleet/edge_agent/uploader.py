"""Uploads outbox items to the controller, resumably, within a daily byte budget.

One pass (``run_once``): for each pending item, most important first, skip it if its bytes
would overrun today's budget, else open (or find) its upload session, send the missing
chunks of clip and keyframe from the server's offset, ask the server to complete it, and
remove it from the outbox. A transport error or a 5xx/401/429 ends the pass as *offline*;
``run_forever`` then sleeps with jittered exponential backoff. A permanent refusal (4xx)
drops that item only. Wire protocol: docs/uploads.md.

Network policy: ``link_refusal`` (``network.NetworkGate.upload_refusal``) returning a reason
defers the whole pass (nothing is sent, nothing dropped; ``report.deferred_by_link``); the
``limiter`` bucket caps the bytes/s of clip parts (each PUT is at most a quarter second of
the cap, and waits for it before it is sent).

Device-side: imports httpx and protocols only.
"""

from __future__ import annotations

import json as jsonlib
import logging
import random
import ssl
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx

from ..registry.tuf.ratelimit import TokenBucket
from .errors import AgentError
from .outbox import Outbox, OutboxItem

log = logging.getLogger(__name__)

KiB = 1024
_REQUEST_OVERHEAD = 1024  # allowance per item for the JSON of create/complete
_MAX_ROUNDS = 4
_MAX_DIGEST_FAILURES = 3


class UploaderError(AgentError):
    code = "E_UPLOAD"


class LinkDown(UploaderError):
    """The controller cannot be reached or is unhealthy; retry later with backoff."""


class ItemRefused(UploaderError):
    """The controller refuses this item for good (4xx); it is dropped from the outbox."""


class _BudgetExhausted(UploaderError):
    pass


class _SessionLost(UploaderError):
    pass


@dataclass
class UploadReport:
    uploaded: list[tuple[int, str | None]] = field(default_factory=list)  # (item, clip id)
    dropped: list[int] = field(default_factory=list)
    deferred_by_budget: int = 0
    deferred_by_link: str | None = None  # why the link policy held every upload back
    bytes_sent: int = 0
    budget_left: int = 0
    offline: bool = False
    error: str | None = None


def backoff_delay(attempt: int, *, base: float, cap: float, u: float) -> float:
    """Equal-jitter exponential backoff: half of min(cap, base*2^attempt), plus up to half.

    ``u`` is a uniform random number in [0, 1).
    """
    d = min(cap, base * (2 ** min(attempt, 62)))
    return d / 2 + u * d / 2


def budget_day(now: datetime) -> str:
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    return now.astimezone(timezone.utc).date().isoformat()


class Uploader:
    """Moves captures from an ``Outbox`` to the controller's ``/api/v1/uploads``."""

    def __init__(
        self,
        base_url: str,
        device_id: str,
        token: str,
        outbox: Outbox,
        *,
        http_client: httpx.Client | None = None,
        max_bytes_per_day: int,
        chunk_size: int = 256 * KiB,
        batch: int = 50,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 300.0,
        poll_interval_s: float = 5.0,
        rng: random.Random | None = None,
        verify: ssl.SSLContext | bool = True,
        limiter: TokenBucket | None = None,
        link_refusal: Any = None,
    ):
        self.base = base_url.rstrip("/") + "/api/v1/uploads"
        self.limiter = limiter
        self.link_refusal = link_refusal  # () -> exception with the reason, or None: may upload
        self.device_id = device_id
        self.outbox = outbox
        self.max_bytes_per_day = max_bytes_per_day
        self.chunk_size = chunk_size
        self.batch = batch
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.poll_interval_s = poll_interval_s
        self._rng = rng or random.Random()
        self._own_client = http_client is None
        # verify: the fleet CA's context (agent.ca_file) or the system CAs; never off
        self._http = http_client or httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0), verify=verify)
        self._headers = {"Authorization": f"Bearer {token}"}
        self._budget_key = ""

    def set_token(self, token: str) -> None:
        """Uploads authenticate with ``token`` from now on (a credentials rotation)."""
        self._headers = {"Authorization": f"Bearer {token}"}

    # -- loop ---------------------------------------------------------------------------

    def run_once(self, now: datetime) -> UploadReport:
        """One pass over the outbox; never raises for link or server trouble."""
        day = budget_day(now)
        self._budget_key = f"upload-bytes:{day}"
        report = UploadReport()
        if self.link_refusal is not None and (deferred := self.link_refusal()) is not None:
            report.deferred_by_link = str(deferred)
            return report
        for item in self.outbox.pending(self.batch):
            if item.event.device_id != self.device_id:
                log.warning("outbox item %s names device %s: dropped", item.item_id,
                            item.event.device_id)
                self.outbox.drop(item.item_id)
                report.dropped.append(item.item_id)
                continue
            if self._budget_used() + self._estimate(item) > self.max_bytes_per_day:
                report.deferred_by_budget += 1
                continue
            try:
                clip_id = self._upload_item(item, report)
            except _BudgetExhausted:
                report.deferred_by_budget += 1
                continue
            except ItemRefused as exc:
                log.warning("controller refused outbox item %s: %s", item.item_id, exc)
                self.outbox.drop(item.item_id)
                report.dropped.append(item.item_id)
                continue
            except LinkDown as exc:
                report.offline, report.error = True, str(exc)
                break
            self.outbox.mark_uploaded(item.item_id)
            report.uploaded.append((item.item_id, clip_id))
        report.budget_left = max(0, self.max_bytes_per_day - self._budget_used())
        return report

    def run_forever(self, stop_event: threading.Event) -> None:
        """Pass after pass until ``stop_event`` is set; backs off while offline."""
        failures = 0
        while not stop_event.is_set():
            try:
                report = self.run_once(datetime.now(timezone.utc))
            except Exception:  # never let one bad item kill the daemon thread
                log.exception("upload pass failed")
                report = UploadReport(offline=True, error="internal error")
            if report.offline:
                delay = backoff_delay(failures, base=self.backoff_base_s,
                                      cap=self.backoff_max_s, u=self._rng.random())
                failures += 1
            else:
                failures = 0
                busy = (report.uploaded or report.dropped) and not report.deferred_by_budget
                delay = 0.0 if busy else self.poll_interval_s
            stop_event.wait(delay)

    def close(self) -> None:
        if self._own_client:
            self._http.close()

    # -- one item -----------------------------------------------------------------------

    def _upload_item(self, item: OutboxItem, report: UploadReport) -> str | None:
        for _ in range(_MAX_ROUNDS):
            try:
                return self._try_item(item, report)
            except _SessionLost:
                self.outbox.set_upload(item.item_id, None)
                fresh = self.outbox.get(item.item_id)
                if fresh is None:  # gone meanwhile
                    return None
                item = fresh
        raise LinkDown(f"item {item.item_id}: upload did not settle after {_MAX_ROUNDS} rounds")

    def _try_item(self, item: OutboxItem, report: UploadReport) -> str | None:
        status = self._open(item, report)
        if status["state"] == "completed":
            return status.get("clip_id")
        offsets: dict[str, int] = dict(status.get("offsets", {}))
        for part, path, size in (
            ("clip", item.clip_path, item.clip_size),
            ("keyframe", item.keyframe_path, item.keyframe_size),
        ):
            if path is None:
                continue
            offsets[part] = self._send_part(item, status["upload_id"], part, path, size,
                                            offsets.get(part, 0), report, offsets)
        r = self._request("POST", f"/{status['upload_id']}/complete", report)
        body = _json(r)
        if r.status_code == 200:
            return body.get("clip_id")
        if r.status_code == 404 or (r.status_code == 409 and body.get("code") == "incomplete"):
            raise _SessionLost("server lost the session or parts of it")
        if r.status_code == 422 and body.get("code") == "digest_mismatch":
            if self.outbox.record_attempt(item.item_id) >= _MAX_DIGEST_FAILURES:
                raise ItemRefused(f"sha256 mismatch {_MAX_DIGEST_FAILURES} times: {body}")
            raise _SessionLost("server discarded a part with a bad digest")
        raise self._refusal(r, body)

    def _open(self, item: OutboxItem, report: UploadReport) -> dict[str, Any]:
        """Find the item's session (GET) or open it (POST, idempotent per event)."""
        expected = {p: s for p, s in (("clip", item.clip_size), ("keyframe", item.keyframe_size))
                    if s}
        if item.upload_id:
            r = self._request("GET", f"/{item.upload_id}", report)
            if r.status_code == 200:
                status = _json(r)
                if status.get("state") == "completed" or status.get("sizes") == expected:
                    return status
            elif r.status_code != 404:
                raise self._refusal(r, _json(r))
        payload = {
            "event": jsonlib.loads(item.event_json),
            "clip": _spec(item.clip_size, item.clip_sha256, item.clip_content_type),
            "keyframe": _spec(item.keyframe_size, item.keyframe_sha256, "image/jpeg"),
            "clip_evicted": item.clip_evicted,
        }
        r = self._request("POST", "", report, json=payload)
        status = _json(r)
        if r.status_code != 200:
            raise self._refusal(r, status)
        self.outbox.set_upload(item.item_id, status["upload_id"])
        return status

    def _send_part(
        self, item: OutboxItem, upload_id: str, part: str, path: Any, size: int, offset: int,
        report: UploadReport, offsets: dict[str, int],
    ) -> int:
        while offset < size:
            try:
                step = self.chunk_size
                if self.limiter is not None and self.limiter.rate is not None:
                    step = min(step, self.limiter.chunk_size(per_second=4))
                with open(path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read(min(step, size - offset))
            except FileNotFoundError:  # evicted while we were uploading it
                raise _SessionLost(f"{part} of item {item.item_id} was evicted") from None
            headers = {
                "Content-Range": f"bytes {offset}-{offset + len(chunk) - 1}/{size}",
                "Content-Type": "application/octet-stream",
            }
            if self.limiter is not None:
                self.limiter.consume(len(chunk))
            r = self._request("PUT", f"/{upload_id}/{part}", report, content=chunk,
                              headers=headers)
            body = _json(r)
            if r.status_code == 200 or (r.status_code == 409 and "offset" in body):
                offset = int(body["offset"])  # 409: the server is elsewhere; resume there
            elif r.status_code == 404:
                raise _SessionLost("upload session expired on the server")
            else:
                raise self._refusal(r, body)
            offsets[part] = offset
            self.outbox.set_progress(item.item_id, sum(offsets.values()))
        return offset

    # -- HTTP and budget ----------------------------------------------------------------

    def _request(self, method: str, path: str, report: UploadReport, *,
                 content: bytes | None = None, json: Any = None,
                 headers: dict[str, str] | None = None) -> httpx.Response:
        req = self._http.build_request(method, self.base + path, content=content, json=json,
                                       headers={**self._headers, **(headers or {})})
        sent = len(req.content) if req.content else 0
        if sent:
            if self._budget_used() + sent > self.max_bytes_per_day:
                raise _BudgetExhausted("daily byte budget reached")
            self.outbox.add_to_counter(self._budget_key, sent)
            report.bytes_sent += sent
        try:
            return self._http.send(req)
        except httpx.HTTPError as exc:
            raise LinkDown(f"{method} {path or '/'}: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _refusal(r: httpx.Response, body: dict[str, Any]) -> UploaderError:
        detail = body.get("detail", r.text[:200])
        if r.status_code >= 500 or r.status_code in (401, 408, 429):
            return LinkDown(f"HTTP {r.status_code}: {detail}")
        return ItemRefused(f"HTTP {r.status_code} {body.get('code', '')}: {detail}")

    def _budget_used(self) -> int:
        return self.outbox.counter(self._budget_key)

    @staticmethod
    def _estimate(item: OutboxItem) -> int:
        return max(0, item.payload_bytes - item.acked_bytes) + _REQUEST_OVERHEAD


def _spec(size: int, sha256: str | None, content_type: str | None) -> dict[str, Any] | None:
    if not size or not sha256:
        return None
    return {"size": size, "sha256": sha256, "content_type": content_type or "video/webm"}


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
