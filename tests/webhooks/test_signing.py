"""Pure parts of webhooks: signatures, SSRF rules, event patterns, rollout transitions, backoff."""

from __future__ import annotations

import pytest

from edgefleet.cloud.errors import BadRequest
from edgefleet.cloud.webhooks import SignatureError, signature_header, verify
from edgefleet.cloud.webhooks.service import rollout_event_types
from edgefleet.cloud.webhooks.signing import check_patterns, check_url, subscribed
from edgefleet.cloud.webhooks.worker import retry_delay

SECRET = "whsec_" + "a" * 32
BODY = b'{"id":"evt_1","type":"rollout.started"}'


def test_signature_verifies_with_the_secret_and_not_with_another() -> None:
    header = signature_header(SECRET, BODY, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify(SECRET, header, BODY, now=1_700_000_010) == 1_700_000_000
    with pytest.raises(SignatureError, match="does not match"):
        verify("whsec_" + "b" * 32, header, BODY, now=1_700_000_010)


@pytest.mark.parametrize("mutate, match", [
    (lambda h, b: (h, b + b" "), "does not match"),                       # body changed in transit
    (lambda h, b: (h.replace("t=1700000000", "t=1700000001"), b), "does not match"),  # timestamp changed
    (lambda h, b: ("v1=" + h.split("v1=")[1], b), "no t="),              # timestamp dropped
    (lambda h, b: ("", b), "no X-Edgefleet-Signature"),
])
def test_tampered_requests_are_refused(mutate, match) -> None:  # type: ignore[no-untyped-def]
    header, body = mutate(signature_header(SECRET, BODY, 1_700_000_000), BODY)
    with pytest.raises(SignatureError, match=match):
        verify(SECRET, header, body, now=1_700_000_000)


def test_a_replay_older_than_five_minutes_is_refused() -> None:
    header = signature_header(SECRET, BODY, 1_700_000_000)
    verify(SECRET, header, BODY, now=1_700_000_000 + 299)
    with pytest.raises(SignatureError, match="more than 300s"):
        verify(SECRET, header, BODY, now=1_700_000_000 + 301)


@pytest.mark.parametrize("url, why", [
    ("file:///etc/passwd", "http:// or https://"),
    ("gopher://example.org/", "http:// or https://"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[::ffff:169.254.169.254]/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
    ("http://0.0.0.0:80/", "link-local/reserved"),
    ("http://127.0.0.1:9000/hook", "loopback"),
    ("http://localhost/hook", "loopback"),
    ("http://10.1.2.3/hook", "private"),
    ("https://user:pw@example.org/hook", "credentials"),
])
def test_urls_that_could_reach_inside_are_refused(url: str, why: str) -> None:
    with pytest.raises(BadRequest, match=why):
        check_url(url)


def test_loopback_and_private_only_behind_their_settings() -> None:
    check_url("http://127.0.0.1:9000/hook", allow_loopback=True)
    check_url("http://192.168.1.5/hook", allow_private=True)
    check_url("https://hooks.example.org/edgefleet")
    with pytest.raises(BadRequest, match="link-local"):
        check_url("http://169.254.169.254/", allow_private=True, allow_loopback=True)  # never


def test_event_patterns_are_checked_against_known_types() -> None:
    assert check_patterns(["rollout.*", " device.stale ", "rollout.*"]) == ["rollout.*", "device.stale"]
    with pytest.raises(BadRequest, match="matches no event"):
        check_patterns(["rollout.exploded"])
    with pytest.raises(BadRequest, match="invalid event pattern"):
        check_patterns(["Rollout;drop"])
    with pytest.raises(BadRequest, match="at least one"):
        check_patterns([" "])
    assert subscribed(["rollout.*"], "rollout.breached") and not subscribed(["rollout.*"], "drift.breach")


@pytest.mark.parametrize("old, old_wave, new, new_wave, expected", [
    ("pending", 0, "running", 0, ["rollout.started"]),
    ("running", 0, "soaking", 0, []),
    ("soaking", 0, "running", 1, ["rollout.wave_advanced"]),
    ("running", 1, "paused", 1, ["rollout.paused"]),
    ("soaking", 1, "breached", 1, ["rollout.breached"]),
    ("rolling_back", 1, "rolled_back", 1, ["rollout.rolled_back"]),
    ("soaking", 3, "completed", 3, ["rollout.completed"]),
    ("paused", 1, "paused", 1, []),
])
def test_rollout_state_writes_map_to_events(old, old_wave, new, new_wave, expected) -> None:  # type: ignore[no-untyped-def]
    assert rollout_event_types(old, old_wave, new, new_wave, started=True) == expected


def test_retry_delay_grows_exponentially_with_jitter_and_a_cap() -> None:
    assert retry_delay(1, 2.0, 900.0, rnd=lambda: 1.0) == 2.0
    assert retry_delay(4, 2.0, 900.0, rnd=lambda: 1.0) == 16.0
    assert retry_delay(4, 2.0, 900.0, rnd=lambda: 0.0) == 8.0
    assert retry_delay(30, 2.0, 900.0, rnd=lambda: 1.0) == 900.0
