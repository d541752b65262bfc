"""A controller whose webhook worker may call loopback receivers, retries fast and polls often."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import Stack, start_stack

SETTINGS = """[controller]
webhook_allow_loopback = true
webhook_poll_s = 0.1
webhook_retry_base_s = 0.2
webhook_retry_max_s = 0.8
webhook_max_attempts = 40
webhook_timeout_s = 1.0
webhook_capture_batch_s = 0.5
webhook_offline_after_s = 0.5
"""


@pytest.fixture
def hook_stack(tmp_path: Path, broker) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    data_dir = tmp_path / "controller"
    data_dir.mkdir()
    (data_dir / "controller.toml").write_text(SETTINGS)
    s = start_stack(data_dir, broker)
    yield s
    s.stop()
