"""The controller's HTTP API: ``create_app(controller)``."""

from .app import create_app

__all__ = ["create_app"]
