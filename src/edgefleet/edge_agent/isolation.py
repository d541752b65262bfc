"""Keep the control thread's CPU its own: the shadow and capture threads run at low priority.

The control path (frame → control model → application) must not slow down because a
candidate is in shadow or a clip is being encoded, even when another process competes for
the CPU. Linux schedules threads, not processes, so every background thread lowers itself
from its own first line (``ThreadPolicy.apply``):

* ``SCHED_IDLE`` (``os.sched_setscheduler(tid, SCHED_IDLE, …)``): the thread runs only when
  no normal thread wants the CPU; where the kernel refuses it, nice 19
  (``os.setpriority(PRIO_PROCESS, tid, 19)``), which Linux also applies per thread;
* CPU affinity (``os.sched_setaffinity(tid, cpus)``) away from the core kept for the control
  thread, where the device has at least two cores to spare (``[pipeline] shadow_cpus``:
  ``auto``, ``off`` or a list such as ``2,3`` / ``2-5``).

``plan_cpus`` is pure (tested with tables); ``ThreadPolicy.apply`` is the thin OS shell and
never raises: what it could not do is logged once per kind and returned in ``Applied`` so
tests and the agent's metrics can read back what holds.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

AUTO = "auto"
_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(kind: str, message: str, *args: object) -> None:
    with _warned_lock:
        if kind in _warned:
            return
        _warned.add(kind)
    log.warning(message, *args)


def parse_cpus(spec: str) -> frozenset[int] | str | None:
    """``"auto"`` → ``"auto"``; ``""``/``"off"``/``"none"`` → None; ``"0,2-3"`` → {0, 2, 3}.

    Raises:
        ValueError: anything else (with the part that is wrong).
    """
    text = spec.strip().lower()
    if text == AUTO:
        return AUTO
    if text in ("", "off", "none"):
        return None
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            first = int(lo)
            last = int(hi) if sep else first
        except ValueError:
            raise ValueError(f"{part!r} is not a CPU number or range (e.g. 2,3 or 2-5)") from None
        if first < 0 or last < first or last > 4095:
            raise ValueError(f"{part!r} is not a CPU range (e.g. 2-5)")
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


def plan_cpus(spec: frozenset[int] | str | None, allowed: frozenset[int], *, reserve: int = 1,
              spare_min: int = 2) -> tuple[frozenset[int] | None, str]:
    """Where the background threads may run; (None, why) leaves their affinity alone.

    ``auto`` keeps the lowest ``reserve`` allowed CPUs for the control thread and gives the
    rest to the background threads, but only where at least ``spare_min`` remain (on a
    2-core device, pinning the shadow model to one core would only make it slower; there
    ``SCHED_IDLE`` alone does the work). An explicit set is cut down to the allowed CPUs.
    """
    if spec is None:
        return None, "off"
    if spec == AUTO:
        spare = sorted(allowed)[reserve:]
        if len(spare) < spare_min:
            return None, f"auto: {len(allowed)} CPUs allowed, fewer than {reserve + spare_min}"
        return frozenset(spare), f"auto: CPUs {_fmt(spare)} (CPU {_fmt(sorted(allowed)[:reserve])} kept for control)"
    assert isinstance(spec, frozenset)
    usable = spec & allowed
    if not usable:
        return None, f"none of CPUs {_fmt(sorted(spec))} is allowed here ({_fmt(sorted(allowed))})"
    if usable == allowed:
        return None, "the set names every allowed CPU"
    return usable, f"CPUs {_fmt(sorted(usable))}"


def _fmt(cpus: list[int]) -> str:
    return ",".join(str(c) for c in cpus)


def allowed_cpus() -> frozenset[int]:
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return frozenset(range(os.cpu_count() or 1))


@dataclass(frozen=True)
class Applied:
    """What holds for one thread after ``apply`` (read back from the kernel)."""

    thread: str
    tid: int
    sched_idle: bool = False
    nice: int | None = None
    cpus: frozenset[int] | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ThreadPolicy:
    """How the background threads (shadow path, clip encoder) lower themselves.

    Args:
        sched_idle: ask for ``SCHED_IDLE`` first (nice 19 where refused).
        nice: the nice value set as well (and the fallback); None leaves it.
        cpus: the background threads' CPUs (``plan_cpus``); None leaves affinity alone.
        control_cpus: pin the control thread here (None: the scheduler moves it freely,
            and ``auto`` keeps the background threads off its reserved CPU).
    """

    sched_idle: bool = True
    nice: int | None = 19
    cpus: frozenset[int] | None = None
    control_cpus: frozenset[int] | None = None
    applied: dict[str, Applied] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_settings(cls, *, shadow_cpus: str = AUTO, control_cpus: str = "", sched_idle: bool = True,
                      nice: int | None = 19, allowed: frozenset[int] | None = None) -> ThreadPolicy:
        """The policy for this machine from ``[pipeline]`` settings (already validated)."""
        allowed = allowed if allowed is not None else allowed_cpus()
        cpus, why = plan_cpus(parse_cpus(shadow_cpus), allowed)
        log.info("pipeline: background threads %s; CPU affinity %s", "SCHED_IDLE" if sched_idle else f"nice {nice}", why)
        control = parse_cpus(control_cpus)
        control_set = None if not isinstance(control, frozenset) else (control & allowed) or None
        return cls(sched_idle=sched_idle, nice=nice, cpus=cpus, control_cpus=control_set)

    def apply(self, name: str | None = None) -> Applied:
        """Lower the calling thread (call it first thing in the thread); never raises."""
        name = name or threading.current_thread().name
        tid = threading.get_native_id()
        notes: list[str] = []
        idle = False
        if self.sched_idle:
            try:
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
                idle = os.sched_getscheduler(tid) == os.SCHED_IDLE
            except (AttributeError, OSError) as exc:
                notes.append(f"SCHED_IDLE refused: {exc}")
                _warn_once("sched_idle", "pipeline: SCHED_IDLE refused for background threads (%s); "
                           "using nice %s", exc, self.nice if self.nice is not None else 19)
        nice = self.nice if self.nice is not None else (19 if self.sched_idle and not idle else None)
        got_nice: int | None = None
        if nice is not None:
            try:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
                got_nice = os.getpriority(os.PRIO_PROCESS, tid)
            except (AttributeError, OSError) as exc:
                notes.append(f"nice refused: {exc}")
                _warn_once("nice", "pipeline: cannot set nice %s on background threads: %s", nice, exc)
        got_cpus = self._pin(tid, self.cpus, notes)
        result = Applied(name, tid, idle, got_nice, got_cpus, tuple(notes))
        self.applied[name] = result
        return result

    def apply_control(self, name: str | None = None) -> Applied:
        """Pin the calling (control) thread to ``control_cpus`` where set; priority stays."""
        name = name or threading.current_thread().name
        tid = threading.get_native_id()
        notes: list[str] = []
        cpus = self._pin(tid, self.control_cpus, notes)
        result = Applied(name, tid, cpus=cpus, notes=tuple(notes))
        self.applied[name] = result
        return result

    @staticmethod
    def _pin(tid: int, cpus: frozenset[int] | None, notes: list[str]) -> frozenset[int] | None:
        if cpus is None:
            return None
        try:
            os.sched_setaffinity(tid, cpus)
            return frozenset(os.sched_getaffinity(tid))
        except (AttributeError, OSError) as exc:
            notes.append(f"affinity refused: {exc}")
            _warn_once("affinity", "pipeline: cannot set CPU affinity %s: %s", _fmt(sorted(cpus)), exc)
            return None


class SheddingQueue(Generic[T]):
    """A bounded hand-off from the control thread that never blocks it: when full, the
    *oldest* item is shed (returned to the caller to count) and the new one goes in, so the
    background thread always works on the freshest frame and nothing waits in line.

    ``put`` is O(1) under a lock held for a few instructions; ``close`` wakes the consumer,
    which then gets None.
    """

    def __init__(self, maxsize: int = 1):
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._items: deque[T] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False

    def put(self, item: T) -> T | None:
        """Queue ``item``; returns the item shed to make room, or None."""
        with self._cond:
            shed = self._items.popleft() if len(self._items) >= self.maxsize else None
            self._items.append(item)
            self._cond.notify()
        return shed

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest item; None once closed (or after ``timeout`` with nothing queued)."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if self._closed or not self._items:
                return None
            return self._items.popleft()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        with self._cond:
            self._closed = False
            self._items.clear()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
