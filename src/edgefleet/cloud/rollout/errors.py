"""Errors of the rollout core.

One root, ``RolloutError``. Its leaves are all *permanent*: bad operator input (a selector,
gate, wave list or duration that does not parse; a spec that does not hold together) or a
command that the rollout's current state does not allow. Retrying the same call cannot help;
the message says what to change. The API layer can map every leaf to HTTP 400/409.
"""

from __future__ import annotations


class RolloutError(Exception):
    """Root of every error raised by ``edgefleet.cloud.rollout``."""


class SpecError(RolloutError):
    """Operator input that does not parse or does not hold together (maps to HTTP 400).

    ``text`` is the offending input, ``position`` the 0-based offset of the problem in it
    when one is known.
    """

    def __init__(self, message: str, *, text: str | None = None, position: int | None = None):
        self.text = text
        self.position = position
        detail = message
        if text is not None and position is not None:
            detail = f"{message}\n  {text}\n  {' ' * position}^"
        elif text is not None:
            detail = f"{message} (in {text!r})"
        super().__init__(detail)
        self.message = message


class SelectorSyntaxError(SpecError):
    """A device-selection expression (``--select``) that does not parse."""


class GateSyntaxError(SpecError):
    """A gate expression (``--gate``) that does not parse."""


class UnknownMetric(GateSyntaxError):
    """A gate naming a metric that does not exist; ``known`` lists the ones that do."""

    def __init__(self, metric: str, known: tuple[str, ...], *, text: str | None = None):
        self.metric = metric
        self.known = known
        super().__init__(
            f"unknown gate metric {metric!r}; known metrics: {', '.join(known)}", text=text
        )


class WavesSyntaxError(SpecError):
    """A wave list (``--waves 1,10,50,100``) that does not parse or is not increasing to 100."""


class DurationSyntaxError(SpecError):
    """A duration (``--soak 30m``) that does not parse."""


class RateSyntaxError(SpecError):
    """A dispatch rate (``--rate 60/min``) or ramp (``--ramp 10/min,x2,every=5``) that does not
    parse or is out of bounds."""


class ScheduleError(SpecError):
    """A start time (``--start-at``) that does not parse, is in the past or too far ahead."""


class IllegalTransition(RolloutError):
    """An operator command the rollout's current state does not allow (maps to HTTP 409)."""

    def __init__(self, command: str, state: str, why: str = ""):
        self.command = command
        self.state = state
        tail = f": {why}" if why else ""
        super().__init__(f"cannot {command} a rollout that is {state}{tail}")
