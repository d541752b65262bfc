"""Model catalog: push a model (validate, bundle, store content-addressed, record), list versions.

``push_model`` is idempotent: pushing the same name, version and bytes again returns the
existing version; the same name and version with other bytes is a ``Conflict``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from pydantic import ValidationError
from sqlmodel import Session, col, select

from ..protocols import InvalidPayload, Manifest, parse_manifest
from ..registry import BlobStore, InvalidBundle
from ..registry.bundle import build_bundle
from ..registry.onnx_check import check_model, infer_manifest
from .errors import BadRequest, Conflict, NotFound
from .tables import MODEL_NAME_PATTERN, ModelVersion
from .trust.repository import Trust

log = logging.getLogger(__name__)


def check_name(kind: str, value: str, max_length: int) -> str:
    """Raises BadRequest unless ``value`` is a safe model name or version."""
    if len(value) > max_length or not re.match(MODEL_NAME_PATTERN, value):
        raise BadRequest(f"model {kind} {value[:80]!r} is not valid: use at most {max_length} letters, "
                         "digits, '.', '_' or '-', starting with a letter or digit")
    return value


def parse_model_ref(ref: str) -> tuple[str, str]:
    name, sep, version = ref.partition(":")
    if not sep or not name or not version:
        raise BadRequest(f"model must be NAME:VERSION, got {ref[:200]!r}")
    return check_name("name", name, 128), check_name("version", version, 64)


def make_manifest(
    model_bytes: bytes,
    *,
    name: str,
    version: str,
    manifest: dict[str, Any] | bytes | None = None,
    labels: list[str] | None = None,
    provenance: dict[str, Any] | None = None,
) -> Manifest:
    """Use the given manifest (name/version forced to match) or infer one from the graph."""
    try:
        if manifest is not None:
            m = parse_manifest(manifest)
            if m.name != name or m.version != version:
                raise BadRequest(f"manifest says {m.label} but the push is for {name}:{version}")
            if labels:
                m = m.model_copy(update={"labels": labels})
        else:
            m = infer_manifest(model_bytes, name=name, version=version, labels=labels)
        if provenance:
            m = m.model_copy(update={"provenance": {**m.provenance, **provenance}})
        return Manifest.model_validate(m.model_dump(by_alias=True))
    except InvalidPayload as exc:
        raise BadRequest(f"invalid manifest: {exc}") from None
    except ValidationError as exc:  # an inferred manifest refused by the schema
        raise BadRequest(f"invalid manifest: {exc.errors()[0].get('loc')}: {exc.errors()[0].get('msg')}") from None
    except InvalidBundle as exc:
        raise BadRequest(str(exc)) from None


def push_model(
    session: Session,
    store: BlobStore,
    model_bytes: bytes,
    *,
    name: str,
    version: str,
    manifest: dict[str, Any] | bytes | None = None,
    labels: list[str] | None = None,
    provenance: dict[str, Any] | None = None,
    trust: Trust | None = None,
    pushed_by: str | None = None,
) -> tuple[ModelVersion, bool]:
    """Validate, store and (with ``trust``) sign one model version. Returns (version, created).

    ``pushed_by`` (the API token's name) and the sha256 of the ONNX bytes are recorded with
    it (``lifecycle.same_bytes_notes`` finds the same bytes under other versions).

    Raises:
        BadRequest: corrupt ONNX, manifest mismatch.
        Conflict: name+version exists with different content.
    """
    check_name("name", name, 128), check_name("version", version, 64)
    m = make_manifest(model_bytes, name=name, version=version, manifest=manifest, labels=labels, provenance=provenance)
    try:
        check_model(model_bytes, m)
    except InvalidBundle as exc:
        raise BadRequest(f"{name}:{version} refused: {exc}") from None
    bundle = build_bundle(m, model_bytes)
    existing = session.exec(
        select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)
    ).first()
    from ..registry.blobstore import sha256_bytes

    digest = sha256_bytes(bundle)
    if existing is not None:
        if existing.digest == digest:
            return existing, False
        raise Conflict(
            f"{name}:{version} already exists with digest {existing.digest[:12]}…; "
            f"this content has {digest[:12]}…. Push it under a new version."
        )
    store.put(bundle, expected_digest=digest)
    manifest_json = m.model_dump(mode="json", by_alias=True)
    target_name = None
    if trust is not None:
        target = trust.release(digest, manifest_json, session=session)  # commits with the push
        counter, target_name = target.release_counter, target.name
    else:
        counter = _next_release_counter(session, name)
    mv = ModelVersion(
        name=name, version=version, digest=digest, size=len(bundle), task=m.task,
        manifest=manifest_json, release_counter=counter, target_name=target_name,
        pushed_by=(pushed_by or "")[:128] or None, model_sha256=sha256_bytes(model_bytes),
    )
    session.add(mv)
    session.commit()
    session.refresh(mv)
    log.info("pushed model %s:%s digest=%s size=%d", name, version, digest, len(bundle))
    return mv, True


def _next_release_counter(session: Session, name: str) -> int:
    rows = session.exec(select(ModelVersion.release_counter).where(ModelVersion.name == name)).all()
    return (max(rows) if rows else 0) + 1


def get_version(session: Session, ref: str) -> ModelVersion:
    name, version = parse_model_ref(ref)
    mv = session.exec(
        select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)
    ).first()
    if mv is None:
        raise NotFound(f"no model {name}:{version}; push it first (fleet model push)")
    return mv


def list_versions(session: Session) -> list[ModelVersion]:
    return list(session.exec(select(ModelVersion).order_by(col(ModelVersion.name), col(ModelVersion.created_at))).all())
