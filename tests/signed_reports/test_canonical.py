"""Canonical bytes (protocols, no crypto) and the Ed25519 helpers (registry) both sides use."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from edgefleet.protocols import Telemetry, decode
from edgefleet.protocols.canonical import NotCanonical, canonical_bytes, rotation_statement
from edgefleet.registry import report_sig


def test_canonical_bytes_are_sorted_compact_and_leave_out_only_the_signature() -> None:
    assert canonical_bytes({"b": 1, "a": {"d": [1, 2], "c": "é"}, "sig": "x"}) == '{"a":{"c":"é","d":[1,2]},"b":1}'.encode()
    assert canonical_bytes({"a": 1, "b": 2}) == canonical_bytes({"b": 2, "a": 1})
    with pytest.raises(NotCanonical):
        canonical_bytes({"x": float("nan")})
    assert rotation_statement("cam-1", "KEY") != rotation_statement("cam-2", "KEY")


def test_a_decoded_report_is_checked_against_what_was_received() -> None:
    key = report_sig.generate()
    now = datetime(2026, 6, 1, tzinfo=timezone.utc).isoformat()
    obj = {"schema": "fleet.telemetry/1", "device_id": "cam-1", "period_start": now, "period_end": now,
           "frames": 5, "seq": 7, "key_id": report_sig.key_id(report_sig.public_b64(key))}
    signed = report_sig.sign_report(key, dict(obj))
    msg = decode(json.dumps(signed).encode(), Telemetry)
    pub = report_sig.public_b64(key)
    assert msg.seq == 7 and report_sig.verify(pub, msg.signed_bytes(), msg.sig)
    signed["frames"] = 6
    altered = decode(json.dumps(signed).encode(), Telemetry)
    assert not report_sig.verify(pub, altered.signed_bytes(), altered.sig)
    assert not report_sig.verify(pub, msg.signed_bytes(), "not base64!")


def test_public_keys_parse_from_base64_or_pem_and_nothing_else() -> None:
    from cryptography.hazmat.primitives import serialization

    key = report_sig.generate()
    b64 = report_sig.public_b64(key)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert report_sig.parse_public_key(pem) == report_sig.parse_public_key(f"  {b64}\n") == b64
    for bad in ("", "AAAA", "!!!", "-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----"):
        with pytest.raises(report_sig.ReportKeyError):
            report_sig.parse_public_key(bad)
    with pytest.raises(report_sig.ReportKeyError):
        report_sig.load_private_pem(b"garbage")
