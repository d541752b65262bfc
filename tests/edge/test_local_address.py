"""The agent's loopback-only socket addresses: the prediction output (tcp) and the sidecar signal
source (udp) share one parser and refuse a non-loopback host the same way."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.edge_agent.app_output import parse_address
from edgefleet.edge_agent.errors import ConfigError
from edgefleet.edge_agent.signal_source import parse_signal_address


def test_output_socket_addresses(tmp_path: Path) -> None:
    a = parse_address("tcp:127.0.0.1:7070")
    assert a is not None and (a.kind, a.host, a.port) == ("tcp", "127.0.0.1", 7070) and str(a) == "tcp:127.0.0.1:7070"
    u = parse_address("unix:out.sock", tmp_path)
    assert u is not None and u.kind == "unix" and u.path == tmp_path / "out.sock"
    assert parse_address("") is None and parse_address("off") is None and parse_address(" none ") is None
    for bad in ("tcp:0.0.0.0:7070", "tcp:10.0.0.5:7070", "tcp:127.0.0.1:http", "tcp:127.0.0.1:70000", "udp:127.0.0.1:7070"):
        with pytest.raises(ConfigError, match="output socket"):
            parse_address(bad)


def test_signal_socket_addresses_map_localhost_and_refuse_tcp() -> None:
    a = parse_signal_address("udp:localhost:7071")
    assert a is not None and (a.kind, a.host, a.port) == ("udp", "127.0.0.1", 7071) and str(a) == "udp:127.0.0.1:7071"
    v6 = parse_signal_address("udp:[::1]:7071")
    assert v6 is not None and v6.host == "::1"
    with pytest.raises(ConfigError, match="signal socket"):
        parse_signal_address("tcp:127.0.0.1:7071")
