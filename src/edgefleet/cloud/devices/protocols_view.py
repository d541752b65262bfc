"""Views of what devices reported, for pages and routes (device-supplied: escape on output)."""

from __future__ import annotations

from typing import Any

from ...protocols.messages import Inventory
from ..tables import Device


def inventory_of(device: Device) -> dict[str, Any] | None:
    """The inventory of the device's last verified ``reported`` (re-validated), or None."""
    raw = (device.reported or {}).get("inventory")
    if not isinstance(raw, dict):
        return None
    try:
        return Inventory.model_validate(raw).model_dump(mode="json")
    except ValueError:
        return None
