"""The embedded broker frees its port on stop, and a restart on the same port waits for a
port that is still held for a moment instead of failing at once."""

from __future__ import annotations

import socket
import threading

import pytest

from edgefleet.cloud.broker import BrokerError, EmbeddedBroker, wait_for_port


def _hold(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the broker does: TIME_WAIT is no conflict
    s.bind(("127.0.0.1", port))
    s.listen(1)
    return s


def test_stop_frees_the_port_for_a_restart_on_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    b1 = EmbeddedBroker(auth_dir=tmp_path / "auth")
    b1.start()
    b1.stop()
    _hold(b1.port).close()  # nothing else holds it
    b2 = EmbeddedBroker(port=b1.port, auth_dir=b1.auth_dir)
    b2.start()
    try:
        wait_for_port(b2.host, b2.port)
    finally:
        b2.stop()


def test_a_restart_waits_for_a_port_released_shortly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    probe = EmbeddedBroker(auth_dir=tmp_path / "auth")
    held = _hold(probe.port)
    threading.Timer(1.5, held.close).start()
    probe.start()  # would fail at once with "address already in use" before
    try:
        wait_for_port(probe.host, probe.port)
    finally:
        probe.stop()


def test_a_port_held_for_good_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    b = EmbeddedBroker(auth_dir=tmp_path / "auth")
    b.bind_retry_s = 2.0
    held = _hold(b.port)
    try:
        with pytest.raises(BrokerError, match="amqtt failed to start"):
            b.start()
    finally:
        held.close()
