"""What the agent keeps on disk between runs: installed model per slot, last known good, phases.

Written atomically (temp file in the same directory, fsync, ``os.replace``), so a crash at
any point leaves either the old or the new state — the slot switch *is* this write.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from ..atomicio import atomic_write
from ..protocols import DeviceSettings, ModelRef, Phase, SlotName


class InstalledModel(ModelRef):
    release_counter: int = 0


class SlotState(BaseModel):
    installed: InstalledModel | None = None
    last_known_good: InstalledModel | None = None
    target: InstalledModel | None = None
    phase: Phase = Phase.IDLE
    error_code: str | None = None
    error: str | None = None
    failed_digest: str | None = None
    failed_release: int | None = None  # the release counter those bytes failed under
    progress: float | None = None


def _empty_slots() -> dict[SlotName, SlotState]:
    return {"control": SlotState(), "shadow": SlotState()}


class AgentState(BaseModel):
    generation: int = 0
    slots: dict[SlotName, SlotState] = Field(default_factory=lambda: _empty_slots())
    settings: DeviceSettings = Field(default_factory=DeviceSettings)

    def slot(self, name: SlotName) -> SlotState:
        return self.slots.setdefault(name, SlotState())


class StateStore:
    def __init__(self, data_dir: Path):
        self.path = data_dir / "state.json"

    def load(self) -> AgentState:
        try:
            return AgentState.model_validate(json.loads(self.path.read_bytes()))
        except FileNotFoundError:
            return AgentState()
        except (ValueError, ValidationError):
            # Never crash on a damaged state file: keep it for inspection and start clean.
            self.path.replace(self.path.with_suffix(".corrupt"))
            return AgentState()

    def save(self, state: AgentState) -> None:
        atomic_write(self.path, state.model_dump_json(indent=2).encode(), fsync_dir=True)
