"""``fleet shadow replay --gate`` on real ONNX models: local files without a controller,
pushed versions through a real controller, JSON and JUnit XML for CI."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from edgefleet.cloud.cli import app
from tests.conftest import Stack, push

from ..rollout_e2e import candidates
from .conftest import write_manifest

ALL_GATES = ["--gate", "agreement>=0.97", "--gate", "nan_rate<=0", "--gate", "error_rate<=0",
             "--gate", "latency_p99_ratio<=1.5", "--gate", "p99_ms<=1000"]


def run(*args: str) -> Any:
    return CliRunner().invoke(app, ["shadow", "replay", *args], env={"COLUMNS": "200"})


def junit(path: Path) -> dict[str, str | None]:
    """testcase name → failure message (None: passed), checking the standard structure."""
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert int(suite.get("tests", "-1")) == len(cases) == int(root.get("tests", "-1"))
    out: dict[str, str | None] = {}
    for case in cases:
        assert case.get("classname") and case.get("name")
        failures = case.findall("failure")
        assert len(failures) <= 1
        out[case.get("name", "")] = failures[0].get("message") if failures else None
    assert int(suite.get("failures", "-1")) == sum(1 for v in out.values() if v is not None)
    return out


def test_same_model_passes_every_gate_from_local_files_without_a_controller(
    digit_models: Any, frames_dir: Path, tmp_path: Path, no_controller: None
) -> None:
    control, _ = digit_models
    report, xml = tmp_path / "out" / "replay.json", tmp_path / "out" / "replay.xml"
    result = run("--control", str(control.path), "--candidate", str(control.path), "--source", str(frames_dir),
                 *ALL_GATES, "--json", str(report), "--junit", str(xml))
    assert result.exit_code == 0, result.output
    assert "frames: 120" in result.output and "agreement: 100.00%" in result.output
    doc = json.loads(report.read_text())
    assert doc["passed"] is True and doc["frames"] == 120 and doc["figures"]["nan_rate"] == 0.0
    assert [g["status"] for g in doc["gates"]] == ["passed"] * 5
    assert junit(xml) == {"agreement>=0.97": None, "nan_rate<=0": None, "error_rate<=0": None,
                          "latency_p99_ratio<=1.5": None, "p99_ms<=1000": None}


def test_nan_candidate_fails_the_build_with_the_figures(
    digit_models: Any, frames_dir: Path, tmp_path: Path, no_controller: None
) -> None:
    control, _ = digit_models
    bad = candidates.nan_after_activation(control, tmp_path, "1.1-nan")
    xml = tmp_path / "replay.xml"
    result = run("--control", str(control.path), "--control-manifest", str(write_manifest(control, tmp_path / "c.json")),
                 "--candidate", str(bad.path), "--candidate-manifest", str(write_manifest(bad, tmp_path / "n.json")),
                 "--source", str(frames_dir), "--gate", "nan_rate<=0", "--gate", "p99_ms<=1000", "--junit", str(xml))
    assert result.exit_code == 1, result.output
    assert "nan_rate<=0 breached: nan_rate 1, threshold <= 0" in result.output
    cases = junit(xml)
    assert cases["p99_ms<=1000"] is None
    assert cases["nan_rate<=0"] is not None and "nan_rate 1, threshold <= 0" in cases["nan_rate<=0"]


def test_a_five_times_slower_candidate_breaches_the_latency_gates(
    digit_models: Any, frames_dir: Path, tmp_path: Path, no_controller: None
) -> None:
    base = candidates.heavy(digit_models[0], tmp_path, "1.1-base", layers=6)
    slow = candidates.heavy(digit_models[0], tmp_path, "1.1-slow", layers=30)  # 5x: a breach even on a busy machine
    limit = f"{candidates.latency_ms(base, runs=30) * 0.5:.2f}"  # an absolute limit the slow model cannot meet
    out = tmp_path / "replay.json"
    result = run("--control", str(base.path), "--candidate", str(slow.path), "--source", str(frames_dir),
                 "--limit", "100", "--repeat", "3", "--gate", "latency_p99_ratio<=1.5", "--gate", f"p99_ms<={limit}",
                 "--gate", "agreement>=0.97", "--json", str(out))
    assert result.exit_code == 1, result.output
    gates = {g["gate"]: g for g in json.loads(out.read_text())["gates"]}
    ratio = gates["latency_p99_ratio<=1.5"]
    assert ratio["status"] == "failed" and ratio["value"] > 1.5 and ratio["significant"] is True
    assert gates[f"p99_ms<={float(limit):g}"]["status"] == "failed"
    assert gates["agreement>=0.97"]["status"] == "passed"  # same outputs, only slower
    assert "latency_p99_ratio<=1.5 breached" in result.output


def test_bad_input_is_refused_before_any_work(digit_models: Any, frames_dir: Path, tmp_path: Path,
                                              no_controller: None) -> None:
    control, _ = digit_models
    refused = run("--control", str(control.path), "--candidate", str(control.path), "--source", str(frames_dir),
                  "--gate", "failure<=0.02")
    assert refused.exit_code == 2 and "p99_ms" in refused.output and "unknown gate metric 'failure'" in refused.output
    missing = run("--control", str(tmp_path / "gone.onnx"), "--candidate", str(control.path),
                  "--source", str(frames_dir))
    assert missing.exit_code == 1 and "no such file" in missing.output
    no_url = run("--control", "digits:1.0", "--candidate", str(control.path), "--source", str(frames_dir))
    assert no_url.exit_code == 1 and "no controller URL" in no_url.output


def test_pushed_control_against_a_local_candidate_through_the_controller(
    stack: Stack, digit_models: Any, frames_dir: Path, tmp_path: Path
) -> None:
    control, candidate = digit_models
    push(stack, control)
    xml = tmp_path / "r.xml"
    result = run("--control", "digits:1.0", "--candidate", str(candidate.path), "--source", str(frames_dir),
                 "--gate", "agreement>=0.99", "--junit", str(xml), "--url", stack.url, "--token", stack.token)
    assert result.exit_code == 1, result.output  # the candidate is weak on one class
    (message,) = junit(xml).values()
    assert message is not None and message.startswith("agreement>=0.99 breached: agreement 0.")
