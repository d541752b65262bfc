"""The device side of the trust core works without any cloud-only dependency.

The child process makes every cloud-only package unimportable (as on a device that
installed ``edgefleet[edge]``), then imports the device modules and runs the conformance
CLI's help. securesystemslib probes boto3 optionally on its own; that is not ours.
"""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("boto3", "botocore", "fastapi", "starlette", "onnx", "mlflow", "evidently", "sqlmodel")


def test_device_side_trust_modules_import_without_cloud_dependencies() -> None:
    code = (
        "import sys\n"
        f"for m in {FORBIDDEN!r}: sys.modules[m] = None\n"
        "import edgefleet.registry.tuf.verify, edgefleet.registry.tuf.fetcher\n"
        "import edgefleet.registry.tuf.errors, edgefleet.edge_agent.tuf_client\n"
        "from edgefleet.registry.tuf import DeviceVerifier, provision\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
