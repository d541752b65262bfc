"""`fleet-agent hw` text, and the layering rule that device code never imports onnx."""

from __future__ import annotations

import subprocess
import sys

from edgefleet.hardware.report import render_hw_report

from .conftest import CPU_ONLY, FULL_JETSON, TREES


def test_report_names_profile_capabilities_and_plan():
    text = render_hw_report(TREES / "agx-orin-64gb", availability=FULL_JETSON)
    assert "hardware id    jetson-agx-orin-64gb" in text
    assert "DLA cores 2" in text and "compute capability 8.7" in text and "JetPack 5.1.2" in text
    assert "-> 1. tensorrt" in text and "would use: tensorrt" in text


def test_report_on_cpu_box_explains_why_gpu_paths_are_skipped():
    text = render_hw_report(TREES / "cpu-x86_64", availability=CPU_ONLY)
    assert "-- 1. tensorrt      no NVIDIA GPU on this device (cpu-x86_64)" in text
    assert "would use: ort-cpu" in text


def test_module_entry_point_prints_the_report():
    out = subprocess.run([sys.executable, "-m", "edgefleet.hardware", str(TREES / "xavier-nx")],
                         capture_output=True, text=True, check=True).stdout
    assert "jetson-xavier-nx" in out and "would use:" in out


def test_hardware_package_imports_no_cloud_or_gpu_module():
    code = ("import sys, edgefleet.hardware, edgefleet.hardware.telemetry, edgefleet.hardware.report\n"
            "bad = [m for m in ('onnx', 'tensorrt', 'pycuda', 'boto3', 'mlflow', 'fastapi', 'evidently',"
            " 'edgefleet.registry', 'edgefleet.edge_agent', 'edgefleet.cloud') if m in sys.modules]\n"
            "print(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
