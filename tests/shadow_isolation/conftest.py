"""Shared helpers: real digit models unpacked as runners, a finite camera, thread read-backs."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgefleet.edge_agent.runner import Inference, ModelRunner
from edgefleet.edge_agent.sources import SyntheticDigits
from edgefleet.protocols import ModelRef


def make_runner(model: Any, tmp: Path, cls: type[ModelRunner] = ModelRunner, **backend_options: Any) -> ModelRunner:
    m = model.manifest
    d = tmp / f"{m.name}-{m.version}-{cls.__name__}-{len(list(tmp.iterdir())) if tmp.exists() else 0}"
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(model.path, d / m.model_file)
    digest = hashlib.sha256(model.path.read_bytes()).hexdigest()
    return cls.load(ModelRef(name=m.name, version=m.version, digest=digest), m, d, **backend_options)


class GatedRunner(ModelRunner):
    """The real candidate, held at a gate: a shadow model that cannot keep up at all."""

    gate: threading.Event

    def predict(self, frame: Any) -> Inference:
        self.gate.wait()
        return super().predict(frame)


class FiniteDigits:
    """The synthetic camera, ``n`` frames and then the end of the stream."""

    def __init__(self, n: int, seed: int = 3):
        self.n = n
        self.inner = SyntheticDigits(seed=seed)
        self.timestamps: list[float] = []

    def frames(self) -> Iterator[tuple[float, np.ndarray]]:
        for i, (ts, frame) in enumerate(self.inner.frames()):
            if i >= self.n:
                return
            self.timestamps.append(ts)
            yield ts, frame

    def close(self) -> None:
        self.inner.close()


def task_stat(tid: int) -> dict[str, int]:
    """Fields of /proc/self/task/<tid>/stat the scheduler keeps (proc(5)): nice, policy, processor."""
    text = Path(f"/proc/{os.getpid()}/task/{tid}/stat").read_text()
    rest = text.rsplit(")", 1)[1].split()  # field 3 (state) is rest[0]
    return {"nice": int(rest[19 - 3]), "policy": int(rest[41 - 3]), "processor": int(rest[39 - 3])}
