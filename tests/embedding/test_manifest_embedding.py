"""A manifest that names an embedding output (fleet.manifest/2): schema, push-time check
against the real ONNX graph, the agent's runner returning it, and ``like`` matching on it.

The model is the demo's digits MLP with its hidden layer (32 values after the ReLU) exposed
as a second graph output ``features``, built with ``onnx.helper``; it runs on ONNX Runtime.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgefleet.edge_agent.campaigns import Campaigns, cosine_distance, embedding
from edgefleet.edge_agent.errors import InputMismatch
from edgefleet.edge_agent.runner import ModelRunner
from edgefleet.edge_agent.sources import SyntheticDigits
from edgefleet.protocols import InvalidPayload, Manifest, ModelRef, parse_manifest
from edgefleet.protocols.campaigns import CampaignSpec, Like
from edgefleet.registry.bundle import build_bundle, read_manifest
from edgefleet.registry.errors import InvalidBundle
from edgefleet.registry.onnx_check import check_model


def _with_features(onnx_bytes: bytes) -> bytes:
    """The digits MLP with its hidden layer as a second output, ``features`` [N, 32]."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load_from_string(onnx_bytes)
    model.graph.node.append(helper.make_node("Identity", ["hr"], ["features"]))
    model.graph.output.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, 32]))
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _manifest(base: Manifest, output: str = "features", dim: int = 32) -> Manifest:
    return parse_manifest({**base.model_dump(mode="json", by_alias=True), "schema": "fleet.manifest/2",
                           "embedding": {"output": output, "dim": dim}})


@pytest.fixture
def features_model(digit_models: Any) -> tuple[bytes, Manifest]:
    control = digit_models[0]
    return _with_features(control.path.read_bytes()), _manifest(control.manifest)


def _runner(tmp: Path, model_bytes: bytes, manifest: Manifest) -> ModelRunner:
    d = tmp / "bundle"
    d.mkdir(parents=True, exist_ok=True)
    (d / manifest.model_file).write_bytes(model_bytes)
    ref = ModelRef(name=manifest.name, version=manifest.version, digest=hashlib.sha256(model_bytes).hexdigest())
    return ModelRunner.load(ref, manifest, d)


def test_old_manifest_serialises_byte_for_byte_as_before_and_loads(digit_models: Any) -> None:
    m = digit_models[0].manifest
    raw = m.to_json()
    assert b'"embedding"' not in raw and b'"fleet.manifest/1"' in raw
    again = parse_manifest(raw)
    assert again.embedding is None and again.to_json() == raw  # the bundle's bytes (and digest) hold
    assert "embedding" not in m.model_dump(mode="json", by_alias=True)  # nor in the catalog's row
    bundle = build_bundle(m, digit_models[0].path.read_bytes())
    assert read_manifest(bundle).to_json() == raw


def test_embedding_needs_schema_2_and_a_bounded_dim(digit_models: Any) -> None:
    base = digit_models[0].manifest.model_dump(mode="json", by_alias=True)
    with pytest.raises(InvalidPayload, match="fleet.manifest/2"):
        parse_manifest({**base, "embedding": {"output": "features", "dim": 32}})  # still says /1
    for dim in (0, 4097, "many"):
        with pytest.raises(InvalidPayload) as err:
            parse_manifest({**base, "schema": "fleet.manifest/2", "embedding": {"output": "features", "dim": dim}})
        assert err.value.field == "embedding.dim"
    with pytest.raises(InvalidPayload):
        parse_manifest({**base, "schema": "fleet.manifest/2", "embedding": {"output": "features", "dim": 4, "x": 1}})
    with pytest.raises(InvalidPayload, match="another output"):
        parse_manifest({**base, "schema": "fleet.manifest/2", "embedding": {"output": "probabilities", "dim": 10}})
    built = Manifest.model_validate({k: v for k, v in base.items() if k != "schema"} | {
        "embedding": {"output": "features", "dim": 32}})
    assert built.schema_ == "fleet.manifest/2"  # built in code: the schema that has the field
    assert parse_manifest(built.to_json()).embedding == built.embedding


def test_push_check_accepts_the_named_output_and_refuses_a_missing_one(features_model: Any) -> None:
    model_bytes, manifest = features_model
    check_model(model_bytes, manifest)  # primary output and labels still checked (10 classes)
    with pytest.raises(InvalidBundle, match=r"embedding output 'hidden' is not an output of the model"):
        check_model(model_bytes, _manifest(manifest, "hidden"))
    with pytest.raises(InvalidBundle, match="32 values per frame .* dim 128"):
        check_model(model_bytes, _manifest(manifest, "features", 128))


def test_push_refuses_a_missing_output_with_a_clear_error(tmp_path: Path, features_model: Any) -> None:
    from sqlmodel import Session

    from edgefleet.cloud import catalog
    from edgefleet.cloud.db import make_engine, migrate
    from edgefleet.cloud.errors import BadRequest
    from edgefleet.registry.blobstore import LocalBlobStore

    model_bytes, manifest = features_model
    engine = make_engine(f"sqlite:///{tmp_path / 'controller.db'}")
    migrate(engine)
    store = LocalBlobStore(tmp_path / "blobs")
    with Session(engine, expire_on_commit=False) as s:
        bad = _manifest(manifest, "hidden").model_copy(update={"version": "9.0"})
        with pytest.raises(BadRequest, match="'hidden' is not an output"):
            catalog.push_model(s, store, model_bytes, name=bad.name, version="9.0",
                               manifest=bad.model_dump(mode="json", by_alias=True))
        mv, created = catalog.push_model(s, store, model_bytes, name=manifest.name, version=manifest.version,
                                         manifest=manifest.model_dump(mode="json", by_alias=True))
        assert created and mv.manifest["embedding"] == {"output": "features", "dim": 32}
        assert mv.manifest["schema"] == "fleet.manifest/2"
    engine.dispose()


def test_runner_returns_the_named_output_as_the_embedding(tmp_path: Path, features_model: Any,
                                                          digit_models: Any) -> None:
    model_bytes, manifest = features_model
    runner = _runner(tmp_path, model_bytes, manifest)
    assert runner.self_test() == len(manifest.test_vectors)  # the test vectors check the primary output
    frame = next(iter(SyntheticDigits(seed=3).frames()))[1]
    pred = runner.predict(frame).prediction
    plain = _runner(tmp_path / "plain", digit_models[0].path.read_bytes(), digit_models[0].manifest)
    assert pred.label == plain.predict(frame).prediction.label
    emb = embedding(pred)
    assert emb is not None and emb.shape == (32,) and np.all(emb >= 0)  # after the ReLU
    assert embedding(plain.predict(frame).prediction).shape == (10,)  # type: ignore[union-attr]


def test_runner_refuses_a_manifest_naming_an_output_the_model_lacks(tmp_path: Path, digit_models: Any) -> None:
    control = digit_models[0]
    with pytest.raises(InputMismatch, match="'features'"):
        _runner(tmp_path, control.path.read_bytes(), _manifest(control.manifest))


def test_like_on_the_feature_embedding_captures_near_duplicates_only(tmp_path: Path, features_model: Any) -> None:
    model_bytes, manifest = features_model
    runner = _runner(tmp_path, model_bytes, manifest)
    source = SyntheticDigits(seed=7)
    stream = [(source.current_label, runner.predict(frame).prediction) for _, (_, frame) in zip(range(600), source.frames())]
    ref_label, ref = next((lab, p) for lab, p in stream if lab == 3 and p.label == "3" and (p.score or 0) > 0.9)
    vector = embedding(ref)
    assert vector is not None and vector.shape == (32,)
    campaigns = Campaigns(None)
    campaigns.update([CampaignSpec(name="more-threes", like=Like(vector=vector.tolist(), threshold=0.03,
                                                                 source_event="ev1"),
                                   per_device_quota=1000, max_per_minute=6000)])
    captured = [lab for i, (lab, p) in enumerate(stream) if campaigns.match(p, None, None, now=float(i))[0] is not None]
    # the camera holds each digit for 3 frames: the chosen frame's near-duplicates come back, nothing else
    assert len(captured) >= 3 and set(captured) == {ref_label}, captured
    nearest_other = min(cosine_distance(embedding(p), vector) for lab, p in stream if lab != ref_label)  # type: ignore[arg-type]
    assert nearest_other > 0.03


def test_like_with_a_scores_vector_still_matches_a_model_that_names_an_embedding(tmp_path: Path,
                                                                                features_model: Any) -> None:
    """The controller builds ``--like`` vectors from a capture's scores (10 here); a device whose
    model also names a 32-value embedding compares that vector with its output vector, not with
    the embedding of another size (which would never match)."""
    model_bytes, manifest = features_model
    runner = _runner(tmp_path, model_bytes, manifest)
    source = SyntheticDigits(seed=7)
    stream = [(source.current_label, runner.predict(frame).prediction) for _, (_, frame) in zip(range(300), source.frames())]
    ref = next(p for lab, p in stream if lab == 3 and p.label == "3" and (p.score or 0) > 0.9)
    scores = embedding(ref, 10)
    assert scores is not None and scores.shape == (10,) and embedding(ref, 32).shape == (32,)  # type: ignore[union-attr]
    assert embedding(ref, 7) is None  # a vector of neither size matches nothing
    campaigns = Campaigns(None)
    campaigns.update([CampaignSpec(name="threes-by-score", like=Like(vector=scores.tolist(), threshold=0.02),
                                   per_device_quota=1000, max_per_minute=6000)])
    captured = [lab for i, (lab, p) in enumerate(stream) if campaigns.match(p, None, None, now=float(i))[0] is not None]
    # scores are a coarser space than features: a confusable 9 may come along, threes dominate
    assert captured.count(3) >= 3 and captured.count(3) / len(captured) >= 0.75, captured
