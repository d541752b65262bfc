from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import ControllerUnderTest, start_controller


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[ControllerUnderTest]:
    c = start_controller(tmp_path / "controller")
    yield c
    c.stop()
