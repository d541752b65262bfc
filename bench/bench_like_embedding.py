"""Benchmark: ``--like`` on a manifest-named embedding against ``--like`` on class scores.

The demo's digits classifier gets a second output ``features`` [N, DIM] (its hidden layer
through a fixed, seeded linear map) and watches the synthetic digits camera, whose ground
truth is known per frame. A confident reference frame of each class goes through the whole
path: the agent's event record (float16 base64), the controller's ``like`` built from that
stored record, the campaign spec as a device gets it, and the device's ``Campaigns.match``
over the stream. Printed per campaign: captures, precision (captured frames of the
reference's class), recall within that class, side by side for the embedding (cosine and l2)
and for the scores vector; and the wire sizes of the reference (compact vs a JSON list).

    python bench/bench_like_embedding.py [--frames 3000] [--dim 100]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgefleet.cloud.demo.train import train_digit_models  # noqa: E402
from edgefleet.edge_agent.campaigns import Campaigns, embedding  # noqa: E402
from edgefleet.edge_agent.runner import ModelRunner  # noqa: E402
from edgefleet.edge_agent.sources import SyntheticDigits  # noqa: E402
from edgefleet.protocols import Embedding, ModelRef, parse_manifest  # noqa: E402
from edgefleet.protocols.campaigns import CampaignSpec, Like  # noqa: E402
from edgefleet.protocols.embedding import pack  # noqa: E402


def with_features(onnx_bytes: bytes, dim: int, seed: int = 5) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    w = np.random.default_rng(seed).normal(0.0, 1.0 / np.sqrt(32), (32, dim)).astype(np.float32)
    model.graph.initializer.append(numpy_helper.from_array(w, "W_features"))
    model.graph.node.append(helper.make_node("MatMul", ["hr", "W_features"], ["features"]))
    model.graph.output.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, dim]))
    return model.SerializeToString()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=3000)
    ap.add_argument("--dim", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        control, _ = train_digit_models(tmp / "models")
        data = with_features(control.path.read_bytes(), args.dim)
        m = parse_manifest({**control.manifest.model_dump(mode="json", by_alias=True), "schema": "fleet.manifest/2",
                            "embedding": {"output": "features", "dim": args.dim}})
        d = tmp / "bundle"
        d.mkdir()
        (d / m.model_file).write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        runner = ModelRunner.load(ModelRef(name=m.name, version=m.version, digest=digest), m, d)
        source = SyntheticDigits(seed=11)
        labels, preds = [], []
        for _, (_, frame) in zip(range(args.frames), source.frames()):
            labels.append(source.current_label)
            preds.append(runner.predict(frame).prediction)
        shutil.rmtree(d)
    rows = []
    sizes = None
    for cls in range(10):
        ref = next((p for lab, p in zip(labels, preds) if lab == cls and p.label == str(cls) and (p.score or 0) > 0.95),
                   None)
        if ref is None:
            continue
        emb = embedding(ref)
        assert emb is not None
        # the record's compact embedding, read back as the controller does from the stored JSON
        stored = Embedding.model_validate_json(pack(emb.tolist(), output="features", model_digest=digest).model_dump_json())
        scores = pack(embedding(ref, 10).tolist(), dtype="float32")  # type: ignore[union-attr]
        if sizes is None:
            sizes = (len(stored.model_dump_json()), len(json.dumps([round(float(v), 7) for v in emb])))
        for name, like in (("emb cosine 0.05", Like(embedding=stored, threshold=0.05)),
                           ("emb l2 5.0", Like(embedding=stored, threshold=5.0, metric="l2")),
                           ("scores cos 0.02", Like(embedding=scores, threshold=0.02))):
            spec = CampaignSpec.model_validate_json(CampaignSpec(name="c", like=like, per_device_quota=10**6,
                                                                 max_per_minute=6000).model_dump_json())
            campaigns = Campaigns(None)
            campaigns.update([spec])
            hits = [i for i, p in enumerate(preds)
                    if campaigns.match(p, None, None, now=float(i), control_digest=digest)[0] is not None]
            good = sum(labels[i] == cls for i in hits)
            rows.append((cls, name, len(hits), good / max(1, len(hits)), good / max(1, labels.count(cls))))
    print(f"{'class':>5} {'campaign':<16} {'captured':>8} {'precision':>9} {'recall':>7}")
    for cls, name, n, prec, rec in rows:
        print(f"{cls:>5} {name:<16} {n:>8} {prec:>9.3f} {rec:>7.3f}")
    for name in ("emb cosine 0.05", "emb l2 5.0", "scores cos 0.02"):
        mine = [r for r in rows if r[1] == name]
        n = sum(r[2] for r in mine)
        prec = sum(r[3] * r[2] for r in mine) / max(1, n)
        print(f"all   {name:<16} {n:>8} {prec:>9.3f} {np.mean([r[4] for r in mine]):>7.3f}")
    if sizes:
        print(f"reference on the wire, {args.dim} values: compact {sizes[0]} bytes, JSON list {sizes[1]} bytes")


if __name__ == "__main__":
    main()
