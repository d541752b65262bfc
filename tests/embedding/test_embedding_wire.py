"""The compact embedding on the wire (``protocols/embedding.py``): in capture records, in
campaigns' ``like``, through the controller's store and API, and on the agent.

Forged vectors — NaN or inf bits, data shorter or longer than ``dim``, a dim above 4096, text
that is not base64 — are refused at the schema wherever they arrive: an event (MQTT or
upload), a campaign request (HTTP 422), a device's signed settings. Records and campaigns
written before the field existed still load and work.
"""

from __future__ import annotations

import base64
import json
import logging
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import ValidationError

from edgefleet.cloud.campaigns import store
from edgefleet.cloud.devices import fleet
from edgefleet.cloud.errors import BadRequest, Conflict
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings
from edgefleet.edge_agent.campaigns import Campaigns
from edgefleet.protocols import (
    DeviceSettings,
    Embedding,
    Event,
    InvalidPayload,
    ModelOutput,
    ModelRef,
    decode,
    encode,
)
from edgefleet.protocols.campaigns import MAX_SETTINGS_EMBEDDING_BYTES, CampaignSpec, Like
from edgefleet.protocols.embedding import MAX_DIM, pack
from edgefleet.shadow.prediction import Prediction
from edgefleet.shadow.record import build_event
from edgefleet.shadow.triggers import Trigger
from tests.conftest import Stack

DIGEST_A, DIGEST_B = "a" * 64, "b" * 64


def _raw(values: list[float], fmt: str = "e") -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}{fmt}", *values)).decode()


def _forged() -> dict[str, dict[str, Any]]:
    nan16 = base64.b64encode(b"\x00\x7e" + struct.pack("<3e", 1, 2, 3)).decode()  # float16 NaN bits first
    inf32 = base64.b64encode(struct.pack("<2f", 1.0, float("inf"))).decode()
    return {
        "nan": {"dim": 4, "dtype": "float16", "data": nan16},
        "inf": {"dim": 2, "dtype": "float32", "data": inf32},
        "short": {"dim": 100, "dtype": "float16", "data": _raw([0.5] * 99)},
        "long": {"dim": 3, "dtype": "float16", "data": _raw([0.5] * 4)},
        "oversized": {"dim": MAX_DIM + 1, "dtype": "float16", "data": _raw([0.5] * (MAX_DIM + 1))},
        "not base64": {"dim": 3, "dtype": "float16", "data": "!!!!!!!!"},
        "bad digest": {"dim": 1, "data": _raw([1.0]), "model_digest": "not-a-digest"},
    }


def test_pack_round_trips_and_falls_back_to_float32_beyond_float16() -> None:
    vals = np.random.default_rng(0).normal(size=100).tolist()
    emb = pack(vals, output="features", model_digest=DIGEST_A)
    assert emb.dtype == "float16" and emb.dim == 100 and emb.nbytes == 200 and len(emb.data) == 268
    assert np.allclose(emb.values(), vals, atol=2e-3)
    again = Embedding.model_validate_json(emb.model_dump_json())
    assert again == emb and again.output == "features" and again.model_digest == DIGEST_A
    big = pack([1.0, 1e6])
    assert big.dtype == "float32" and big.values() == [1.0, 1e6]  # never inf
    for bad in ([], [float("nan")], [float("inf")], [0.0] * (MAX_DIM + 1)):
        with pytest.raises(ValueError):
            pack(bad)


@pytest.mark.parametrize("case", list(_forged()))
def test_forged_embeddings_are_refused_in_events_and_likes(case: str) -> None:
    forged = _forged()[case]
    with pytest.raises(ValidationError):
        Embedding.model_validate(forged)
    event = Event(device_id="cam-a", event_id="e1", trigger="campaign").model_dump(mode="json", by_alias=True)
    with pytest.raises(InvalidPayload):
        decode(json.dumps({**event, "embedding": forged}).encode(), Event)
    with pytest.raises(ValidationError):
        Like.model_validate({"embedding": forged, "threshold": 0.1})


def test_like_bounds_per_metric_and_old_vectors_still_load() -> None:
    emb = pack([1.0, 0.0, 0.0]).model_dump()
    assert Like.model_validate({"embedding": emb, "threshold": 2.0}).metric == "cosine"
    with pytest.raises(ValidationError, match="cosine distance threshold is at most 2"):
        Like.model_validate({"embedding": emb, "threshold": 2.5})
    assert Like.model_validate({"embedding": emb, "threshold": 250.0, "metric": "l2"}).threshold == 250.0
    for bad in ({"embedding": emb, "threshold": 0}, {"embedding": emb, "threshold": 2e6, "metric": "l2"},
                {"embedding": emb, "threshold": 0.1, "metric": "manhattan"}, {"threshold": 0.1},
                {"embedding": emb, "vector": [1.0, 0.0], "threshold": 0.1}, {"vector": [float("nan")], "threshold": 0.1}):
        with pytest.raises(ValidationError):
            Like.model_validate(bad)
    old = Like.model_validate({"vector": [0.1, 0.8, 0.1], "threshold": 0.05, "source_event": "ev"})  # a stored row
    assert old.values() == [0.1, 0.8, 0.1] and old.metric == "cosine" and old.dim == 3 and old.embedding is None


def test_signed_settings_refuse_like_vectors_beyond_their_budget() -> None:
    one = pack([0.5] * MAX_DIM, dtype="float32")  # 16 KiB raw
    specs = [CampaignSpec(name=f"c{i}", like=Like(embedding=one, threshold=0.1), per_device_quota=1)
             for i in range(MAX_SETTINGS_EMBEDDING_BYTES // one.nbytes)]
    DeviceSettings(campaigns=specs)  # exactly at the budget
    extra = CampaignSpec(name="one-more", like=Like(embedding=one, threshold=0.1), per_device_quota=1)
    with pytest.raises(ValidationError, match="like vectors take"):
        DeviceSettings(campaigns=[*specs, extra])
    # the agent reads settings through the same schema: a forged like in them is refused whole
    body = DeviceSettings().model_dump(mode="json")
    body["campaigns"] = [{"name": "x", "per_device_quota": 1, "like": {"embedding": _forged()["nan"], "threshold": 0.1}}]
    with pytest.raises(ValidationError):
        DeviceSettings.model_validate(body)


def test_an_event_carries_a_4096_value_embedding_within_the_upload_limit() -> None:
    pred = Prediction("classification", label="3", score=0.9, labels=tuple("0123456789"),
                      probs=np.full(10, 0.1), embedding=np.ones(MAX_DIM, dtype=np.float32))
    emb = pack(pred.embedding.tolist(), output="features", model_digest=DIGEST_A)  # type: ignore[union-attr]
    ev = build_event(device_id="cam-a", event_id="e" * 32, trigger=Trigger("campaign", 25, "3", 0.9), control=pred,
                     ts=Event(device_id="x", event_id="x", trigger="x").ts, embedding=emb,
                     control_model=ModelRef(name="digits", version="1", digest=DIGEST_A))
    raw = encode(ev)
    assert len(ev.control.scores) == 10  # the embedding does not squeeze the scores out
    assert len(raw) <= 16 * 1024  # the upload endpoint's max_event_bytes
    assert decode(raw, Event).embedding == emb
    old = decode(encode(Event(device_id="cam-a", event_id="e2", trigger="low_confidence")), Event)
    assert old.embedding is None


# ----- the agent -----


def _pred(vec: list[float]) -> Prediction:
    return Prediction("classification", label="0", score=0.99, labels=("0", "1"), probs=np.array([0.99, 0.01]),
                      embedding=np.asarray(vec, dtype=np.float32))


def test_agent_skips_a_like_from_another_control_model_and_logs_why(caplog: pytest.LogCaptureFixture) -> None:
    ref = [1.0, 0.0, 0.5, 0.25]
    like = Like(embedding=pack(ref, output="features", model_digest=DIGEST_A), threshold=0.01)
    campaigns = Campaigns(None, device_id="cam-7")
    campaigns.update([CampaignSpec(name="near", like=like, per_device_quota=100, max_per_minute=6000)])
    with caplog.at_level(logging.WARNING, logger="edgefleet.edge_agent.campaigns"):
        for i in range(3):
            match, _ = campaigns.match(_pred(ref), None, None, now=float(i), control_digest=DIGEST_B)
            assert match is None
    assert "not the model the embedding came from" in campaigns.skipped["near"]
    assert campaigns.refused == {"near:model_digest": 3}
    warned = [r.getMessage() for r in caplog.records if "near" in r.getMessage()]
    assert len(warned) == 1 and "cam-7" in warned[0]  # once, with the device id
    match, _ = campaigns.match(_pred(ref), None, None, now=5.0, control_digest=DIGEST_A)
    assert match is not None and match.name == "near"  # the same frame on the model it came from
    campaigns.update([])
    assert campaigns.skipped == {}


def test_agent_l2_metric_and_an_old_vector_campaign_still_match() -> None:
    ref = [3.0, 4.0, 0.0]
    campaigns = Campaigns(None)
    l2 = Like(embedding=pack(ref, model_digest=DIGEST_A), threshold=1.0, metric="l2")
    old = Like.model_validate({"vector": [0.99, 0.01], "threshold": 0.001})  # from scores, as stored before
    campaigns.update([CampaignSpec(name="l2", like=l2, per_device_quota=100, max_per_minute=6000, priority=30),
                      CampaignSpec(name="old", like=old, per_device_quota=100, max_per_minute=6000)])
    # same direction, twice as long: cosine 0 but l2 5 — l2 refuses it, the scores campaign takes it
    match, _ = campaigns.match(_pred([6.0, 8.0, 0.0]), None, None, now=1.0, control_digest=DIGEST_A)
    assert match is not None and match.name == "old"
    match, _ = campaigns.match(_pred([3.5, 4.0, 0.5]), None, None, now=2.0, control_digest=DIGEST_A)
    assert match is not None and match.name == "l2"  # l2 distance 0.71


# ----- the controller -----


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    c = Controller(load_settings(tmp_path, env={}))
    c.migrate()
    with c.session() as s:
        fleet.enrol_device(s, "cam-a", "cpu-x86_64", {})
    yield c
    c.engine.dispose()


def test_like_from_a_record_with_an_embedding_old_records_fall_back_to_scores(controller: Controller) -> None:
    from edgefleet.cloud import shadow_index

    emb = pack(np.linspace(-1, 1, 100).tolist(), output="features", model_digest=DIGEST_A)
    model = ModelRef(name="digits", version="2", digest=DIGEST_A)
    with controller.session() as s:
        shadow_index.record_event(s, Event(device_id="cam-a", event_id="ev-e", trigger="campaign", embedding=emb,
                                           control=ModelOutput(model=model, label="3", score=0.9, scores=[0.9, 0.1])))
        shadow_index.record_event(s, Event(device_id="cam-a", event_id="ev-old", trigger="campaign",
                                           control=ModelOutput(model=model, label="3", score=0.9, scores=[0.9, 0.1])))
        store.start(s, None, store.StartRequest(name="by-emb", like_event="ev-e", threshold=3.0, metric="l2",
                                                quota=5), by="op")
        store.start(s, None, store.StartRequest(name="by-scores", like_event="ev-old", threshold=0.05, quota=5), by="op")
        sent = {sp.name: sp.like for sp in store.specs_for(s, fleet.get_device(s, "cam-a"))}
    by_emb, by_scores = sent["by-emb"], sent["by-scores"]
    assert by_emb is not None and by_emb.embedding == emb and by_emb.metric == "l2" and by_emb.vector is None
    assert by_scores is not None and by_scores.embedding is not None and by_scores.embedding.model_digest is None
    assert by_scores.vector == [0.9, 0.1] and by_scores.embedding.dtype == "float32"  # older agents read vector
    wire = json.loads(DeviceSettings(campaigns=[CampaignSpec(name="by-emb", like=by_emb, per_device_quota=1)])
                      .model_dump_json())
    assert set(wire["campaigns"][0]["like"]["embedding"]) == {"dim", "dtype", "data", "output", "model_digest"}
    with controller.session() as s, pytest.raises(BadRequest, match="cosine distance lies in"):
        store.start(s, None, store.StartRequest(name="far", like_event="ev-e", threshold=3.0, quota=5), by="op")


def test_start_refuses_like_vectors_past_the_settings_budget(controller: Controller) -> None:
    one = pack([0.5] * MAX_DIM, dtype="float32")
    with controller.session() as s:
        for i in range(MAX_SETTINGS_EMBEDDING_BYTES // one.nbytes):
            store.start(s, None, store.StartRequest(name=f"c{i}", like_embedding=one, threshold=0.1, quota=5), by="op")
        with pytest.raises(Conflict, match="signed settings"):
            store.start(s, None, store.StartRequest(name="extra", like_embedding=one, threshold=0.1, quota=5), by="op")
        assert len(store.specs_for(s, fleet.get_device(s, "cam-a"))) == MAX_SETTINGS_EMBEDDING_BYTES // one.nbytes


def test_api_refuses_forged_embeddings_with_422_and_stores_nothing(stack: Stack) -> None:
    h = {"Authorization": f"Bearer {stack.token}"}
    for case, forged in _forged().items():
        r = httpx.post(f"{stack.url}/api/v1/campaigns", headers=h,
                       json={"name": "forged", "like_embedding": forged, "threshold": 0.1, "quota": 5})
        assert r.status_code == 422, (case, r.text)
    r = httpx.post(f"{stack.url}/api/v1/campaigns", headers=h,
                   json={"name": "far", "like_embedding": pack([1.0, 2.0]).model_dump(), "threshold": 5, "quota": 5})
    assert r.status_code == 400 and "cosine distance" in r.json()["detail"]
    r = httpx.post(f"{stack.url}/api/v1/campaigns", headers=h,
                   json={"name": "bad-metric", "like_event": "x", "threshold": 0.1, "metric": "dot", "quota": 5})
    assert r.status_code == 422
    assert stack.client.campaigns() == []
    ok = {"name": "given", "like_embedding": pack([1.0, 2.0], model_digest=DIGEST_A).model_dump(), "threshold": 4.0,
          "metric": "l2", "quota": 5}
    assert httpx.post(f"{stack.url}/api/v1/campaigns", json=ok).status_code == 401
    r = httpx.post(f"{stack.url}/api/v1/campaigns", headers=h, json=ok)
    assert r.status_code == 201, r.text
    assert r.json()["like"] == {"event_id": None, "threshold": 4.0, "metric": "l2", "dim": 2, "output": None,
                                "model_digest": DIGEST_A}


def test_a_scores_like_compares_with_the_scores_where_the_embedding_has_the_same_size() -> None:
    pred = Prediction("classification", label="0", score=0.9, labels=("0", "1"), probs=np.array([0.9, 0.1]),
                      embedding=np.array([0.0, 1.0], dtype=np.float32))  # as long as the scores, another direction
    by_scores = Like(embedding=pack([0.9, 0.1], dtype="float32"), threshold=0.001)  # output "": class scores
    by_features = Like(embedding=pack([0.0, 1.0], output="features", model_digest=DIGEST_A), threshold=0.001)
    for like in (by_scores, by_features):
        campaigns = Campaigns(None)
        campaigns.update([CampaignSpec(name="c", like=like, per_device_quota=10, max_per_minute=6000)])
        assert campaigns.match(pred, None, None, now=1.0, control_digest=DIGEST_A)[0] is not None
