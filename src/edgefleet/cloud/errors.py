"""Errors of the controller: one root; the HTTP layer maps leaves to status codes."""

from __future__ import annotations


class CloudError(Exception):
    """Root of every controller error."""

    status_code = 400


class NotFound(CloudError):
    status_code = 404


class Conflict(CloudError):
    status_code = 409


class BadRequest(CloudError):
    status_code = 400


class Forbidden(CloudError):
    status_code = 403


class ConfigError(CloudError):
    """Settings that cannot work (missing data dir, bad URL)."""
