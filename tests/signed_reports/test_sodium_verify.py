"""The controller checks report signatures with libsodium (PyNaCl) and falls back to OpenSSL
(``cryptography``) where PyNaCl is missing: both give one verdict for every signature a real
key made and every tampered, truncated or garbage one; libsodium also refuses what OpenSSL
lets by (a small-order public key, under which one "signature" fits every message), and such
a key is refused when it is registered."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.registry import report_sig

#: the group order of Ed25519: a signature's S must be below it
L = 2**252 + 27742317777372353535851937790883648493
IDENTITY = bytes([1]) + bytes(31)  # the neutral point: of order 1


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _both(public_key: str, data: bytes, sig: str) -> tuple[bool, bool]:
    return report_sig.verify(public_key, data, sig), report_sig.verify_openssl(public_key, data, sig)


def test_the_controller_install_checks_with_libsodium() -> None:
    assert report_sig._sodium is not None  # PyNaCl is in the cloud extra: the fast check is what runs


@settings(max_examples=60, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), data=st.binary(max_size=2048), flip=st.integers(0, 2047))
def test_one_verdict_for_good_and_tampered_signatures(seed: bytes, data: bytes, flip: int) -> None:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    public, sig = report_sig.public_b64(key), report_sig.sign(key, data)
    assert _both(public, data, sig) == (True, True)
    raw = bytearray(base64.b64decode(sig))
    raw[flip % 64] ^= 1 << (flip % 8)
    assert _both(public, data, _b64(bytes(raw))) == (False, False)  # a bit of the signature changed
    if data:
        changed = bytearray(data)
        changed[flip % len(data)] ^= 0x01
        assert _both(public, bytes(changed), sig) == (False, False)  # a bit of the report changed
    other = report_sig.public_b64(Ed25519PrivateKey.generate())
    assert _both(other, data, sig) == (False, False)  # another device's key


@pytest.mark.parametrize("sig", [
    "", "not base64 at all", "====", _b64(b"x" * 63), _b64(b"x" * 65), _b64(bytes(64)),
], ids=["empty", "not-base64", "padding", "63-bytes", "65-bytes", "zeros"])
def test_garbage_signatures_are_refused_by_both_and_never_raise(sig: str) -> None:
    key = Ed25519PrivateKey.generate()
    assert _both(report_sig.public_b64(key), b"report", sig) == (False, False)


@pytest.mark.parametrize("public", ["", "AAAA", _b64(bytes(31)), _b64(bytes(33)), "%%%"],
                         ids=["empty", "3-bytes", "31-bytes", "33-bytes", "not-base64"])
def test_unusable_public_keys_are_refused_by_both(public: str) -> None:
    key = Ed25519PrivateKey.generate()
    assert _both(public, b"report", report_sig.sign(key, b"report")) == (False, False)


def test_a_signature_with_an_unreduced_s_is_refused_by_both() -> None:
    key = Ed25519PrivateKey.generate()
    raw = base64.b64decode(report_sig.sign(key, b"report"))
    s = int.from_bytes(raw[32:], "little") + L  # the same point equation, not the canonical S
    assert _both(report_sig.public_b64(key), b"report", _b64(raw[:32] + s.to_bytes(32, "little"))) == (False, False)


def test_a_small_order_key_is_refused_at_the_check_and_at_registration() -> None:
    forged = _b64(IDENTITY + bytes(32))  # R = the neutral point, S = 0: "fits" any message under it
    public = _b64(IDENTITY)
    assert report_sig.verify_openssl(public, b"anything at all", forged) is True  # why libsodium
    assert report_sig.verify(public, b"anything at all", forged) is False
    with pytest.raises(report_sig.ReportKeyError, match="small-order point"):
        report_sig.parse_public_key(public)
    with pytest.raises(report_sig.ReportKeyError, match="small-order point"):
        report_sig.parse_public_key(_b64(bytes(32)))  # not a point of the group at all


def test_an_operator_cannot_enrol_a_device_with_a_small_order_report_key(stack) -> None:  # noqa: ANN001
    from edgefleet.cloud.client import ApiError

    with pytest.raises(ApiError) as err:
        stack.client.enrol_device("cam-small", "cpu-x86_64", report_public_key=_b64(IDENTITY))
    assert err.value.status_code == 400 and "small-order point" in str(err.value)
    assert all(d["id"] != "cam-small" for d in stack.client.list_devices())
