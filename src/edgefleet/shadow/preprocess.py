"""Camera frame (uint8 BGR, HxWx3) → the model's input tensor, per ``manifest.preprocessing``.

The same code runs on the control path and in shadow, so both models see what the
manifest promises. Steps, in this order:

1. resize to ``preprocessing.resize`` (h, w) — or, if unset, to the static H, W of the
   input shape (NCHW/NHWC) — with ``INTER_AREA`` when shrinking, ``INTER_LINEAR`` else;
2. colour: ``gray`` (1 channel), ``rgb`` or ``bgr`` (3 channels); grey frames are accepted;
3. ``x * scale``, then ``(x - mean) / std`` per channel, fused into one multiply-add
   (``x * a + b``) written straight into the output layout;
4. layout: ``NCHW`` → (1, C, H, W); ``NHWC``/``other`` → (1, H, W, C);
   ``NC`` → (1, H*W*C), flattened row-major in H, W, C order;
5. dtype of the input spec; integer dtypes are rounded and clipped to their range
   (an identity transform on ``uint8`` skips the float step entirely).

Build a ``Preprocessor`` once per model (``make_preprocessor``) and call it per frame:
one output allocation per call (none when ``out=`` is given).
"""

from __future__ import annotations

import numpy as np

from ..protocols import Manifest
from .errors import PreprocessError


class Preprocessor:
    def __init__(self, manifest: Manifest):
        spec, pp = manifest.input, manifest.preprocessing
        self.color = pp.color
        self.channels = 1 if pp.color == "gray" else 3
        self.layout = spec.layout
        self.dtype = np.dtype(spec.dtype)
        self.size = tuple(pp.resize) if pp.resize else self._static_hw(spec.shape, spec.layout)
        c = self.channels
        mean = np.asarray(pp.mean, dtype=np.float64)
        std = np.asarray(pp.std, dtype=np.float64)
        if mean.size not in (1, c) or std.size not in (1, c):
            raise PreprocessError(
                f"{manifest.label}: mean/std need 1 or {c} values for colour {pp.color!r}"
            )
        self.a = np.broadcast_to(pp.scale / std, (c,)).astype(np.float32)
        self.b = np.broadcast_to(-mean / std, (c,)).astype(np.float32)
        self.identity = bool(np.all(self.a == 1.0) and np.all(self.b == 0.0))
        self._check_channels(spec.shape, manifest.label)
        self.features = spec.shape[1] if spec.layout == "NC" and len(spec.shape) == 2 else None

    @staticmethod
    def _static_hw(shape: list[int | None], layout: str) -> tuple[int, int] | None:
        if len(shape) == 4 and layout in ("NCHW", "NHWC"):
            h, w = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
            if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
                return h, w
        return None

    def _check_channels(self, shape: list[int | None], label: str) -> None:
        if len(shape) != 4:
            return
        c = shape[1] if self.layout == "NCHW" else shape[3] if self.layout == "NHWC" else None
        if isinstance(c, int) and c > 0 and c != self.channels:
            raise PreprocessError(
                f"{label}: input has {c} channels but colour {self.color!r} gives {self.channels}"
            )

    def _image(self, frame: np.ndarray) -> np.ndarray:
        import cv2

        if frame.dtype != np.uint8:
            raise PreprocessError(f"expected a uint8 frame, got {frame.dtype}")
        img = frame
        if self.size is not None and img.shape[:2] != self.size:
            h, w = self.size
            shrink = h * w < img.shape[0] * img.shape[1]
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        grey_in = img.ndim == 2 or img.shape[2] == 1
        if self.color == "gray":
            if not grey_in:
                img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            return img.reshape(img.shape[0], img.shape[1], 1)
        if grey_in:
            return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)  # same for rgb
        if img.ndim != 3 or img.shape[2] != 3:
            raise PreprocessError(f"expected an HxWx3 BGR frame, got shape {frame.shape}")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if self.color == "rgb" else img

    def output_shape(self, h: int, w: int) -> tuple[int, ...]:
        c = self.channels
        if self.layout == "NCHW":
            return (1, c, h, w)
        if self.layout == "NC":
            return (1, h * w * c)
        return (1, h, w, c)

    def __call__(self, frame: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The input tensor for one frame; writes into ``out`` when given (shape and dtype must match).

        Raises:
            PreprocessError: wrong frame dtype/shape, or an NC model whose feature count
                the frame cannot fill.
        """
        img = self._image(frame)
        h, w, c = img.shape
        if self.features is not None and self.features != h * w * c:
            raise PreprocessError(f"NC input wants {self.features} features, frame gives {h}x{w}x{c}")
        shape = self.output_shape(h, w)
        if out is None:
            out = np.empty(shape, dtype=self.dtype)
        elif out.shape != shape or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise PreprocessError(f"out has shape {out.shape} {out.dtype}, need C-contiguous {shape} {self.dtype}")
        if self.identity and self.dtype == np.uint8:
            self._place(img, out)
            return out
        work = out if self.dtype == np.float32 else np.empty(shape, dtype=np.float32)
        if self.layout == "NCHW":
            for ch in range(c):
                plane = work[0, ch]
                np.multiply(img[:, :, ch], self.a[ch], out=plane, casting="unsafe")
                plane += self.b[ch]
        else:
            hwc = work.reshape(h, w, c)
            np.multiply(img, self.a, out=hwc, casting="unsafe")
            hwc += self.b
        if work is not out:
            if np.issubdtype(self.dtype, np.integer):
                info = np.iinfo(self.dtype)
                np.rint(work, out=work)
                np.clip(work, info.min, info.max, out=work)
            out[...] = work.astype(self.dtype, copy=False)
        return out

    def _place(self, img: np.ndarray, out: np.ndarray) -> None:
        if self.layout == "NCHW":
            out[0] = img.transpose(2, 0, 1)
        else:
            out.reshape(img.shape)[...] = img


def make_preprocessor(manifest: Manifest) -> Preprocessor:
    """A reusable preprocessor for one model (check the manifest once, not per frame).

    Raises:
        PreprocessError: mean/std or channel count do not fit the colour mode.
    """
    return Preprocessor(manifest)


_cache: dict[int, tuple[Manifest, Preprocessor]] = {}


def preprocess(frame_bgr_uint8: np.ndarray, manifest: Manifest) -> np.ndarray:
    """One frame → input tensor; caches the ``Preprocessor`` per manifest object."""
    hit = _cache.get(id(manifest))
    if hit is None or hit[0] is not manifest:
        if len(_cache) >= 16:
            _cache.pop(next(iter(_cache)))
        hit = (manifest, Preprocessor(manifest))
        _cache[id(manifest)] = hit
    return hit[1](frame_bgr_uint8)
