"""/ui/review — the review queue: filter, play a clip, see both models' outputs, give a verdict.

The page renders the first ``PAGE_ITEMS`` captures of the filter as JSON; ``review.js``
plays them and sends verdicts through ``/ui/api/v1/review/{event_id}/label`` (the real API:
reviewer role and up). After a verdict the next unlabelled capture is shown at once — its
clip was prefetched while the current one played — and more are fetched from
``/ui/api/v1/review/queue`` as the list runs short. Keyboard: 1/2/3/4 (or c/k/b/u) for the
verdicts, n/p for next/previous, space to play or pause.

With the verdict a reviewer may pick the correct label: a ``<select>`` of the labels of the
capture's models' manifests (the page data's and the queue API's ``labels``, per model
``name:version``) plus "(none)", sent in the same request as ``corrected_label`` and checked
by ``review.check_corrected_label`` (a refusal shows in the page's flash; nothing is stored).
Viewers see the queue and the clips without verdict buttons or the label picker.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from ... import review
from ...api.deps import SessionDep
from ...errors import BadRequest
from ..auth import PagePrincipal
from ..nav import NAV_ORDER, NavItem
from ..render import render

router = APIRouter(prefix="/ui/review")
NAV = NavItem("review", "Review", "/ui/review", "viewer", NAV_ORDER["review"])
PAGE_ITEMS = 30
VERDICT_KEYS = (("control_right", "1", "c", "Control right"), ("candidate_right", "2", "k", "Candidate right"),
                ("both_wrong", "3", "b", "Both wrong"), ("unclear", "4", "u", "Unclear"))
SHOW = ("unlabelled", "all", "labelled")


def _time(value: str | None) -> datetime | None:
    """``YYYY-MM-DDTHH:MM`` (a datetime-local field, taken as UTC) or full ISO."""
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"not a time: {value!r} (use YYYY-MM-DDTHH:MM, UTC)") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def page_filter(params: dict[str, str]) -> tuple[review.QueueFilter, dict[str, str], str]:
    """The queue filter from the page's query string, the same as API query params, and the mode."""
    show = params.get("show") or "unlabelled"
    if show not in SHOW:
        show = "unlabelled"
    keep = {k: params[k] for k in ("pair", "class", "control_label", "candidate_label", "device", "trigger",
                                   "since", "until") if params.get(k)}
    f = review.QueueFilter(
        pair=keep.get("pair"), label=keep.get("class"), control_label=keep.get("control_label"),
        candidate_label=keep.get("candidate_label"), device_id=keep.get("device"), trigger=keep.get("trigger"),
        since=_time(keep.get("since")), until=_time(keep.get("until")),
        unlabelled=show == "unlabelled", labelled=show == "labelled",
    )
    f.pair_refs()
    api = dict(keep)
    for k in ("since", "until"):
        t = getattr(f, k)
        if t is not None:
            api[k] = t.isoformat()
    return f, api, show


@router.get("", response_class=HTMLResponse)
def review_page(request: Request, session: SessionDep, principal: PagePrincipal) -> HTMLResponse:
    params = dict(request.query_params)
    f, api_params, show = page_filter(params)
    rows = review.queue(session, f, limit=PAGE_ITEMS)
    items = [review.item_public(i) for i in rows]
    unlabelled_total = review.count(session, review.QueueFilter(**{**f.__dict__, "unlabelled": True, "labelled": False}))
    data = {"items": items, "query": urlencode(api_params), "show": show, "unlabelled": unlabelled_total,
            "total": review.count(session, f), "page_items": PAGE_ITEMS,
            "labels": review.queue_labels(session, rows)}
    return render(request, "review.html", principal, active="review", data=_json_script(data), items=items,
                  facets=review.facets(session), params=params, show=show, verdicts=VERDICT_KEYS,
                  unlabelled=unlabelled_total, total=data["total"],
                  counts=review.verdict_counts(session, review.QueueFilter(**{**f.__dict__, "unlabelled": False})))


def _json_script(data: Any) -> Markup:
    """JSON safe inside <script type="application/json">."""
    text = json.dumps(data, default=str).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)
