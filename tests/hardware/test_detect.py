"""Profile detection from fixture trees shaped like each device family."""

from __future__ import annotations

import pytest

from edgefleet.hardware import DetectionError, GpuInfo, detect_profile
from edgefleet.hardware.detect import parse_nv_tegra_release, parse_nvidia_smi_gpus
from edgefleet.hardware.profiles import gpu_precisions, gpu_slug

from .conftest import TREES

JETSONS = [
    # tree, hardware_id, family, dla, memory_mb, l4t, jetpack
    ("agx-orin-64gb", "jetson-agx-orin-64gb", "jetson-orin", 2, 62827, "35.4.1", "5.1.2"),
    ("agx-orin-32gb", "jetson-agx-orin-32gb", "jetson-orin", 2, 30697, "36.3.0", "6.0"),
    ("orin-nx-16gb", "jetson-orin-nx", "jetson-orin", 2, 15388, "36.4.0", "6.1/6.2"),
    ("orin-nano", "jetson-orin-nano", "jetson-orin", 0, 7619, "36.4.3", "6.1/6.2"),
    ("xavier-nx", "jetson-xavier-nx", "jetson-xavier", 2, 7772, "32.7.1", "4.6"),
]


@pytest.mark.parametrize("tree,hardware_id,family,dla,memory_mb,l4t,jetpack", JETSONS)
def test_jetson_modules_are_identified_from_device_tree_and_release(tree, hardware_id, family, dla, memory_mb,
                                                                      l4t, jetpack):
    p = detect_profile(TREES / tree)
    assert p.hardware_id == hardware_id
    assert p.family == family and p.is_jetson and p.has_nvidia_gpu
    assert p.arch == "aarch64"
    assert p.capabilities.dla_cores == dla
    assert p.capabilities.memory_mb == memory_mb
    assert p.capabilities.fp16 and p.capabilities.int8
    assert p.capabilities.unified_memory
    assert p.capabilities.compute_capability == ("7.2" if family == "jetson-xavier" else "8.7")
    assert (p.l4t_release, p.jetpack) == (l4t, jetpack)


def test_agx_orin_memory_variant_falls_back_to_memory_size_without_part_number(tmp_path):
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"Jetson AGX Orin\0")
    (tmp_path / "proc/meminfo").write_text("MemTotal:       31433736 kB\n")
    assert detect_profile(tmp_path).hardware_id == "jetson-agx-orin-32gb"
    (tmp_path / "proc/meminfo").write_text("MemTotal:       64335836 kB\n")
    assert detect_profile(tmp_path).hardware_id == "jetson-agx-orin-64gb"


def test_orin_nx_8gb_has_one_dla_core(tmp_path):
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson Orin NX Engineering Reference Developer Kit\0")
    (tmp_path / "proc/device-tree/compatible").write_bytes(b"nvidia,p3768-0000+p3767-0001\0nvidia,tegra234\0")
    p = detect_profile(tmp_path)
    assert (p.hardware_id, p.capabilities.dla_cores) == ("jetson-orin-nx", 1)


def test_unknown_tegra_board_is_a_generic_jetson_from_its_soc(tmp_path):
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"Custom carrier rev B\0")
    (tmp_path / "proc/device-tree/compatible").write_bytes(b"acme,carrier\0nvidia,tegra234\0")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 3.0, GCID: 1\n")
    p = detect_profile(tmp_path)
    assert p.hardware_id == "jetson-tegra234"
    assert p.family == "jetson-orin" and p.capabilities.compute_capability == "8.7"


def test_x86_gpu_from_proc_driver_information_and_name_table():
    p = detect_profile(TREES / "x86-rtx3090")
    assert p.hardware_id == "x86-nvidia-geforce-rtx-3090"
    assert p.family == "x86-nvidia" and not p.is_jetson
    caps = p.capabilities
    assert caps.gpu_name == "NVIDIA GeForce RTX 3090"
    assert caps.compute_capability == "8.6" and caps.fp16 and caps.int8
    assert caps.dla_cores == 0 and not caps.unified_memory
    assert p.cpu_count == 20 and p.arch == "x86_64"


def test_x86_gpu_probe_output_wins_over_proc_files():
    smi = "NVIDIA A100-SXM4-80GB, 81920, 8.0\n"
    p = detect_profile(TREES / "x86-rtx3090", gpu_probe=lambda: parse_nvidia_smi_gpus(smi))
    assert p.hardware_id == "x86-nvidia-a100-sxm4-80gb"
    assert (p.capabilities.compute_capability, p.capabilities.gpu_memory_mb) == ("8.0", 81920)


def test_gpu_probe_finds_a_gpu_on_an_otherwise_cpu_tree():
    p = detect_profile(TREES / "cpu-x86_64", gpu_probe=lambda: [GpuInfo("Tesla T4", 15360, None)])
    assert p.hardware_id == "x86-nvidia-tesla-t4"
    assert p.capabilities.compute_capability == "7.5"


@pytest.mark.parametrize("tree,hardware_id", [("cpu-x86_64", "cpu-x86_64"), ("cpu-aarch64-rpi", "cpu-aarch64")])
def test_cpu_only_boxes(tree, hardware_id):
    p = detect_profile(TREES / tree)
    assert p.hardware_id == hardware_id
    assert p.family == "cpu" and not p.has_nvidia_gpu
    assert not p.capabilities.fp16 and not p.capabilities.int8 and p.capabilities.dla_cores == 0


def test_this_machine_is_detected_without_error():
    p = detect_profile("/")
    assert p.hardware_id.startswith(("cpu-", "x86-nvidia-", "jetson-", "aarch64-nvidia-"))
    assert p.capabilities.memory_mb > 0


def test_nvidia_smi_rows_without_compute_capability_and_bad_rows():
    assert parse_nvidia_smi_gpus("Tesla T4, 15360\n") == [GpuInfo("Tesla T4", 15360, None)]
    assert parse_nvidia_smi_gpus("NVIDIA L4, [N/A], [N/A]\n") == [GpuInfo("NVIDIA L4", None, None)]
    with pytest.raises(DetectionError):
        parse_nvidia_smi_gpus("garbage-without-commas\n")


def test_release_parser_and_slugs_and_precision_rules():
    assert parse_nv_tegra_release("# R35 (release), REVISION: 4.1, GCID: 33958178") == "35.4.1"
    assert parse_nv_tegra_release("nonsense") is None
    assert gpu_slug("NVIDIA GeForce RTX 4090") == "geforce-rtx-4090"
    assert gpu_precisions("6.1") == (False, True)  # Pascal consumer: slow FP16, DP4A INT8
    assert gpu_precisions("5.3") == (True, False)  # Jetson Nano
    assert gpu_precisions("8.7") == (True, True)
