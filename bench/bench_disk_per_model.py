"""Disk per kept model ÷ model size on the device, the old layout against the current one.

    python bench/bench_disk_per_model.py [--mb 160] [--versions 2]

Builds ``--versions`` real model bundles (an ONNX graph with a ``--mb`` MB weight, the
bundle tar as the controller serves it), then installs each the way the agent does:

* today (before issue 13): the verified tar is kept in ``downloads/`` and unpacked
  beside it into ``bundles/<digest>/`` — every kept model on disk twice;
* now: ``Updater._stage`` — unpacked into ``bundles/<digest>/`` with a digest record, the
  tar deleted; ``Updater.gc`` keeps the installed model and the last known good.

Disk is measured as allocated blocks (``st_blocks``) under the data dir. Goal: now <= 1.1.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from edgefleet.edge_agent.state import AgentState, InstalledModel, StateStore
from edgefleet.edge_agent.updater import Updater
from edgefleet.protocols import Manifest, SlotTarget, TensorSpec
from edgefleet.registry.bundle import build_bundle, unpack_bundle
from edgefleet.registry.tuf import DeviceVerifier


def _onnx(mb: int, seed: int) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    n = mb * 1024 * 1024 // 4
    weight = np.random.default_rng(seed).standard_normal(n, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Add", ["input", "w"], ["output"])], "padded",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [n])],
        initializer=[numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


def _disk(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
    return total


def _updater(data: Path) -> Updater:
    store = StateStore(data)
    verifier = DeviceVerifier("bench", "cpu", data / "trust", "http://127.0.0.1:9/", "http://127.0.0.1:9/",
                              "http://127.0.0.1:9/")
    return Updater(device_id="bench", data_dir=data, state=AgentState(), store=store, pipeline=None,  # type: ignore[arg-type]
                   report=lambda: None, verifier=verifier)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=160, help="model size in MB")
    ap.add_argument("--versions", type=int, default=2, help="versions kept (installed + last known good)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-disk-") as tmp:
        root = Path(tmp)
        bundles: list[tuple[bytes, SlotTarget, int]] = []
        for i in range(args.versions):
            model = _onnx(args.mb, i)
            manifest = Manifest(name="padded", version=f"{i + 1}.0", task="regression",
                                input=TensorSpec(name="input", shape=[len(model)], layout="other"))
            data = build_bundle(manifest, model)
            digest = hashlib.sha256(data).hexdigest()
            target = SlotTarget(name="padded", version=f"{i + 1}.0", digest=digest, size=len(data), path="x")
            bundles.append((data, target, len(model)))
        model_bytes = sum(m for _, _, m in bundles)

        today = root / "today"
        for data, target, _ in bundles:
            tar = today / "downloads" / f"{target.digest}.bundle"
            tar.parent.mkdir(parents=True, exist_ok=True)
            tar.write_bytes(data)
            unpack_bundle(tar, today / "bundles" / target.digest)  # the old _stage: the tar stays
        today_ratio = _disk(today) / model_bytes

        now = root / "now"
        updater = _updater(now)
        for data, target, _ in bundles:
            tar = now / "downloads" / f"{target.digest}.bundle"
            tar.parent.mkdir(parents=True, exist_ok=True)
            tar.write_bytes(data)  # where the verified download lands
            updater._stage(tar, target)
        s = updater.state.slot("control")
        last, prev = bundles[-1][1], bundles[-2][1] if len(bundles) > 1 else None
        s.installed = InstalledModel(name=last.name, version=last.version, digest=last.digest)
        if prev is not None:
            s.last_known_good = InstalledModel(name=prev.name, version=prev.version, digest=prev.digest)
        updater.gc()
        now_bytes = _disk(now / "bundles") + _disk(now / "downloads")
        now_ratio = now_bytes / model_bytes

    print(f"{args.versions} kept versions of a {args.mb} MB model ({model_bytes / 1e6:.0f} MB of model bytes)")
    print(f"today (tar + unpacked copy): {today_ratio:.3f} x model size per kept model")
    print(f"now (unpacked once + record): {now_ratio:.3f} x model size per kept model  (goal <= 1.1)")
    print(f"ratio now / today: {now_ratio / today_ratio:.3f}")


if __name__ == "__main__":
    main()
