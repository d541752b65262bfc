"""Webhooks end to end: a real controller, its worker, and real HTTP receivers on loopback."""

from __future__ import annotations

import time

import pytest
from sqlmodel import select

from edgefleet.cloud import audit
from edgefleet.cloud.client import ApiError
from edgefleet.cloud.webhooks import SignatureError, WebhookDelivery, enqueue, verify

from ..conftest import push, wait_until
from .receiver import Receiver


def _add(stack, receiver: Receiver, events: list[str]) -> dict:  # type: ignore[no-untyped-def]
    res = stack.client.add_webhook(receiver.url, events)
    receiver.secret = res["secret"]
    return res


def _facts(stack, n: int, event_type: str = "device.stale") -> None:  # type: ignore[no-untyped-def]
    with stack.controller.session() as s:
        for i in range(n):
            enqueue(s, event_type, {"n": i})
            s.commit()  # one transaction per fact, as the writers do
    stack.controller.webhooks.wake()


def test_signature_verifies_with_the_shared_secret_and_fails_with_another(hook_stack) -> None:  # type: ignore[no-untyped-def]
    rx = Receiver().start()
    try:
        hook = _add(hook_stack, rx, ["device.stale"])
        assert hook["secret"].startswith("whsec_")
        d = hook_stack.client.test_webhook(hook["id"])
        wait_until(lambda: rx.received, message="test delivery received")
        got = rx.received[0]
        assert got.verified and got.delivery_id == d["id"] and got.event["type"] == "webhook.test"
        verify(hook["secret"], got.signature, got.body, time.time())
        with pytest.raises(SignatureError):
            verify("whsec_another-secret-entirely", got.signature, got.body, time.time())
        wait_until(lambda: hook_stack.client.webhook_delivery(d["id"])["state"] == "delivered", message="logged")
        logged = hook_stack.client.webhook_delivery(d["id"])
        assert logged["status_code"] == 200 and logged["attempts"] == 1
        # the secret never comes back, and the audit log has add without it
        assert "secret" not in hook_stack.client.list_webhooks()[0]
        assert "secret" not in hook_stack.client.request("GET", f"/webhooks/{hook['id']}")
        with hook_stack.controller.session() as s:
            entries = s.exec(select(audit.AuditEntry).where(audit.AuditEntry.action == "webhook.add")).all()
        assert len(entries) == 1 and hook["secret"] not in str(entries[0].summary)
    finally:
        rx.stop()


def test_a_receiver_with_another_secret_rejects_and_the_delivery_is_retried(hook_stack) -> None:  # type: ignore[no-untyped-def]
    rx = Receiver().start()
    try:
        hook = _add(hook_stack, rx, ["device.stale"])
        rx.secret = "whsec_not-the-one-the-controller-has"
        _facts(hook_stack, 1)
        wait_until(lambda: len(rx.received) >= 2, message="retried after a 401")
        assert not any(r.verified for r in rx.received)
        d = hook_stack.client.webhook_deliveries(hook["id"])[0]
        assert d["state"] == "pending" and d["status_code"] == 401 and d["attempts"] >= 2
        assert [a["status_code"] for a in d["log"]][:2] == [401, 401]
    finally:
        rx.stop()


def test_a_down_receiver_gets_every_event_after_it_comes_back_in_order_once(hook_stack) -> None:  # type: ignore[no-untyped-def]
    rx = Receiver()  # not started: connection refused
    hook = _add(hook_stack, rx, ["device.*"])
    _facts(hook_stack, 12)
    wait_until(lambda: any(d["attempts"] >= 3 for d in hook_stack.client.webhook_deliveries(hook["id"])),
               message="first delivery retried while the receiver is down")
    pending = hook_stack.client.webhook_deliveries(hook["id"], limit=100)
    assert len(pending) == 12 and all(d["state"] == "pending" for d in pending)
    assert sum(d["attempts"] for d in pending) == pending[-1]["attempts"]  # only the oldest is tried: order kept
    rx.start()
    try:
        wait_until(lambda: len(rx.events()) >= 12, timeout=30, message="every event after coming back")
        time.sleep(1.0)  # nothing more arrives
        assert [e["data"]["n"] for e in rx.events()] == list(range(12))
        ids = [r.delivery_id for r in rx.received]
        assert len(ids) == len(set(ids)) == 12  # exactly once per delivery id
        logged = hook_stack.client.webhook_deliveries(hook["id"], limit=100)
        assert all(d["state"] == "delivered" for d in logged)
        first = logged[-1]
        assert first["attempts"] >= 4 and first["log"][0]["error"] and first["log"][-1]["status_code"] == 200
        # redelivery: a new delivery id, the same event and body
        again = hook_stack.client.redeliver_webhook(first["id"])
        assert again["id"] != first["id"] and again["event_id"] == first["event_id"]
        wait_until(lambda: len(rx.received) == 13, message="redelivered")
        assert rx.received[-1].delivery_id == again["id"] and rx.received[-1].body == rx.received[0].body
    finally:
        rx.stop()


def test_a_slow_receiver_delays_neither_a_rollout_nor_another_receiver(hook_stack, digit_models) -> None:  # type: ignore[no-untyped-def]
    slow, fast = Receiver(delay_s=3.0).start(), Receiver().start()
    try:
        _add(hook_stack, slow, ["rollout.*", "device.stale"])
        _add(hook_stack, fast, ["rollout.*"])
        _facts(hook_stack, 5)  # the slow receiver is now busy timing out, one at a time
        wait_until(lambda: len(slow.received) >= 1, message="slow receiver hit")
        for i in range(3):
            hook_stack.client.enrol_device(f"slow-{i}", "cpu-x86_64", {"ring": "a"})
        push(hook_stack, digit_models[0])
        t0 = time.monotonic()
        rollout = hook_stack.client.start_rollout("digits:1.0", select="tag:ring=a", waves="100", soak="1s")
        wait_until(lambda: hook_stack.client.rollout_status(rollout["id"])["state"] != "pending", timeout=10,
                   message="rollout started")
        started_after = time.monotonic() - t0
        wait_until(lambda: fast.events("rollout.started"), timeout=10, message="fast receiver told at once")
        told_after = time.monotonic() - t0
        # behind the slow receiver (5 deliveries, 1 s timeout each) either would take more than 5 s
        assert started_after < 4.5 and told_after < 4.5, (started_after, told_after)
        t1 = time.monotonic()
        hook_stack.controller.reconcile_once()
        assert time.monotonic() - t1 < 1.0
    finally:
        slow.stop()
        fast.stop()


def test_webhook_routes_validate_and_need_admin(hook_stack) -> None:  # type: ignore[no-untyped-def]
    c = hook_stack.client
    for url, events in (("file:///etc/passwd", ["rollout.*"]), ("http://169.254.169.254/x", ["rollout.*"]),
                        ("http://127.0.0.1:1/x", ["nope.*"])):
        with pytest.raises(ApiError) as err:
            c.add_webhook(url, events)
        assert err.value.status_code in (400, 422)
    with pytest.raises(ApiError) as err:
        c.remove_webhook("wh_000000000000000000000000")
    assert err.value.status_code == 404
    with pytest.raises(ApiError) as err:
        c.request("DELETE", "/webhooks/not-an-id")
    assert err.value.status_code == 422
    token = c.create_token("ops", "operator")["token"]
    from edgefleet.cloud.client import ApiClient

    op = ApiClient(hook_stack.url, token)
    try:
        with pytest.raises(ApiError) as err:
            op.list_webhooks()
        assert err.value.status_code == 403
    finally:
        op.close()
    hook = c.add_webhook("http://127.0.0.1:9/x", ["rollout.*"])
    c.remove_webhook(hook["id"])
    assert c.list_webhooks() == []
    with hook_stack.controller.session() as s:
        assert not s.exec(select(WebhookDelivery)).all()
        actions = [e.action for e in s.exec(select(audit.AuditEntry)).all()]
    assert "webhook.add" in actions and "webhook.rm" in actions
