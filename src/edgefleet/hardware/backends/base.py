"""The one interface every inference backend implements.

``load`` (the constructor or ``open_backend``) → ``prepare`` (build engines, warm up) →
``infer`` (many times) → ``close``. Inputs and outputs are numpy arrays keyed by tensor
name; specs describe them so the agent can check a bundle's manifest against the model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class IOSpec:
    name: str
    shape: tuple[int | str | None, ...]
    dtype: str


class InferenceBackend(ABC):
    """A loaded model ready to run on one device."""

    name: str = "abstract"

    @property
    @abstractmethod
    def inputs(self) -> list[IOSpec]: ...

    @property
    @abstractmethod
    def outputs(self) -> list[IOSpec]: ...

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """Build or load engines and warm up; called before the model goes live."""

    @abstractmethod
    def infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one batch; returns the outputs in the model's output order."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sessions, engines and device memory."""

    def __enter__(self) -> InferenceBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
