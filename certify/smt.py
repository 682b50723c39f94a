"""`certify export-smt SPEC CERT [-o OUT.smt2] [--cvc5]`: a certificate's obligations in SMT-LIB2.

The trusted checker is run on the certificate first; a rejected certificate is not exported
(exit 3). While it runs, the checker records what it verified: its z3 queries (the goals,
`check.RECORD`, a few lines in `_holds`) and every back-substitution with the intermediate forms
it derived (`exact.TRACE`, a few lines in `backsubstitute`); every step is observed with the
verified state it started from (the step functions are wrapped here for the duration of the run).
The obligations are stated from those records, so there is no second back-substitution here that
could disagree with the checker's; the other solver re-checks each one with its own arithmetic.
Each obligation becomes one `(push 1) ... (check-sat) (pop 1)` block in QF_LRA whose expected
answer is `unsat`; rationals are written exactly as `(/ p q)`, negatives as `(- ...)`. `HEADER`
below says exactly what is and what is not exported. A step kind without a rule here is refused
with one line (exit 2), never exported partially. This module is not trusted: it only states the
obligations again for another solver (cvc5: `--cvc5`, or `python -m certify.smt FILE`).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import z3

from . import __version__
from .checker import check as checker
from .checker import exact
from .checker.errors import BadInput
from .checker.exact import IntVec
from .checker.numbers import parse_rational, rational_str
from .files import atomic_open

EXIT_OK, EXIT_BAD_INPUT, EXIT_NOT_CONFIRMED = 0, 2, 3
KINDS = ("definitions", "relu_relaxation", "relax", "interval", "linear", "alpha", "difference", "goal", "empty")

HEADER = """\
; What is exported. Every obligation is a statement about the joint network J (dense layers
; z_k = W_k h_(k-1) + b_k, h_k = relu(z_k), h_0 = x, output z_n = f_i - g_i) built by the checker,
; for the region (input box, and the ReLU-split signs folded into the bounds) of one tree node.
; J's weights are written once, before the first obligation: pre<k>_<i> is defined as
; W_k,i . h<k-1> + b_k,i (h0 = x: the inputs the box leaves free; the checker folds inputs the box
; fixes into layer 1's bias), over Real constants x<m>, h<k>_<m>, z<k>_<m> declared there; each
; block constrains them afresh inside its own (push 1) ... (pop 1).
; Each uses only facts that earlier obligations established (verified bounds and lines):
;  relu_relaxation  no z in a neuron's verified [l, u] lies above the lower line or below the
;                   upper line of relu, one disjunct per piece of relu (the checker decides this
;                   exactly at l, 0 and u, without z3).
;  interval         per claimed bound: no input in the box (layer 1), or no h with
;                   max(l,0) <= h <= max(u,0) from the verified bounds [l, u] of layer k-1, puts
;                   pre<k>_<i> beyond the claim (exactly the checker's interval arithmetic).
;  linear           (CROWN, alpha-CROWN, beta-CROWN, and the delta bounds of a difference step)
;                   per claimed bound, the checker's back-substitution as a chain of one-layer
;                   links. lam_j, c_j are the forms the checker itself derived and recorded (on
;                   z_k: +-e_i, or the step's rows); link j -> j-1 says lam_j.pre<j> + c_j >=
;                   lam_(j-1).z<j-1> + c_(j-1) for every z<j-1> in its verified bounds, h<j-1>
;                   between its verified relu lines (and above this row's alpha lines), and, for
;                   each verified difference pair (a, b), delta = z_a - z_b in its verified bounds
;                   and h_a - h_b between its verified difference lines (beta multipliers are in
;                   lam_(j-1) and need the split's sign, which the bounds carry); the last link
;                   says lam_1.pre1 + c_1 >= the claim for every x in the box. Chained, they give
;                   +-row.z_k >= +-claim. With multipliers on layer k's own splits the recorded
;                   rows are D*(+-e_r) plus them (the claim times D), and one more obligation says
;                   they add a term <= 0 for every z_k in its verified bounds (the splits' signs). The other solver re-checks every link, and every product
;                   with the weights, with its own arithmetic.
;  alpha            no z in a neuron's verified [l, u] has relu(z) below an alpha line
;                   a*z of a linear step (the checker checks these slopes exactly at both ends
;                   of the interval, without z3).
;  difference       the lines of a difference step: no z_a, z_b in their verified bounds with
;                   delta = z_a - z_b in its claimed bounds puts relu(z_a) - relu(z_b) below the
;                   lower or above the upper line in delta; and a delta bound the checker took
;                   from the verified bounds of z_a and z_b (not from back-substitution) follows
;                   from them.
;  goal             the checker's z3 query, verbatim: no output difference d within the verified
;                   output bounds has |d_i| > bound (one per region the checker proved).
;  empty            a region closed because its verified bounds (or a pair's delta bounds)
;                   contradict its split: l > u.
; What is NOT exported (the trusted checker does it in exact arithmetic or by reading files):
;  reading and hashing the spec, models, data and materialised arrays; building g, J and the input
;  box (the weights and boxes written here are the checker's, taken as given); that a split's
;  children cover their parent; folding the split signs and repeated steps into the bounds
;  (intersection); regions closed as empty at a split without a step; under float32 semantics, the
;  rounding-error margins (computed exactly by the checker, they appear in the goal as constants);
;  the witness replay; and the final comparison bound <= tolerance.
"""


class Refused(BadInput):
    """A step the exporter cannot state soundly as QF_LRA obligations (exit 2, one line)."""

    def __init__(self, where: str, what: str):
        super().__init__(where, "", f"not exported as SMT-LIB2 obligations: {what}",
                         "check the certificate with `certify verify` (it does not need the export)")


def fracs(vec: IntVec) -> list[Fraction]:
    """An integer vector over one denominator as Fractions."""
    nums, den = vec
    return [Fraction(n, den) for n in nums]


def num(q: Fraction) -> str:
    """An exact rational in SMT-LIB2: `p`, `(/ p q)`, negatives as `(- ...)`; literals are non-negative."""
    p, d = abs(q.numerator), q.denominator
    text = str(p) if d == 1 else f"(/ {p} {d})"
    return f"(- {text})" if q < 0 else text


def ratio(p, q: int) -> str:
    """num(p / q) for integers (or FLINT fmpz) p and q > 0, without building a Fraction."""
    p = int(p)
    g = math.gcd(p, q)
    p, q = p // g, q // g
    text = str(abs(p)) if q == 1 else f"(/ {abs(p)} {q})"
    return f"(- {text})" if p < 0 else text


def lin(terms, const: Fraction = Fraction(0)) -> str:
    """sum c*v + const for (c, v) in terms, zero coefficients left out."""
    parts = [v if c == 1 else f"(* {num(c)} {v})" for c, v in terms if c != 0]
    if const != 0 or not parts:
        parts.append(num(const))
    return parts[0] if len(parts) == 1 else f"(+ {' '.join(parts)})"


def _int_lin(nums, den: int, names: list[str], const: str | None = None) -> str:
    """sum (nums[m] / den) * names[m] (+ const): a form over one denominator, zeros left out."""
    parts = [f"(* {ratio(x, den)} {v})" for x, v in zip(nums, names) if x]
    if const is not None and (const != "0" or not parts):
        parts.append(const)
    return (parts[0] if len(parts) == 1 else f"(+ {' '.join(parts)})") if parts else "0"


def _n_ary(op: str, args: list[str]) -> str:
    if not args:
        return {"and": "true", "or": "false"}[op]
    return args[0] if len(args) == 1 else f"({op} {' '.join(args)})"


_OPS = {z3.Z3_OP_AND: "and", z3.Z3_OP_OR: "or", z3.Z3_OP_NOT: "not", z3.Z3_OP_LE: "<=", z3.Z3_OP_LT: "<",
        z3.Z3_OP_GE: ">=", z3.Z3_OP_GT: ">", z3.Z3_OP_EQ: "=", z3.Z3_OP_ADD: "+", z3.Z3_OP_SUB: "-",
        z3.Z3_OP_MUL: "*", z3.Z3_OP_UMINUS: "-", z3.Z3_OP_ITE: "ite"}
_SYMBOL = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_GLOBAL = re.compile(r"(x\d+|[hz]\d+_\d+|pre\d+_\d+|[FB]\d+)")  # names declared once for the whole file


def _numeral(expr) -> Fraction | None:
    """The value of a numeral, or of a constant term the checker writes for one ((/ p q), (- ...)); else None."""
    if z3.is_rational_value(expr):
        return expr.as_fraction()
    kind = expr.decl().kind() if z3.is_app(expr) else None
    if kind in (z3.Z3_OP_DIV, z3.Z3_OP_UMINUS):
        args = [_numeral(c) for c in expr.children()]
        if None not in args and (kind == z3.Z3_OP_UMINUS or args[1] != 0):
            return -args[0] if kind == z3.Z3_OP_UMINUS else args[0] / args[1]
    return None


def z3_smt(expr, names: set[str]) -> str:
    """A z3 QF_LRA term as clean SMT-LIB2 (exact rationals); the Real constants it uses go to `names`."""
    value = _numeral(expr)
    if value is not None:
        return num(value)
    if z3.is_true(expr) or z3.is_false(expr):
        return "true" if z3.is_true(expr) else "false"
    kind = expr.decl().kind()
    if z3.is_const(expr) and kind == z3.Z3_OP_UNINTERPRETED:
        name = expr.decl().name()
        if not _SYMBOL.fullmatch(name) or _GLOBAL.fullmatch(name) or not z3.is_real(expr):
            raise ValueError(f"cannot export the z3 constant {name!r}")
        names.add(name)
        return name
    if kind not in _OPS:
        raise ValueError(f"cannot export the z3 operator {expr.decl().name()!r}")
    args = [z3_smt(c, names) for c in expr.children()]
    op = _OPS[kind]
    return _n_ary(op, args) if op in ("and", "or", "+") else f"({op} {' '.join(args)})"


def relu(v: str) -> str:
    return f"(ite (>= {v} 0) {v} 0)"


@dataclass
class Obligation:
    kind: str  # one of KINDS but "definitions"
    where: str  # the checker's name of the step or region
    what: str  # one line: what unsat means
    names: list[str] = field(default_factory=list)  # Real constants of this block only (the file's own are global)
    asserts: list[str] = field(default_factory=list)
    defines: list[str] = field(default_factory=list)  # Bool macros first used here, defined before (push 1)

    def smt(self, index: int, total: int) -> str:
        lines = [f"; obligation {index} of {total} [{self.kind}] {self.where}", f"; {self.what}", "; expected: unsat",
                 *self.defines, "(push 1)"]
        lines += [f"(declare-const {n} Real)" for n in self.names]
        lines += [f"(assert {a})" for a in self.asserts]
        return "\n".join(lines + ["(check-sat)", "(pop 1)", ""])


@dataclass
class _Seen:
    """A step as the checker accepted it: the verified state it started from, what it added, and the
    back-substitutions (`exact.TRACE` entries: the forms the checker derived) it ran."""

    kind: str
    where: str
    step: dict
    joint: list
    box: tuple
    bounds: dict  # verified bounds before the step
    relax: dict  # verified relu lines after the step
    diff: dict  # verified difference lines after the step
    after: dict  # bounds after the step (intersected, split signs folded in)
    emptied: bool  # the step made the region empty
    traces: list  # exact.TRACE entries of this step, in call order
    assume: dict = field(default_factory=dict)  # the region's ReLU splits: (layer, neuron) -> "inactive" | "active"


@contextmanager
def recording():
    """Run the checker with its z3 queries and back-substitutions recorded (`check.RECORD`,
    `exact.TRACE`) and every step observed with the verified state it used (restored after).
    Yields (records, deltas): deltas maps id(verified difference lines) to (lines, claimed delta bounds)."""
    records: list = []
    deltas: dict = {}
    table = checker.STEP_CHECKERS
    originals = dict(table)

    def observe(kind):
        def run(step, state, where):
            box, bounds, empty = state.box, dict(state.bounds), state.empty
            before = state.diff.get(step.get("layer")) if kind == "difference" else None
            exact.TRACE = []
            try:
                originals[kind](step, state, where)  # raises Rejected unless the step is sound
                traces = exact.TRACE
            finally:
                exact.TRACE = None
            records.append(_Seen(kind, where, step, state.joint, box, bounds, dict(state.relax), dict(state.diff),
                                 dict(state.bounds), state.empty and not empty, traces, dict(state.assume)))
            if kind == "difference":
                lines = state.diff[step["layer"]]
                claims = {}  # `inherit`: the kept pairs' delta bounds, as the step that verified them claimed
                if step.get("inherit") is True:
                    if id(before) not in deltas or deltas[id(before)][0] is not before:
                        raise Refused(where, "inherited difference lines that no observed difference step verified")
                    claims = dict(zip(before[0], zip(*deltas[id(before)][1:])))
                claims.update(zip(map(tuple, step["pairs"]), zip(*([parse_rational(v) for v in step[s]] for s in ("lower", "upper")))))
                deltas[id(lines)] = (lines, *([claims[p][i] for p in lines[0]] for i in (0, 1)))
        return run

    table.update({k: observe(k) for k in originals})
    checker.RECORD = records
    try:
        yield records, deltas
    finally:
        table.update(originals)
        checker.RECORD = None
        exact.TRACE = None


def _claims(step: dict) -> tuple[list, list]:
    """A step's claims; None for a null (a side a one-sided linear step does not claim)."""
    return tuple([None if v is None else parse_rational(v) for v in step[key]] for key in ("lower", "upper"))


def _box(names: list[str], lo, up) -> list[str]:
    return [f"(and (<= {num(l)} {v}) (<= {v} {num(u)}))" for v, l, u in zip(names, lo, up)]


def _names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{m}" for m in range(n)]


def definitions(joint: list) -> str:
    """The file's Real constants and J's layers as pre<k>_<i> = W_k,i . h<k-1> + b_k,i (once)."""
    lines = ["; definitions: J's layers as the checker built them (every obligation below uses them)"]
    x = _names("x", len(joint[0][0][0][0]) if joint[0][0][0] else 0)
    lines += [f"(declare-const {v} Real)" for v in x]
    for k, ((w, wden), (b, bden)) in enumerate(joint, 1):
        if k < len(joint):
            lines += [f"(declare-const {v} Real)" for p in ("h", "z") for v in _names(f"{p}{k}_", len(b))]
        below = x if k == 1 else _names(f"h{k - 1}_", len(w[0]) if w else 0)
        lines += [f"(define-fun pre{k}_{i} () Real {_int_lin(row, wden, below, ratio(bias, bden))})" for i, (row, bias) in enumerate(zip(w, b))]
    return "\n".join(lines) + "\n"


def interval_obligations(seen: _Seen, facts: "_Facts") -> list[Obligation]:
    """One obligation per claimed bound: pre<k>_i below (above) its claim has no h in the box."""
    k = seen.step["layer"]
    domain = "x in the input box" if k == 1 else f"h{k - 1} in [max(l,0), max(u,0)] of the verified bounds of layer {k - 1}"
    lower, upper, out = *_claims(seen.step), []
    for side, claims, rel in (("lower", lower, "<"), ("upper", upper, ">")):
        for i, claim in enumerate(claims):
            ob = Obligation("interval", seen.where, f"no {domain} puts z{k}_{i} {'below' if rel == '<' else 'above'} its claimed {side} bound")
            ob.asserts = (_box(_names("x", len(seen.box[0])), *seen.box) if k == 1 else [facts.post_box(seen.bounds[k - 1], k - 1, ob)])
            ob.asserts.append(f"({rel} pre{k}_{i} {num(claim)})")
            out.append(ob)
    return out


class _Facts:
    """Verified facts as Bool macros, each defined once (before the first block that uses it) and
    named in every block that uses it: F<n> = what a link j+1 -> j may use about layer j (z<j> in its
    verified bounds, h<j> between its verified relu lines, each verified difference pair's delta in
    its bounds and h_a - h_b between its lines); B<n> = h<j> in [max(l,0), max(u,0)] of layer j."""

    def __init__(self, deltas: dict):
        self.deltas, self.cache = deltas, {}

    def _macro(self, key: tuple, prefix: str, build, ob: "Obligation") -> str:
        if key not in self.cache:
            name = f"{prefix}{len(self.cache)}"
            self.cache[key] = name
            ob.defines.append(f"(define-fun {name} () Bool {_n_ary('and', build())})")
        return self.cache[key]

    def post_box(self, bounds: tuple, j: int, ob: "Obligation") -> str:
        """h<j> in [max(l,0), max(u,0)] for the verified bounds (l, u) of layer j."""
        def build():
            lo, up = ([max(v, Fraction(0)) for v in b] for b in bounds)
            return _box(_names(f"h{j}_", len(lo)), lo, up)
        return self._macro(("B", id(bounds), j), "B", build, ob)

    def __call__(self, seen: _Seen, trace: dict, j: int, ob: "Obligation") -> str:
        relax, lines = trace["relax"][j - 1], trace["diff"].get(j)
        if lines is not None and (id(lines) not in self.deltas or self.deltas[id(lines)][0] is not lines):
            raise Refused(seen.where, f"difference lines of layer {j} that no observed difference step verified")

        def build():
            lo, up = seen.bounds[j]
            z, h = _names(f"z{j}_", len(lo)), _names(f"h{j}_", len(lo))
            (a, ad), (b, bd), (c, cd), (d, dd) = relax
            out = _box(z, lo, up)
            out += [f"(>= {hm} {_int_lin([am], ad, [zm], ratio(bm, bd))})" for hm, zm, am, bm in zip(h, z, a, b)]
            out += [f"(<= {hm} {_int_lin([cm], cd, [zm], ratio(dm, dd))})" for hm, zm, cm, dm in zip(h, z, c, d)]
            if lines is not None:
                (pairs, ((sl, sld), (tl, tld), (su, sud), (tu, tud), *planes)), cl, cu = lines, *self.deltas[id(lines)][1:]
                for p, (pa, pb) in enumerate(pairs):
                    delta, gap = f"(- z{j}_{pa} z{j}_{pb})", f"(- h{j}_{pa} h{j}_{pb})"
                    rb = [f" (* {ratio(v[p], d)} z{j}_{pb})" for v, d in planes] if planes else ["", ""]  # planes: z_b terms
                    out += [f"(<= {num(cl[p])} {delta})", f"(<= {delta} {num(cu[p])})",
                            f"(>= {gap} (+ (* {ratio(sl[p], sld)} {delta}){rb[0]} {ratio(tl[p], tld)}))",
                            f"(<= {gap} (+ (* {ratio(su[p], sud)} {delta}){rb[1]} {ratio(tu[p], tud)}))"]
            return out
        return self._macro(("F", id(seen.bounds[j]), id(relax), id(lines), j), "F", build, ob)


def chain_obligations(seen: _Seen, trace: dict, r: int, claim: Fraction, tag: str, facts: _Facts, kind: str = "linear") -> list[Obligation]:
    """Row r of one recorded back-substitution (the checker's own forms lam_j, c_j, j = k..1) as a
    chain of one-layer links and the concretisation over the box: chained, row r . z_k >= claim."""
    lam, forms = trace["lam"], trace["forms"]
    k = seen.step["layer"]
    width = len(seen.joint[k - 1][1][0])
    if isinstance(lam, int):  # the checker's rows lam * e_r on z_k, constant 0
        forms = [(k, None, 1, None)] + forms
    if [f[0] for f in forms] != list(range(k, 0, -1)):
        raise Refused(seen.where, f"the recorded back-substitution does not run from layer {k} down to 1")

    def form(j: int, rows, den: int, consts, names: list[str]) -> str:
        if rows is None:
            return names[r] if lam == 1 else f"(- {names[r]})"
        return _int_lin(rows[r], den, names, ratio(consts[0][r], consts[1]))

    out = []
    for (j, rows, den, consts), (_, rows_next, den_next, consts_next) in zip(forms, forms[1:]):
        lhs = form(j, rows, den, consts, _names(f"pre{j}_", width if rows is None else len(rows[r])))
        rhs = form(j - 1, rows_next, den_next, consts_next, _names(f"z{j - 1}_", len(rows_next[r])))
        ob = Obligation(kind, f"{tag}, link {j} -> {j - 1}", f"lam.z{j} + c >= lam'.z{j - 1} + c' for every z{j - 1} in its "
                        "verified bounds with relu between its verified lines")
        ob.asserts.append(facts(seen, trace, j - 1, ob))
        neurons, (slopes, sden) = trace["alpha"].get(j - 1, ((), ((), 1)))
        ob.asserts += [f"(>= h{j - 1}_{m} (* {ratio(s, sden)} z{j - 1}_{m}))" for m, s in zip(neurons, slopes[r] if neurons else ())]
        ob.asserts.append(f"(< {lhs} {rhs})")
        out.append(ob)
    j, rows, den, consts = forms[-1]
    lhs = form(1, rows, den, consts, _names("pre1_", width if rows is None else len(rows[r])))
    x = _names("x", len(seen.box[0]))
    out.append(Obligation(kind, f"{tag}, over the box", "lam.z1 + c reaches the claim for every x in the box", [],
                          _box(x, *seen.box) + [f"(< {lhs} {num(claim)})"]))
    return out


def linear_obligations(seen: _Seen, facts: _Facts) -> list[Obligation]:
    """Each claimed bound of a linear step as the chain of the checker's own back-substitution."""
    k = seen.step["layer"]
    (lower, upper), out = _claims(seen.step), []
    neurons = seen.step.get("neurons", range(len(lower)))  # row i bounds neuron neurons[i] (its claimed sides only)
    sides = [(side, [(n, c) for n, c in zip(neurons, claims) if c is not None], sign)
             for side, claims, sign in (("lower", lower, 1), ("upper", upper, -1))]
    sides = [s for s in sides if s[1]]  # a side with no claimed row is not back-substituted
    if len(seen.traces) != len(sides):
        raise Refused(seen.where, f"expected the checker's back-substitutions (lower, upper), recorded {len(seen.traces)}")
    for (side, claims, sign), trace in zip(sides, seen.traces):
        scale = trace.get("scale", 1)  # multipliers on layer k's own splits: the recorded rows are scale * (+-e_r) + theirs
        for i, (neuron, claim) in enumerate(claims):
            tag = f"{seen.where} {side} bound of z{k}_{neuron}"
            out += chain_obligations(seen, trace, i, sign * claim * scale, tag, facts)
            if "scale" in trace:
                out.append(own_split_obligation(seen, trace["lam"][i], k, neuron, sign * scale, tag))
    return out


def own_split_obligation(seen: _Seen, row: dict, k: int, n: int, scale: int, tag: str) -> Obligation:
    """A row with multipliers on layer k's own splits, row = scale * e_n + sum_i c_i e_i: no z_k with the region's split
    signs (and in its verified bounds, where it has them) puts row . z_k above scale * z_kn, so the chain's bound of
    row . z_k bounds it. (A coefficient on a neuron that is not split leaves the query satisfiable: not confirmed.)"""
    ob = Obligation("linear", f"{tag}, own splits", f"the multipliers on layer {k}'s own splits add a term <= 0 on the region")
    cols = sorted(set(row) | {n})
    ob.names = [f"q{c}" for c in cols]
    if k in seen.bounds:
        lo, up = seen.bounds[k]
        ob.asserts = [f"(and (<= {num(lo[c])} q{c}) (<= q{c} {num(up[c])}))" for c in cols]
    ob.asserts += [f"({'<=' if seen.assume[(k, c)] == 'inactive' else '>='} q{c} 0)" for c in cols if (k, c) in seen.assume]
    ob.asserts.append(f"(> {lin([(Fraction(int(row.get(c, 0))), f'q{c}') for c in cols])} {lin([(Fraction(scale), f'q{n}')])})")
    return ob


def alpha_obligation(seen: _Seen) -> Obligation | None:
    """No alpha line of the step (as the checker read it) lies above relu on its verified interval."""
    slopes: dict = {}
    for trace in seen.traces:
        for j, (neurons, (rows, den)) in trace["alpha"].items():
            for t, n in enumerate(neurons):
                slopes.setdefault((j, n), set()).update(Fraction(int(row[t]), den) for row in rows)
    if not slopes:
        return None
    ob = Obligation("alpha", seen.where, "no alpha line of this step lies above relu on its verified interval")
    cases = []
    for (j, n), values in sorted(slopes.items()):
        lo, up = seen.bounds[j]
        z = f"a{j}_{n}"
        ob.names.append(z)
        above = _n_ary("or", [f"(> {lin([(s, z)])} {relu(z)})" for s in sorted(values)])
        cases.append(f"(and (<= {num(lo[n])} {z}) (<= {z} {num(up[n])}) {above})")
    ob.asserts.append(_n_ary("or", cases))
    return ob


def relu_obligation(seen: _Seen) -> Obligation:
    """No z in a neuron's verified [l, u] lies above the lower line or below the upper line of relu
    (one disjunct per piece of relu; the checker decides it exactly at l, 0 and u)."""
    k = seen.step["layer"]
    lo, up = seen.bounds[k]
    lines = [fracs(v) for v in seen.relax[k]]
    ob = Obligation("relu_relaxation", seen.where, "the relaxation lines hold on every verified interval")
    cases = []
    for i, (l, u, a, b, c, d) in enumerate(zip(lo, up, *lines)):
        if l <= u:
            z = f"r{i}"
            ob.names.append(z)
            below, above, inside = lin([(a, z)], b), lin([(c, z)], d), f"(<= {num(l)} {z}) (<= {z} {num(u)})"
            cases += [f"(and {inside} (<= {z} 0) (or (> {below} 0) (< {above} 0)))",
                      f"(and {inside} (>= {z} 0) (or (> {below} {z}) (< {above} {z})))"]
    ob.asserts.append(_n_ary("or", cases))
    return ob


def difference_obligations(seen: _Seen, facts: _Facts) -> list[Obligation]:
    """A difference step: each claimed delta bound (a chain of the checker's back-substitution of
    e_a - e_b, or the verified bounds of z_a and z_b), then one obligation for all its lines."""
    k = seen.step["layer"]
    pairs, vecs = seen.diff[k]
    first = len(pairs) - len(seen.step["pairs"])  # `inherit`: the kept pairs first (obligations of the step that verified them)
    pairs, ((sl, sld), (tl, tld), (su, sud), (tu, tud), *planes) = pairs[first:], [(v[first:], d) for v, d in vecs]
    lower, upper = _claims(seen.step)
    if pairs and len(seen.traces) != 2:
        raise Refused(seen.where, f"expected the checker's two back-substitutions (lower, upper), recorded {len(seen.traces)}")
    lo, up = seen.bounds[k]
    out = []
    for p, (a, b) in enumerate(pairs):
        delta = f"(- z{k}_{a} z{k}_{b})"
        for side, t, claim, rel, bound in (("lower", 0, lower[p], "<", lower[p]), ("upper", 1, -upper[p], ">", upper[p])):
            tag = f"{seen.where} {side} bound of z{k}_{a} - z{k}_{b}"
            if claim <= seen.traces[t]["lower"][p]:
                out += chain_obligations(seen, seen.traces[t], p, claim, tag, facts)
            else:  # the checker took it from the verified bounds of z_a and z_b
                out.append(Obligation("difference", f"{tag}, from the verified bounds", "no z_a, z_b in their verified bounds "
                                      "reach past the claimed bound of z_a - z_b", [],
                                      _box([f"z{k}_{a}", f"z{k}_{b}"], [lo[a], lo[b]], [up[a], up[b]]) + [f"({rel} {delta} {num(bound)})"]))
    ob = Obligation("difference", seen.where, "no z_a, z_b in their verified bounds with z_a - z_b in its claimed bounds puts "
                    "relu(z_a) - relu(z_b) below the lower or above the upper line")
    cases = []
    for p, (a, b) in enumerate(pairs):
        za, zb = f"s{p}", f"t{p}"
        ob.names += [za, zb]
        delta, gap = f"(- {za} {zb})", f"(- {relu(za)} {relu(zb)})"
        rb = [f" (* {ratio(v[p], d)} {zb})" for v, d in planes] if planes else ["", ""]  # planes: the z_b terms
        below = f"(+ (* {ratio(sl[p], sld)} {delta}){rb[0]} {ratio(tl[p], tld)})"
        above = f"(+ (* {ratio(su[p], sud)} {delta}){rb[1]} {ratio(tu[p], tud)})"
        cases.append(f"(and (<= {num(lo[a])} {za}) (<= {za} {num(up[a])}) (<= {num(lo[b])} {zb}) (<= {zb} {num(up[b])}) "
                     f"(<= {num(lower[p])} {delta}) (<= {delta} {num(upper[p])}) (or (< {gap} {below}) (> {gap} {above})))")
    ob.asserts.append(_n_ary("or", cases))
    return out + ([ob] if pairs else [])


def empty_obligation(seen: _Seen) -> Obligation:
    """The region is empty: a layer's verified bounds (or a pair's claimed delta bounds) cross."""
    crossed = [(k, i) for k, (lo, up) in sorted(seen.after.items()) for i, (l, u) in enumerate(zip(lo, up)) if l > u]
    if crossed:
        k, i = crossed[0]
        l, u = seen.after[k][0][i], seen.after[k][1][i]
        what = f"layer {k} neuron {i} has verified bounds"
    else:  # a difference step with a pair whose claimed bounds cross
        lower, upper = _claims(seen.step)
        p = next(p for p, (l, u) in enumerate(zip(lower, upper)) if l > u)
        l, u = lower[p], upper[p]
        what = f"layer {seen.step['layer']} pair {p} has verified delta bounds"
    return Obligation("empty", seen.where, f"the region is empty: {what} {rational_str(l)} > {rational_str(u)}",
                      ["e"], [f"(<= {num(l)} e)", f"(<= e {num(u)})"])


def _from_z3(where: str, negation) -> Obligation:
    names: set[str] = set()
    body = z3_smt(negation, names)
    ob = Obligation("goal", where[: -len(" (goal)")], "no output difference within the verified output bounds exceeds the bound")
    ob.names, ob.asserts = sorted(names, key=lambda s: (s.rstrip("0123456789"), int(re.sub(r"\D", "", s) or 0))), [body]
    return ob


def obligations(records: list, deltas: dict) -> list[Obligation]:
    """Every obligation, in the order the checker established its facts."""
    facts, out = _Facts(deltas), []
    for r in records:
        if isinstance(r, _Seen):
            if r.kind == "interval":
                out += interval_obligations(r, facts)
            elif r.kind == "relu_relaxation":
                out.append(relu_obligation(r))
            elif r.kind == "linear":
                extra = alpha_obligation(r)
                out += ([extra] if extra else []) + linear_obligations(r, facts)
            elif r.kind == "difference":
                out += difference_obligations(r, facts)
            else:
                raise Refused(r.where, f"no SMT-LIB2 rule for the step kind {r.kind!r}")
            if r.emptied:
                out.append(empty_obligation(r))
        elif r[2]:  # a z3 query the checker answered unsat (a split node's unproved goal is no obligation)
            out.append(_from_z3(r[0], r[1]))
    return out


def _write_atomic(path: Path, chunks) -> None:
    with atomic_open(path) as fh:
        for chunk in chunks:
            fh.write(chunk)


def step_kinds(cert: Path) -> set[str]:
    """The step kinds a certificate names (in `steps`, or anywhere in its `tree`); for messages only."""
    data, kinds = json.loads(Path(cert).read_text()), set()
    todo = [data.get("tree") or {"steps": data.get("steps") or []}]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            kinds.update(str(s.get("kind")) for s in node.get("steps") or [] if isinstance(s, dict))
            todo += node.get("children") or []
    return kinds


def default_out(cert: Path) -> Path:
    name = cert.name[: -len(".cert.json")] if cert.name.endswith(".cert.json") else cert.name
    return cert.with_name(name + ".smt2")


def export(spec: str | Path, cert: str | Path, out: str | Path | None = None):
    """(check result, out path, obligations). Nothing is written for a rejected certificate."""
    cert = Path(cert)
    if not cert.is_file():
        raise BadInput(cert, "", "certificate file not found", "give the path of a .cert.json file")
    from .checker import graph as checker_graph

    checker_graph.RECORD = graph_records = []
    try:
        with recording() as (records, deltas):
            result = checker.check_certificate(spec, cert)
    finally:
        checker_graph.RECORD = None
    if result.verdict is checker.Verdict.REJECTED:
        return result, None, []
    joints = {id(r.joint): r.joint for r in records if isinstance(r, _Seen)}
    if graph_records and not joints:  # a graph model (checker/graph.py): its own rows (smt_graph.py)
        from .smt_graph import HEADER as GRAPH_HEADER, GraphExport

        exporter = GraphExport(graph_records, result.bound)
        obs = exporter.obligations()
        header, logic_and_defs = GRAPH_HEADER, "\n".join(exporter.head()) + "\n"
    elif not joints:
        raise Refused(cert, f"the checker accepted it without recording any step it verified (kinds {sorted(step_kinds(cert))})")
    elif len(joints) != 1:
        raise Refused(cert, f"the checker's steps ran on {len(joints)} networks, not one")
    else:
        obs = obligations(records, deltas)
        header = HEADER
        logic_and_defs = "(set-info :smt-lib-version 2.6)\n(set-logic QF_LRA)\n\n" + definitions(next(iter(joints.values())))
    out = Path(out) if out is not None else default_out(cert)
    counts = {k: sum(o.kind == k for o in obs) for k in KINDS}
    head = [
        f"; certify {__version__} export-smt: the obligations of {cert.name} for {Path(spec).name}, in SMT-LIB2.",
        f"; certificate sha256 {hashlib.sha256(cert.read_bytes()).hexdigest()}",
        f"; the trusted checker accepted it: {result.verdict.value}, certified bound {float(result.bound):.6g}"
        f" (tolerance {rational_str(result.tolerance)}), {result.steps} steps.",
        f"; {len(obs)} obligations, one (push 1) ... (check-sat) (pop 1) block each; every one must be unsat.",
        "; by kind: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v),
        ";", header.rstrip("\n"), "", logic_and_defs,
    ]
    try:
        _write_atomic(out, ["\n".join(head) + "\n", *(o.smt(i, len(obs)) + "\n" for i, o in enumerate(obs, 1)), "(exit)\n"])
    except OSError as exc:
        raise BadInput(out, "", f"cannot write the SMT-LIB2 file ({exc.strerror or exc})", "give a writable path with -o") from None
    return result, out, obs


CVC5_CHUNK = 25  # blocks per cvc5 solver (see run_cvc5)


def _split(text: str) -> tuple[list[str], dict[str, tuple[int, str]], list[tuple[str, list[str], list[str]]]]:
    """An exported file as (its set-info/set-logic lines, {name: (index of the next block, its global
    declare-const or define-fun line)}, [(obligation title, the global lines just before its
    (push 1), the commands between its (push 1) and (pop 1))])."""
    head, glob, blocks, title, before, body = [], {}, [], "?", [], None
    for line in text.splitlines():
        if line.startswith(";") or not line.strip():
            title = line[2:] if re.match(r"; obligation \d+ of \d+ ", line) else title
        elif body is not None:
            if line == "(pop 1)":
                blocks.append((title, before, body))
                before, body = [], None
            else:
                body.append(line)
        elif line == "(push 1)":
            body = []
        elif line.startswith(("(declare-const ", "(define-fun ")):
            glob[line.split()[1]] = (len(blocks), line)
            before.append(line)
        elif line != "(exit)":
            head.append(line)
    return head, glob, blocks


def run_cvc5(path: str | Path, timeout_ms: int = 60_000) -> list[tuple[str, str, float]]:
    """(obligation comment, cvc5's answer, seconds) for every check-sat of an exported file.

    cvc5 from PyPI ships no binary, only its Python API; its SMT-LIB2 parser reads the commands.
    The blocks run in order, CVC5_CHUNK to a fresh solver that first reads the global declarations
    and definitions they name from earlier in the file: the same commands, in the same order, as
    reading the whole file in one incremental solver, but cvc5's incremental arithmetic keeps every
    linear term it has seen across (pop 1), and in one solver a file with a thousand links slows
    down with each block (verydiff_jet_tagger: past 7 minutes for 800 of 903 blocks; 66 s this way)."""
    import cvc5

    text = Path(path).read_text()
    head, glob, blocks = _split(text)
    titles = [line[2:] for line in text.splitlines() if re.match(r"; obligation \d+ of \d+ ", line)]
    answers = []
    for first in range(0, len(blocks), CVC5_CHUNK):
        chunk = blocks[first:first + CVC5_CHUNK]
        names, todo = set(), set(_SYMBOL.findall(" ".join(" ".join(before + body) for _, before, body in chunk)))
        while todo:  # the earlier global names the chunk uses, and those their definitions use
            name = todo.pop()
            if name in glob and name not in names and glob[name][0] < first:
                names.add(name)
                todo.update(_SYMBOL.findall(glob[name][1].split(None, 2)[2]))
        lines = head + [line for name, (_, line) in glob.items() if name in names]
        for _, before, body in chunk:
            lines += [*before, "(push 1)", *body, "(pop 1)"]
        tm = cvc5.TermManager()
        solver, symbols = cvc5.Solver(tm), cvc5.SymbolManager(tm)
        solver.setOption("incremental", "true")
        solver.setOption("tlimit-per", str(timeout_ms))
        parser = cvc5.InputParser(solver, symbols)
        parser.setStringInput(cvc5.InputLanguage.SMT_LIB_2_6, "\n".join(lines), str(path))
        while not (command := parser.nextCommand()).isNull():
            start = time.perf_counter()
            said = command.invoke(solver, symbols).strip()
            if command.getCommandName() == "check-sat":
                answers.append((titles[len(answers)] if len(answers) < len(titles) else "?", said, time.perf_counter() - start))
    if len(answers) != len(titles) or len(blocks) != len(titles):
        raise ValueError(f"{path}: {len(answers)} check-sat commands for {len(titles)} obligations")
    return answers


def confirm(path: Path) -> int:
    try:
        import cvc5  # noqa: F401
    except ImportError:
        raise BadInput("--cvc5", "", "cvc5 is not installed", "install it with `.venv/bin/pip install cvc5`") from None
    start = time.perf_counter()
    answers = run_cvc5(path)
    bad = [(t, a) for t, a, _ in answers if a != "unsat"]
    seconds = time.perf_counter() - start
    if bad:
        for title, answer in bad[:10]:
            print(f"  cvc5 {answer:7} {title}")
        print(f"NOT CONFIRMED  cvc5 answered unsat to {len(answers) - len(bad)} of {len(answers)} obligations ({seconds:.2f} s)")
        return EXIT_NOT_CONFIRMED
    print(f"CONFIRMED  cvc5 answered unsat to all {len(answers)} obligations ({seconds:.2f} s)")
    return EXIT_OK


def cmd_export_smt(args) -> int:
    result, out, obs = export(args.spec, args.certificate, args.out)
    if out is None:
        print(f"REJECTED  {args.certificate}: {result.reason} (a rejected certificate is not exported)")
        return EXIT_NOT_CONFIRMED
    kinds = sorted({o.kind for o in obs})
    print(f"wrote {out}: {len(obs)} obligations ({', '.join(f'{sum(o.kind == k for o in obs)} {k}' for k in kinds)}), "
          "each expected unsat; the file header says what is and is not exported")
    return confirm(out) if args.cvc5 else EXIT_OK


def register(subparsers) -> None:
    e = subparsers.add_parser("export-smt", help="export a certificate's obligations as SMT-LIB2 (QF_LRA) for another solver")
    e.add_argument("spec")
    e.add_argument("certificate")
    e.add_argument("-o", "--out", help="output path (default: the certificate's path with .smt2)")
    e.add_argument("--cvc5", action="store_true", help="then check every obligation with cvc5 (pip install cvc5); exit 3 unless all are unsat")
    e.set_defaults(func=cmd_export_smt)


if __name__ == "__main__":  # python -m certify.smt FILE.smt2: check an exported file with cvc5
    sys.exit(confirm(Path(sys.argv[1])) if len(sys.argv) == 2 else EXIT_BAD_INPUT)
