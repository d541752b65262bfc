"""What the agent keeps on disk between runs: installed model per slot, last known good, phases.

Written atomically (temp file in the same directory, fsync, ``os.replace``), so a crash at
any point leaves either the old or the new state — the slot switch *is* this write.

A full disk never stops the agent here: ``save`` keeps the state in memory, leaves the
file as it was (the old state, still consistent), reports the shortage to ``disk_watch``
(``reported.disk``, what ``state``) and writes again at the next save.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from ..atomicio import atomic_write
from ..protocols import DeviceSettings, ModelRef, Phase, SlotName
from .disk import DiskWatch, disk_full, is_disk_full

log = logging.getLogger(__name__)


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
    bytes_needed: int | None = None  # E_DISK_FULL: what the step needs, and what is free
    bytes_free: int | None = None
    window_opens_at: datetime | None = None  # waiting_for_window: the next window start


def _empty_slots() -> dict[SlotName, SlotState]:
    return {"control": SlotState(), "shadow": SlotState()}


class AgentState(BaseModel):
    generation: int = 0
    slots: dict[SlotName, SlotState] = Field(default_factory=lambda: _empty_slots())
    settings: DeviceSettings = Field(default_factory=DeviceSettings)

    def slot(self, name: SlotName) -> SlotState:
        return self.slots.setdefault(name, SlotState())


class StateStore:
    def __init__(self, data_dir: Path, disk_watch: DiskWatch | None = None):
        self.path = data_dir / "state.json"
        self.disk_watch = disk_watch or DiskWatch()
        self.unsaved = False  # the last save found the disk full: memory is ahead of the file

    def load(self) -> AgentState:
        try:
            return AgentState.model_validate(json.loads(self.path.read_bytes()))
        except FileNotFoundError:
            return AgentState()
        except (ValueError, ValidationError):
            # Never crash on a damaged state file: keep it for inspection and start clean.
            self.path.replace(self.path.with_suffix(".corrupt"))
            return AgentState()

    def save(self, state: AgentState) -> bool:
        """Write ``state``; False when the disk is full (the file keeps the previous state).

        Raises:
            OSError: any other failure to write.
        """
        data = state.model_dump_json(indent=2).encode()
        try:
            atomic_write(self.path, data, fsync_dir=True)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            self.unsaved = True
            self.disk_watch.note(disk_full("state", self.path.parent, len(data) + 4096, exc))
            return False
        if self.unsaved:
            self.unsaved = False
            log.info("state saved again to %s", self.path)
        self.disk_watch.clear("state")
        return True
