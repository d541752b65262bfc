"""``fleet demo --loop``: the improvement loop in one command, driven through the public API.

Steps (each prints what it did), on the demo's real stack (broker, controller, agents):

1. **find** — control v1 and candidate v2 run as in ``fleet demo``; shadow telemetry gives
   the per-class disagreement; the weak class is the one with the highest rate.
2. **collect** — a capture campaign (``label == "<weak>"``, frames only) collects that class.
3. **label** — the *oracle reviewer: synthetic camera ground truth* labels each capture:
   the synthetic camera shows images of the bundled digits set, so the oracle finds the
   image a keyframe shows (nearest of the 1,797, after the model's own 8×8 preprocessing)
   and posts its label as ``corrected_label`` through the review API.
4. **export** — ``GET /review/export?format=imagefolder`` of the campaign's captures.
5. **retrain** — scikit-learn, as ``demo/train.py``: the candidate's old training set plus
   the exported images, as candidate v3.
6. **gate** — an offline replay of v3 against the control on held-out digits, judged with
   ``agreement>=0.97`` (``cloud.replay_gate``); a breach stops the loop.
7. **push** — through MLflow (``registry.mlflow_import``) when MLflow is installed, else
   directly; v3 goes to the shadow slot and its disagreement on the weak class is measured.
8. **promote** — a gated rollout of v3 to the control slot (``agreement>=0.97``).

The last line: the weak class's disagreement before and after, captures uploaded ÷ frames
seen (over the campaign), and the time from finding to promotion.
"""

from __future__ import annotations

import io
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..client import ApiError
from .orchestrator import Demo, DemoError, Totals
from .train import _manifest, _to_onnx

ORACLE = "oracle reviewer: synthetic camera ground truth"
GATE = "agreement>=0.97"


@dataclass(frozen=True)
class LoopSizes:
    """How big each step is (small ones for tests)."""

    find_s: float = 30.0      # shadow time to find the weak class
    quota: int = 300          # captures the campaign collects (the camera holds each digit 3 frames: ~1/3 distinct)
    per_minute: int = 300     # campaign captures per device and minute
    measure_s: float = 30.0   # shadow time to measure the new candidate
    soak: str = "5s"          # soak per promotion wave
    waves: str = "50,100"     # promotion waves (percent of the fleet)
    promote_gate: str = GATE  # the promotion rollout's gate (tests with tiny quotas may loosen it)
    replay_gate: str = GATE   # the replay gate before the push (the same: 90 captures land near 0.97)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target


def to_features(img: np.ndarray) -> np.ndarray:
    """An image the camera filmed (BGR or gray, any size) → the models' 8×8 input in 0..1."""
    import cv2

    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(img, (8, 8), interpolation=cv2.INTER_AREA)
    return (small.astype(np.float32) / 255.0).reshape(8, 8)


class Oracle:
    """The synthetic camera's ground truth: which bundled digit image a frame shows."""

    def __init__(self) -> None:
        self.images, self.labels = _digits()
        self.flat = self.images.reshape(len(self.images), -1)

    def label_of(self, img: np.ndarray) -> str:
        x = to_features(img).reshape(1, -1)
        return str(int(self.labels[int(np.argmin(((self.flat - x) ** 2).sum(axis=1)))]))


def retrain(out: Path, extra_x: np.ndarray, extra_y: np.ndarray, *, seed: int = 0, weak_class: int = 8,
            keep_fraction: float = 0.04, version: str = "3.0") -> tuple[Path, Any, dict[str, float]]:
    """The candidate's training set (as ``train_digit_models`` draws it) plus ``extra``; → v3."""
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    images, y = _digits()
    x = images.reshape(-1, 1, 8, 8)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
    rng = np.random.default_rng(seed)
    weak = np.flatnonzero(y_train == weak_class)
    drop = rng.choice(weak, size=len(weak) - max(1, int(len(weak) * keep_fraction)), replace=False)
    keep = np.setdiff1d(np.arange(len(y_train)), drop)
    # class balance: a class the old set lacks gets its few captures repeated up to a typical class's count
    typical = int(np.median(np.bincount(y_train[keep], minlength=10)))
    have = np.bincount(y_train[keep], minlength=10)
    reps = np.array([max(1, -(-(typical - have[c]) // max(1, int(np.sum(extra_y == c))))) for c in extra_y], dtype=int)
    extra_x = np.repeat(extra_x.reshape(len(extra_x), -1), reps, axis=0)
    extra_y = np.repeat(extra_y, reps)
    fx = np.concatenate([x_train[keep].reshape(len(keep), -1), extra_x])
    fy = np.concatenate([y_train[keep], extra_y])
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=600, random_state=seed)
    clf.fit(fx, fy)
    flat_test = x_test.reshape(len(x_test), -1)
    pred = clf.predict(flat_test)
    per_class = {str(c): float(np.mean(pred[y_test == c] == c)) for c in range(10)}
    path = out / f"candidate-{version}.onnx"
    _to_onnx(clf.coefs_, clf.intercepts_, path)
    provenance = {"trainer": "scikit-learn MLPClassifier(32)", "dataset": "sklearn.datasets.load_digits",
                  "train_examples": int(len(fy)), "exported_captures": int(len(reps)),
                  "labelled_by": ORACLE}
    manifest = _manifest("digits", version, x_test, clf.predict_proba(flat_test[:3]), provenance)
    return path, manifest, per_class


def _session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    from ...shadow.replay import NamedModel

    return NamedModel(lambda x: s.run(None, {name: x}), tuple(o.name for o in s.get_outputs()))


def replay_frames(seed: int = 0) -> list[np.ndarray]:
    """Held-out digits rendered as the camera films them (64×64 BGR)."""
    from sklearn.model_selection import train_test_split

    images, y = _digits()
    _, x_test, _, _ = train_test_split(images, y, test_size=0.3, random_state=seed, stratify=y)
    out = []
    for img in x_test:
        big = np.kron(img * 255.0, np.ones((8, 8), dtype=np.float32))
        gray = np.clip(big, 0, 255).astype(np.uint8)
        out.append(np.repeat(gray[:, :, None], 3, axis=2))
    return out


class DemoLoop(Demo):
    def __init__(self, *, sizes: LoopSizes = LoopSizes(), **kwargs: Any):
        super().__init__(**kwargs)
        self.sizes = sizes
        self.duration = sizes.find_s
        self.ui = False
        self.figures: dict[str, Any] = {}
        self._t0 = time.monotonic()

    def say(self, text: str) -> None:
        """Each step's line carries the seconds since the loop began."""
        super().say(f"[{time.monotonic() - self._t0:6.1f}s] {text}")

    def run(self) -> int:
        t0 = self._t0 = time.monotonic()
        try:
            self._start_everything()
            self._deploy_and_watch(time.monotonic())
            code, line = self._loop(t0)
        finally:
            self._shutdown()
        Demo.say(self, line)  # the last line, unprefixed, after everything has stopped
        return code

    def _loop(self, t0: float) -> tuple[int, str]:
        assert self.client
        weak, before = self._find()
        found = time.monotonic()
        captures, frames = self._collect(weak)
        self._label(captures)
        x, y = self._export()
        path, manifest, per_class = retrain(self.workdir / "models", x, y, weak_class=int(weak))
        self.say(f"loop: retrained candidate {manifest.label} on the old training set + {len(y)} exported "
                 f"captures, the new class's captures repeated to a typical class's count (held-out class {weak} accuracy {per_class[weak]:.0%})")
        self._gate(path, manifest)
        self._push(path, manifest)
        after = self._measure(manifest.label, weak)
        self._promote(manifest.label)
        promoted = time.monotonic()
        ratio = after / before if before else float("nan")
        self.figures = {"weak": weak, "before": before, "after": after, "ratio": ratio, "captures": len(captures),
                        "frames": frames, "find_to_promote_s": promoted - found, "wall_s": promoted - t0}
        line = (f"loop: ok class {weak} disagreement {before:.1%} -> {after:.1%} (after/before {ratio:.2f}); "
                f"captures uploaded / frames seen {len(captures)}/{frames} = {len(captures) / max(frames, 1):.4f}; "
                f"finding to promotion {promoted - found:.0f}s (wall {promoted - t0:.0f}s)")
        return 0, line

    # ----- steps -----

    def _find(self) -> tuple[str, float]:
        tot = self.totals
        classes = [c for c in tot.per_class_compared if tot.per_class_compared[c] >= 5]
        if not classes or not tot.disagreements:
            raise DemoError("shadow found no disagreement to work on; run longer (--loop-find)")
        weak = max(classes, key=tot.rate)
        self.say(f"loop: find — shadow says class {weak} is the candidate's weak class: disagreement "
                 f"{tot.rate(weak):.1%} over {tot.per_class_compared[weak]} frames (overall "
                 f"{tot.disagreements / max(tot.shadow_frames, 1):.1%})")
        return weak, tot.rate(weak)

    def _collect(self, weak: str) -> tuple[list[dict[str, Any]], int]:
        """Run the campaign; returns the uploaded captures and the frames the fleet saw meanwhile."""
        assert self.client
        name = f"weak-class-{weak}"
        when = f'label == "{weak}"'
        self.client.start_campaign({"name": name, "when": when, "quota": self.sizes.quota, "frames_only": True,
                                    "max_per_minute": self.sizes.per_minute})
        self.say(f"loop: collect — campaign {name} started: --when '{when}' quota {self.sizes.quota}, "
                 f"frames only, at most {self.sizes.per_minute}/min per device")
        seen = Totals()
        seen.fold(self.client.list_devices())
        seen = Totals(seen=dict(seen.seen))  # count only telemetry periods from now on
        deadline = time.monotonic() + 60 + self.sizes.quota
        while time.monotonic() < deadline and not self.stop_requested.is_set():
            seen.fold(self.client.list_devices())
            st = self.client.campaign(name)
            if st["state"] != "running":
                break
            self._check_agents()
            time.sleep(0.5)
        items: list[dict[str, Any]] = []
        deadline = time.monotonic() + 20  # the last captures are on their way
        while time.monotonic() < deadline:
            q = self.client.review_queue(trigger="campaign", limit=1000)
            items = [i for i in q["items"] if i.get("clip_id")]
            if len(items) >= min(self.sizes.quota, st["captured"]):
                break
            seen.fold(self.client.list_devices())
            time.sleep(0.5)
        self.say(f"loop: collect — campaign {st['state']}: {st['captured']} captures counted, "
                 f"{len(items)} uploaded with a frame")
        if not items:
            raise DemoError("the campaign collected no captures")
        return items, seen.frames

    def _label(self, items: list[dict[str, Any]]) -> None:
        assert self.client
        import cv2

        oracle = Oracle()
        verdicts: dict[str, int] = {}
        for item in items:
            jpeg = self.client.clip_keyframe(item["clip_id"])
            img = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
            if img is None:
                continue
            truth = oracle.label_of(img)
            ctl = (item.get("control") or {}).get("label")
            cand = (item.get("candidate") or {}).get("label")
            verdict = "control_right" if truth == ctl else "candidate_right" if truth == cand else "both_wrong"
            self.client.review_label(item["event_id"], verdict, device_id=item["device_id"], corrected_label=truth,
                                     note=ORACLE)
            verdicts[verdict] = verdicts.get(verdict, 0) + 1
        self.say(f"loop: label — {ORACLE} labelled {sum(verdicts.values())} captures: "
                 + ", ".join(f"{k}={v}" for k, v in sorted(verdicts.items())))

    def _export(self) -> tuple[np.ndarray, np.ndarray]:
        assert self.client
        import cv2

        buf = io.BytesIO()
        n = self.client.review_export(buf, format="imagefolder", trigger="campaign")
        xs, ys = [], []
        with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
            for info in z.infolist():
                parts = info.filename.split("/")
                if len(parts) != 2 or not parts[1].endswith(".png") or not parts[0].isdigit():
                    continue
                img = cv2.imdecode(np.frombuffer(z.read(info), dtype=np.uint8), cv2.IMREAD_COLOR)
                if img is not None:
                    xs.append(to_features(img))
                    ys.append(int(parts[0]))
        self.say(f"loop: export — imagefolder export of {n} labels: {len(ys)} images")
        if not ys:
            raise DemoError("the training export has no images")
        return np.stack(xs), np.array(ys)

    def _gate(self, path: Path, manifest: Any) -> None:
        from ...shadow import replay
        from .. import replay_gate

        report = replay(replay_frames(), _session(self.control.path), _session(path), self.control.manifest, manifest)
        results = replay_gate.judge_replay(report, replay_gate.parse_replay_gates([self.sizes.replay_gate]))
        figure = ", ".join(f"{r.gate} {r.status} ({'-' if r.value is None else f'{r.value:.3f}'})" for r in results)
        self.say(f"loop: gate — replay of {manifest.label} against {self.control.manifest.label} on "
                 f"{report.frames} held-out frames: {figure}")
        if not replay_gate.all_passed(results):
            raise DemoError(f"the replay gate stopped {manifest.label}: {figure}")

    def _push(self, path: Path, manifest: Any) -> None:
        assert self.client
        body = manifest.model_dump(mode="json", by_alias=True)
        via = "directly (MLflow is not installed)"
        try:
            import mlflow  # noqa: F401
        except ImportError:
            mv = self.client.push_model(path, name=manifest.name, version=manifest.version, manifest=body)
        else:
            imported = self._through_mlflow(path)
            via = f"through MLflow (run {imported.run_id})"
            mv = self.client.push_model(imported.onnx_path, name=manifest.name, version=manifest.version,
                                        manifest=body, provenance=imported.provenance)
        self.say(f"loop: push — {mv['name']}:{mv['version']} sha256:{mv['digest'][:16]}… pushed {via}")
        self.client.deploy(manifest.label, "shadow", None)
        self._wait_slot("shadow", manifest.label, 120)
        self.say(f"loop: push — {manifest.label} running in shadow on every device")

    def _through_mlflow(self, path: Path) -> Any:
        import os

        import mlflow

        from ...registry.mlflow_import import import_from_mlflow

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        root = self.workdir / "mlflow"
        root.mkdir(exist_ok=True)
        uri = f"sqlite:///{root}/mlflow.db"
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(uri)
        try:
            exp = mlflow.create_experiment(f"edgefleet-loop-{int(time.time())}", artifact_location=(root / "artifacts").as_uri())
            with mlflow.start_run(experiment_id=exp) as run:
                mlflow.log_artifact(str(path), artifact_path="exported")
        finally:
            mlflow.set_tracking_uri(previous)
        return import_from_mlflow(f"runs:/{run.info.run_id}/exported/{path.name}", tracking_uri=uri,
                                  dest_dir=root / "import")

    def _measure(self, label: str, weak: str) -> float:
        assert self.client
        time.sleep(5)  # two telemetry periods: the periods folded next compare with the new candidate
        tot = Totals()
        tot.fold(self.client.list_devices())
        tot = Totals(seen=dict(tot.seen))
        end = time.monotonic() + self.sizes.measure_s
        while (time.monotonic() < end or tot.per_class_compared.get(weak, 0) < 10) and not self.stop_requested.is_set():
            if time.monotonic() > end + 60:
                break
            time.sleep(1)
            tot.fold(self.client.list_devices())
            self._check_agents()
        agreement = 1 - tot.disagreements / max(tot.shadow_frames, 1)
        self.say(f"loop: shadow — {label}: class {weak} disagreement {tot.rate(weak):.1%} over "
                 f"{tot.per_class_compared.get(weak, 0)} frames; agreement {agreement:.1%} over {tot.shadow_frames} frames")
        return tot.rate(weak)

    def _promote(self, label: str) -> None:
        assert self.client
        r = self.client.start_rollout(label, slot="control", waves=self.sizes.waves, soak=self.sizes.soak, gates=[self.sizes.promote_gate])
        rid = r["id"]
        self.say(f"loop: promote — rollout {rid} of {label} to the control slot, waves {self.sizes.waves} (%), soak {self.sizes.soak}, gate {self.sizes.promote_gate}")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not self.stop_requested.is_set():
            st = self.client.rollout_status(rid, devices=False, events=0)
            if st["state"] == "completed":
                devices = self._wait_slot("control", label, 60)
                self.say(f"loop: promote — rollout {rid} completed: {label} is the control model on "
                         f"{len(devices)}/{self.agents} devices")
                return
            if st["state"] in ("rolled_back", "aborted", "superseded", "breached", "paused"):
                waves = "; ".join(f"wave {w['index']}: {w['outcome']} agreement={w['figures']['agreement']} "
                                  f"frames={w['figures']['frames']} counts={w['counts']}" for w in st["waves"])
                raise DemoError(f"rollout {rid} ended {st['state']}: {st.get('reason')} breach={st.get('breach')} {waves}")
            self._check_agents()
            time.sleep(0.5)
        raise DemoError(f"rollout {rid} did not complete in time")


__all__ = ["DemoLoop", "LoopSizes", "ORACLE", "Oracle", "retrain", "ApiError"]
