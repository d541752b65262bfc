"""Failed authentication is throttled per client address and per token prefix (429 with
Retry-After for the window); a valid token is never slowed; memory stays bounded."""

from __future__ import annotations

import logging
import threading

import httpx
import pytest

from edgefleet.cloud.api.throttle import AuthThrottle, token_prefix


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_locks_after_max_failures_for_the_window_then_opens_again() -> None:
    clock = Clock()
    t = AuthThrottle(max_failures=5, window_s=60, clock=clock)
    for i in range(4):
        assert t.failure("10.0.0.1", f"efk_guess{i}xxxxxxxx") == (None, [])
    wait, locked = t.failure("10.0.0.1", "efk_guess4xxxxxxxx")
    assert wait is None and locked == ["addr:10.0.0.1"]  # the 5th is still a 401; the 6th is not
    clock.now += 10
    wait, _ = t.failure("10.0.0.1", "efk_other")
    assert wait == pytest.approx(50)
    assert t.retry_after("10.0.0.2", "efk_fresh") is None  # another address, another prefix: untouched
    clock.now += 50.5
    assert t.failure("10.0.0.1", "efk_again") == (None, [])


def test_failures_outside_the_window_do_not_add_up() -> None:
    clock = Clock()
    t = AuthThrottle(max_failures=3, window_s=60, clock=clock)
    for _ in range(10):
        assert t.failure("10.0.0.1", "nope")[0] is None
        clock.now += 31  # at most two in any 60 s
    assert t.retry_after("10.0.0.1", "nope") is None


def test_one_token_prefix_guessed_from_many_addresses_locks_the_prefix() -> None:
    t = AuthThrottle(max_failures=3, window_s=60, clock=Clock())
    for i in range(3):
        t.failure(f"10.0.1.{i}", f"efd_AbCdEfGh-suffix-{i}")
    assert t.retry_after("10.9.9.9", "efd_AbCdEfGh-another") is not None
    assert t.retry_after("10.9.9.9", "efd_ZzZzZzZz-another") is None
    assert token_prefix("efd_AbCdEfGh-suffix") == "efd_AbCdEfGh" and token_prefix("nope") == "nope"


def test_memory_is_bounded_and_locked_keys_are_kept_longest() -> None:
    t = AuthThrottle(max_failures=2, window_s=60, max_keys=100, clock=Clock())
    t.failure("10.0.0.1", "efk_aaaaaaaa1")
    t.failure("10.0.0.1", "efk_aaaaaaaa2")  # locks addr 10.0.0.1 and prefix efk_aaaaaaaa
    for i in range(5000):
        t.failure(f"192.168.{i // 256}.{i % 256}", f"efk_{i:08d}")
    assert t.tracked() <= 100
    assert t.retry_after("10.0.0.1", "efk_zzzzzzzz") is not None


def test_counting_is_exact_under_concurrent_failures() -> None:
    t = AuthThrottle(max_failures=800, window_s=600)
    locks: list[str] = []

    def hammer(n: int) -> None:
        for i in range(100):
            locks.extend(t.failure("10.0.0.7", f"efk_t{n}-{i:06d}")[1])

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert locks == ["addr:10.0.0.7"]  # the 800th failure, exactly once


def _wrong(i: int) -> dict[str, str]:
    return {"Authorization": f"Bearer efk_wrong{i:04d}-not-a-token"}


def test_api_answers_429_with_retry_after_past_20_failures_and_a_valid_token_still_works(stack, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING, logger="edgefleet.cloud.api.throttle")
    with httpx.Client(base_url=stack.url, timeout=30) as c:
        codes = [c.get("/api/v1/devices", headers=_wrong(i)).status_code for i in range(20)]
        assert codes == [401] * 20
        refused = c.get("/api/v1/devices", headers=_wrong(99))
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert "too many failed authentication" in refused.json()["detail"]
        for path in ("/tuf/image/metadata/timestamp.json", "/api/v1/openapi.json", "/metrics"):
            assert c.get(path, headers=_wrong(98)).status_code == 429, path
        ok = c.get("/api/v1/devices", headers={"Authorization": f"Bearer {stack.token}"})
        assert ok.status_code == 200  # successful authentication is never slowed
        assert c.get("/api/v1/devices").status_code == 401  # no token: nothing guessed, plain 401
    assert any("auth throttled" in r.getMessage() and "127.0.0.1" in r.getMessage() for r in caplog.records)


def test_web_login_is_throttled_the_same_way(stack) -> None:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=stack.url, timeout=30) as c:
        codes = [c.post("/ui/login", data={"token": f"efk_wrong{i:04d}"}).status_code for i in range(20)]
        assert codes == [401] * 20
        refused = c.post("/ui/login", data={"token": "efk_wrong9999"})
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert "too many failed authentication" in refused.text
        assert c.get("/api/v1/devices", headers=_wrong(1)).status_code == 429  # one throttle for UI and API
        ok = c.post("/ui/login", data={"token": stack.token})
        assert ok.status_code == 303 and "edgefleet_token" in ok.headers.get("set-cookie", "")
