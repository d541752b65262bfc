"""The condition language: parsed to a checked AST, refused with a caret, evaluated without eval."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from edgefleet.protocols.campaigns import CampaignSpec, check_context
from edgefleet.protocols.conditions import (
    MAX_DEPTH,
    ConditionError,
    Facts,
    Output,
    UnknownField,
    load_condition,
    parse_condition,
)

THREE = Output("3", 0.42, {"3": 0.42, "8": 0.40, "5": 0.18})
LEFT_TURN = {"steering_deg": -25, "speed_kmh": 12}


@pytest.mark.parametrize(("text", "facts", "expected"), [
    ('label == "3" and confidence < 0.5', Facts(THREE), True),
    ('label == "3" and confidence >= 0.5', Facts(THREE), False),
    ("margin < 0.05", Facts(THREE), True),
    ('score.8 > 0.3 and score["5"] < 0.2', Facts(THREE), True),
    ('label in ["1", "3"]', Facts(THREE), True),
    ('label not in ["1", "3"]', Facts(THREE), False),
    ("disagree", Facts(THREE, Output("8", 0.9), disagree=True), True),
    ("candidate.label != label", Facts(THREE, Output("8", 0.9), disagree=True), True),
    ("disagree", Facts(THREE), False),  # no candidate: unknown, no match
    ("not disagree", Facts(THREE), False),  # unknown stays unknown under not
    ("disagree or confidence < 0.5", Facts(THREE), True),  # control-only fields match without a candidate
    ("context.steering_deg < -20 and context.speed_kmh > 5", Facts(THREE, context=LEFT_TURN), True),
    ("context.steering_deg < -20", Facts(THREE), False),
    ("not context.speed_kmh > 100", Facts(THREE), False),
    ("not context.speed_kmh > 100", Facts(THREE, context=LEFT_TURN), True),
    ('context.steering_deg == "left"', Facts(THREE, context=LEFT_TURN), False),  # type mismatch: unknown
    ("hour >= 22 or hour < 6", Facts(THREE, now=datetime(2026, 1, 1, 23, 5)), True),
    ("hour >= 22 or hour < 6", Facts(THREE, now=datetime(2026, 1, 1, 12, 0)), False),
    ('boxes.count >= 2 and "car" in boxes.labels and boxes.max_area > 50',
     Facts(Output("car", 0.9, boxes=[(100.0, "car"), (20.0, "person")])), True),
    ('"bus" in boxes.labels', Facts(Output("car", 0.9, boxes=[(100.0, "car")])), False),
])
def test_conditions_match_what_they_say(text: str, facts: Facts, expected: bool) -> None:
    cond = parse_condition(text)
    assert cond.evaluate(facts) is expected
    wire = load_condition(json.loads(json.dumps(cond.to_json())))  # the AST survives the signed settings
    assert wire.evaluate(facts) is expected


@pytest.mark.parametrize(("text", "message", "caret"), [
    ("confidence <", "ends too early", 12),
    ("confidance < 0.5", "unknown field 'confidance'", 0),
    ("label < 3", "cannot compare a text with a number", 6),
    ("label = '3'", "use '==' to compare", 6),
    ("(label == '3'", "expected ')'", 13),
    ("confidence < 0.5 label", "expected 'and', 'or'", 17),
    ("score.8 > 'x'", "cannot compare a number with a text", 8),
    ("confidence", "is a number: compare it", 10),
    ("label == 'unterminated", "unterminated string", 9),
    ("context.x < 1 ; drop table", "unexpected character ';'", 14),
    ("__import__('os')", "unknown field '__import__'", 0),
])
def test_bad_conditions_are_refused_with_a_caret(text: str, message: str, caret: int) -> None:
    with pytest.raises(ConditionError) as exc:
        parse_condition(text)
    assert message in str(exc.value)
    assert exc.value.position == caret
    assert str(exc.value).endswith(f"\n  {text}\n  {' ' * caret}^")


def test_unknown_fields_list_the_known_ones() -> None:
    with pytest.raises(UnknownField) as exc:
        parse_condition("steering < 3")
    assert "context.NAME" in str(exc.value) and "confidence" in str(exc.value)


def test_size_and_depth_are_bounded() -> None:
    with pytest.raises(ConditionError, match="deeper than"):
        parse_condition("(" * (MAX_DEPTH + 2) + "disagree" + ")" * (MAX_DEPTH + 2))
    with pytest.raises(ConditionError, match="longer than"):
        parse_condition("disagree or " * 200 + "disagree")
    with pytest.raises(ConditionError, match="at most 32"):
        parse_condition("label in [" + ",".join(f"'{i}'" for i in range(40)) + "]")
    # pathological input is refused (or parsed) in linear time: no regex backtracking
    with pytest.raises(ConditionError):
        parse_condition("'" + "\\" * 900)


@pytest.mark.parametrize("ast", [
    {"op": "eval", "arg": "__import__('os')"},
    {"op": "cmp", "cmp": "<", "left": {"field": ["__class__"]}, "right": {"value": 1}},
    {"op": "cmp", "cmp": "=~", "left": {"field": ["label"]}, "right": {"value": "x"}},
    {"op": "and", "args": [{"op": "truth", "arg": {"field": ["disagree"]}}] * 101},
    {"op": "cmp", "cmp": "==", "left": {"field": ["label"]}, "right": {"value": {"nested": 1}}},
    "disagree",
])
def test_the_agent_refuses_asts_that_the_parser_would_not_make(ast: object) -> None:
    with pytest.raises(ConditionError):
        load_condition(ast)
    with pytest.raises(ValueError, match="condition"):
        CampaignSpec(name="x", condition=ast, per_device_quota=1)  # type: ignore[arg-type]


def test_context_is_bounded_at_the_schema() -> None:
    assert check_context({"steering_deg": -25.5, "turning": True, "road": "A7"}) == {
        "steering_deg": -25.5, "turning": True, "road": "A7"}
    for bad in ({f"k{i}": 1 for i in range(33)}, {"k": "x" * 200}, {"k": {"nested": 1}}, {"bad key!": 1},
                {"k": float("nan")}, ["not", "a", "map"]):
        with pytest.raises(ValueError):
            check_context(bad)
