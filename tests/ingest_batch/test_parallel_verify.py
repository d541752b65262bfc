"""A batch's Ed25519 checks run on several threads at once (``report_sig.verify_many``; the
check releases the GIL) with exactly the verdicts of checking one message at a time: a
tampered message, one signed by another device's key and garbage signatures are refused
in their places, the rest applied."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefleet.cloud.runtime import Controller
from edgefleet.protocols import Phase, Reported, SlotReport, decode
from edgefleet.registry import report_sig

from .conftest import Fleet, batched


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_verify_many_gives_the_verdicts_of_verify_in_order(monkeypatch: pytest.MonkeyPatch, threads: int) -> None:
    monkeypatch.setattr(report_sig, "VERIFY_THREADS", threads)
    keys = [Ed25519PrivateKey.generate() for _ in range(3)]
    items: list[tuple[str, bytes, str]] = []
    for i in range(61):
        key = keys[i % 3]
        data = f"report {i}".encode()
        sig = report_sig.sign(key, data)
        if i % 7 == 0:
            data += b"!"  # tampered after signing
        elif i % 11 == 0:
            sig = report_sig.sign(keys[(i + 1) % 3], data)  # another key's signature
        elif i % 13 == 0:
            sig = "not base64 at all"
        items.append((report_sig.public_b64(key), data, sig))
    expected = [report_sig.verify(*item) for item in items]
    assert report_sig.verify_many(items) == expected
    assert expected.count(False) >= 10 and expected.count(True) >= 40


def _reported(device_id: str, generation: int) -> Reported:
    return Reported(device_id=device_id, generation=generation, hardware_id="cpu-x86_64",
                    slots={"control": SlotReport(phase=Phase.DOWNLOADING)})


def _tampered(raw: bytes) -> Any:
    obj = json.loads(raw)
    obj["generation"] += 1000  # changed after signing
    return decode(json.dumps(obj).encode(), Reported)


def test_a_large_batch_checked_in_parallel_refuses_exactly_the_bad_ones(
        controller: Controller, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_sig, "VERIFY_THREADS", 2)
    fleet = Fleet([controller], {})
    for d in ("cam-1", "cam-2", "cam-3", "cam-4"):
        fleet.add(d)
    msgs: list[Any] = []
    want: list[str] = []
    for i in range(48):  # above report_sig.PARALLEL_FROM: spread over the threads
        device = f"cam-{i % 4 + 1}"
        raw = fleet.keys[device].sign(_reported(device, i + 1))
        if i % 9 == 4:
            msgs.append(_tampered(raw))
            want.append("bad_signature")
        elif i % 9 == 7:  # cam-x's report signed with another device's key (its key id kept)
            other = f"cam-{(i + 1) % 4 + 1}"
            forged = json.loads(raw)
            body = {k: v for k, v in forged.items() if k != "sig"}
            forged["sig"] = json.loads(fleet.keys[other].sign(decode(json.dumps(body).encode(), Reported)))["sig"]
            msgs.append(decode(json.dumps(forged).encode(), Reported))
            want.append("bad_signature")
        else:
            msgs.append(decode(raw, Reported))
            want.append("ok")
    assert batched(controller, msgs) == want


def test_the_thread_setting_is_checked() -> None:
    assert report_sig.verify_threads(None, 2) == 2 and report_sig.verify_threads("", 16) == 4
    assert report_sig.verify_threads("3", 2) == 3
    for bad in ("zero", "0", "-1", "100000", "1.5"):
        with pytest.raises(report_sig.ReportKeyError, match="EDGEFLEET_VERIFY_THREADS must be a whole number"):
            report_sig.verify_threads(bad, 2)
