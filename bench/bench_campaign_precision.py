"""Benchmark: capture precision of campaigns, and bytes uploaded ÷ raw stream during one.

The real control model (the demo's digits classifier, ONNX Runtime) watches the synthetic
digits camera; its ground truth (the digit shown) is known for every frame. Three campaigns
run on the device's real capture path (``Capture`` + ``Campaigns`` + ``Outbox``, VP8 clips
and JPEG keyframes), simulated time (nothing sleeps):

* ``threes``: ``--when 'label == "3" and confidence >= 0.9'`` — precision: the fraction of
  captured frames whose ground truth is 3;
* ``left-turns``: ``--when 'context.steering_deg < -20'`` with the application sending a
  steering signal that is a left turn on a known 10 % of frames — precision: captured
  frames that were in a left turn;
* ``like``: ``--like`` a confident 7 with ``--threshold 0.02`` — precision: captured frames
  showing a 7.

Each precision is printed beside the base rate of its class in the same stream (what random
sampling would give). Bytes: everything the outbox would upload (event records, clips,
keyframes) ÷ frames × H·W·3. Goal: precision ≥ 0.95.

    python bench/bench_campaign_precision.py [--frames 3000] [--clip 0.5,0.2]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgefleet.cloud.demo.train import train_digit_models  # noqa: E402
from edgefleet.edge_agent.campaigns import Campaigns, embedding  # noqa: E402
from edgefleet.edge_agent.capture import Capture  # noqa: E402
from edgefleet.edge_agent.outbox import Outbox  # noqa: E402
from edgefleet.edge_agent.runner import ModelRunner  # noqa: E402
from edgefleet.edge_agent.sources import SyntheticDigits  # noqa: E402
from edgefleet.protocols import CapturePolicy, ModelRef  # noqa: E402
from edgefleet.protocols.campaigns import CampaignSpec, Like  # noqa: E402
from edgefleet.protocols.conditions import parse_condition  # noqa: E402

# the standing policy captures nothing (near-threshold off too): every upload is the campaign's
QUIET = CapturePolicy(low_confidence=False, disagreement=False, near_band=0.0, pre_seconds=1.0, post_seconds=0.5)


def spec(name: str, when: str | None, clip: tuple[float, float], like: Like | None = None) -> CampaignSpec:
    cond = parse_condition(when) if when else None
    return CampaignSpec(name=name, condition=cond.to_json() if cond else None, condition_text=when or "", like=like,
                        per_device_quota=100_000, max_per_minute=6000, pre_seconds=clip[0], post_seconds=clip[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=3000)
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--clip", default="0.5,0.2", help="PRE,POST seconds per capture")
    ap.add_argument("--verbose", action="store_true", help="list the captures that miss the ground truth")
    args = ap.parse_args()
    pre, post = (float(x) for x in args.clip.split(","))
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        control_model, _ = train_digit_models(tmp / "models")
        m = control_model.manifest
        d = tmp / "control"
        d.mkdir()
        shutil.copy(control_model.path, d / m.model_file)
        runner = ModelRunner.load(ModelRef(name=m.name, version=m.version,
                                           digest=hashlib.sha256(control_model.path.read_bytes()).hexdigest()), m, d)
        source = SyntheticDigits(seed=11)
        frames, labels, preds = [], [], []
        for i, (ts, frame) in zip(range(args.frames), source.frames()):
            frames.append((i, (ts, frame)))
            labels.append(source.current_label)  # the ground truth of this frame
            preds.append(runner.predict(frame).prediction)
        ref = next(p for lab, p in zip(labels, preds) if lab == 7 and p.label == "7" and (p.score or 0) > 0.95)
        vec = embedding(ref)
        assert vec is not None
        results = {}
        for name, when, like, truth in (
            ("threes", 'label == "3" and confidence >= 0.9', None, lambda i: labels[i] == 3),
            ("left-turns", "context.steering_deg < -20", None, lambda i: i % 10 == 0),
            ("like", None, Like(vector=vec.tolist(), threshold=0.02), lambda i: labels[i] == 7),
        ):
            clock = [1_000_000.0]
            outbox = Outbox(tmp / f"outbox-{name}", max_bytes=2 * 1024**3, min_free_bytes=0)
            capture = Capture("bench", outbox, policy=QUIET, work_dir=tmp / f"work-{name}", clock=lambda c=clock: c[0],
                              fps_hint=args.fps)
            campaigns = Campaigns(None, clock=lambda c=clock: c[0])
            campaigns.update([spec(name, when, (pre, post), like)])
            capture.campaigns = campaigns
            raw = 0
            for i, (_, frame) in frames:
                clock[0] += 1.0 / args.fps
                raw += frame.nbytes
                campaigns.set_context({"steering_deg": -30 if i % 10 == 0 else 3, "frame": i}, ts=clock[0])
                capture.push(clock[0], frame)
                capture.observe(clock[0], frame, runner, preds[i])
                capture.encode_pending()
            for _ in range(int(args.fps * (post + 3))):  # the last clips finish
                clock[0] += 1.0 / args.fps
                capture.push(clock[0], frames[-1][1][1])
                capture.encode_pending()
            items = outbox.pending(limit=1_000_000)
            assert all(it.event.campaign == name for it in items)
            idx = [int((it.event.context or {})["frame"]) for it in items]  # the context stored with it
            uploaded = sum(it.payload_bytes for it in items)
            good = sum(bool(truth(i)) for i in idx)
            if args.verbose:
                print(name, "wrong:", [(i, labels[i], it.event.context) for i, it in zip(idx, items) if not truth(i)])
            base = sum(bool(truth(i)) for i in range(len(frames))) / len(frames)
            results[name] = (len(idx), good / max(1, len(idx)), base, uploaded / raw)
            outbox.close()
    print(f"{'campaign':<12} {'captured':>8} {'precision':>9} {'base rate':>9} {'lift':>6} {'bytes/raw':>10}")
    for name, (n, precision, base, ratio) in results.items():
        print(f"{name:<12} {n:>8} {precision:>9.3f} {base:>9.3f} {precision / max(base, 1e-9):>6.1f} {ratio:>10.4f}")
    worst = min(p for _, p, _, _ in results.values())
    print(f"goal: precision >= 0.95 -> {'met' if worst >= 0.95 else 'NOT met'} (worst {worst:.3f})")


if __name__ == "__main__":
    main()
