"""tegrastats parsing on real lines of each family, the reader process, and the other sources."""

from __future__ import annotations

import shutil
import stat
import sys
import time

import pytest

from edgefleet.hardware import detect_profile
from edgefleet.hardware.telemetry import (
    TegrastatsReader,
    collect_hardware_stats,
    parse_nvidia_smi_stats,
    parse_tegrastats,
    stats_from_jtop,
    sysfs_stats,
)

from .conftest import TEGRASTATS, TREES


def first_line(name: str) -> str:
    return (TEGRASTATS / f"{name}.txt").read_text().splitlines()[0]


@pytest.mark.parametrize("family,expect", [
    ("orin_nano_jp6", {"ram_used_mb": 3645, "ram_total_mb": 7620, "swap_used_mb": 236, "cpu_cores": 6,
                       "gpu_util_percent": 0, "gpu_freq_mhz": 305, "emc_freq_mhz": 204, "temp_tj_c": 44.531,
                       "power_vdd_in_mw": 2957, "power_total_mw": 2957, "power_vdd_soc_avg_mw": 1012}),
    ("orin_nano_jp62", {"ram_used_mb": 2850, "temp_gpu_c": 46.843, "power_total_mw": 3582,
                        "power_vdd_cpu_gpu_cv_mw": 523}),
    ("orin_nx_jp5", {"cpu_cores": 8, "cpu_cores_online": 4, "cpu_percent": 9.0, "gpu_freq_mhz": 611,
                     "temp_cpu_c": 47.937, "temp_max_c": 48.875, "power_total_mw": 5299}),
    ("agx_orin_jp5", {"ram_total_mb": 62840, "cpu_cores": 12, "gpu_util_percent": 0, "temp_tj_c": 42.0,
                      "power_total_mw": 4940 + 988 + 4442}),
    ("agx_orin_jp6", {"ram_used_mb": 29114, "gpu_freq_mhz": 305, "cpu_percent": 17.42, "temp_cpu_c": 53.062,
                      "power_vdd_gpu_soc_mw": 3205, "power_total_mw": 3205 + 4405 + 4767}),
    ("agx_orin_jp7", {"gpu_util_percent": 12, "gpu_freq_mhz": 1300, "emc_util_percent": 3, "temp_cpu_c": 52.968,
                      "power_vin_sys_5v0_mw": 5500, "power_total_mw": 5139 + 3268 + 5500}),
    ("xavier_nx_jp4", {"gpu_util_percent": 62, "gpu_freq_mhz": 306, "cpu_freq_mhz": 1267, "temp_gpu_c": 43.0,
                       "power_vdd_in_mw": 4067, "power_total_mw": 4067}),
    ("agx_xavier_jp4", {"cpu_cores_online": 4, "temp_tdiode_c": 40.0, "power_soc_mw": 932, "power_gpu_mw": 0,
                        "power_total_mw": 0 + 311 + 932 + 0 + 621 + 1482}),
])
def test_tegrastats_lines_of_each_family(family, expect):
    stats = parse_tegrastats(first_line(family))
    for key, value in expect.items():
        assert stats[key] == pytest.approx(value), key


def test_absent_sensors_and_pmic_placeholder_are_ignored():
    stats = parse_tegrastats(
        "RAM 2448/7620MB (lfb 1x4MB) SWAP 0/3810MB (cached 0MB) CPU [1%@729,0%@729] EMC_FREQ 0%@2133 "
        "GR3D_FREQ 0%@[305] CV0@-256C CPU@46.437C GPU@-256C PMIC@100C tj@46.437C VDD_IN 4390mW/4390mW")
    assert "temp_cv0_c" not in stats and "temp_gpu_c" not in stats and "temp_pmic_c" not in stats
    assert stats["temp_max_c"] == 46.437


def test_date_prefix_does_not_leak_and_busy_line_reads_busy():
    busy = (TEGRASTATS / "orin_nano_jp6.txt").read_text().splitlines()[1]
    stats = parse_tegrastats(busy)
    assert stats["gpu_util_percent"] == 99 and stats["emc_util_percent"] == 61
    assert stats["power_vdd_in_mw"] == 8535 and stats["power_vdd_in_avg_mw"] == 5251
    assert not any("2026" in k for k in stats)


def test_a_line_that_is_not_tegrastats_is_refused():
    with pytest.raises(ValueError):
        parse_tegrastats("tegrastats: permission denied")


@pytest.fixture()
def fake_tegrastats(tmp_path, monkeypatch):
    """A `tegrastats` on PATH that prints the real Orin Nano lines every --interval ms."""
    lines = (TEGRASTATS / "orin_nano_jp6.txt").read_text().splitlines()
    script = tmp_path / "bin" / "tegrastats"
    script.parent.mkdir()
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys, time\n"
        "interval = int(sys.argv[sys.argv.index('--interval') + 1]) / 1000.0\n"
        f"lines = {lines!r} + ['garbage line']\n"
        "i = 0\n"
        "while True:\n"
        "    print(lines[i % len(lines)], flush=True)\n"
        "    i += 1\n"
        "    time.sleep(interval)\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{script.parent}:{shutil.os.environ['PATH']}")
    return lines


def _wait(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_reader_runs_tegrastats_and_keeps_the_latest_sample(fake_tegrastats):
    assert TegrastatsReader.available()
    with TegrastatsReader(interval_ms=20) as reader:
        assert _wait(lambda: reader.bad_lines >= 1 and reader.latest() is not None)
        assert reader.running
        assert reader.latest()["ram_total_mb"] == 7620
    assert not reader.running


def test_reader_without_tegrastats_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert not TegrastatsReader.available()
    with pytest.raises(FileNotFoundError):
        TegrastatsReader().start()


def test_jetson_stats_come_from_tegrastats_and_sysfs(fake_tegrastats):
    profile = detect_profile(TREES / "orin-nano")
    with TegrastatsReader(interval_ms=20) as reader:
        assert _wait(lambda: reader.latest() is not None)
        stats = collect_hardware_stats(profile, TREES / "orin-nano", tegrastats=reader)
    assert stats["source"] == "tegrastats"
    assert stats["hardware_id"] == "jetson-orin-nano"
    assert stats["throttled"] is False
    assert stats["ram_total_mb"] == 7620  # tegrastats wins over /proc/meminfo
    assert "power_total_mw" in stats and "temp_gpu_c" in stats and stats["load_1m"] == 0.52
    assert all(isinstance(v, (int, float, str, bool)) for v in stats.values())


def test_a_zone_past_its_passive_trip_point_is_throttling(tmp_path):
    root = tmp_path / "tree"
    shutil.copytree(TREES / "orin-nano", root)
    (root / "sys/class/thermal/thermal_zone3/temp").write_text("99500\n")
    stats = collect_hardware_stats(detect_profile(root), root)
    assert stats["throttled"] is True and "tj-thermal" in stats["throttle_reason"]
    assert stats["temp_tj_c"] == 99.5
    assert "temp_cv0_c" not in stats  # -256 °C: sensor absent
    assert stats["source"] == "sysfs"


def test_cpu_box_fixture_reads_meminfo_and_zones():
    stats = sysfs_stats(TREES / "cpu-x86_64")
    assert stats["ram_total_mb"] == 16318412 // 1024
    assert stats["temp_acpitz_c"] == 27.8 and stats["temp_x86_pkg_temp_c"] == 38.0
    assert stats["throttled"] is False


def test_this_machine_reports_psutil_stats():
    stats = collect_hardware_stats(detect_profile("/"), "/")
    assert stats["source"] in ("psutil", "nvml", "nvidia-smi", "tegrastats", "jtop")
    assert stats["ram_total_mb"] > 0 and 0.0 <= stats["cpu_percent"] <= 100.0
    assert isinstance(stats["throttled"], bool)


def test_nvidia_smi_stats_rows():
    stats = parse_nvidia_smi_stats("67, 280.45, 52, 18636, 24564, 1695, 0x0000000000000000\n")
    assert stats == {"temp_gpu_c": 67.0, "power_gpu_mw": 280450, "gpu_util_percent": 52, "gpu_mem_used_mb": 18636,
                     "gpu_mem_total_mb": 24564, "gpu_freq_mhz": 1695, "power_total_mw": 280450,
                     "power_total_source": "gpu-board", "throttle_reasons": "0x0000000000000000",
                     "throttled": False}
    hot = parse_nvidia_smi_stats("91, [N/A], 100, 1, 2, 900, 0x0000000000000060\n")
    assert hot["throttled"] is True and "power_gpu_mw" not in hot
    idle = parse_nvidia_smi_stats("40, 20.1, 0, 1, 2, 210, 0x0000000000000001\n")  # GPU idle is not throttling
    assert idle["throttled"] is False
    with pytest.raises(ValueError):
        parse_nvidia_smi_stats("40, 20\n")


def test_jtop_stats_are_mapped_to_our_keys():
    stats = stats_from_jtop({
        "CPU1": 12, "CPU2": 8, "CPU3": "OFF", "RAM": 0.4, "SWAP": 0.0, "GPU": 35.0, "Temp cpu": 45.5,
        "Temp gpu": 44.0, "Temp cv0": -256, "Power VDD_IN": 5300, "Power TOT": 5300, "nvp model": "MAXN",
        "jetson_clocks": "ON"})
    assert stats["cpu_percent"] == 10.0 and stats["cpu_cores_online"] == 2
    assert stats["gpu_util_percent"] == 35.0 and stats["ram_used_percent"] == 40.0
    assert stats["temp_max_c"] == 45.5 and "temp_cv0_c" not in stats
    assert stats["power_total_mw"] == 5300 and stats["power_vdd_in_mw"] == 5300
    assert stats["power_mode"] == "MAXN" and stats["jetson_clocks"] is True
