"""The anti-replay window of one device channel (``reported`` or ``telemetry``), as IPsec and
DTLS keep one: pure arithmetic over two stored numbers, no I/O.

A channel's state is the highest seq accepted (``highest``, None before the first) and a
bitmap of which of the ``size - 1`` seqs just below it were accepted too: bit ``i`` stands
for seq ``highest - 1 - i``. The highest itself is accepted by definition, so a window of
64 needs 63 bits and the bitmap fits a signed 64-bit column (``BigInteger``) on SQLite and
PostgreSQL alike, never negative.

``place`` decides one seq:

* above ``highest`` (or the first one): accepted, the window shifts up (``late`` False);
* within the window below it and not accepted yet: accepted, its bit set (``late`` True:
  sent before a message that was applied first, as two controller replicas on a shared
  subscription can commit one device's messages out of order);
* ``highest`` itself, a bit already set, or older than the window: ``Replayed``.

``size`` 1 keeps no bits: only a seq above the highest is accepted (strict order).
Bits beyond the current ``size`` are dropped, so a smaller window takes effect at once.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_SIZE = 64  # 63 bits below the highest: a non-negative signed 64-bit integer
DEFAULT_SIZE = 64


@dataclass(frozen=True)
class Placed:
    """The channel's state once ``seq`` is accepted; ``late``: below the highest (in the window)."""

    seq: int
    highest: int
    bits: int
    late: bool


class Replayed(Exception):
    """``seq`` was accepted already (``why`` "accepted") or is older than the window ("too_old")."""

    def __init__(self, seq: int, highest: int, why: str):
        super().__init__(f"seq {seq} {'was accepted already' if why == 'accepted' else 'is older than the window'}")
        self.seq, self.highest, self.why = seq, highest, why


def check_size(size: int) -> int:
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_SIZE:
        raise ValueError(f"replay window must be an integer from 1 (strict order) to {MAX_SIZE}, not {size!r}")
    return size


def _mask(size: int) -> int:
    return (1 << (size - 1)) - 1


def place(highest: int | None, bits: int | None, seq: int, size: int = DEFAULT_SIZE) -> Placed:
    """Accept ``seq`` into the window (``highest``, ``bits``) of ``size``; raises ``Replayed``."""
    mask = _mask(check_size(size))
    bits = (bits or 0) & mask
    if highest is None:
        return Placed(seq, seq, 0, late=False)
    if seq > highest:
        shift = seq - highest
        # the old highest becomes bit shift-1; older bits move up with it; what leaves the window goes
        moved = ((bits << shift) | (1 << (shift - 1))) & mask if shift < size else 0
        return Placed(seq, seq, moved, late=False)
    offset = highest - seq  # 0: the highest itself
    if offset == 0:
        raise Replayed(seq, highest, "accepted")
    if offset >= size:
        raise Replayed(seq, highest, "too_old")
    bit = 1 << (offset - 1)
    if bits & bit:
        raise Replayed(seq, highest, "accepted")
    return Placed(seq, highest, bits | bit, late=True)


def accepted(highest: int | None, bits: int | None, size: int = DEFAULT_SIZE) -> list[int]:
    """The seqs the window holds as accepted, highest first (for logs and tests)."""
    if highest is None:
        return []
    b = (bits or 0) & _mask(check_size(size))
    return [highest] + [highest - 1 - i for i in range(size - 1) if b >> i & 1]


__all__ = ["DEFAULT_SIZE", "MAX_SIZE", "Placed", "Replayed", "accepted", "check_size", "place"]
