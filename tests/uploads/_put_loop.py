"""Child process for the SIGKILL test: puts items forever, printing each one put() returned."""

from __future__ import annotations

import hashlib
import os
import sys
import uuid

from edgefleet.edge_agent.outbox import Outbox
from edgefleet.protocols import Event


def main(root: str) -> None:
    outbox = Outbox(root, max_bytes=1 << 34, min_free_bytes=0)
    i = 0
    while True:
        event = Event(device_id="dev-a", event_id=uuid.uuid4().hex, trigger="disagreement")
        clip = os.urandom(64 * 1024 + (i * 7919) % (256 * 1024))
        keyframe = os.urandom(4000 + i % 100)
        item_id = outbox.put(event, clip, keyframe, priority=i % 5)
        sys.stdout.write(f"{item_id} {event.event_id} {hashlib.sha256(clip).hexdigest()}\n")
        sys.stdout.flush()
        i += 1


if __name__ == "__main__":
    main(sys.argv[1])
