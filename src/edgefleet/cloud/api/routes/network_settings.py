"""/api/v1/settings/network — the network policy every device gets (fleet-wide, signed).

``GET`` (viewer) shows the policy in force and where it comes from; ``PUT`` (operator)
replaces it and sends it to every device inside the director's signed per-device
metadata; ``DELETE`` (operator) returns to the default (any link, no cap). The device
enforces it: downloads and clip uploads wait on a link the policy does not allow, and go
no faster than the lower of the policy's and the device's own caps. Audited like every
call through the API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from ....protocols.messages import NetworkPolicy
from ...devices import fleet_settings
from ..deps import ControllerDep, Operator, SessionDep, Viewer

router = APIRouter(prefix="/settings", tags=["settings"])


class NetworkPolicyBody(NetworkPolicy):
    """The whole policy: ``download`` any | unmetered | interfaces (with ``interfaces``),
    ``max_download_bps`` / ``max_upload_bps`` in bytes/s (null: no cap by policy)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"download": "unmetered", "max_download_bps": 500000, "max_upload_bps": 100000}],
        "anyOf": [  # the schema says what _interfaces_named checks (api contract, tests/contract)
            {"properties": {"download": {"enum": ["any", "unmetered"]}}},
            {"properties": {"interfaces": {"minItems": 1}}, "required": ["interfaces"]}]})


class NetworkSettings(BaseModel):
    policy: NetworkPolicy
    source: Literal["default", "operator"]
    updated_at: datetime | None = None
    updated_by: str | None = None
    devices_notified: int | None = None


def _current(session: SessionDep, notified: int | None = None) -> NetworkSettings:
    row = fleet_settings.stored_network_policy(session)
    policy = fleet_settings.network_policy(session)
    if row is None:
        return NetworkSettings(policy=policy, source="default", devices_notified=notified)
    return NetworkSettings(policy=policy, source="operator", updated_at=row.updated_at, updated_by=row.updated_by,
                           devices_notified=notified)


@router.get("/network", response_model=NetworkSettings, summary="The network policy devices get")
def get_network(session: SessionDep, _: Viewer) -> NetworkSettings:
    return _current(session)


@router.put("/network", response_model=NetworkSettings,
            summary="Set the network policy (link kinds, bandwidth caps) and send it, signed, to every device")
def put_network(session: SessionDep, controller: ControllerDep, principal: Operator,
                policy: NetworkPolicyBody) -> NetworkSettings:
    plain = NetworkPolicy.model_validate(policy.model_dump())
    n = fleet_settings.set_network_policy(session, controller, plain, by=principal.name)
    return _current(session, notified=n)


@router.delete("/network", response_model=NetworkSettings,
               summary="Return to the default network policy (any link, no cap)")
def reset_network(session: SessionDep, controller: ControllerDep, principal: Operator) -> NetworkSettings:
    n = fleet_settings.reset_network_policy(session, controller, by=principal.name)
    return _current(session, notified=n)
