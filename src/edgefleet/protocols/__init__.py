"""The wire contract: MQTT topics, QoS/retain rules, message schemas and the bundle manifest.

Imports nothing else of edgefleet; both the controller and the agent build on it.
"""

from .embedding import Embedding
from .errors import InvalidPayload, InvalidTopic, PayloadTooLarge, ProtocolError
from .manifest import (
    MANIFEST_FILE,
    MAX_EMBEDDING_DIM,
    MODEL_FILE,
    EmbeddingSpec,
    Manifest,
    Preprocessing,
    TensorSpec,
    TestVector,
    parse_manifest,
)
from .messages import (  # noqa: I001
    SLOTS,
    CapturePolicy,
    Desired,
    DeviceSettings,
    Event,
    LatencyStats,
    ModelOutput,
    ModelRef,
    Phase,
    Reported,
    ShadowStats,
    SlotName,
    SlotReport,
    SlotTarget,
    Status,
    Telemetry,
    decode,
    encode,
    utcnow,
)
from .topics import (
    NAMESPACE,
    RULES,
    Channel,
    DeviceTopic,
    desired_topic,
    device_topic,
    events_topic,
    is_valid_device_id,
    parse_topic,
    reported_topic,
    status_topic,
    subscription,
    telemetry_topic,
)

__all__ = [
    "MANIFEST_FILE", "MAX_EMBEDDING_DIM", "MODEL_FILE", "NAMESPACE", "RULES", "SLOTS",
    "CapturePolicy", "Channel", "Desired", "DeviceSettings", "DeviceTopic", "Embedding", "EmbeddingSpec", "Event",
    "InvalidPayload", "InvalidTopic", "LatencyStats", "Manifest", "ModelOutput", "ModelRef",
    "PayloadTooLarge", "Phase", "Preprocessing", "ProtocolError", "Reported", "ShadowStats",
    "SlotName", "SlotReport", "SlotTarget", "Status", "Telemetry", "TensorSpec", "TestVector",
    "decode", "desired_topic", "device_topic", "encode", "events_topic", "is_valid_device_id",
    "parse_manifest", "parse_topic", "reported_topic", "status_topic", "subscription",
    "telemetry_topic", "utcnow",
]
