"""Child process for the SIGKILL test: puts items forever, printing each one put() returned."""

from __future__ import annotations

import hashlib
import sys

from tests.uploads.harness import clip_bytes, make_event

from edgefleet.edge_agent.outbox import Outbox


def main(root: str, seed: int) -> None:
    outbox = Outbox(root, max_bytes=1 << 34, min_free_bytes=0)
    i = 0
    while True:
        event = make_event(priority=i % 5)
        clip = clip_bytes(64 * 1024 + (i * 7919) % (256 * 1024), seed=seed * 100000 + i)
        keyframe = clip_bytes(4000 + i % 100, seed=-i)
        item_id = outbox.put(event, clip, keyframe, priority=i % 5)
        sys.stdout.write(f"{item_id} {event.event_id} {hashlib.sha256(clip).hexdigest()}\n")
        sys.stdout.flush()
        i += 1


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
