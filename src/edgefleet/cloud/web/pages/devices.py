"""/ui/devices/{id} — one device: state, tags, slots, inventory and its history.

Everything here that a device sent (inventory strings, error texts, agent version) goes
through Jinja's autoescaping; nothing is marked safe.
"""

from __future__ import annotations

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse

from ...api.deps import SessionDep
from ...devices import fleet, history
from ...devices.protocols_view import inventory_of
from ..auth import PagePrincipal
from ..render import render

router = APIRouter(prefix="/ui/devices")
HISTORY_ROWS = 200


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024  # type: ignore[assignment]
    return "-"


@router.get("/{device_id}", response_class=HTMLResponse)
def device_page(request: Request, session: SessionDep, principal: PagePrincipal,
                device_id: str = Path(max_length=128)) -> HTMLResponse:
    device = fleet.get_device(session, device_id)
    pub = fleet.device_public(session, device)
    inv = inventory_of(device)
    page = history.history(session, device_id, limit=HISTORY_ROWS)
    if page.next_since is not None:  # show the newest entries: page forward from the end
        newest = history.history(session, device_id, since=None, limit=history.MAX_LIMIT)
        entries = newest.entries[-HISTORY_ROWS:]
    else:
        entries = page.entries
    disk = memory = None
    if inv:
        disk = f"{_bytes(inv.get('disk_free_bytes'))} free of {_bytes(inv.get('disk_total_bytes'))}"
        memory = f"{_bytes(inv.get('memory_available_bytes'))} available of {_bytes(inv.get('memory_total_bytes'))}"
    return render(request, "device.html", principal, active="fleet", d=pub, inventory=inv, disk=disk,
                  memory=memory, entries=list(reversed(entries)))
