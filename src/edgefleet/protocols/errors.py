"""Errors of the wire contract: one root, one leaf per kind of bad input."""

from __future__ import annotations


class ProtocolError(Exception):
    """Root of every error raised while reading or building wire data."""


class InvalidPayload(ProtocolError):
    """A payload that is not valid JSON, names an unknown schema, or fails validation.

    ``field`` names the first offending field (dotted path) when one is known.
    """

    def __init__(self, message: str, *, field: str | None = None, schema: str | None = None):
        self.field = field
        self.schema = schema
        prefix = f"{schema}: " if schema else ""
        where = f"field '{field}': " if field else ""
        super().__init__(f"{prefix}{where}{message}")


class PayloadTooLarge(InvalidPayload):
    """A payload larger than the limit for its topic."""


class InvalidTopic(ProtocolError):
    """A topic outside the ``fleet/v1/`` namespace or with an unknown shape."""
