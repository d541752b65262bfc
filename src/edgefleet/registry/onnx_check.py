"""Push-time validation of ONNX models against a manifest (cloud side: imports ``onnx``).

``check_model`` runs the ONNX checker and compares the graph's input and output with
the manifest; ``infer_manifest`` builds a manifest from the graph when none is given.
"""

from __future__ import annotations

from typing import Any

from ..protocols import Manifest, TensorSpec
from .errors import InvalidBundle

_ELEM_TYPES = {1: "float32", 10: "float16", 2: "uint8", 3: "int8", 6: "int32", 7: "int64"}


def _load(model_bytes: bytes) -> Any:
    import onnx

    try:
        model = onnx.load_from_string(model_bytes)
    except Exception as exc:  # protobuf DecodeError and friends
        raise InvalidBundle(f"not a valid ONNX file: {exc}") from None
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise InvalidBundle(f"ONNX checker refused the model: {exc}") from None
    return model


def _graph_inputs(model: Any) -> list[Any]:
    initializers = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def _spec(value_info: Any, layout: str) -> TensorSpec:
    t = value_info.type.tensor_type
    shape: list[int | None] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    dtype = _ELEM_TYPES.get(t.elem_type)
    if dtype is None:
        raise InvalidBundle(f"tensor {value_info.name!r} has unsupported element type {t.elem_type}")
    return TensorSpec(name=value_info.name, shape=shape or [None], dtype=dtype, layout=layout)  # type: ignore[arg-type]


def _compatible(declared: list[int | None], actual: list[int | None]) -> bool:
    if len(declared) != len(actual):
        return False
    return all(d is None or a is None or d == a for d, a in zip(declared, actual))


def check_model(model_bytes: bytes, manifest: Manifest) -> None:
    """Refuse a model that is not valid ONNX or does not match the manifest.

    Raises:
        InvalidBundle: with a message naming what does not match.
    """
    model = _load(model_bytes)
    inputs = _graph_inputs(model)
    if len(inputs) != 1:
        raise InvalidBundle(f"model must have exactly one input, has {[i.name for i in inputs]}")
    actual_in = _spec(inputs[0], manifest.input.layout)
    if actual_in.name != manifest.input.name:
        raise InvalidBundle(f"manifest input {manifest.input.name!r} but the model's input is {actual_in.name!r}")
    if not _compatible(manifest.input.shape, actual_in.shape):
        raise InvalidBundle(f"manifest input shape {manifest.input.shape} does not match the model's {actual_in.shape}")
    if actual_in.dtype != manifest.input.dtype:
        raise InvalidBundle(f"manifest input dtype {manifest.input.dtype} but the model takes {actual_in.dtype}")
    outputs = list(model.graph.output)
    if not outputs:
        raise InvalidBundle("model has no outputs")
    if manifest.embedding is not None:
        outputs = _without_embedding(outputs, manifest)
    actual_out = _spec(outputs[0], "NC")
    if manifest.output is not None and not _compatible(manifest.output.shape, actual_out.shape):
        raise InvalidBundle(f"manifest output shape {manifest.output.shape} does not match the model's {actual_out.shape}")
    if manifest.task == "classification":
        n_classes = actual_out.shape[-1]
        if n_classes is not None and n_classes != len(manifest.labels):
            raise InvalidBundle(f"model outputs {n_classes} classes but the manifest has {len(manifest.labels)} labels")


def _without_embedding(outputs: list[Any], manifest: Manifest) -> list[Any]:
    """The graph outputs other than the manifest's embedding output, which must exist with
    ``embedding.dim`` values per frame (the batch dimension aside)."""
    assert manifest.embedding is not None
    want = manifest.embedding.output
    names = [o.name for o in outputs]
    if want not in names:
        raise InvalidBundle(f"manifest embedding output {want!r} is not an output of the model "
                            f"(outputs: {', '.join(repr(n) for n in names)})")
    emb = _spec(outputs[names.index(want)], "other")
    if emb.dtype not in ("float32", "float16"):
        raise InvalidBundle(f"embedding output {want!r} is {emb.dtype}; it must be float32 or float16")
    dims = emb.shape[1:] if len(emb.shape) > 1 else emb.shape
    if all(d is not None for d in dims):
        size = 1
        for d in dims:
            size *= int(d)  # type: ignore[arg-type]
        if size != manifest.embedding.dim:
            raise InvalidBundle(f"embedding output {want!r} has {size} values per frame "
                                f"(shape {emb.shape}) but the manifest says dim {manifest.embedding.dim}")
    rest = [o for o in outputs if o.name != want]
    if not rest:
        raise InvalidBundle(f"the model's only output is the embedding {want!r}; it needs its primary output too")
    return rest


def _primary_output(outputs: list[Any], *, output: str | None, embedding: str | None,
                    labels: list[str] | None) -> Any:
    """The graph output that holds the task's result: the one named ``output``; else, of the
    outputs other than the embedding, the only one, or the first with ``len(labels)`` values."""
    names = [o.name for o in outputs]
    if output is not None:
        if output not in names:
            raise InvalidBundle(f"output {output!r} is not an output of the model (outputs: {', '.join(names)})")
        return outputs[names.index(output)]
    rest = [o for o in outputs if o.name != embedding]
    if not rest:
        raise InvalidBundle(f"the model's only output is the embedding {embedding!r}")
    if len(rest) > 1 and labels:
        for o in rest:
            dims = o.type.tensor_type.shape.dim
            if dims and dims[-1].HasField("dim_value") and dims[-1].dim_value == len(labels):
                return o
    return rest[0]


def infer_manifest(model_bytes: bytes, *, name: str, version: str, labels: list[str] | None = None,
                   output: str | None = None, **overrides: Any) -> Manifest:
    """Build a manifest from the graph (input/output specs) plus what the caller knows.

    A model with several outputs: the primary output is ``output`` where given, never the
    ``embedding`` override's output, else the first output with ``len(labels)`` values, else
    the first; the manifest names it (``output.name``), so the agent and replay read it by name.
    """
    model = _load(model_bytes)
    inputs = _graph_inputs(model)
    if len(inputs) != 1:
        raise InvalidBundle(f"cannot infer a manifest: model has inputs {[i.name for i in inputs]}")
    in_spec = _spec(inputs[0], "NCHW")
    rank = len(in_spec.shape)
    in_spec = in_spec.model_copy(update={"layout": "NCHW" if rank == 4 else ("NC" if rank == 2 else "other")})
    emb = overrides.get("embedding")
    emb_name = emb.get("output") if isinstance(emb, dict) else getattr(emb, "output", None)
    out_spec = _spec(_primary_output(list(model.graph.output), output=output, embedding=emb_name, labels=labels),
                     "NC")
    if labels is None:
        n = out_spec.shape[-1]
        if not n:
            raise InvalidBundle("cannot infer labels: output size unknown; pass --labels")
        labels = [str(i) for i in range(n)]
    data: dict[str, Any] = {
        "name": name, "version": version, "input": in_spec, "output": out_spec, "labels": labels,
    }
    if rank == 4 and in_spec.shape[2] and in_spec.shape[3]:
        channels = in_spec.shape[1]
        data["preprocessing"] = {
            "resize": (in_spec.shape[2], in_spec.shape[3]),
            "color": "gray" if channels == 1 else "rgb",
        }
    data.update(overrides)
    return Manifest.model_validate(data)
