"""Layering: the import-linter contracts hold, and the device side pulls in no cloud-only package."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold() -> None:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.skip("import-linter is not installed (pip install -e .[dev])")
    res = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_agent_imports_no_cloud_only_dependency() -> None:
    code = (
        "import sys, edgefleet.edge_agent.daemon, edgefleet.edge_agent.cli, edgefleet.registry;"
        "bad = sorted(m for m in ('boto3','fastapi','mlflow','evidently','onnx','sqlmodel','sklearn') if m in sys.modules);"
        "print(','.join(bad))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "", f"device side imported: {res.stdout.strip()}"
