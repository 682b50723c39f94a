"""Strict reader of a VNN-LIB file's input region into an exact box.

Reads `(declare-const X_i Real)` and assertions `(<= a b)` / `(>= a b)`, or an `and` of them,
between one input `X_i` and a number (exact: `0.1` is 1/10, `1e-3`, `-0.5` or `(- 0.5)`).
Assertions on no input (the output property on `Y_j`) are ignored: the property is the spec's.
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

from .errors import BadInput, need
from .numbers import parse_spec_number

FIX = "certify reads box constraints on inputs only: (assert (<= X_i number)) and (assert (>= X_i number))"
_TOKEN, _X = re.compile(r";[^\n]*|\n|\(|\)|[^\s();]+"), re.compile(r"X_(0|[1-9]\d*)")
_text = lambda e: "(" + " ".join(map(_text, e)) + ")" if isinstance(e, list) else e


def _forms(text: str) -> list[tuple[int, list]]:
    """Top-level s-expressions with their first line."""
    forms, stack, line = [], [[]], 1
    for tok in _TOKEN.findall(text):
        line += tok == "\n"
        if tok == "(":
            stack.append([line])  # the opening line, dropped when the list closes
        elif tok == ")" and len(stack) > 1:
            start, *e = stack.pop()
            (stack[-1] if len(stack) > 1 else forms).append(e if len(stack) > 1 else (start, e))
        elif len(stack) > 1 and tok != "\n" and tok[0] != ";":
            stack[-1].append(tok)
        elif tok != "\n" and tok[0] != ";":
            raise ValueError(f"line {line}: {tok!r} outside parentheses")
    if len(stack) > 1:
        raise ValueError("unbalanced parentheses")
    return forms


def _number(e) -> Fraction | None:
    if isinstance(e, list):
        return -_number(e[1]) if len(e) == 2 and e[0] == "-" and _number(e[1]) is not None else None
    return parse_spec_number(e) if "/" not in e else None


def read_vnnlib(path: str | Path, key: str) -> tuple[list[Fraction], list[Fraction]]:
    """The input box (lower, upper) of a VNN-LIB file, exact; every declared X_i has both bounds."""
    file, bounds, names = str(path), ({}, {}), set()
    try:
        forms = _forms(Path(path).read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BadInput(file, key, f"not a readable VNN-LIB file ({exc})", "write SMT-LIB s-expressions as VNN-LIB does") from None
    for line, form in forms:
        if form[:1] == ["declare-const"] and len(form) == 3 and form[2] == "Real" and isinstance(form[1], str):
            names.add(form[1])
        elif form[:1] != ["assert"] or len(form) != 2:
            raise BadInput(file, key, f"unsupported command {_text(form)[:80]!r}", FIX, line)
        elif _X.search(_text(form)):
            todo = [form[1]]
            while todo:
                e = todo.pop()
                if isinstance(e, list) and e[:1] == ["and"]:
                    todo += e[1:]
                    continue
                op, a, b = e if isinstance(e, list) and len(e) == 3 else (None, [], [])
                (x, c), upper = ((a, _number(b)), op == "<=") if isinstance(a, str) and _X.fullmatch(a) else ((b, _number(a)), op == ">=")
                if op not in ("<=", ">=") or c is None or not (isinstance(x, str) and _X.fullmatch(x) and x in names):
                    raise BadInput(file, key, f"not a box constraint on a declared input: {_text(e)[:80]!r}", FIX, line)
                i = int(x[2:])
                bounds[upper][i] = c if i not in bounds[upper] else (min if upper else max)(bounds[upper][i], c)
    xs = sorted(int(n[2:]) for n in names if _X.fullmatch(n))
    need(xs and xs == list(range(len(xs))), file, key, "the inputs are not declared as X_0 .. X_n-1",
         "declare every input as (declare-const X_i Real)")
    missing = [f"X_{i}" for i in xs if i not in bounds[0] or i not in bounds[1]]
    need(not missing, file, key, f"inputs without both a lower and an upper bound: {', '.join(missing[:5])}", FIX)
    return [bounds[0][i] for i in xs], [bounds[1][i] for i in xs]
