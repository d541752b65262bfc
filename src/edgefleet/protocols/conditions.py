"""Campaign conditions: a small, safe language over one frame's facts.

The controller parses operator text (``fleet campaign start --when …``) into an AST with
``parse_condition``; the AST travels as JSON in the device's signed settings; the agent
loads it back with ``load_condition`` (checked again: shape, depth, size, field names) and
evaluates it on every frame with ``Condition.evaluate(facts)``. Nothing is ever ``eval``'d;
the tokenizer is a hand-written scanner (no regular expression can backtrack on it).

Grammar (keywords are lower case)::

    expr    := and ("or" and)*
    and     := unary ("and" unary)*
    unary   := "not" unary | atom
    atom    := "(" expr ")" | operand [CMP operand] | operand ["not"] "in" list
    CMP     := "==" | "!=" | "<" | "<=" | ">" | ">="
    operand := NUMBER | STRING | "true" | "false" | field
    list    := "[" literal ("," literal)* "]"
    field   := NAME ("." NAME)* | NAME "[" STRING "]"      score["7"] == score.7

Fields (``candidate.`` ones need a candidate in shadow; without one they are *unknown*):

=========================  ======  =====================================================
field                      type    meaning
=========================  ======  =====================================================
label                      text    the control model's top-1 label
confidence                 number  its score (0..1)
margin                     number  top-1 minus top-2 class probability (classification)
score.LABEL                number  the control model's probability of class LABEL
disagree                   bool    control and candidate disagree on this frame
candidate.label            text    the candidate's top-1 label (likewise .confidence,
                                   .margin, .score.LABEL)
boxes.count                number  detections of the control model
boxes.max_area             number  the largest box's area (in the model's frame)
boxes.labels               list    the boxes' labels: ``"car" in boxes.labels``
context.KEY                any     per-frame context from the application
hour / minute / weekday    number  the device's local time (weekday 0 = Monday)
=========================  ======  =====================================================

Logic is three-valued: a comparison with a missing value (no candidate, no such context
key, a type that does not fit) is *unknown*; ``not unknown`` is unknown; a frame matches only
when the whole condition is true. So ``not context.speed_kmh > 10`` never matches a frame
that carries no speed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .errors import ProtocolError

MAX_TEXT = 1000
MAX_TOKENS = 200
MAX_DEPTH = 16
MAX_NODES = 100
MAX_LIST = 32
MAX_STRING = 128
MAX_CONTEXT_KEYS = 32

CMP_OPS = ("==", "!=", "<", "<=", ">", ">=")
_KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false"})

# field path (with a "*" for an open name) -> type: "num" | "str" | "bool" | "list" | "any"
_FIXED: dict[tuple[str, ...], str] = {
    ("label",): "str", ("confidence",): "num", ("margin",): "num", ("disagree",): "bool",
    ("candidate", "label"): "str", ("candidate", "confidence"): "num", ("candidate", "margin"): "num",
    ("boxes", "count"): "num", ("boxes", "max_area"): "num", ("boxes", "labels"): "list",
    ("hour",): "num", ("minute",): "num", ("weekday",): "num",
}
_OPEN: dict[tuple[str, ...], str] = {("score",): "num", ("candidate", "score"): "num", ("context",): "any"}
FIELDS = tuple(sorted([".".join(p) for p in _FIXED] + [".".join(p) + ".NAME" for p in _OPEN]))


class ConditionError(ProtocolError):
    """A condition that does not parse or does not type-check; points at the problem.

    ``text`` is the offending input and ``position`` the 0-based offset when known; ``str()``
    shows the text with a caret under the problem, like selector errors do.
    """

    def __init__(self, message: str, *, text: str | None = None, position: int | None = None):
        self.message, self.text, self.position = message, text, position
        detail = message
        if text is not None and position is not None:
            detail = f"{message}\n  {text}\n  {' ' * position}^"
        super().__init__(detail)


class UnknownField(ConditionError):
    """A condition naming a field that does not exist; ``known`` lists the ones that do."""


# ----- facts: what one frame offers -----


@dataclass(frozen=True)
class Output:
    """One model's output on one frame, in plain values (the agent builds it from a Prediction)."""

    label: str | None = None
    score: float | None = None
    scores: Mapping[str, float] = field(default_factory=dict)
    boxes: Sequence[tuple[float, str]] = ()  # (area, label) per detection

    @property
    def margin(self) -> float | None:
        if len(self.scores) < 2:
            return None
        top = sorted(self.scores.values(), reverse=True)
        return top[0] - top[1]


@dataclass(frozen=True)
class Facts:
    control: Output
    candidate: Output | None = None
    disagree: bool | None = None
    context: Mapping[str, Any] | None = None
    now: datetime | None = None


_MISSING = object()


def _lookup(facts: Facts, path: tuple[str, ...]) -> Any:
    head = path[0]
    if head == "context":
        ctx = facts.context
        if ctx is None or path[1] not in ctx:
            return _MISSING
        return ctx[path[1]]
    if head in ("hour", "minute", "weekday"):
        if facts.now is None:
            return _MISSING
        return {"hour": facts.now.hour, "minute": facts.now.minute, "weekday": facts.now.weekday()}[head]
    if head == "disagree":
        return _MISSING if facts.disagree is None else facts.disagree
    out: Output | None = facts.control
    if head == "candidate":
        out, path = facts.candidate, path[1:]
        if out is None:
            return _MISSING
    assert out is not None
    name = path[0]
    if name == "label":
        return _MISSING if out.label is None else out.label
    if name == "confidence":
        return _MISSING if out.score is None else out.score
    if name == "margin":
        m = out.margin
        return _MISSING if m is None else m
    if name == "score":
        return out.scores.get(path[1], _MISSING)
    if name == "boxes":
        if path[1] == "count":
            return len(out.boxes)
        if path[1] == "max_area":
            return max((a for a, _ in out.boxes), default=_MISSING)
        return [lab for _, lab in out.boxes]
    return _MISSING


# ----- the AST -----


@dataclass(frozen=True)
class Condition:
    """A checked AST (plain JSON-ready dicts). ``text`` is what the operator wrote."""

    ast: dict[str, Any]
    text: str = ""

    def evaluate(self, facts: Facts) -> bool:
        """True only when the condition is true on this frame (unknown is not a match)."""
        return _eval(self.ast, facts) is True

    def fields(self) -> set[str]:
        out: set[str] = set()
        _collect_fields(self.ast, out)
        return out

    def to_json(self) -> dict[str, Any]:
        return self.ast


def _collect_fields(node: dict[str, Any], out: set[str]) -> None:
    if "field" in node:
        out.add(".".join(node["field"]))
    for key in ("args", "left", "right", "arg"):
        v = node.get(key)
        for child in (v if isinstance(v, list) else [v] if isinstance(v, dict) else []):
            _collect_fields(child, out)


def _value(node: dict[str, Any], facts: Facts) -> Any:
    if "field" in node:
        return _lookup(facts, tuple(node["field"]))
    return node["value"]


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _compare(op: str, a: Any, b: Any) -> bool | None:
    if a is _MISSING or b is _MISSING:
        return None
    na, nb = _number(a), _number(b)
    if na is not None and nb is not None:
        a, b = na, nb
    elif isinstance(a, bool) and isinstance(b, bool) or isinstance(a, str) and isinstance(b, str):
        if op not in ("==", "!="):
            return None
    else:
        return None  # types that do not fit (a context value of another kind): unknown
    return {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def _eval(node: dict[str, Any], facts: Facts) -> bool | None:
    op = node.get("op")
    if op == "and":
        seen_unknown = False
        for arg in node["args"]:
            r = _eval(arg, facts)
            if r is False:
                return False
            seen_unknown = seen_unknown or r is None
        return None if seen_unknown else True
    if op == "or":
        seen_unknown = False
        for arg in node["args"]:
            r = _eval(arg, facts)
            if r is True:
                return True
            seen_unknown = seen_unknown or r is None
        return None if seen_unknown else False
    if op == "not":
        r = _eval(node["arg"], facts)
        return None if r is None else not r
    if op == "cmp":
        return _compare(node["cmp"], _value(node["left"], facts), _value(node["right"], facts))
    if op == "in":
        left = _value(node["left"], facts)
        right = _value(node["right"], facts)
        if left is _MISSING or right is _MISSING:
            return None
        if isinstance(right, list) and all(isinstance(x, str) for x in right) and "field" in node["right"]:
            hit = left in right  # "car" in boxes.labels
        elif isinstance(right, list):
            hit = any(_compare("==", left, x) is True for x in right)
        else:
            return None
        return hit != bool(node.get("negated"))
    if op == "truth":
        v = _value(node["arg"], facts)
        return v if isinstance(v, bool) else None
    return None  # load_condition refuses every other shape


# ----- the tokenizer (a plain scanner: linear, no regular expressions) -----


@dataclass(frozen=True)
class _Tok:
    kind: str  # "num" | "str" | "name" | "op" | "end"
    value: Any
    pos: int


def _name_char(c: str, first: bool) -> bool:
    return c.isascii() and (c.isalpha() or c == "_" or (not first and (c.isdigit() or c == "-")))


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
            continue
        if len(out) >= MAX_TOKENS:
            raise ConditionError(f"condition has more than {MAX_TOKENS} tokens", text=text, position=i)
        start = i
        if c in "\"'":
            j = i + 1
            chars: list[str] = []
            while j < n and text[j] != c:
                if text[j] == "\\" and j + 1 < n and text[j + 1] in (c, "\\"):
                    j += 1
                chars.append(text[j])
                j += 1
            if j >= n:
                raise ConditionError("unterminated string", text=text, position=start)
            if len(chars) > MAX_STRING:
                raise ConditionError(f"string longer than {MAX_STRING} characters", text=text, position=start)
            out.append(_Tok("str", "".join(chars), start))
            i = j + 1
        elif c.isdigit() or (c == "-" and i + 1 < n and text[i + 1].isdigit()):
            j = i + 1
            while j < n and (text[j].isdigit() or text[j] in ".eE" or (text[j] in "+-" and text[j - 1] in "eE")):
                j += 1
            try:
                num = float(text[i:j])
            except ValueError:
                raise ConditionError(f"bad number {text[i:j]!r}", text=text, position=start) from None
            if not math.isfinite(num):
                raise ConditionError("numbers must be finite", text=text, position=start)
            out.append(_Tok("num", int(num) if num.is_integer() and "." not in text[i:j] else num, start))
            i = j
        elif _name_char(c, True):
            j = i + 1
            while j < n and _name_char(text[j], False):
                j += 1
            out.append(_Tok("name", text[i:j], start))
            i = j
        elif text.startswith(("==", "!=", "<=", ">="), i):
            out.append(_Tok("op", text[i:i + 2], start))
            i += 2
        elif c in "<>()[].,":
            out.append(_Tok("op", c, start))
            i += 1
        elif c == "=":
            raise ConditionError("use '==' to compare", text=text, position=start)
        else:
            raise ConditionError(f"unexpected character {c!r}", text=text, position=start)
    out.append(_Tok("end", None, n))
    return out


# ----- the parser -----


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokens(text)
        self.i = 0
        self.nodes = 0

    def error(self, message: str, tok: _Tok | None = None, cls: type[ConditionError] = ConditionError) -> ConditionError:
        return cls(message, text=self.text, position=(tok or self.peek()).pos)

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def at(self, kind: str, value: Any = None) -> bool:
        t = self.peek()
        return t.kind == kind and (value is None or t.value == value)

    def expect(self, value: str, what: str) -> _Tok:
        if not (self.at("op", value)):
            raise self.error(f"expected {what}")
        return self.take()

    def node(self, depth: int) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.error(f"condition has more than {MAX_NODES} parts")
        if depth > MAX_DEPTH:
            raise self.error(f"condition nested deeper than {MAX_DEPTH} levels")

    def parse(self) -> dict[str, Any]:
        node = self.expr(0)
        if not self.at("end"):
            raise self.error("expected 'and', 'or' or the end of the condition")
        return node

    def expr(self, depth: int) -> dict[str, Any]:
        self.node(depth)
        args = [self.conj(depth + 1)]
        while self.at("name", "or"):
            self.take()
            args.append(self.conj(depth + 1))
        return args[0] if len(args) == 1 else {"op": "or", "args": args}

    def conj(self, depth: int) -> dict[str, Any]:
        self.node(depth)
        args = [self.unary(depth + 1)]
        while self.at("name", "and"):
            self.take()
            args.append(self.unary(depth + 1))
        return args[0] if len(args) == 1 else {"op": "and", "args": args}

    def unary(self, depth: int) -> dict[str, Any]:
        self.node(depth)
        if self.at("name", "not"):
            self.take()
            return {"op": "not", "arg": self.unary(depth + 1)}
        return self.atom(depth + 1)

    def atom(self, depth: int) -> dict[str, Any]:
        self.node(depth)
        if self.at("op", "("):
            self.take()
            inner = self.expr(depth + 1)
            self.expect(")", "')'")
            return inner
        start = self.peek()
        left, ltype = self.operand()
        if self.at("op") and self.peek().value in CMP_OPS:
            op_tok = self.take()
            right_tok = self.peek()
            other, rtype = self.operand()
            self.check_types(op_tok.value, ltype, rtype, op_tok if "field" in left else right_tok)
            return {"op": "cmp", "cmp": op_tok.value, "left": left, "right": other}
        negated = False
        if self.at("name", "not") and self.toks[self.i + 1].kind == "name" and self.toks[self.i + 1].value == "in":
            self.take()
            negated = True
        if self.at("name", "in"):
            self.take()
            rtok = self.peek()
            if self.at("op", "["):
                right: dict[str, Any] = {"value": self.literal_list()}
            else:
                right, rtype = self.operand()
                if rtype != "list":
                    raise self.error("'in' takes a list: [1, 2] or boxes.labels", rtok)
            if ltype == "list":
                raise self.error("a list cannot be 'in' something", start)
            out: dict[str, Any] = {"op": "in", "left": left, "right": right}
            if negated:
                out["negated"] = True
            return out
        if "field" in left and ltype in ("bool", "any"):
            return {"op": "truth", "arg": left}  # `disagree`, `context.turning`
        if "field" in left:
            raise self.error(f"{'.'.join(left['field'])} is a {_TYPE_WORDS[ltype]}: compare it (==, <, …)",
                             self.peek())
        raise self.error("a condition must compare a field (e.g. confidence < 0.5)", start)

    def literal_list(self) -> list[Any]:
        self.expect("[", "'['")
        items: list[Any] = []
        while True:
            tok = self.take()
            if tok.kind in ("num", "str"):
                items.append(tok.value)
            elif tok.kind == "name" and tok.value in ("true", "false"):
                items.append(tok.value == "true")
            else:
                raise self.error("a list holds numbers, strings, true or false", tok)
            if len(items) > MAX_LIST:
                raise self.error(f"a list holds at most {MAX_LIST} items", tok)
            if self.at("op", "]"):
                self.take()
                return items
            self.expect(",", "',' or ']'")

    def operand(self) -> tuple[dict[str, Any], str]:
        tok = self.take()
        if tok.kind == "num":
            return {"value": tok.value}, "num"
        if tok.kind == "str":
            return {"value": tok.value}, "str"
        if tok.kind == "name" and tok.value in ("true", "false"):
            return {"value": tok.value == "true"}, "bool"
        if tok.kind == "name" and tok.value not in _KEYWORDS:
            path = [tok.value]
            while self.at("op", ".") or self.at("op", "["):
                if self.take().value == ".":
                    part = self.take()
                    if part.kind == "name" or part.kind == "num" and isinstance(part.value, int):
                        path.append(str(part.value))
                    else:
                        raise self.error("expected a name after '.'", part)
                else:
                    part = self.take()
                    if part.kind != "str":
                        raise self.error('expected a quoted name: score["7"]', part)
                    path.append(part.value)
                    self.expect("]", "']'")
                if len(path) > 4:
                    raise self.error("field path too long", tok)
            ftype = field_type(tuple(path))
            if ftype is None:
                raise self.error(f"unknown field {'.'.join(path)!r}; known fields: {', '.join(FIELDS)}", tok,
                                 UnknownField)
            return {"field": path}, ftype
        if tok.kind == "end":
            raise self.error("the condition ends too early", tok)
        raise self.error(f"expected a field or a value, not {tok.value!r}", tok)

    def check_types(self, op: str, ltype: str, rtype: str, tok: _Tok) -> None:
        if "list" in (ltype, rtype):
            raise self.error("a list can only be used with 'in'", tok)
        if "any" in (ltype, rtype):
            return
        if ltype != rtype:
            raise self.error(f"cannot compare a {_TYPE_WORDS[ltype]} with a {_TYPE_WORDS[rtype]}", tok)
        if ltype in ("str", "bool") and op not in ("==", "!="):
            raise self.error(f"a {_TYPE_WORDS[ltype]} can only be compared with == or !=", tok)


_TYPE_WORDS = {"num": "number", "str": "text", "bool": "true/false value", "list": "list", "any": "value"}


def field_type(path: tuple[str, ...]) -> str | None:
    """The type of a field path (``("score", "7")`` → ``"num"``), None for unknown fields."""
    if path in _FIXED:
        return _FIXED[path]
    if len(path) >= 2 and path[:-1] in _OPEN and path[-1] and len(path[-1]) <= MAX_STRING:
        return _OPEN[path[:-1]]
    return None


def parse_condition(text: str) -> Condition:
    """Parse operator text into a checked ``Condition``.

    Raises:
        ConditionError: bad syntax, an unknown field (``UnknownField``), types that do not
            fit, or a condition beyond the size bounds; the message points at the problem.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConditionError("empty condition; e.g. --when 'confidence < 0.5'", text=text or "", position=0)
    if len(text) > MAX_TEXT:
        raise ConditionError(f"condition longer than {MAX_TEXT} characters")
    return Condition(_Parser(text).parse(), text)


# ----- loading an AST back (the agent: from signed settings) -----


def load_condition(ast: Any, text: str = "") -> Condition:
    """Check an AST that came over the wire and return it as a ``Condition``.

    Raises:
        ConditionError: an unknown node, field or operator, or a tree beyond the bounds.
    """
    counter = [0]
    _check_node(ast, 0, counter)
    return Condition(ast, text)


def _check_value_node(node: Any) -> None:
    if not isinstance(node, dict) or len(node) != 1:
        raise ConditionError("bad operand node")
    if "field" in node:
        path = node["field"]
        if not (isinstance(path, list) and 1 <= len(path) <= 4 and all(isinstance(p, str) for p in path)):
            raise ConditionError("bad field path")
        if field_type(tuple(path)) is None:
            raise UnknownField(f"unknown field {'.'.join(path)!r}")
        return
    if "value" not in node:
        raise ConditionError("bad operand node")
    v = node["value"]
    items = v if isinstance(v, list) else [v]
    if isinstance(v, list) and len(v) > MAX_LIST:
        raise ConditionError("list too long")
    for x in items:
        if isinstance(x, str):
            if len(x) > MAX_STRING:
                raise ConditionError("string too long")
        elif isinstance(x, bool):
            pass
        elif isinstance(x, (int, float)):
            if not math.isfinite(float(x)):
                raise ConditionError("numbers must be finite")
        else:
            raise ConditionError("bad literal")


def _check_node(node: Any, depth: int, counter: list[int]) -> None:
    counter[0] += 1
    if counter[0] > MAX_NODES * 4 or depth > MAX_DEPTH * 4:
        raise ConditionError("condition too large")
    if not isinstance(node, dict):
        raise ConditionError("condition node is not an object")
    op = node.get("op")
    if op in ("and", "or"):
        args = node.get("args")
        if not isinstance(args, list) or not 1 <= len(args) <= MAX_NODES or set(node) != {"op", "args"}:
            raise ConditionError(f"bad '{op}' node")
        for a in args:
            _check_node(a, depth + 1, counter)
    elif op == "not" or op == "truth":
        if set(node) != {"op", "arg"}:
            raise ConditionError(f"bad '{op}' node")
        if op == "not":
            _check_node(node["arg"], depth + 1, counter)
        else:
            _check_value_node(node["arg"])
    elif op == "cmp":
        if set(node) != {"op", "cmp", "left", "right"} or node["cmp"] not in CMP_OPS:
            raise ConditionError("bad comparison node")
        _check_value_node(node["left"])
        _check_value_node(node["right"])
    elif op == "in":
        if not set(node) <= {"op", "left", "right", "negated"} or not isinstance(node.get("negated", False), bool):
            raise ConditionError("bad 'in' node")
        _check_value_node(node.get("left"))
        _check_value_node(node.get("right"))
    else:
        raise ConditionError(f"unknown condition node {str(op)[:32]!r}")
