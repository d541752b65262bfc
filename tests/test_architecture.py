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


CLOUD_ONLY = ("boto3", "botocore", "fastapi", "starlette", "mlflow", "evidently", "onnx", "sqlmodel", "sqlalchemy", "sklearn", "amqtt")


def test_agent_runs_without_any_cloud_only_dependency() -> None:
    """A device installs edgefleet[edge]: importing the agent must work with none of these present."""
    code = (
        "import sys, importlib.abc\n"
        f"BLOCKED = {CLOUD_ONLY!r}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ImportError(f'{name} is not installed on a device')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import edgefleet.edge_agent.daemon, edgefleet.edge_agent.cli, edgefleet.edge_agent.capture, edgefleet.registry.tuf\n"
        "print(','.join(sorted(m for m in BLOCKED if m in sys.modules)))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "", f"device side imported: {res.stdout.strip()}"
