"""The serving process's garbage-collector settings (cloud/interpreter.py), each in a fresh
interpreter: freezing and thresholds are process-wide."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgefleet.cloud.errors import CloudError
from edgefleet.cloud.settings import load_settings

_PROBE = """
import gc, json, sys
from edgefleet.cloud.interpreter import tune_gc
before = gc.get_threshold()
keep = [{"built": i} for i in range(1000)]  # what start-up built
after = tune_gc(int(sys.argv[1]))
print(json.dumps({"before": before, "after": after, "now": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def _probe(threshold: int) -> dict[str, list[int] | int]:
    out = subprocess.run([sys.executable, "-c", _PROBE, str(threshold)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def test_tuning_freezes_start_up_and_raises_only_the_young_threshold() -> None:
    got = _probe(20_000)
    assert got["after"] == got["now"] == [20_000, *got["before"][1:]]  # type: ignore[index]
    assert got["frozen"] >= 1000  # start-up's objects are out of every later collection


def test_zero_keeps_pythons_own_collector() -> None:
    got = _probe(0)
    assert got["after"] == got["before"] == got["now"]
    assert got["frozen"] == 0


def test_the_setting_comes_from_the_file_or_the_environment_and_is_validated(tmp_path: Path) -> None:
    assert load_settings(tmp_path, env={}).gc_gen0_threshold == 20_000
    assert load_settings(tmp_path, env={"EDGEFLEET_GC_GEN0_THRESHOLD": "0"}).gc_gen0_threshold == 0
    (tmp_path / "controller.toml").write_text("[controller]\ngc_gen0_threshold = 50000\n")
    assert load_settings(tmp_path, env={}).gc_gen0_threshold == 50_000
    with pytest.raises(CloudError, match="gc_gen0_threshold"):
        load_settings(tmp_path, env={"EDGEFLEET_GC_GEN0_THRESHOLD": "-5"})
