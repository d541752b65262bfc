"""The controller's garbage collector, set for a long-running server with a large heap.

CPython collects its youngest generation every 700 net allocations of container objects,
and every tenth of those the next. Ingesting one batch of 256 telemetry messages allocates
tens of thousands (parsed JSON, validated messages, rows, bind parameters), nearly all
freed by reference counting long before a collection could find them, so the collector
mostly walks live objects: about 15 % of ingest CPU (bench/bench_ingest_gc.py, issue 14). At a
threshold of 20,000 that falls to about 1 %, at a cost of a few MB of young objects that
wait longer. Objects built at start (modules, the app, the settings) are frozen out of
every later collection.

Only the serving entry points call ``tune_gc`` (``fleet cloud serve``, the benchmark
stacks): a library user or a test process keeps the interpreter's own settings.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)

DEFAULT_GEN0_THRESHOLD = 20_000


def tune_gc(gen0_threshold: int = DEFAULT_GEN0_THRESHOLD) -> tuple[int, int, int]:
    """Freeze what start-up built and collect the young generation every ``gen0_threshold``
    allocations; 0 leaves the interpreter's settings alone. Returns the thresholds in force."""
    if gen0_threshold > 0:
        gc.collect()  # start-up's garbage, before what is left is frozen
        gc.freeze()
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(gen0_threshold, older, oldest)
        log.info("garbage collection: %d objects of start-up frozen; young generation every %d allocations",
                 gc.get_freeze_count(), gen0_threshold)
    return gc.get_threshold()  # type: ignore[return-value]
