"""``fleet capture set --select`` / ``show --device``, ``fleet window``, ``fleet network``,
``fleet policy``: the CLI over a real controller; per-selector capture with most specific wins."""

from __future__ import annotations

from typer.testing import CliRunner

from edgefleet.cloud.cli import app

from ..conftest import Stack


def _cli(stack: Stack, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, [*args, "--url", stack.url, "--token", stack.token])


def test_capture_per_selector_and_show_device_names_the_scope_of_each_field(stack: Stack) -> None:
    stack.client.enrol_device("orin-1", "jetson-orin-nano", {"site": "a"})
    stack.client.enrol_device("cpu-1", "cpu-x86_64", {"site": "a"})
    r = _cli(stack, "capture", "set", "--sample-rate", "0.2", "--select", "hw:jetson-orin", "--scope", "new-hw")
    assert r.exit_code == 0, r.output
    assert "sent to 1 devices" in r.output
    r = _cli(stack, "capture", "set", "--max-per-minute", "12", "--select", "hw:jetson-orin,tag:site=a")
    assert r.exit_code == 0, r.output

    shown = _cli(stack, "capture", "show", "--device", "orin-1")
    assert shown.exit_code == 0, shown.output
    lines = {ln.split("│")[1].strip(): ln for ln in shown.output.splitlines() if ln.count("│") >= 3}
    assert "0.2" in lines["capture.sample_rate"] and "new-hw" in lines["capture.sample_rate"]
    assert "12" in lines["capture.max_per_minute"] and "hw-jetson-orin.tag-site-a" in lines["capture.max_per_minute"]
    assert "fleet" in lines["capture.max_per_hour"]
    other = _cli(stack, "capture", "show", "--device", "cpu-1")
    assert "new-hw" not in other.output

    r = _cli(stack, "window", "add", "--select", "hw:jetson-orin", "--scope", "new-hw", "--days", "mon-fri",
             "--start", "02:00", "--duration", "2h", "--tz", "Europe/Berlin")
    assert r.exit_code == 0, r.output
    bad = _cli(stack, "window", "add", "--days", "mon", "--start", "25:00", "--duration", "2h")
    assert bad.exit_code != 0 and "windows[0].start" in bad.output
    r = _cli(stack, "network", "set", "--download", "unmetered", "--select", "hw:jetson-orin", "--scope", "new-hw")
    assert r.exit_code == 0, r.output
    got = stack.client.device_policy("orin-1")
    assert got["sources"]["windows"] == "new-hw" and got["network"]["download"] == "unmetered"
    assert got["capture"]["sample_rate"] == 0.2  # the window and network changes kept the capture field
    ls = _cli(stack, "window", "ls")
    assert ls.exit_code == 0 and "Europe/Berlin" in ls.output
    assert _cli(stack, "window", "rm", "0", "--scope", "new-hw").exit_code == 0
    assert stack.client.device_policy("orin-1")["sources"]["windows"] == "fleet"
    assert _cli(stack, "policy", "rm", "new-hw").exit_code == 0
    assert "new-hw" not in _cli(stack, "policy", "ls").output
