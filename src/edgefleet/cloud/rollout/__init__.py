"""Staged rollouts, the pure core: selection, waves, gates, the planner, commands, status.

No database, MQTT or HTTP here. The reconciler loads rows into ``RolloutSpec``,
``RolloutState`` and ``DeviceObservation``, calls ``plan(spec, state, observations, now)``
and applies the returned actions in order; operator commands go through ``apply_command``,
a new rollout for the same slot and devices through ``supersedes``/``supersede``.
See docs/rollouts.md.
"""

from .commands import COMMANDS, Command, apply_command, reschedule, supersede, supersedes
from .errors import (
    DurationSyntaxError,
    GateSyntaxError,
    IllegalTransition,
    RateSyntaxError,
    RolloutError,
    ScheduleError,
    SelectorSyntaxError,
    SpecError,
    UnknownMetric,
    WavesSyntaxError,
)
from .gates import (
    KNOWN_METRICS,
    METRICS,
    Gate,
    GateResult,
    evaluate_gates,
    parse_gate,
    parse_gates,
)
from .metrics import DeviceStatus, WaveMetrics, classify, same_ref, wave_metrics
from .model import (
    DEFAULT_GATES,
    FINAL_STATES,
    QUIET_STATES,
    Action,
    AssignWave,
    Breach,
    DeviceObservation,
    Log,
    MarkDeviceTimedOut,
    RecordGateResults,
    RevertDevice,
    RolloutPhase,
    RolloutSpec,
    RolloutState,
    SetDesired,
    UpdateRollout,
    WaveRecord,
    build_spec,
    parse_duration,
)
from .pace import Pace, parse_pace, parse_start_at
from .plan import Plan, plan, previous_model
from .selector import DeviceInfo, Selector, parse_selector
from .status import RolloutStatus, WaveStatus, rollout_status
from .waves import assign_late_joiners, assign_waves, parse_waves, stable_rank

__all__ = [
    "COMMANDS", "DEFAULT_GATES", "FINAL_STATES", "KNOWN_METRICS", "METRICS", "QUIET_STATES",
    "Action", "AssignWave", "Breach", "Command", "DeviceInfo", "DeviceObservation",
    "DeviceStatus", "DurationSyntaxError", "Gate", "GateResult", "GateSyntaxError",
    "IllegalTransition", "Log", "Pace", "RateSyntaxError", "ScheduleError", "MarkDeviceTimedOut", "Plan", "RecordGateResults",
    "RevertDevice", "RolloutError", "RolloutPhase", "RolloutSpec", "RolloutState",
    "RolloutStatus", "SelectorSyntaxError", "Selector", "SetDesired", "SpecError",
    "UnknownMetric", "UpdateRollout", "WaveMetrics", "WaveRecord", "WaveStatus",
    "WavesSyntaxError", "apply_command", "assign_late_joiners", "assign_waves",
    "build_spec", "classify", "evaluate_gates", "parse_duration", "parse_gate",
    "parse_gates", "parse_pace", "parse_selector", "parse_start_at", "reschedule", "parse_waves", "plan", "previous_model",
    "rollout_status", "same_ref", "stable_rank", "supersede", "supersedes", "wave_metrics",
]
