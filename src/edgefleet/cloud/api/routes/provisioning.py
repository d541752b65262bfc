"""/api/v1/provisioning — where a device reaches the controller and the broker (``fleet device add --out``).

The operator's CLI may reach the controller by another address than the devices do (a
laptop through an SSH tunnel, a device on a plant network). The bundle must carry the
device's view: ``public_url`` and the broker host/port/protocol/TLS from controller.toml
(``CloudSettings.device_mqtt``), never the CLI's own URL.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from ..deps import Admin, ControllerDep

router = APIRouter(prefix="/provisioning", tags=["devices"])


class DeviceMqtt(BaseModel):
    host: str
    port: int
    protocol: Literal["3.1.1", "5"]
    tls: bool


class DeviceEndpoints(BaseModel):
    controller_url: str
    public_url_set: bool  # False: controller_url is the controller's own address, maybe loopback
    mqtt: DeviceMqtt


@router.get("/endpoints", response_model=DeviceEndpoints,
            summary="The controller URL and broker settings as devices reach them (for provisioning bundles)")
def endpoints(controller: ControllerDep, _: Admin) -> DeviceEndpoints:
    s = controller.settings
    return DeviceEndpoints(controller_url=s.base_url.rstrip("/"), public_url_set=s.public_url is not None,
                           mqtt=DeviceMqtt(**s.device_mqtt))
