"""How the device learns its link and what the signed network policy allows on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.edge_agent.config import load_config
from edgefleet.edge_agent.errors import ConfigError
from edgefleet.edge_agent.network import (
    LinkProbe,
    NetworkGate,
    default_route_interface,
    parse_hook_output,
    parse_nmcli,
    refusal,
)
from edgefleet.protocols import DeviceSettings
from edgefleet.protocols.messages import LinkReport, NetworkPolicy

NMCLI = """GENERAL.DEVICE:wlan0
GENERAL.METERED:no (guessed)
GENERAL.DEVICE:wwan0
GENERAL.METERED:yes
GENERAL.DEVICE:lo
GENERAL.METERED:unknown
"""
ROUTES = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask
wwan0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000
wlan0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF
"""


@pytest.mark.parametrize(("text", "expected"), [
    ("metered\n", ("metered", None)),
    ("unmetered wlan0\n", ("unmetered", "wlan0")),
    ("YES eth0", ("metered", "eth0")),
    ("", ("unknown", None)),
    ("maybe wlan0", ("unknown", None)),
    ("metered bad/iface", ("metered", None)),  # a name that is not an interface name is not reported
])
def test_link_hook_output(text: str, expected: tuple[str, str | None]) -> None:
    assert parse_hook_output(text) == expected


def test_networkmanager_flag_of_the_default_route_interface() -> None:
    assert default_route_interface(ROUTES) == "wwan0"
    assert parse_nmcli(NMCLI, prefer="wwan0") == ("metered", "wwan0")
    assert parse_nmcli(NMCLI, prefer="wlan0") == ("unmetered", "wlan0")  # "no (guessed)" is unmetered
    assert parse_nmcli(NMCLI) == ("unmetered", "wlan0")  # no default route: the first known one
    assert parse_nmcli("") == ("unknown", None)


@pytest.mark.parametrize(("policy", "link", "code"), [
    (NetworkPolicy(), LinkReport(kind="metered"), None),
    (NetworkPolicy(download="unmetered"), LinkReport(kind="unmetered"), None),
    (NetworkPolicy(download="unmetered"), LinkReport(kind="metered", interface="wwan0"), "E_LINK_METERED"),
    (NetworkPolicy(download="unmetered"), LinkReport(kind="unknown"), "E_LINK_METERED"),  # unknown counts as metered
    (NetworkPolicy(download="interfaces", interfaces=["eth0", "wlan0"]), LinkReport(kind="metered", interface="wlan0"), None),
    (NetworkPolicy(download="interfaces", interfaces=["eth0"]), LinkReport(kind="unmetered", interface="wwan0"),
     "E_LINK_INTERFACE"),
    (NetworkPolicy(download="interfaces", interfaces=["eth0"]), LinkReport(kind="unmetered"), "E_LINK_INTERFACE"),
])
def test_policy_decides_on_the_link(policy: NetworkPolicy, link: LinkReport, code: str | None) -> None:
    got = refusal(policy, link)
    assert (got.code if got else None) == code
    if got is not None:
        assert "waits for" in str(got)


def test_policy_is_validated_at_the_schema_and_travels_in_device_settings() -> None:
    with pytest.raises(ValueError, match="needs at least one interface"):
        NetworkPolicy(download="interfaces")
    with pytest.raises(ValueError):
        NetworkPolicy(max_download_bps=10)  # below 1 KiB/s: a typo, not a cap
    with pytest.raises(ValueError):
        NetworkPolicy(download="interfaces", interfaces=["eth0; rm -rf /"])
    s = DeviceSettings.model_validate({"network_policy": {"download": "unmetered", "max_upload_bps": 50_000}})
    assert s.network_policy.download == "unmetered" and s.network_policy.max_upload_bps == 50_000
    assert DeviceSettings().network_policy == NetworkPolicy()  # default: any link, no cap


def test_probe_runs_the_hook_caches_it_and_sees_it_flip(tmp_path: Path) -> None:
    hook = tmp_path / "kind"
    hook.write_text("metered wwan0\n")
    now = [0.0]
    probe = LinkProbe(link_command=f"cat {hook}", probe_interval_s=5, clock=lambda: now[0])
    assert probe.current() == LinkReport(kind="metered", interface="wwan0", source="command")
    hook.write_text("unmetered wlan0\n")
    assert probe.current().kind == "metered"  # cached for the interval
    now[0] = 5.0
    assert probe.current() == LinkReport(kind="unmetered", interface="wlan0", source="command")
    hook.unlink()  # a failing hook: unknown, never a crash
    now[0] = 10.0
    assert probe.current().kind == "unknown"


def test_probe_from_config_without_a_hook(tmp_path: Path) -> None:
    routes = tmp_path / "route"
    routes.write_text(ROUTES)
    assert LinkProbe(link="unmetered", route_file=routes).current() == \
        LinkReport(kind="unmetered", interface="wwan0", source="config")


def test_gate_caps_are_the_lower_of_policy_and_config() -> None:
    gate = NetworkGate(LinkProbe(link="metered"), max_download_bps=300_000, max_upload_bps=None)
    assert gate.download.rate == 300_000 and gate.upload.rate is None
    gate.set_policy(NetworkPolicy(max_download_bps=100_000, max_upload_bps=40_000))
    assert gate.download.rate == 100_000 and gate.upload.rate == 40_000
    gate.set_policy(NetworkPolicy(max_download_bps=900_000))
    assert gate.download.rate == 300_000 and gate.upload.rate is None
    gate.set_policy(NetworkPolicy(download="unmetered"))
    assert gate.download_refusal() is not None and gate.upload_refusal() is not None


def test_agent_toml_network_section(tmp_path: Path) -> None:
    base = '[agent]\ndevice_id = "d1"\n'
    p = tmp_path / "agent.toml"
    p.write_text(base + '[network]\nlink_command = "/usr/local/bin/link-kind"\nmax_download_bps = 500000\n')
    cfg = load_config(p, env={})
    assert cfg.network.link_command == "/usr/local/bin/link-kind" and cfg.network.max_download_bps == 500000
    p.write_text(base + '[network]\nmax_downlod_bps = 5\n')
    with pytest.raises(ConfigError, match="did you mean 'max_download_bps'"):
        load_config(p, env={})
    p.write_text(base + '[network]\nlink = "metered"\nlink_command = "x"\n')
    with pytest.raises(ConfigError, match="not both"):
        load_config(p, env={})
    p.write_text(base + '[network]\nlink = "cheap"\n')
    with pytest.raises(ConfigError, match="network.link"):
        load_config(p, env={})
