"""Importing an ONNX model from MLflow, with its provenance (cloud only: imports mlflow, onnx).

Flow: ``models:/NAME/VERSION`` | ``models:/NAME@ALIAS`` | ``models:/NAME/latest`` |
``runs:/RUN_ID/ARTIFACT_PATH`` → look the model version / run up with ``MlflowClient``
(an alias or "latest" is pinned to one version first, so the bytes and the recorded
version agree) → download the artifacts with ``mlflow.artifacts.download_artifacts`` →
find the ONNX file (the ``onnx`` flavor's ``data`` file from ``MLmodel``, else the one
``*.onnx`` in the artifacts) → write it as one self-contained ``model.onnx`` into
``dest_dir`` (``mlflow.onnx`` saves weights as external data by default; a bundle holds
a single file) → return it with a provenance dict for the signed TUF target and the
manifest's ``provenance``.

``parse_mlflow_uri`` is pure; ``import_from_mlflow`` is the I/O shell. Every failure is
an ``MlflowImportError`` whose ``reason`` says which (``bad_uri``, ``not_found``,
``no_onnx``, ``invalid_onnx``, ``unreachable``, ``missing_dependency``, ``mlflow_error``);
only ``unreachable`` is worth retrying.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .blobstore import sha256_file
from .errors import RegistryError

MODEL_FILE = "model.onnx"
_NAME_VERSION = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/]+)|@(?P<alias>[^/]+))/?$")
_RUN = re.compile(r"^runs:/(?P<run_id>[^/]+)(?:/(?P<path>.*))?$")


class MlflowImportError(RegistryError):
    """An MLflow model that could not be imported; ``reason`` says why."""

    def __init__(self, message: str, *, reason: str):
        self.reason = reason
        super().__init__(message)

    @property
    def retryable(self) -> bool:
        return self.reason == "unreachable"


@dataclass(frozen=True)
class MlflowSource:
    """A parsed ``models:/`` or ``runs:/`` URI."""

    kind: str  # "models" | "runs"
    model_name: str | None = None
    version: str | None = None  # a number, or "latest"
    alias: str | None = None
    run_id: str | None = None
    artifact_path: str = ""


@dataclass(frozen=True)
class MlflowModel:
    """An imported model: a self-contained ONNX file and where it came from."""

    onnx_path: Path
    source_uri: str
    run_id: str | None
    model_name: str | None
    model_version: str | None
    flavor: str  # "onnx" (MLmodel's onnx flavor) or "artifact" (a bare *.onnx file)
    signature: dict[str, Any] | None = None  # {"inputs": [...], "outputs": [...]} from MLmodel
    provenance: dict[str, Any] = field(default_factory=dict)


def parse_mlflow_uri(uri: str) -> MlflowSource:
    """Parse ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``models:/NAME/latest``, ``runs:/ID/PATH``.

    Raises:
        MlflowImportError: reason ``bad_uri``.
    """
    m = _NAME_VERSION.match(uri.strip())
    if m:
        version = m["version"]
        if version is not None and not (version.isdigit() or version == "latest"):
            raise MlflowImportError(
                f"unsupported model reference {uri!r}: use models:/NAME/VERSION (a number), "
                "models:/NAME@ALIAS or models:/NAME/latest (stages are deprecated in MLflow)",
                reason="bad_uri",
            )
        return MlflowSource("models", model_name=m["name"], version=version, alias=m["alias"])
    m = _RUN.match(uri.strip())
    if m and m["run_id"]:
        return MlflowSource("runs", run_id=m["run_id"], artifact_path=(m["path"] or "").strip("/"))
    raise MlflowImportError(
        f"not an MLflow model URI: {uri!r} (expected models:/NAME/VERSION, models:/NAME@ALIAS "
        "or runs:/RUN_ID/ARTIFACT_PATH)",
        reason="bad_uri",
    )


def redact_uri(uri: str | None) -> str | None:
    """The URI without user:password, fit to be written into signed metadata."""
    if not uri or "@" not in uri:
        return uri
    parts = urlsplit(uri)
    if not parts.netloc or "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def import_from_mlflow(
    uri: str,
    *,
    tracking_uri: str | None = None,
    dest_dir: str | os.PathLike[str],
    registry_uri: str | None = None,
) -> MlflowModel:
    """Download the ONNX model behind ``uri`` into ``dest_dir/model.onnx``.

    Args:
        uri: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``models:/NAME/latest``
            or ``runs:/RUN_ID/ARTIFACT_PATH``.
        tracking_uri: the MLflow tracking server or store; ``None`` uses MLflow's default
            (``$MLFLOW_TRACKING_URI``).
        dest_dir: where ``model.onnx`` is written (created if needed; replaced if there).
        registry_uri: the model registry, when it is not the tracking URI.

    Raises:
        MlflowImportError: see the module docstring for the reasons.
    """
    source = parse_mlflow_uri(uri)
    mlflow = _import_mlflow()
    with _global_tracking_uri(mlflow, tracking_uri):
        return _import(mlflow, source, uri, tracking_uri, Path(dest_dir), registry_uri)


def _import(
    mlflow: Any, source: MlflowSource, uri: str, tracking_uri: str | None, dest: Path, registry_uri: str | None
) -> MlflowModel:
    from mlflow import MlflowClient

    resolved_tracking = tracking_uri or mlflow.get_tracking_uri()
    where = redact_uri(resolved_tracking)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)
    prov: dict[str, Any] = {"source": "mlflow", "source_uri": uri, "tracking_uri": where}

    with _mlflow_errors(uri, where):
        if source.kind == "models":
            version = _resolve_version(client, source)
            run_id = version.run_id or None
            download_uri = f"models:/{source.model_name}/{version.version}"
            prov.update(
                registered_model_name=source.model_name,
                registered_model_version=str(version.version),
                registered_model_alias=source.alias,
                model_source=redact_uri(version.source),
            )
        else:
            run_id = source.run_id
            download_uri = uri.strip()
            prov["artifact_path"] = source.artifact_path
        if run_id:
            run = client.get_run(run_id)
            prov.update(run_id=run_id, experiment_id=run.info.experiment_id)
        prov["resolved_uri"] = download_uri

    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".mlflow-") as work:
        with _mlflow_errors(uri, where):
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=download_uri, dst_path=work,
                tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri,
            )
            onnx_file, flavor, meta = _find_onnx(Path(local), uri)
        out = _write_self_contained(onnx_file, dest / MODEL_FILE, uri)

    prov.update(
        flavor=flavor,
        onnx_file=meta.pop("onnx_file"),
        onnx_sha256=sha256_file(out),
        model_id=meta.get("model_id"),
        logged_with_mlflow_version=meta.get("mlflow_version"),
        mlflow_version=mlflow.__version__,
    )
    if run_id is None and meta.get("run_id"):
        run_id = prov["run_id"] = meta["run_id"]
    return MlflowModel(
        onnx_path=out,
        source_uri=uri,
        run_id=run_id,
        model_name=source.model_name,
        model_version=prov.get("registered_model_version"),
        flavor=flavor,
        signature=meta.get("signature"),
        provenance={k: v for k, v in prov.items() if v not in (None, "")},
    )


# -- lookups --------------------------------------------------------------------------


def _import_mlflow() -> Any:
    try:
        import mlflow
        import mlflow.artifacts
    except ImportError as exc:
        raise MlflowImportError(
            f"MLflow is not installed ({exc}); install edgefleet[mlflow]", reason="missing_dependency"
        ) from None
    return mlflow


@contextmanager
def _global_tracking_uri(mlflow: Any, tracking_uri: str | None) -> Iterator[None]:
    """Some MLflow code paths (``models:/m-…`` sources of registered versions) ignore the
    client's tracking URI and read the global one, so set it for the import's duration."""
    if tracking_uri is None:
        yield
        return
    try:
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri
    except ImportError:  # private helper moved: set and restore through the public API
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(tracking_uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous)
        return
    with _use_tracking_uri(tracking_uri):
        yield


def _resolve_version(client: Any, source: MlflowSource) -> Any:
    name = source.model_name
    if source.alias is not None:
        return client.get_model_version_by_alias(name, source.alias)
    if source.version == "latest":
        quoted = str(name).replace("'", "\\'")
        versions = client.search_model_versions(f"name = '{quoted}'")
        if not versions:
            raise MlflowImportError(f"registered model {name!r} has no versions", reason="not_found")
        return max(versions, key=lambda v: int(v.version))
    return client.get_model_version(name, source.version)


@contextmanager
def _mlflow_errors(uri: str, where: str | None) -> Iterator[None]:
    """Translate MLflow / transport errors into ``MlflowImportError``."""
    try:
        yield
    except MlflowImportError:
        raise
    except Exception as exc:
        raise _classify(exc, uri, where) from exc


def _classify(exc: Exception, uri: str, where: str | None) -> MlflowImportError:
    text = str(exc)
    if _is_transport_error(exc):
        return MlflowImportError(
            f"MLflow tracking server {where} is unreachable: {text[:300]}", reason="unreachable"
        )
    code = getattr(exc, "error_code", None)
    if code == "RESOURCE_DOES_NOT_EXIST" or (
        code == "INVALID_PARAMETER_VALUE" and "not found" in text.lower()
    ) or isinstance(exc, FileNotFoundError):
        return MlflowImportError(f"no such MLflow model or run {uri!r} at {where}: {text[:300]}", reason="not_found")
    return MlflowImportError(f"MLflow failed to resolve {uri!r} at {where}: {text[:300]}", reason="mlflow_error")


def _is_transport_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        name = type(seen).__name__
        if isinstance(seen, (ConnectionError, TimeoutError)) or name in {
            "ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "MaxRetryError", "NewConnectionError",
        }:
            return True
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    return "Max retries exceeded" in text or "Failed to establish a new connection" in text


# -- the ONNX file ----------------------------------------------------------------------


def _find_onnx(local: Path, uri: str) -> tuple[Path, str, dict[str, Any]]:
    """(the ONNX file, flavor, metadata from MLmodel) in what was downloaded."""
    if local.is_file():
        if local.suffix.lower() != ".onnx":
            raise MlflowImportError(f"{uri!r} is a single file {local.name!r}, not an ONNX model", reason="no_onnx")
        return local, "artifact", {"onnx_file": local.name}
    meta: dict[str, Any] = {}
    mlmodel = local / "MLmodel"
    if mlmodel.is_file():
        from mlflow.models import Model

        model = Model.load(str(mlmodel))
        meta.update(
            run_id=model.run_id, model_id=getattr(model, "model_id", None),
            mlflow_version=getattr(model, "mlflow_version", None),
            signature=_signature(model),
        )
        onnx_flavor = model.flavors.get("onnx")
        if onnx_flavor and onnx_flavor.get("data"):
            path = local / onnx_flavor["data"]
            if path.is_file():
                meta["onnx_file"] = onnx_flavor["data"]
                return path, "onnx", meta
    found = sorted(p for p in local.rglob("*.onnx") if p.is_file())
    if not found:
        flavors = ""
        if mlmodel.is_file():
            flavors = f" (MLmodel flavors: {', '.join(sorted(_flavors(mlmodel))) or 'none'})"
        raise MlflowImportError(
            f"no ONNX model in the artifacts of {uri!r}{flavors}; log it with mlflow.onnx.log_model "
            "or log a .onnx file as an artifact",
            reason="no_onnx",
        )
    if len(found) > 1:
        names = ", ".join(str(p.relative_to(local)) for p in found[:5])
        raise MlflowImportError(
            f"several ONNX files in the artifacts of {uri!r} ({names}); point the URI at one of them",
            reason="no_onnx",
        )
    meta["onnx_file"] = str(found[0].relative_to(local))
    return found[0], "artifact", meta


def _flavors(mlmodel: Path) -> list[str]:
    from mlflow.models import Model

    return list(Model.load(str(mlmodel)).flavors)


def _signature(model: Any) -> dict[str, Any] | None:
    sig = getattr(model, "signature", None)
    if sig is None:
        return None
    out: dict[str, Any] = {}
    for key, value in sig.to_dict().items():
        try:
            out[key] = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            out[key] = value
    return out


def _write_self_contained(src: Path, out: Path, uri: str) -> Path:
    """Copy ``src`` to ``out``; if its weights are external data, inline them first."""
    import onnx

    try:
        model = onnx.load(str(src), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise MlflowImportError(f"{src.name} from {uri!r} is not a valid ONNX file: {exc}", reason="invalid_onnx") from None
    tmp = out.with_name(f".{out.name}.tmp")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in _tensors(model.graph)):
        try:
            onnx.load_external_data_for_model(model, str(src.parent))
            onnx.external_data_helper.convert_model_from_external_data(model)
            tmp.write_bytes(model.SerializeToString())
        except (OSError, ValueError) as exc:
            raise MlflowImportError(
                f"cannot inline the external weights of {src.name} from {uri!r}: {exc}", reason="invalid_onnx"
            ) from None
    else:
        shutil.copyfile(src, tmp)
    os.replace(tmp, out)
    return out


def _tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for g in attr.graphs:
                yield from _tensors(g)

