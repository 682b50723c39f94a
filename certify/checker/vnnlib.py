"""Strict reader of VNN-LIB files: VNN-LIB 1.0 input boxes, and VNN-LIB 2.0 queries over one or two networks.

VNN-LIB 1.0: reads `(declare-const X_i Real)` and assertions `(<= a b)` / `(>= a b)`, or an `and` of
them, between one input `X_i` and a number (exact: `0.1` is 1/10, `1e-3`, `-0.5` or `(- 0.5)`).
Assertions on no input (the output property on `Y_j`) are ignored: the property is the spec's.

VNN-LIB 2.0 (vnnlib.org, December 2025; grammar VNNLIB-Standard syntax/grammar.cf): a file that
starts with `(vnnlib-version <2.x>)` is parsed by the whole grammar (network declarations with
inputs, hidden nodes, outputs, `equal-to` / `isomorphic-to`; assertions over `and`, `or`, the six
comparisons and `+ - *`), scoped and typed (declared names, indices inside the declared shapes),
and then read as certify's problem, refusing anything else with one line naming the construct:

* one network (f: a box only) or two (the first is f, the second g, plain or `isomorphic-to` f), each
  with one input and one output tensor (flattened row-major), element type `Real` or `float32`
  (`float32` needs `semantics: float32`);
* the box: each input element bounded below and above by a number (`<=`, `>=`, `==`; linear in one
  element, so `(<= (* -1.0 X[0]) 0.0)` is a bound), and with two networks every input of g tied to
  the same input of f, `(== C[i] A[i])`;
* at most one deviation property, a disjunction `(or (> (- B[j] D[j]) t) (< (- B[j] D[j]) (- t)) ...)`
  over outputs j of f (B) and g (D), both sides for each listed j and one t >= 0 for all (the query
  "some |f_j - g_j| > t" is unsatisfiable exactly when sup max_j |f_j - g_j| <= t; with `>=`/`<=`
  it is strict, `strict` false). Its t and outputs must be the spec's tolerance and outputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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


def read_vnnlib(path: str | Path, key: str, spec=None, model=None) -> tuple[list[Fraction], list[Fraction]]:
    """The input box (lower, upper) of a VNN-LIB file, exact; every input has both bounds. A VNN-LIB
    2.0 query (`read_query`) is also checked against the spec and the model f when they are given."""
    query = read_query(path, key)
    if spec is not None and model is not None:
        check_query(query, spec, model, str(path), key)
    return query.lower, query.upper


def read_query(path: str | Path, key: str) -> "Query":
    """A VNN-LIB file as certify reads it: its box, and for a 2.0 query its networks and deviation property."""
    file = str(path)
    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(file, key, f"not a readable VNN-LIB file ({exc})", "write SMT-LIB s-expressions as VNN-LIB does") from None
    if _VERSION_2.match(text):
        return _interpret(parse_v2(text, file, key), file, key)
    lo, up = _read_v1(text, file, key)
    return Query("1.0", lo, up)


def _read_v1(text: str, file: str, key: str) -> tuple[list[Fraction], list[Fraction]]:
    bounds, names = ({}, {}), set()
    try:
        forms = _forms(text)
    except ValueError as exc:
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


# --------------------------------------------------------------------------- VNN-LIB 2.0

FIX2 = "certify reads a box on f's inputs, g's inputs tied to f's, and one deviation disjunction over f_j - g_j"
_VERSION_2 = re.compile(r"(?:\s|;[^\n]*\n)*\(\s*vnnlib-version\s+<2\.\d+>\s*\)")
_TOKEN2 = re.compile(r'\s+|;[^\n]*|"(?:[^"\\]|\\["\\nt])*"|<\d+\.\d+>|[()\[\],]|[^\s()\[\],;"]+')
_NUM2, _NAME2 = re.compile(r"-?\d+(\.\d+)?"), re.compile(r"[A-Za-z][A-Za-z0-9_]*")
COMPARISONS = (">", "<", ">=", "<=", "!=", "==")
ELEMENT_TYPES = ("Real", "float32")


@dataclass(frozen=True)
class Tensor:
    """A declared input, hidden node or output: name, element type, shape (and line)."""

    kind: str  # "input" | "hidden" | "output"
    name: str
    dtype: str
    shape: tuple[int, ...]
    line: int
    options: tuple[str, ...] = ()  # `initialized` (inputs)
    onnx: str | None = None  # hidden nodes: the ONNX node output's name

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class Network:
    name: str
    line: int
    relation: tuple[str, str] | None  # ("isomorphic-to" | "equal-to", another network's name)
    tensors: tuple[Tensor, ...]

    def of(self, kind: str) -> list[Tensor]:
        return [t for t in self.tensors if t.kind == kind]


@dataclass(frozen=True)
class Deviation:
    """`some j in outputs: |Y_f[j] - Y_g[j]| > tolerance` (strict) or `>= tolerance` (not strict)."""

    tolerance: Fraction
    outputs: tuple[int, ...] | None  # None: every output
    strict: bool


@dataclass(frozen=True)
class Query:
    version: str  # "1.0" | "2.0"
    lower: list[Fraction]
    upper: list[Fraction]
    networks: tuple[Network, ...] = ()
    deviation: Deviation | None = None

    @property
    def dtype(self) -> str:
        return self.networks[0].of("input")[0].dtype if self.networks else "Real"


class _Tokens:
    def __init__(self, text: str, file: str, key: str):
        self.items, self.i, self.file, self.key = [], 0, file, key
        line = 1
        for m in _TOKEN2.finditer(text):
            tok = m.group()
            if not (tok[0].isspace() or tok[0] == ";"):
                self.items.append((tok, line))
            line += tok.count("\n")
        self.end_line = line

    def bad(self, what: str, line: int | None = None) -> BadInput:
        line = line if line is not None else (self.items[self.i][1] if self.i < len(self.items) else self.end_line)
        return BadInput(self.file, self.key, what, FIX2, line)

    def peek(self, ahead: int = 0) -> str | None:
        j = self.i + ahead
        return self.items[j][0] if j < len(self.items) else None

    @property
    def line(self) -> int:
        return self.items[self.i][1] if self.i < len(self.items) else self.end_line

    def take(self, expected: str | None = None, what: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise self.bad(f"expected {what or repr(expected)}, found {'the end of the file' if tok is None else repr(tok[:40])}")
        self.i += 1
        return tok

    def name(self, what: str) -> str:
        tok = self.take(what=what)
        if not _NAME2.fullmatch(tok):
            self.i -= 1
            raise self.bad(f"{tok[:40]!r} is not a {what} (a letter, then letters, digits or _)")
        return tok

    def number(self) -> str:
        tok = self.take(what="a number")
        if not _NUM2.fullmatch(tok):
            self.i -= 1
            raise self.bad(f"{tok[:40]!r} is not a VNN-LIB 2.0 number (digits, an optional - and .digits)")
        return tok


def _shape(t: _Tokens) -> tuple[int, ...]:
    t.take("[")
    dims = []
    while t.peek() != "]":
        if dims:
            t.take(",")
        text = t.number()
        if not text.isdigit():
            raise t.bad(f"shape entry {text} is not a whole number >= 0")
        dims.append(int(text))
    t.take("]")
    return tuple(dims)


def _network(t: _Tokens) -> Network:
    line = t.line
    t.take("(")
    t.take("declare-network")
    name = t.name("network name")
    relation, tensors = None, []
    while t.peek() == "(" and t.peek(1) in ("isomorphic-to", "equal-to"):
        t.take("(")
        kind = t.take()
        if relation is not None:
            raise t.bad(f"network {name} has more than one equal-to / isomorphic-to")
        relation = (kind, t.name("network name"))
        t.take(")")
    order = {"declare-input": 0, "declare-hidden": 1, "declare-output": 2}
    last = 0
    while t.peek() == "(":
        tline = t.line
        t.take("(")
        head = t.take()
        if head not in order or order[head] < last:
            raise t.bad(f"{head!r} in network {name}: declare inputs, then hidden nodes, then outputs", tline)
        last = order[head]
        tname = t.name("tensor name")
        dtype = t.name("element type")
        shape = _shape(t)
        options, onnx = [], None
        if head == "declare-input":
            while t.peek() == "initialized":
                options.append(t.take())
        elif head == "declare-hidden":
            onnx = t.take(what="the ONNX node name (a string)")
            if not onnx.startswith('"'):
                raise t.bad(f"hidden node {tname} needs its ONNX node name as a string", tline)
        t.take(")")
        tensors.append(Tensor(head.split("-")[1], tname, dtype, shape, tline, tuple(options), onnx))
    t.take(")")
    if not any(x.kind == "input" for x in tensors) or not any(x.kind == "output" for x in tensors):
        raise t.bad(f"network {name} needs at least one declare-input and one declare-output", line)
    return Network(name, line, relation, tuple(tensors))


def _arith(t: _Tokens):
    tok = t.peek()
    if tok == "(":
        line = t.line
        t.take("(")
        op = t.take(what="an arithmetic operator (+, -, *)")
        if op not in ("+", "-", "*"):
            raise t.bad(f"{op!r} is not an arithmetic operator (+, -, *)", line)
        args = [_arith(t)]
        while t.peek() != ")":
            args.append(_arith(t))
        t.take(")")
        if op != "-" and len(args) < 1:
            raise t.bad(f"({op}) needs arguments", line)
        return ("neg", args[0]) if op == "-" and len(args) == 1 else (op, args)
    if tok is not None and re.match(r"-?\d", tok):
        return ("num", Fraction(t.number()))
    name = t.name("variable or number")
    if t.peek() != "[":
        return ("var", name, (), t.items[t.i - 1][1])
    t.take("[")
    idx = [t.number()]
    while t.peek() == ",":
        t.take(",")
        idx.append(t.number())
    t.take("]")
    if not all(i.isdigit() for i in idx):
        raise t.bad(f"index {name}[{','.join(idx)}] is not whole numbers")
    return ("var", name, tuple(int(i) for i in idx), t.items[t.i - 1][1])


def _bool(t: _Tokens):
    line = t.line
    t.take("(")
    op = t.take(what="a comparison, and or or")
    if op in ("and", "or"):
        args = [_bool(t)]
        while t.peek() != ")":
            args.append(_bool(t))
        t.take(")")
        return (op, args, line)
    if op not in COMPARISONS:
        raise t.bad(f"{op!r} is not a comparison ({' '.join(COMPARISONS)}) or and/or", line)
    a, b = _arith(t), _arith(t)
    t.take(")")
    return (op, [a, b], line)


def parse_v2(text: str, file: str, key: str) -> tuple[list[Network], list]:
    """Parse a VNN-LIB 2.0 query by the grammar; scope and type it. Returns (networks, assertions)."""
    t = _Tokens(text, file, key)
    t.take("(")
    t.take("vnnlib-version")
    t.take()
    t.take(")")
    networks = []
    while t.peek() == "(" and t.peek(1) == "declare-network":
        networks.append(_network(t))
    if not networks:
        raise t.bad("no declare-network")
    assertions = []
    while t.peek() is not None:
        t.take("(")
        t.take("assert", "(assert ...)")
        assertions.append(_bool(t))
        t.take(")")
    names: dict[str, Tensor] = {}
    seen: set[str] = set()
    for i, net in enumerate(networks):
        for x in [net.name, *(x.name for x in net.tensors)]:
            if x in seen:
                raise t.bad(f"the name {x} is declared twice", net.line)
            seen.add(x)
        names.update({x.name: x for x in net.tensors})
        if net.relation is not None:
            other = next((n for n in networks[:i] if n.name == net.relation[1]), None)
            if other is None or other.relation is not None:
                raise t.bad(f"{net.relation[0]} {net.relation[1]}: not an earlier network without equal-to / isomorphic-to",
                            net.line)
            shapes = lambda n: [(x.kind, x.shape) + ((x.dtype,) if net.relation[0] == "equal-to" else ())  # noqa: E731
                                for x in n.tensors if x.kind != "hidden"]
            if shapes(net) != shapes(other):
                raise t.bad(f"network {net.name} is {net.relation[0]} {other.name} but declares other inputs or outputs", net.line)

    def scope(e):
        if e[0] == "var":
            x = names.get(e[1])
            if x is None:
                raise t.bad(f"{e[1]} is not declared", e[3])
            if len(e[2]) != len(x.shape) or any(i >= d for i, d in zip(e[2], x.shape)):
                raise t.bad(f"{e[1]}{list(e[2])} does not index the shape {list(x.shape)}", e[3])
        elif e[0] in ("neg",):
            scope(e[1])
        elif e[0] != "num":
            for a in e[1]:
                scope(a)

    todo = list(assertions)
    while todo:
        e = todo.pop()
        for arg in e[1]:
            (todo.append if e[0] in ("and", "or") else scope)(arg)
    return networks, assertions


def _flat(shape: tuple[int, ...], idx: tuple[int, ...]) -> int:
    n = 0
    for i, d in zip(idx, shape):
        n = n * d + i
    return n


def _text2(e) -> str:
    if e[0] == "num":
        return str(e[1]) if e[1].denominator == 1 else str(float(e[1]))
    if e[0] == "var":
        return e[1] + (f"[{','.join(map(str, e[2]))}]" if e[2] else "")
    if e[0] == "neg":
        return f"(- {_text2(e[1])})"
    return f"({e[0]} " + " ".join(map(_text2, e[1])) + ")"


def _btext(e) -> str:
    op, args, _ = e
    return f"({op} " + " ".join(_btext(a) if op in ("and", "or") else _text2(a) for a in args) + ")"


def _linear(e, where, tensors, bad) -> dict:
    """An arithmetic expression as {(tensor name, flat index) or 1: coefficient}; a product of two
    variables is refused (certify reads linear constraints only)."""
    if e[0] == "num":
        return {1: e[1]}
    if e[0] == "var":
        return {(e[1], _flat(tensors[e[1]].shape, e[2])): Fraction(1)}
    if e[0] == "neg":
        return {k: -v for k, v in _linear(e[1], where, tensors, bad).items()}
    parts = [_linear(a, where, tensors, bad) for a in e[1]]
    out: dict = {}
    if e[0] == "*":
        out = {1: Fraction(1)}
        for p in parts:
            if set(out) != {1} and set(p) != {1}:
                raise bad(f"{where}: a product of two variables is not linear")
            scale, other = (out[1], p) if set(out) == {1} else (p.get(1, Fraction(0)), out)
            out = {k: v * scale for k, v in other.items()}
        return {k: v for k, v in out.items() if v != 0}
    for j, p in enumerate(parts):
        for k, v in p.items():
            out[k] = out.get(k, Fraction(0)) + (v if e[0] == "+" or j == 0 else -v)
    return {k: v for k, v in out.items() if v != 0}


def _interpret(parsed, file: str, key: str) -> Query:
    networks, assertions = parsed
    bad = lambda what, line=None: BadInput(file, key, what, FIX2, line)  # noqa: E731
    need(len(networks) in (1, 2), file, key, f"the query declares {len(networks)} networks", FIX2, networks[-1].line)
    for net in networks:
        for kind in ("input", "output"):
            need(len(net.of(kind)) == 1, file, key, f"network {net.name} declares {len(net.of(kind))} {kind}s; certify reads one",
                 FIX2, net.line)
        hidden = net.of("hidden")
        need(not hidden, file, key, f"declare-hidden {hidden[0].name if hidden else ''} (a constraint inside network "
             f"{net.name}) is not supported", FIX2, hidden[0].line if hidden else None)
        for x in net.tensors:
            need(x.dtype in ELEMENT_TYPES, file, key, f"element type {x.dtype} of {x.name}: certify's semantics are "
                 "Real (exact) and float32", "declare Real (or float32 with `semantics: float32`)", x.line)
            need(not x.options, file, key, f"input option {' '.join(x.options)} of {x.name} is not supported", FIX2, x.line)
    need(len({x.dtype for n in networks for x in n.tensors}) == 1, file, key, "the networks mix element types",
         "declare every tensor Real, or every tensor float32", networks[0].line)
    f = networks[0]
    g = networks[1] if len(networks) == 2 else None
    need(f.relation is None, file, key, f"network {f.name} (f) relates to another network", FIX2, f.line)
    if g is not None:
        need(g.relation is None or g.relation[0] == "isomorphic-to", file, key,
             f"network {g.name} is equal-to {f.name}: g would be f itself", "declare g as its own network (or isomorphic-to f)",
             g.line)
    fx, fy = f.of("input")[0], f.of("output")[0]
    gx, gy = (g.of("input")[0], g.of("output")[0]) if g else (None, None)
    if g is not None:
        need(gx.size == fx.size and gy.size == fy.size, file, key, f"networks {f.name} and {g.name} differ in input or output size",
             "f and g read the same input and give the same outputs", g.line)
    tensors = {x.name: x for n in networks for x in n.tensors}
    lower: dict[int, Fraction] = {}
    upper: dict[int, Fraction] = {}
    tied: set[int] = set()
    deviation = None
    atoms = []
    for a in assertions:
        todo = [a]
        while todo:  # a top-level conjunction is its conjuncts
            e = todo.pop()
            if e[0] == "and":
                todo += e[1]
            else:
                atoms.append(e)
    for e in atoms:
        op, args, line = e
        where = _btext(e)[:90]
        if op == "or":
            need(deviation is None, file, key, f"a second disjunction {where}: certify reads one deviation property", FIX2, line)
            need(g is not None, file, key, f"{where}: an output property of a single network; certify proves deviations "
                 "between two networks", "declare f and g and state |f_j - g_j| > t", line)
            deviation = _deviation(args, fy.name, gy.name, fy.size, tensors, file, key, line)
            continue
        form = _linear(args[0], where, tensors, lambda w: bad(w, line))
        for k, v in _linear(args[1], where, tensors, lambda w: bad(w, line)).items():
            form[k] = form.get(k, Fraction(0)) - v
        form = {k: v for k, v in form.items() if v != 0}
        c = form.pop(1, Fraction(0))
        elems = sorted(form)
        inputs = {fx.name, gx.name if gx else None}
        need(elems and all(n in inputs for n, _ in elems), file, key,
             f"{where} constrains {'no variable' if not elems else 'an output'}: only a box on the inputs, g's inputs tied "
             "to f's and one deviation disjunction are read", FIX2, line)
        if len(elems) == 2 and g is not None and op == "==":  # a tie: A[i] == C[i]
            (n1, i1), (n2, i2) = elems
            need(op == "==" and c == 0 and i1 == i2 and {n1, n2} == {fx.name, gx.name if gx else ""}
                 and form[elems[0]] == -form[elems[1]], file, key,
                 f"{where} relates two inputs: only (== {fx.name}[i] {gx.name if gx else 'C'}[i]) ties g's input to f's", FIX2, line)
            tied.add(i1)
            continue
        need(len(elems) == 1, file, key, f"{where} constrains several inputs together: not a box", FIX2, line)
        need(op in ("<=", ">=", "=="), file, key, f"{where}: a strict or != bound on an input is not a box", "write <= or >=", line)
        (_, i), a_ = elems[0], form[elems[0]]
        value = -c / a_  # a*x + c (op) 0  <=>  x (op') -c/a
        ups = op == "==" or (op == "<=") == (a_ > 0)
        lows = op == "==" or not ups
        if ups:
            upper[i] = min(upper.get(i, value), value)
        if lows:
            lower[i] = max(lower.get(i, value), value)
    if g is not None:
        loose = [f"{gx.name}[{i}]" for i in range(gx.size) if i not in tied]
        need(not loose, file, key, f"g's inputs {', '.join(loose[:4])} are not tied to f's", f"assert (== {fx.name}[i] {gx.name}[i]) "
             "for every input i (f and g read the same x)", g.line)
    missing = [i for i in range(fx.size) if i not in lower or i not in upper]
    need(not missing, file, key, f"inputs without both a lower and an upper bound: {', '.join(str(i) for i in missing[:5])}",
         FIX2, fx.line)
    return Query("2.0", [lower[i] for i in range(fx.size)], [upper[i] for i in range(fx.size)], tuple(networks), deviation)


def _deviation(disjuncts, fy: str, gy: str, size: int, tensors, file: str, key: str, line: int) -> Deviation:
    """Read `(or ...)` as `some j: Y_f[j] - Y_g[j] > t or < -t` for both signs of every listed j, one t."""
    sides: dict[tuple[int, int], tuple[Fraction, bool]] = {}
    for e in disjuncts:
        op = e[0]
        where = _btext(e)[:90]
        need(op in (">", "<", ">=", "<="), file, key, f"{where} in the deviation disjunction is not a comparison > < >= <=",
             FIX2, line)
        form = _linear(e[1][0], where, tensors, lambda w: BadInput(file, key, w, FIX2, line))
        for k, v in _linear(e[1][1], where, tensors, lambda w: BadInput(file, key, w, FIX2, line)).items():
            form[k] = form.get(k, Fraction(0)) - v
        form = {k: v for k, v in form.items() if v != 0}
        c = form.pop(1, Fraction(0))
        j = {i for _, i in form}
        ok = len(form) == 2 and len(j) == 1 and {n for n, _ in form} == {fy, gy} and form[(fy, min(j))] == -form[(gy, min(j))]
        need(ok, file, key, f"{where} is not a bound on {fy}[j] - {gy}[j]", FIX2, line)
        a = form[(fy, min(j))]  # a (f_j - g_j) + c (op) 0
        t = -c / a
        greater = (op in (">", ">=")) == (a > 0)
        side = (min(j), 1 if greater else -1)
        need(side not in sides, file, key, f"{where} bounds {fy}[{side[0]}] - {gy}[{side[0]}] a second time on one side",
             "give one (> d t) and one (< d (- t)) per output j", line)
        sides[side] = (t if greater else -t, op in (">", "<"))
    outputs = sorted({j for j, _ in sides})
    values = set(sides.values())
    need(all((j, s) in sides for j in outputs for s in (1, -1)), file, key,
         "the deviation disjunction bounds some f_j - g_j on one side only", "give both (> d t) and (< d (- t)) for each output j",
         line)
    need(len(values) == 1, file, key, "the deviation disjunction uses different thresholds or mixes strict and non-strict "
         "comparisons", "use one t for every output and side", line)
    (t, strict), = values
    need(t >= 0, file, key, f"the deviation threshold {t} is negative", "write t >= 0", line)
    return Deviation(t, None if outputs == list(range(size)) else tuple(outputs), strict)


def check_query(query: Query, spec, model, file: str, key: str) -> None:
    """A VNN-LIB 2.0 query against the spec and its model f: sizes, element type and the deviation property."""
    if query.version != "2.0":
        return
    f = query.networks[0]
    line = getattr(spec.input, "line", None)
    fy = f.of("output")[0]
    spec.need(fy.size == model.out_dim, key, f"{Path(file).name}: network {f.name} declares {fy.size} outputs but the model "
              f"gives {model.out_dim}", "map the query's first network to the spec's model", line)
    spec.need(query.dtype == "Real" or spec.property.semantics == "float32", key, f"{Path(file).name} declares float32 "
              "networks", "set `semantics: float32` (the bound then covers float32 rounding), or declare Real", line)
    d = query.deviation
    if d is not None:
        outputs = spec.property.outputs
        spec.need(d.tolerance == spec.property.tolerance, key, f"{Path(file).name} states the deviation threshold "
                  f"{d.tolerance}, the spec's tolerance is {spec.property.tolerance}", "make them equal", line)
        spec.need((None if outputs is None or sorted(outputs) == list(range(model.out_dim)) else tuple(sorted(outputs)))
                  == d.outputs, key, f"{Path(file).name} bounds outputs {list(d.outputs) if d.outputs else 'all'}, the spec "
                  f"{list(outputs) if outputs else 'all'}", "list the same outputs", line)
