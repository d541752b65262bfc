"""/api/v1/trust — the trusted roots devices are provisioned with, key status and key rotation.

Root kept offline: ``POST …/prepare`` returns the next root version unsigned (per
repository); the command signs it with the root keys it brought and sends only the
signatures to ``POST …/commit``, which publishes it once a threshold of the current and of
the new root keys verify. No private key ever travels to the controller.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field, StringConstraints

from ....registry.tuf.keys import KeyEntry
from ...trust import director_store
from ...trust.key_status import key_status
from ...trust.repository import key_entry_from_wire
from ..deps import Admin, ControllerDep
from ..problems import responses

router = APIRouter(prefix="/trust", tags=["trust"])
_CONFLICT = responses(409, _409="a key the change needs is offline (E_KEYS_OFFLINE), or no change was prepared")

Repo = Literal["image", "director"]
RepoSel = Literal["image", "director", "both"]
Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{1,1024}$")]


class KeyLocation(BaseModel):
    """Where the command keeps the new root key's private half (recorded for ``keys status``)."""

    kind: Literal["file", "uri"]
    dir: Annotated[str, StringConstraints(max_length=1024)] | None = None
    file: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,200}$")] | None = None
    encrypted: bool = False
    uri: Annotated[str, StringConstraints(max_length=1024)] | None = None


class NewRootKey(BaseModel):
    keyid: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    public: dict[str, Any] = Field(description="securesystemslib public key (keytype, scheme, keyval)")
    location: KeyLocation


class PrepareRequest(BaseModel):
    repo: RepoSel = "both"
    new_root_keys: dict[Repo, NewRootKey] | None = Field(
        None, description="for a root rotation: the new root key of each repository (public half only)")


class SignatureIn(BaseModel):
    keyid: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    sig: Hex


class CommitRequest(BaseModel):
    signatures: dict[Repo, Annotated[list[SignatureIn], Field(min_length=1, max_length=32)]]
    root_location: Annotated[str, StringConstraints(max_length=300)] = Field(
        "", description="where the root keys were and the new one went (audit summary; no secret)")


@router.get("/roots", summary="Director and image root metadata, and the fleet CA certificate, to provision a device with")
def roots(controller: ControllerDep, _: Admin) -> dict:
    r = controller.trust.roots()
    ca = controller.pki  # the fleet CA: devices verify the controller and the broker against it
    return {"director_root": json.loads(r.director), "image_root": json.loads(r.image),
            "fleet_ca_pem": ca.ca_pem if ca is not None else None}


@router.get("/keys", summary="Per repository and role: key ids, threshold, where each private key lives, "
                             "permission problems, metadata expiry")
def keys(controller: ControllerDep, _: Admin) -> dict:
    controller.trust  # noqa: B018 - loaded (created on first use) like everywhere else
    with controller.session() as s:  # per-device director metadata lives in the database
        director_db = director_store.expiry_summary(s)
    doc = key_status(controller.settings.data_dir, now=datetime.now(timezone.utc), director_db=director_db,
                     image_db=controller.trust.image_expiry())  # image metadata: the database too
    doc["root_expiring"] = controller.trust.root_expiring()
    return doc


@router.post("/rotate/{role}", responses=_CONFLICT, summary="Rotate one role's key in the image repository and/or director")
def rotate(role: Literal["root", "targets", "snapshot", "timestamp"], controller: ControllerDep, _: Admin,
           repo: RepoSel = "both") -> dict:
    return {"role": role, "new_keyids": controller.trust.rotate(role, repo)}


@router.post("/rotate/{role}/prepare", responses=_CONFLICT, summary="Prepare a key rotation signed by offline root keys: the unsigned new root")
def rotate_prepare(role: Literal["root", "targets", "snapshot", "timestamp"], body: PrepareRequest,
                   controller: ControllerDep, _: Admin) -> dict:
    new: dict[str, KeyEntry] = {r: key_entry_from_wire(k.model_dump()) for r, k in (body.new_root_keys or {}).items()}
    return {"role": role, "unsigned": controller.trust.prepare_root_change(role, body.repo, new)}


@router.post("/rotate/{role}/commit", responses=_CONFLICT, summary="Publish a prepared rotation with the offline root signatures")
def rotate_commit(role: Literal["root", "targets", "snapshot", "timestamp"], body: CommitRequest,
                  controller: ControllerDep, _: Admin) -> dict:
    sigs: dict[str, list[dict]] = {r: [s.model_dump() for s in v] for r, v in body.signatures.items()}
    return {"role": role, "new_keyids": controller.trust.commit_root_change(sigs)}


@router.post("/resign-root/{repo}/prepare", responses=_CONFLICT, summary="Prepare root re-signed with a new expiry (unsigned)")
def resign_prepare(repo: RepoSel, controller: ControllerDep, _: Admin) -> dict:
    return {"unsigned": controller.trust.prepare_root_change(None, repo)}


@router.post("/resign-root/{repo}/commit", responses=_CONFLICT, summary="Publish the re-signed root with the offline root signatures")
def resign_commit(repo: RepoSel, body: CommitRequest, controller: ControllerDep, _: Admin) -> dict:
    sigs: dict[str, list[dict]] = {r: [s.model_dump() for s in v] for r, v in body.signatures.items()}
    controller.trust.commit_root_change(sigs)
    return {"resigned": sorted(sigs)}
