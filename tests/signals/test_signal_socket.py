"""The sidecar signal socket: a real datagram socket, a real writer, the agent's reader thread."""

from __future__ import annotations

import socket
import stat
import time
from pathlib import Path

import pytest

from edgefleet.edge_agent.config import load_config
from edgefleet.edge_agent.errors import ConfigError
from edgefleet.edge_agent.signal_source import (
    SignalAddress,
    SignalSource,
    parse_signal_address,
    send_signals,
)
from edgefleet.edge_agent.signals import SignalTable
from tests.conftest import wait_until


def _source(tmp_path: Path, **kw: float) -> SignalSource:
    src = SignalSource(SignalAddress("unix", path=tmp_path / "run" / "signals.sock"), SignalTable(**kw))
    src.start()
    return src


def test_the_unix_socket_is_0600_and_a_writer_process_sets_the_latest_values(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "signals.sock").write_text("stale socket of an earlier run")
    src = _source(tmp_path, max_age_s=5.0)
    try:
        path = tmp_path / "run" / "signals.sock"
        mode = path.stat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        assert [p.name for p in (tmp_path / "run").iterdir()] == ["signals.sock"]  # no staging left
        send_signals(f"unix:{path}", {"steering_deg": -25.0, "speed_kmh": 12})
        wait_until(lambda: src.table.at(src.clock()) == {"steering_deg": -25.0, "speed_kmh": 12}, 10,
                   message="sample read")
        send_signals(f"unix:{path}", {"steering_deg": 3.5})
        wait_until(lambda: src.table.at(src.clock()).get("steering_deg") == 3.5, 10, message="newer sample")
        assert src.counters() == {"signal_samples": 2, "signal_dropped": 0, "signal_keys_refused": 0}
    finally:
        src.stop()
    assert not (tmp_path / "run" / "signals.sock").exists()


def test_an_old_agent_stopping_late_leaves_the_new_agents_socket(tmp_path: Path) -> None:
    old, new = _source(tmp_path, max_age_s=5.0), _source(tmp_path, max_age_s=5.0)  # a restart, overlapping
    try:
        old.stop()
        path = tmp_path / "run" / "signals.sock"
        assert path.exists()
        send_signals(f"unix:{path}", {"steering_deg": -20})
        wait_until(lambda: new.received == 1, 10, message="the new agent reads")
    finally:
        new.stop()
    assert not (tmp_path / "run" / "signals.sock").exists()


def test_malformed_oversize_and_non_finite_samples_are_dropped_counted_and_the_reader_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = _source(tmp_path, max_age_s=5.0)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as w:
            target = str(tmp_path / "run" / "signals.sock")
            w.sendto(b"not json\n" + b'{"signals": {"x": NaN}}\n' + b'{"signals": {"bad key!": 1}}\n', target)
            w.sendto(b'{"signals": {"x": "' + b"a" * 5000 + b'"}}\n', target)
            w.sendto(b"[" * 60000, target)  # one line over 4 KiB
            w.sendto(b"\xff\xfe binary \x00", target)
            w.sendto(b"\n\n", target)  # blank lines are nothing
            w.sendto(b'{"signals": {"steering_deg": -30}}\n{"signals": {"speed_kmh": 7}}', target)
        wait_until(lambda: src.received == 2, 10, message="good samples after the junk")
        assert src.table.at(src.clock()) == {"steering_deg": -30, "speed_kmh": 7}
        assert dict(src.dropped) == {"malformed": 3, "non_finite": 1, "oversize": 2}
        assert src.counters()["signal_dropped"] == 6
        assert src._thread is not None and src._thread.is_alive()
        notes = [r for r in caplog.records if "sidecar signals" in r.getMessage() and "dropped" in r.getMessage()]
        assert len(notes) == 1  # rate-limited: one line for a burst
    finally:
        src.stop()


def test_udp_is_loopback_only_and_works_there() -> None:
    with pytest.raises(ConfigError, match="loopback"):
        parse_signal_address("udp:0.0.0.0:7071")
    with pytest.raises(ConfigError, match="loopback"):
        parse_signal_address("udp:192.168.1.10:7071")
    with pytest.raises(ConfigError):
        parse_signal_address("tcp:127.0.0.1:7071")
    assert parse_signal_address("") is None and parse_signal_address("off") is None
    src = SignalSource(SignalAddress("udp", host="127.0.0.1", port=0), SignalTable(max_age_s=5.0))
    src.start()
    try:
        assert src.address.port != 0
        send_signals(str(src.address), {"gps_fix": True, "lat": 48.1})
        wait_until(lambda: src.table.at(src.clock()) == {"gps_fix": True, "lat": 48.1}, 10, message="udp sample")
    finally:
        src.stop()


def test_config_file_and_environment_set_the_signal_socket(tmp_path: Path) -> None:
    toml = tmp_path / "agent.toml"
    toml.write_text('[agent]\ndevice_id = "cam-1"\n[signals]\nsocket = "udp:127.0.0.1:7071"\nmax_age_s = 0.25\n')
    cfg = load_config(toml, env={})
    assert cfg.signals.socket == "udp:127.0.0.1:7071" and cfg.signals.max_age_s == 0.25
    cfg = load_config(toml, env={"EDGEFLEET_AGENT_SIGNALS_MAX_AGE_S": "2", "EDGEFLEET_AGENT_SIGNALS_SOCKET": ""})
    assert cfg.signals.max_age_s == 2.0 and parse_signal_address(cfg.signals.socket) is None
    assert load_config(None, env={"EDGEFLEET_AGENT_AGENT_DEVICE_ID": "d"}).signals.socket == "unix:signals.sock"
    with pytest.raises(ConfigError, match="max_age_s"):
        load_config(toml, env={"EDGEFLEET_AGENT_SIGNALS_MAX_AGE_S": "-1"})
    with pytest.raises(ConfigError, match="did you mean 'max_age_s'"):
        toml.write_text('[agent]\ndevice_id = "cam-1"\n[signals]\nmax_age = 1\n')
        load_config(toml, env={})


def test_fleet_agent_signal_send_writes_a_sample_the_agent_keeps(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgefleet.edge_agent.cli import app

    src = _source(tmp_path, max_age_s=5.0)
    toml = tmp_path / "agent.toml"
    toml.write_text(f'[agent]\ndevice_id = "cam-1"\ndata_dir = "{tmp_path / "run"}"\n')
    try:
        out = CliRunner().invoke(app, ["signal", "send", "steering_deg=-25", "speed_kmh=12.5", "brake=true", "gear=D",
                                       "--config", str(toml)], env={})
        assert out.exit_code == 0, out.output
        wait_until(lambda: src.received == 1, 10, message="sample from the CLI")
        assert src.table.at(src.clock()) == {"steering_deg": -25, "speed_kmh": 12.5, "brake": True, "gear": "D"}
        for bad in (["steering_deg=nan"], ["oops"], ["bad key!=1"], [f"x={'v' * 200}"]):
            out = CliRunner().invoke(app, ["signal", "send", *bad, "--config", str(toml)], env={})
            assert out.exit_code == 2 and "error:" in out.output, (bad, out.output)
        assert src.received == 1 and not src.dropped  # refused before sending
    finally:
        src.stop()
    out = CliRunner().invoke(app, ["signal", "send", "x=1", "--socket", f"unix:{tmp_path / 'run' / 'signals.sock'}"], env={})
    assert out.exit_code == 1 and "no agent reads signals" in out.output


def test_a_flooding_writer_is_cut_to_the_rate_budget_and_counted(tmp_path: Path) -> None:
    now = [5_000.0]
    src = SignalSource(SignalAddress("unix", path=tmp_path / "s.sock"), SignalTable(max_age_s=5.0), max_rate_hz=100,
                       clock=lambda: now[0])
    line = b'{"signals": {"steering_deg": -25}}\n'
    src.feed(line * 150)  # 150 samples within one second
    assert src.received == 100 and src.dropped["rate"] == 50
    now[0] += 1.0
    src.feed(line * 10)  # the next second has its own budget
    assert src.received == 110 and src.dropped["rate"] == 50


def test_under_a_flood_on_the_socket_the_reader_pauses_and_keeps_to_its_budget(tmp_path: Path) -> None:
    src = SignalSource(SignalAddress("unix", path=tmp_path / "f.sock"), SignalTable(max_age_s=5.0), max_rate_hz=200)
    src.start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as w:
            w.setblocking(False)  # a writer that would rather drop than wait
            sent, t0 = 0, src.clock()
            while src.clock() - t0 < 1.5:
                try:
                    w.sendto(b'{"signals": {"steering_deg": -25}}\n', str(src.address.path))
                    sent += 1
                except BlockingIOError:
                    time.sleep(0.001)  # the queue is full: the reader is paused
            elapsed = src.clock() - t0
        assert src.throttled > 0
        assert src.received <= 200 * (elapsed + 1) and sent > src.received
        assert src.table.at(src.clock()) == {"steering_deg": -25}
    finally:
        src.stop()
