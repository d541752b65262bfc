"""The shadow slot's ONNX Runtime session: 1 intra-op and 1 inter-op thread, sequential, no
spinning — read back from the options the live session holds; the control session keeps its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort
import pytest

from edgefleet.hardware.backends import OnnxRuntimeBackend
from edgefleet.hardware.backends.onnxruntime_backend import SPINNING_KEYS

from .conftest import make_runner


def _entry(opts: ort.SessionOptions, key: str) -> str | None:
    try:
        return opts.get_session_config_entry(key)
    except Exception:  # ORT raises when the key was never set
        return None


def test_the_shadow_session_is_single_threaded_sequential_and_does_not_spin(digit_models: Any, tmp_path: Path) -> None:
    _, candidate = digit_models
    runner = make_runner(candidate, tmp_path, threads=4, background=True)
    backend = runner.backend
    assert isinstance(backend, OnnxRuntimeBackend) and backend.background
    opts = backend.session_options
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    for key in SPINNING_KEYS:
        assert _entry(opts, key) == "0", key
    runner.prepare()  # and it still runs
    runner.close()


def test_spinning_can_be_turned_back_on_by_config(digit_models: Any, tmp_path: Path) -> None:
    _, candidate = digit_models
    runner = make_runner(candidate, tmp_path, background=True, allow_spinning=True)
    assert _entry(runner.backend.session_options, "session.intra_op.allow_spinning") == "1"  # type: ignore[attr-defined]
    runner.close()


@pytest.mark.parametrize("threads", [1, 2])
def test_the_control_session_keeps_its_threads_and_ort_defaults(digit_models: Any, tmp_path: Path, threads: int) -> None:
    control, _ = digit_models
    runner = make_runner(control, tmp_path, threads=threads)
    opts = runner.backend.session_options  # type: ignore[attr-defined]
    assert not runner.backend.background  # type: ignore[attr-defined]
    assert opts.intra_op_num_threads == threads
    assert _entry(opts, "session.intra_op.allow_spinning") in (None, "")
    runner.close()
