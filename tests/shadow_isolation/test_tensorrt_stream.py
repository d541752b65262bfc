"""CUDA stream priorities for the TensorRT backend (control: most urgent, shadow: least).

TensorRT and a CUDA device are absent here, so this pins only the call made to pycuda's
``Stream`` — the priority values and the fallback for a pycuda whose ``Stream`` takes only
``flags`` — with a small stand-in for the ``pycuda.driver`` module. The real stream is
exercised only on a Jetson/GPU.
"""

from __future__ import annotations

from typing import Any

from edgefleet.hardware.backends.tensorrt_backend import STREAM_PRIORITIES, make_stream


class PriorityStream:
    def __init__(self, flags: int = 0, priority: int = 0):
        self.flags, self.priority = flags, priority


class FlagsOnlyStream:
    def __init__(self, flags: int = 0):
        self.flags = flags


class Driver:
    def __init__(self, stream: type) -> None:
        self.Stream = stream


def test_control_asks_for_the_most_urgent_stream_and_shadow_for_the_least() -> None:
    cuda: Any = Driver(PriorityStream)
    high, hv = make_stream(cuda, "high")
    low, lv = make_stream(cuda, "low")
    assert hv == STREAM_PRIORITIES["high"] < lv == STREAM_PRIORITIES["low"] == 0  # lower is more urgent
    assert high.priority == hv and low.priority == lv


def test_a_pycuda_without_stream_priorities_falls_back_to_a_default_stream() -> None:
    cuda: Any = Driver(FlagsOnlyStream)
    stream, value = make_stream(cuda, "low")
    assert isinstance(stream, FlagsOnlyStream) and value is None
    stream, value = make_stream(cuda, None)
    assert value is None
