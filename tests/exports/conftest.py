"""The review test server (real uvicorn, real event and upload paths, real VP8 clips of the
digits camera) with its five captures labelled the way a reviewer would."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.review.conftest import ReviewServer
from tests.review.conftest import server as review_server  # noqa: F401  (the fixture, module-scoped)

# captures (tests/review/conftest.py CAPTURES): 0, 1: "8" vs "3" on cam-a; 2: "8" vs "1" on cam-b;
# 3: "5" vs "5" low confidence; 4: "3" vs "3" sampled
VERDICTS = [("control_right", None), ("candidate_right", None), ("both_wrong", "9"), ("unclear", None),
            ("both_wrong", None)]
EXPECTED = {0: "8", 1: "3", 2: "9"}  # what a training set gets; 3 and 4 have no label


def label(server: ReviewServer, event_id: str, verdict: str, corrected: str | None = None) -> httpx.Response:
    return httpx.post(f"{server.url}/api/v1/review/{event_id}/label", headers=server.headers("reviewer"),
                      json={"verdict": verdict, "corrected_label": corrected})


@pytest.fixture(scope="module")
def labelled(review_server: ReviewServer) -> Iterator[ReviewServer]:  # noqa: F811
    for eid, (verdict, corrected) in zip(review_server.event_ids, VERDICTS):
        r = label(review_server, eid, verdict, corrected)
        assert r.status_code == 200, r.text
    yield review_server
