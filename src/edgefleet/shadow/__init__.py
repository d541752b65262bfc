"""Shadow mode, pure logic: compare control and candidate, decide what to capture, count.

Data flow on a device::

    frame ─▶ preprocess ─▶ control model ─▶ decode ─▶ application
      │                 └▶ candidate model (async) ─▶ decode ─┐
      │                                                       ▼
      └▶ ClipRecorder (FrameRing)   ◀── capture? ── ShadowMonitor: compare ▶ triggers ▶ budget ▶ stats
                │
                └▶ encode_clip / encode_keyframe / build_event ─▶ outbox (edge_agent)

Imports only ``edgefleet.protocols`` (plus numpy and OpenCV); no network, no clock.
"""

from .budget import Admission, CaptureBudget, frame_signature, signature_distance
from .clip import (
    CODECS,
    ClipInfo,
    ClipRecorder,
    ClipRequest,
    Codec,
    ReadyClip,
    available_codecs,
    codec_works,
    encode_clip,
    encode_keyframe,
)
from .compare import (
    NONE_LABEL,
    ClassificationComparator,
    Comparator,
    Comparison,
    DetectionComparator,
    RegressionComparator,
    comparator_for,
    iou,
    total_variation,
)
from .errors import ClipEncodeError, OutputDecodeError, PreprocessError, ShadowError, SourceError
from .monitor import Observation, ShadowMonitor
from .prediction import Box, Prediction, decode, softmax
from .preprocess import Preprocessor, make_preprocessor, preprocess
from .record import EVENT_MAX_BYTES, build_event
from .replay import ReplayDisagreement, ReplayReport, format_report, iter_frames, replay
from .ringbuffer import FrameRing
from .stats import (
    AgreementStats,
    ConfidenceHistogram,
    LatencyRecorder,
    merge_into_wire,
    merge_shadow_stats,
)
from .triggers import (
    DISAGREEMENT,
    LOW_CONFIDENCE,
    NEAR_THRESHOLD,
    PRIORITY,
    SAMPLE,
    Trigger,
    TriggerPolicy,
)

__all__ = [
    "CODECS", "DISAGREEMENT", "EVENT_MAX_BYTES", "LOW_CONFIDENCE", "NEAR_THRESHOLD", "NONE_LABEL",
    "PRIORITY", "SAMPLE",
    "Admission", "AgreementStats", "Box", "CaptureBudget", "ClassificationComparator", "ClipEncodeError",
    "ClipInfo", "ClipRecorder", "ClipRequest", "Codec", "Comparator", "Comparison",
    "ConfidenceHistogram", "DetectionComparator", "FrameRing", "LatencyRecorder", "Observation",
    "OutputDecodeError", "Prediction", "PreprocessError", "Preprocessor", "ReadyClip",
    "RegressionComparator", "ReplayDisagreement", "ReplayReport", "ShadowError", "ShadowMonitor",
    "SourceError", "Trigger", "TriggerPolicy",
    "available_codecs", "codec_works", "build_event", "comparator_for", "decode", "encode_clip", "encode_keyframe",
    "format_report", "frame_signature", "iou", "iter_frames", "make_preprocessor",
    "merge_into_wire", "merge_shadow_stats", "preprocess", "replay", "signature_distance", "softmax", "total_variation",
]
