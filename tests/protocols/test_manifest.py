from __future__ import annotations

import pytest

from edgefleet.protocols import InvalidPayload, parse_manifest


def _base(**kw: object) -> dict:
    m = {"name": "m", "version": "1", "input": {"name": "input", "shape": [None, 1, 8, 8]}, "labels": ["a", "b"]}
    m.update(kw)
    return m


def test_valid_manifest_parses_with_defaults() -> None:
    m = parse_manifest(_base())
    assert m.task == "classification" and m.preprocessing.color == "rgb" and m.label == "m:1"


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"labels": []}, None),
        ({"name": "../evil"}, "name"),
        ({"input": {"name": "x", "shape": []}}, "input.shape"),
        ({"low_confidence_threshold": 2}, "low_confidence_threshold"),
        ({"preprocessing": {"std": [0]}}, "preprocessing.std"),
        ({"model_file": "../model.onnx"}, None),
        ({"unknown_field": 1}, "unknown_field"),
    ],
)
def test_bad_manifest_is_refused_naming_the_field(override: dict, field: str | None) -> None:
    with pytest.raises(InvalidPayload) as exc:
        parse_manifest(_base(**override))
    if field:
        assert exc.value.field == field
