"""The correct label's choices and check on SQLite and PostgreSQL (tests/conftest.py
``postgres``): ``manifest_labels`` reads several models' manifests in one query, and
``label`` stores a corrected label only when it is one of them (a refused one changes
nothing)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlmodel import Session, select

from edgefleet.cloud import db, review, shadow_index
from edgefleet.cloud.errors import BadRequest
from edgefleet.cloud.tables import ModelVersion
from edgefleet.protocols import Event, ModelOutput, ModelRef

DIGITS = [str(i) for i in range(10)]


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'c.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres")
    eng = db.make_engine(url)
    db.migrate(eng)
    yield eng
    eng.dispose()


def _seed(s: Session) -> str:
    """Three catalog entries (1.0 and 2.0 share the digits, 2.0 adds "ten") and one capture
    of 1.0 against 2.0; returns its event id."""
    for version, labels in (("1.0", DIGITS), ("2.0", [*DIGITS, "ten"]), ("3.0", ["x"])):
        s.add(ModelVersion(name="digits", version=version, digest=version.replace(".", "") * 32, size=1,
                           manifest={"name": "digits", "version": version, "labels": [*labels, 7]}))
    s.commit()
    refs = {v: ModelRef(name="digits", version=v, digest=v.replace(".", "") * 32) for v in ("1.0", "2.0")}
    shadow_index.record_event(s, Event(
        device_id="cam-1", event_id="e1", trigger="disagreement", ts=datetime.now(timezone.utc),
        control=ModelOutput(model=refs["1.0"], label="8", score=0.9, scores=[]),
        candidate=ModelOutput(model=refs["2.0"], label="3", score=0.6, scores=[]), clip_id=None), via="mqtt")
    return "e1"


def test_manifest_labels_in_one_query_and_the_check_on_both_databases(engine) -> None:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        eid = _seed(s)
        statements: list[str] = []

        def seen(conn, cursor, statement, *rest) -> None:  # type: ignore[no-untyped-def]
            statements.append(statement)

        event.listen(engine, "before_cursor_execute", seen)
        try:
            got = review.manifest_labels(s, ["digits:1.0", "digits:2.0", "digits:9.9"])
        finally:
            event.remove(engine, "before_cursor_execute", seen)
        assert len([x for x in statements if "model_version" in x]) == 1
        assert got == {"digits:1.0": DIGITS, "digits:2.0": [*DIGITS, "ten"], "digits:9.9": []}  # non-strings dropped
        ev = review.find_event(s, eid)
        assert review.model_labels(s, ev) == [*DIGITS, "ten"]
        row = review.label(s, eid, "both_wrong", reviewer="r", corrected_label="ten")
        assert row.corrected_label == "ten"
        for bad, verdict in (("x", "both_wrong"), ("cat", "both_wrong"), ("9", "control_right")):
            with pytest.raises(BadRequest):
                review.label(s, eid, verdict, reviewer="r2", corrected_label=bad)
            s.rollback()
        [kept] = s.exec(select(review.ReviewLabel)).all()
        assert (kept.verdict, kept.corrected_label, kept.reviewer) == ("both_wrong", "ten", "r")
