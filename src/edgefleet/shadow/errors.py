"""Errors of the shadow package: bad data in, or a clip that cannot be written.

``ShadowError`` is the root. ``OutputDecodeError`` and ``PreprocessError`` mean the
model outputs or the manifest do not fit together (permanent for that model);
``ClipEncodeError`` and ``SourceError`` mean the video/image layer failed (usually a
missing codec or an unreadable file).
"""

from __future__ import annotations


class ShadowError(Exception):
    """Root of every error raised by ``edgefleet.shadow``."""


class OutputDecodeError(ShadowError):
    """Raw model outputs that do not match the manifest (shape, label count, task)."""


class PreprocessError(ShadowError):
    """A frame or a manifest's preprocessing that cannot produce the input tensor."""


class ClipEncodeError(ShadowError):
    """No usable video codec, or the writer failed; the message says which."""


class SourceError(ShadowError):
    """A replay source (directory of images, video file) that cannot be read."""
