"""/api/v1/trust — the trusted roots devices are provisioned with, and key rotation."""

from __future__ import annotations

import json
from typing import Literal

from fastapi import APIRouter

from ..deps import Admin, ControllerDep

router = APIRouter(prefix="/trust", tags=["trust"])


@router.get("/roots", summary="Director and image root metadata, and the fleet CA certificate, to provision a device with")
def roots(controller: ControllerDep, _: Admin) -> dict:
    r = controller.trust.roots()
    ca = controller.pki  # the fleet CA: devices verify the controller and the broker against it
    return {"director_root": json.loads(r.director), "image_root": json.loads(r.image),
            "fleet_ca_pem": ca.ca_pem if ca is not None else None}


@router.post("/rotate/{role}", summary="Rotate one role's key in the image repository and/or director")
def rotate(role: Literal["root", "targets", "snapshot", "timestamp"], controller: ControllerDep, _: Admin,
           repo: Literal["image", "director", "both"] = "both") -> dict:
    return {"role": role, "new_keyids": controller.trust.rotate(role, repo)}
