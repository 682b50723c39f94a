"""Graph models and their operator table, exact half (TRUSTED).

A graph model is a list of typed nodes over named vector values, in topological order, from the
input `x` to an output; a dense/ReLU MLP is the special case of linear and relu nodes. Each op is one
row of `OPS`, with its exact rules:

    shape     the output width from the input widths (bad input when they do not fit)
    evaluate  the value at a point, as arb balls (transcendental ops have no exact value)
    interval  exact bounds of the output from verified bounds of the inputs
    relax     the check of a certificate's relaxation of the op (lines, planes) on verified bounds
    back      one step of back-substitution: coefficients on the output -> on the inputs + constant

Linear ops (linear, add, sub, affine) need no relaxation; relu is checked exactly at the interval's
ends and 0, jumprelu (z where z > t, else 0: a JumpReLU SAE's features) at the ends of its two
pieces; free (a value chosen adversarially in a fixed box: `ablate` with `fill: free`) needs no
relaxation, its back-substitution takes the box's worst corner; the curves (gelu, exp, erf, tanh, sigmoid, square, rsqrt, reciprocal, sqrt) by
`curves.line_below/above` (arb, a proved sign only); mul by McCormick-type planes checked at the four
corners (x*y is bilinear: exact and complete). Adding an op is one row here and one in the engine's
table (certify/bounds/graph.py); tests/test_graph.py fails on a row missing from either.

Certificate steps over a graph (`check_graph_steps`): `bounds` (a node's claimed bounds, re-derived
by `interval` or by back-substitution `linear` through the verified relaxations of its ancestors)
and `relax` (a nonlinear node's lines or planes, checked on its inputs' verified bounds).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Callable

from flint import arb, ctx, fmpq, fmpz, fmpz_mat

from . import curves
from .errors import BadInput, Rejected, need, require
from .model import read_arrays, sha256_file
from .numbers import parse_ratio, parse_rational, show
from .workers import bare_main

CURVE_OPS = ("gelu", "exp", "erf", "tanh", "sigmoid", "square", "rsqrt", "reciprocal", "sqrt")
FIX_GRAPH = "write it with certify.model.graph.save_graph (see models/train_resmlp.py)"


@dataclass(frozen=True)
class Node:
    name: str
    op: str
    inputs: tuple[str, ...]
    weight: tuple | None = None  # linear: rows (out x in) of Fractions
    bias: tuple | None = None  # linear: out Fractions (zero when absent)
    scale: tuple | None = None  # affine: y = scale * x + shift, elementwise
    shift: tuple | None = None
    threshold: tuple | None = None  # jumprelu: y = z where z > threshold, else 0, elementwise
    lower: tuple | None = None  # free: y_j is any value in [lower_j, upper_j] (its input fixes only the width)
    upper: tuple | None = None
    groups: tuple | None = None  # softmax: a group id (int) per element; y is the softmax of each group


@dataclass(frozen=True)
class Graph:
    """Nodes in topological order over the input `x` (width `in_dim`); `output` names the result."""

    in_dim: int
    nodes: tuple[Node, ...]
    output: str
    sha256: str = ""
    path: str = ""
    dims: dict = field(default_factory=dict, compare=False)
    notes: tuple = ()

    input_scale = input_shift = None  # no input normalisation: a graph has its own affine nodes

    @property
    def out_dim(self) -> int:
        return self.dims[self.output]

    @property
    def widths(self) -> tuple[int, ...]:
        """Input and output widths (a graph has no numbered hidden layers)."""
        return (self.in_dim, self.out_dim)

    @property
    def by_name(self) -> dict:
        return {n.name: n for n in self.nodes}


def q(v) -> fmpq:
    v = v if type(v) is Fraction else Fraction(v)
    return fmpq(v.numerator, v.denominator)


# Back-substitution runs on integers: coefficients are (N, den), an fmpz_mat of numerators over one
# positive denominator; vectors of exact numbers are (integers, den) with den the lcm (every float is
# dyadic, so denominators stay powers of two and small).


def ints(values) -> tuple[list[int], int]:
    pairs = [v.as_integer_ratio() if type(v) is Fraction else Fraction(v).as_integer_ratio() for v in values]
    den = math.lcm(*(d for _, d in pairs)) if pairs else 1
    return [p * (den // d) for p, d in pairs], den


ZERO = fmpz(0)  # an fmpz compares faster with an fmpz


def pick(n: fmpz_mat, e: list, lo: list, up: list, shift: int = 0) -> fmpz_mat:
    """Entrywise n[r, c] * (lo[c] if n[r, c] >= 0 else up[c]); e: n.entries(), made once by the caller. shift > 0: each
    entry's floor after division by 2^shift (fmpz >> rounds towards -infinity)."""
    rows, cols = n.nrows(), n.ncols()
    pairs = list(zip(map(fmpz, up), map(fmpz, lo))) * rows  # (index False: up, True: lo; fmpz * fmpz is the fast product)
    if shift:
        return fmpz_mat(rows, cols, [(v * p[v >= ZERO]) >> shift for v, p in zip(e, pairs)])
    return fmpz_mat(rows, cols, [v * p[v >= ZERO] for v, p in zip(e, pairs)])


ROUND_BITS, MIN_SHIFT = 96, 64  # a coefficient matrix on a value with verified bounds keeps its top ROUND_BITS bits, once
# MIN_SHIFT or more can go (soundness.md, "Rounded coefficients"): exact products grow by a weight's bits at every node
# (~900 bits deep in a residual graph), and an fmpz_mat product's time with them
LOSS_BITS = 100  # and a row's bound moves less than 2^-LOSS_BITS by it: the remainder R z can move it by up to R times z's
# magnitude, which the coefficients' bits do not bound (transformer campaign seed 2043 at 96 bits alone: values near 1e20
# moved bounds by up to 6.5, past the engine's padding, and 17 of 300 valid certificates were REJECTED)


def _picked(lam, e: list, ls: list, us: list, sd: int, floor: tuple | None):
    """The coefficients pick(lam, ls, us) over den * sd, and None; or, given floor = (p, q, m, r) of the value z they
    multiply (`_floor`: p/q = sum_c max(0, -lower_c), m/r = sum_c max(|lower_c|, |upper_c|) of its verified bounds):
    those coefficients rounded down to their top ROUND_BITS bits, C = C' 2^s + R with 0 <= R < 2^s, and the constant
    that makes up for R: R/(den sd) . z >= -(2^s/(den sd)) p/q."""
    n, den = lam
    d = den * sd
    if floor is None or not e:
        return (pick(n, e, ls, us), d), None
    p, q, m, r = floor  # R z moves the bound by at most 2^s/d (sum |l| + sum |u|) <= 2^(s+1) m/(r d) < 2^(s + bits m - bits r - bits d + 3)
    cap = min((d & -d).bit_length() - 1,  # 2^s must divide d: rounded coefficients C' / (d / 2^s)
              r.bit_length() + d.bit_length() - m.bit_length() - 3 - LOSS_BITS)
    if cap < MIN_SHIFT:  # (before the pass over the entries for their size)
        return (pick(n, e, ls, us), d), None
    top = max(max(e), -min(e)).bit_length() + max(max(ls), -min(ls), max(us), -min(us)).bit_length()  # >= any |C|'s bits
    s = min(top - ROUND_BITS, cap)
    if s < MIN_SHIFT:
        return (pick(n, e, ls, us), d), None
    d >>= s
    return (pick(n, e, ls, us, s), d), ([-p] * n.nrows(), q * d)


def lowest(n: fmpz_mat, lo: list, up: list, e: list | None = None) -> list[int]:
    """Per row, sum_c n[r, c] * (lo[c] if n[r, c] >= 0 else up[c]) = n @ up + sum over n[r, c] > 0 of n[r, c] (lo[c] - up[c]):
    the least value of n @ z over the box lo <= z <= up, or the constant of signed lines. e: n.entries(), if made."""
    if not any(lo) and not any(up):
        return [0] * n.nrows()
    out = (n * fmpz_mat(len(up), 1, up)).entries()  # (integers stay fmpz: a conversion to int costs more than the sum)
    if lo == up:
        return out
    e, cols, gap = n.entries() if e is None else e, n.ncols(), [fmpz(a - b) for a, b in zip(lo, up)]
    return [sum([v * g for v, g in zip(e[r * cols:(r + 1) * cols], gap) if v > ZERO], out[r]) for r in range(n.nrows())]


def consts(m: fmpz_mat, col: list[int], den: int) -> tuple[list[int], int]:
    """The rows of m @ col, divided by den: (integers, den)."""
    return ((m * fmpz_mat(len(col), 1, col)).entries() if any(col) else [0] * m.nrows()), den


def add_vec(a, b):
    """(ints, den) + (ints, den), exactly."""
    (va, da), (vb, db) = a, b
    d = math.lcm(da, db)
    fa, fb = d // da, d // db
    return [x * fa + y * fb for x, y in zip(va, vb)], d


def add_coef(a, b):
    (na, da), (nb, db) = a, b
    if da == db:
        return na + nb, da
    d = math.lcm(da, db)
    return na * (d // da) + nb * (d // db), d


def _signed(lam, lower: tuple, upper: tuple, e: list | None = None, floor: tuple | None = None):
    """Coefficients on z of lam . phi(z) >= lam . (s z + t): the lower line where lam >= 0, the upper where < 0.
    lower, upper: (slopes, intercepts) as ((ints, den), (ints, den)) over shared denominators. floor: z's, for rounding
    (`_picked`)."""
    (n, den), ((ls, sd), (li, idn)), ((us, _), (ui, _)) = lam, lower, upper
    if type(n) is Outer:  # (exact: two outer products, no pass over the entries)
        coef, const = _outer_signed(n, (ls, li), (us, ui))
        return (coef, den * sd), (const, den * idn)
    e = n.entries() if e is None else e
    coef, fix = _picked(lam, e, ls, us, sd, floor)
    const = (lowest(n, li, ui, e), den * idn)
    return coef, const if fix is None else add_vec(const, fix)


# --------------------------------------------------------------------------- the op rows


def _same(node, dims):
    return dims[0] if len(set(dims)) == 1 else None


def _lines(step, n, where):
    """A unary relaxation: four lists of n rationals (lower slope, lower intercept, upper slope, upper intercept)."""
    out = []
    for key in ("lower_slope", "lower_intercept", "upper_slope", "upper_intercept"):
        raw = step.get(key)
        vals = [parse_ratio(v) for v in raw] if isinstance(raw, list) and len(raw) == n else None
        require(vals is not None and None not in vals, where, f"{key} must be a list of {n} 'p/q' rationals")
        out.append([Fraction(*v) for v in vals])
    return out


def _check_lines(fn: Callable, step, boxes, where):
    """Each element's lines below and above phi on its verified input interval (fn(a, b, l, u, side), or
    fn.pair(a, b, c, d, l, u) for both at once); the verified lines are kept as fmpq vectors."""
    (lo, up), = boxes
    lines = _lines(step, len(lo), where)
    for i, (l, u, a, b, c, d) in enumerate(zip(lo, up, *lines)):
        side = fn[i] if isinstance(fn, list) else fn  # a list: one check per element (jumprelu: its threshold)
        if not (side.pair(a, b, c, d, l, u) if hasattr(side, "pair") else side(a, b, l, u, 1) and side(c, d, l, u, -1)):
            raise Rejected(where, f"element {i}: a line is not proved below/above the curve on [{show(l)}, {show(u)}]")
    ls, li, us, ui = lines
    (slopes, sd), (icpts, idn) = ints(ls + us), ints(li + ui)
    n = len(ls)
    return ((slopes[:n], sd), (icpts[:n], idn)), ((slopes[n:], sd), (icpts[n:], idn)), _floor(lo, up)


def _floor(lower, upper) -> tuple[int, int, int, int]:
    """sum_c max(0, -lower_c) as (p, q): a coefficient c on z with 0 <= c < 1 gives c z >= -this (z >= lower); and
    sum_c max(|lower_c|, |upper_c|) as (m, r), which bounds |c z|."""
    v = sum((-l for l in lower if l < 0), Fraction(0))
    w = sum((max(-l, u) for l, u in zip(lower, upper)), Fraction(0))
    return v.numerator, v.denominator, w.numerator, w.denominator


def _relu_side(a, b, l, u, side):
    """a*z + b below (side 1) / above (-1) relu on [l, u]: both linear on each side of 0, so the ends and 0 decide."""
    return l <= u and all(side * (max(z, 0) - a * z - b) >= 0 for z in ((l, u, Fraction(0)) if l < 0 < u else (l, u)))


def _jump_side(t):
    """a*z + b below (side 1) / above (-1) z*[z > t] on [l, u]: 0 on [l, t] and z on (t, u], each linear, so the ends
    of each piece decide (t on both: a line valid on (t, u] is valid on its closure)."""
    return lambda a, b, l, u, side: l <= u and all(side * (y - a * z - b) >= 0 for z, y in
                                                   [(z, 0) for z in (l, min(t, u)) if l <= t] + [(z, z) for z in (max(t, l), u) if u > t])


def _jump_interval(node, boxes):
    """z*[z > t] over [l, u]: [l, u] above the jump, {0} below it, {0} and (t, u] across it."""
    (lo, up), z = boxes[0], Fraction(0)
    return ([l if l > t else min(z, t) if u > t else z for l, u, t in zip(lo, up, node.threshold)],
            [u if l > t else max(z, u) if u > t else z for l, u, t in zip(lo, up, node.threshold)])


def _jump_ball(v: arb, t) -> arb:
    """A ball containing z*[z > t] for every z in the ball v."""
    t = arb(q(t))
    return v if v > t else arb(0) if v <= t else v.union(0)


def _free_back(node, lam, prepared):
    """c*y >= min over y in [lower, upper] of c*y; the input gets no coefficient."""
    (n, den), box = lam, prepared
    return [(fmpz_mat(n.nrows(), n.ncols()), den)], _box_lowest(lam, box)


def _box_lowest(lam, box) -> tuple[list[int], int]:
    """Per row of lam = (N, den), the least value of its N/den @ z over lo <= z <= up; box: ((ints, den), (ints, den))."""
    (n, den), ((lo, ld), (up, ud)) = lam, box
    d = math.lcm(ld, ud)
    return lowest(n, [v * (d // ld) for v in lo], [v * (d // ud) for v in up]), den * d


def _curve_side(fn):
    side = lambda a, b, l, u, side: curves.lines_hold(fn, [(a, b, side)], l, u)  # noqa: E731
    side.pair = lambda a, b, c, d, l, u: curves.lines_hold(fn, [(a, b, 1), (c, d, -1)], l, u)
    return side


def _unary_back(node, lam, relax):
    """c*phi(z) >= c*(slope*z + intercept) with the lower line for c >= 0, the upper for c < 0."""
    lower, upper, floor = relax
    coef, const = _signed(lam, lower, upper, floor=floor)
    return [coef], const


def _mul_planes(step, boxes, where, node=None):
    (lx, ux), (ly, uy) = boxes
    n, out = len(lx), []
    for key in ("lower", "upper"):
        raw = step.get(key)
        ok = isinstance(raw, list) and len(raw) == n and all(isinstance(p, list) and len(p) == 3 for p in raw)
        vals = [[parse_ratio(v) for v in p] for p in raw] if ok else None
        require(vals is not None and all(None not in p for p in vals), where, f"{key} must be {n} planes [c_x, c_y, c_0] of 'p/q' rationals")
        out.append([[Fraction(*v) for v in p] for p in vals])
    for i, (lo_p, up_p) in enumerate(zip(*out)):
        box = (lx[i], ux[i], ly[i], uy[i])
        if not (curves.plane_below(*lo_p, box) and curves.plane_above(*up_p, box)):
            raise Rejected(where, f"element {i}: a plane is not below/above x*y on the verified box {show(box)}")
    flat = [v for side in out for p in side for v in p]
    (cx, cd), (c0, zd) = ints(flat[0::3] + flat[1::3]), ints(flat[2::3])
    m = len(flat) // 3
    cxs, cys = cx[:m], cx[m:]
    half = m // 2  # lower planes first, then upper
    return [((cxs[:half], cd), (c0[:half], zd)), ((cys[:half], cd), (c0[:half], zd)),
            ((cxs[half:], cd), (c0[half:], zd)), ((cys[half:], cd), (c0[half:], zd)), _floor(lx, ux), _floor(ly, uy)]


def _mul_back(node, lam, planes):
    """c*x*y >= c*(c_x x + c_y y + c_0): the lower plane where c >= 0, the upper where c < 0."""
    (lx, ly, ux, uy, fx, fy), e = planes, lam[0].entries()
    cx, const = _signed(lam, lx, ux, e, fx)
    cy, fix = _picked(lam, e, ly[0][0], uy[0][0], ly[0][1], fy)
    return [cx, cy], const if fix is None else add_vec(const, fix)


def _mul_interval(node, boxes):
    (lx, ux), (ly, uy) = boxes
    corners = [[a * b for a in (l1, u1) for b in (l2, u2)] for l1, u1, l2, u2 in zip(lx, ux, ly, uy)]
    return [min(c) for c in corners], [max(c) for c in corners]


def _linear_prepare(node):
    """W (numerators over one denominator), |W| and b as integers, made once per check; and (c, w, 1) where
    W = c I + 1 w (each column equal off the diagonal: a LayerNorm's mean and centring), else None."""
    wn, wd = ints([v for row in node.weight for v in row])
    rows, cols = len(node.weight), len(node.weight[0])
    w = [wn[(j == 0) * cols + j] for j in range(cols)] if rows > 1 else None  # an entry off the diagonal, per column
    c = wn[0] - w[0] if w and rows == cols else 0
    thin = w and all(v == w[k % cols] + c * (k // cols == k % cols) for k, v in enumerate(wn))
    return ((fmpz_mat(rows, cols, wn), wd), fmpz_mat(rows, cols, [abs(v) for v in wn]), ints(node.bias),
            (c, fmpz_mat(1, cols, w), fmpz_mat(rows, 1, [1] * rows)) if thin else None)


def _linear_interval(node, boxes, prepared):
    """W (l + u)/2 + b -/+ |W| (u - l)/2, exactly, on integers."""
    ((w, wd), mag, (b, bd), _), ((lo, ld), (up, ud)) = prepared, map(ints, boxes[0])
    d = math.lcm(ld, ud)
    lo, up = [v * (d // ld) for v in lo], [v * (d // ud) for v in up]
    mid = (w * fmpz_mat([[x + y] for x, y in zip(lo, up)])).entries()
    rad = (mag * fmpz_mat([[y - x] for x, y in zip(lo, up)])).entries()
    den = 2 * d * wd
    return ([Fraction(c, bd) + Fraction(int(m - r), den) for c, m, r in zip(b, mid, rad)],
            [Fraction(c, bd) + Fraction(int(m + r), den) for c, m, r in zip(b, mid, rad)])


def _linear_back(node, lam, prepared):
    """N W, or c N + (N 1) w where W = c I + 1 w (two thin products for one square one)."""
    (n, den), ((wn, wd), _, (b, bd), thin) = lam, prepared
    if thin is None:
        prod = Outer(n, wn) if n.ncols() == 1 else n * wn
    else:  # (c = 0 unless W is square)
        c, w, ones = thin
        prod = (n * ones) * w + n * c if c else Outer(n * ones, w)
    return [(prod, den * wd)], consts(n, b, den * bd)


class Outer(fmpz_mat):
    """The matrix a w (a: a column, w: a row), with its factors: a sign split of it is two outer products (`_signed`).
    A LayerNorm's mean (every row of its weight equal, or one row after a width-1 value) gives one, before the square."""

    def __init__(self, a: fmpz_mat, w: fmpz_mat):
        super().__init__(a * w)
        self.a, self.w = a, w


def _outer_signed(n: Outer, lo: list, up: list) -> tuple[fmpz_mat, list]:
    """pick(a w, lo, up) and per row sum_c of it with lo, up as the intercepts: entry (r, c) is a_r w_c, of the sign of a_r
    times that of w_c, so it is a_r+ p_c + a_r- q_c with p_c = w_c (lo_c if w_c >= 0 else up_c), q_c = w_c (up_c if w_c >= 0
    else lo_c), a+ and a- the positive and negative parts of a. lo, up: (slopes, intercepts) pairs of lists."""
    av, wv = n.a.entries(), n.w.entries()
    pos = fmpz_mat(len(av), 1, [v if v > ZERO else ZERO for v in av])
    neg = n.a - pos

    def sel(x, y):
        return [v * (p if v >= ZERO else m) for v, p, m in zip(wv, x, y)]
    (ls, li), (us, ui) = lo, up
    coef = pos * fmpz_mat(1, len(wv), sel(ls, us)) + neg * fmpz_mat(1, len(wv), sel(us, ls))
    p, m = sum(sel(li, ui), ZERO), sum(sel(ui, li), ZERO)
    return coef, [a * p + b * m for a, b in zip(pos.entries(), neg.entries())]


def _affine_back(node, lam, prepared):
    (n, den), ((s, sd), (t, td)) = lam, prepared
    return [(n * s[0] if s.count(s[0]) == len(s) else pick(n, n.entries(), s, s), den * sd)], consts(n, t, den * td)


def _zero_const(lam):
    return [0] * lam[0].nrows(), 1


@dataclass(frozen=True)
class Op:
    arity: int
    shape: Callable  # (node, input widths) -> width, or None when they do not fit
    evaluate: Callable  # (node, input ball vectors) -> ball vector
    interval: Callable  # (node, input boxes, prepared) -> (lower, upper) exact
    back: Callable  # (node, (fmpz_mat, den) coefficients, verified relaxation or prepared) -> ([per input (fmpz_mat, den)], (ints, den))
    relax: Callable | None = None  # (step, input boxes, where, node) -> verified relaxation; None: a linear op
    prepare: Callable = lambda node: None  # the node's parameters in exact matrix form, made once per check
    relax_keys: tuple = ("lower_slope", "lower_intercept", "upper_slope", "upper_intercept")  # a relax step's own keys


def _unary(phi: Callable, interval: Callable, side: Callable) -> Op:
    return Op(1, lambda n, d: d[0], lambda n, xs: [phi(v) for v in xs[0]], interval, _unary_back,
              lambda step, boxes, where, node: _check_lines(side, step, boxes, where))


def _curve(fn: str) -> Op:
    c = curves._curve(fn)
    return _unary(c.f, lambda n, boxes, p: tuple(map(list, zip(*(curves.interval_image(fn, l, u) for l, u in zip(*boxes[0]))))),
                  _curve_side(fn))


OPS: dict[str, Op] = {
    "linear": Op(1, lambda n, d: len(n.weight) if all(len(r) == d[0] for r in n.weight) and len(n.bias) == len(n.weight) else None,
                 lambda n, xs: [sum((arb(q(w)) * v for w, v in zip(row, xs[0])), arb(q(b))) for row, b in zip(n.weight, n.bias)],
                 _linear_interval, _linear_back, prepare=_linear_prepare),
    "affine": Op(1, lambda n, d: d[0] if len(n.scale) == len(n.shift) == d[0] else None,
                 lambda n, xs: [arb(q(a)) * v + arb(q(b)) for a, b, v in zip(n.scale, n.shift, xs[0])],
                 lambda n, boxes, p: ([min(a * l, a * u) + b for a, b, l, u in zip(n.scale, n.shift, *boxes[0])],
                                      [max(a * l, a * u) + b for a, b, l, u in zip(n.scale, n.shift, *boxes[0])]), _affine_back,
                 prepare=lambda n: (ints(n.scale), ints(n.shift))),
    "add": Op(2, _same, lambda n, xs: [a + b for a, b in zip(*xs)],
              lambda n, boxes, p: ([a + b for a, b in zip(boxes[0][0], boxes[1][0])], [a + b for a, b in zip(boxes[0][1], boxes[1][1])]),
              lambda n, lam, r: ([lam, lam], _zero_const(lam))),
    "sub": Op(2, _same, lambda n, xs: [a - b for a, b in zip(*xs)],
              lambda n, boxes, p: ([a - b for a, b in zip(boxes[0][0], boxes[1][1])], [a - b for a, b in zip(boxes[0][1], boxes[1][0])]),
              lambda n, lam, r: ([lam, (-lam[0], lam[1])], _zero_const(lam))),
    "mul": Op(2, _same, lambda n, xs: [a * b for a, b in zip(*xs)], lambda n, boxes, p: _mul_interval(n, boxes), _mul_back, _mul_planes,
              relax_keys=("lower", "upper")),
    "relu": _unary(lambda v: (v + abs(v)) / 2,
                   lambda n, boxes, p: ([max(v, Fraction(0)) for v in boxes[0][0]], [max(v, Fraction(0)) for v in boxes[0][1]]), _relu_side),
    "jumprelu": Op(1, lambda n, d: d[0] if len(n.threshold) == d[0] else None, lambda n, xs: [_jump_ball(v, t) for v, t in zip(xs[0], n.threshold)],
                   lambda n, boxes, p: _jump_interval(n, boxes), _unary_back,
                   lambda step, boxes, where, node: _check_lines([_jump_side(t) for t in node.threshold], step, boxes, where)),
    "free": Op(1, lambda n, d: d[0] if len(n.lower) == len(n.upper) == d[0] and all(a <= b for a, b in zip(n.lower, n.upper)) else None,
               lambda n, xs: [arb(q(v)) for v in n.lower], lambda n, boxes, p: (list(n.lower), list(n.upper)), _free_back,
               prepare=lambda n: (ints(n.lower), ints(n.upper))),
    **{fn: _curve(fn) for fn in CURVE_OPS},
}


# softmax over groups (attention patterns): y_j = 1 / sum_{l in G(j)} exp(s_l - s_j), so sum_{j in G} y_j = 1.
# Back-substitution uses that sum: c.y = (c - mu).y + mu with mu per group the least coefficient (c - mu >= 0),
# then y_j >= rho_j D_j + tau_j (a line below 1/D on D_j's range), D_j = 1 + sum_{l != j} E_jl with lines below and
# above E_jl = exp(s_l - s_j) on [lo_l - up_j, up_l - lo_j], and the lines' coefficients on s_l - s_j moved onto s.


def _sm_prepare(node):
    """(members of each element's group, pairs (j, l) with l != j in j's group, pairs as an fmpz_mat onto s: +1 at l, -1 at j)."""
    groups = {}
    for j, g in enumerate(node.groups):
        groups.setdefault(g, []).append(j)
    pairs = [(j, l) for j, g in enumerate(node.groups) for l in groups[g] if l != j]
    return list(groups.values()), pairs, fmpz_mat(len(pairs), len(node.groups), [(c == l) - (c == j) for j, l in pairs for c in range(len(node.groups))])


def _sm_denominators(node, box, pairs):
    """Exact rational bounds of D_j = 1 + sum_l exp(s_l - s_j) over the box (outward ends of arb balls)."""
    lo, up = box
    with ctx.workprec(curves.PREC):
        d_lo, d_hi = [arb(1)] * len(lo), [arb(1)] * len(lo)
        for j, l in pairs:
            d_lo[j], d_hi[j] = d_lo[j] + arb(q(lo[l] - up[j])).exp(), d_hi[j] + arb(q(up[l] - lo[j])).exp()
        return [curves.exact(v.lower(), -1) for v in d_lo], [curves.exact(v.upper(), 1) for v in d_hi]


def _sm_interval(node, boxes, prepared):
    """y_j increases in s_j and decreases in every other s_l of its group: 1/D_j's bounds at the box's corners."""
    d_lo, d_hi = _sm_denominators(node, boxes[0], prepared[1])
    with ctx.workprec(curves.PREC):
        return [curves.exact((1 / arb(q(v))).lower(), -1) for v in d_hi], [curves.exact((1 / arb(q(v))).upper(), 1) for v in d_lo]


def _sm_relax(step, boxes, where, node):
    """The lines below 1/D_j on D_j's verified range and below/above exp on each pair's difference range."""
    members, pairs, to_s = _sm_prepare(node)
    (lo, up), m, vals = boxes[0], len(node.groups), {}
    for key in ("lower_slope", "lower_intercept", "exp_lower_slope", "exp_lower_intercept", "exp_upper_slope", "exp_upper_intercept"):
        raw, n = step.get(key), m if key.startswith("lower") else len(pairs)
        got = [parse_ratio(v) for v in raw] if isinstance(raw, list) and len(raw) == n else None
        require(got is not None and None not in got, where, f"{key} must be a list of {n} 'p/q' rationals")
        vals[key] = [Fraction(*v) for v in got]
    d_lo, d_hi = _sm_denominators(node, (lo, up), pairs)
    for j in range(m):
        if not curves.line_below("reciprocal", vals["lower_slope"][j], vals["lower_intercept"][j], d_lo[j], d_hi[j]):
            raise Rejected(where, f"element {j}: the line is not proved below 1/D on [{show(d_lo[j])}, {show(d_hi[j])}]")
    for p, (j, l) in enumerate(pairs):
        a, b = lo[l] - up[j], up[l] - lo[j]
        if not (curves.line_below("exp", vals["exp_lower_slope"][p], vals["exp_lower_intercept"][p], a, b)
                and curves.line_above("exp", vals["exp_upper_slope"][p], vals["exp_upper_intercept"][p], a, b)):
            raise Rejected(where, f"pair {p} ({j}, {l}): an exp line is not proved below/above exp on [{show(a)}, {show(b)}]")
    exp_lines = ints(vals["exp_lower_slope"] + vals["exp_upper_slope"]), ints(vals["exp_lower_intercept"] + vals["exp_upper_intercept"])
    k = len(pairs)
    (es, esd), (ei, eid) = exp_lines
    return (members, pairs, to_s, ints(vals["lower_slope"]), ints(vals["lower_intercept"]),
            ((es[:k], esd), (ei[:k], eid)), ((es[k:], esd), (ei[k:], eid)))


def _sm_back(node, lam, relax):
    """c.y >= (c - mu).(rho D + tau) + mu.1 (c - mu >= 0), then D through the exp lines onto s."""
    (n, den), (members, pairs, to_s, (rho, rd), (tau, td), e_lower, e_upper) = lam, relax
    rows, m, e = n.nrows(), n.ncols(), [int(v) for v in n.entries()]
    shifted, mus = [], []
    for r in range(rows):
        row = e[r * m:(r + 1) * m]
        mu = {j: min(row[i] for i in g) for g in members for j in g}
        shifted += [row[j] - mu[j] for j in range(m)]
        mus.append(sum(min(row[i] for i in g) for g in members))
    const = add_vec((mus, den), consts(fmpz_mat(rows, m, shifted), tau, den * td))
    kappa = [v * rho[j] for r in range(rows) for j, v in enumerate(shifted[r * m:(r + 1) * m])]  # on D_j, over den * rd
    const = add_vec(const, ([sum(kappa[r * m:(r + 1) * m]) for r in range(rows)], den * rd))  # D_j's constant 1
    on_e = fmpz_mat(rows, len(pairs), [kappa[r * m + j] for r in range(rows) for j, _ in pairs])
    (coef, cd), c2 = _signed((on_e, den * rd), e_lower, e_upper)
    return [(coef * to_s, cd)], add_vec(const, c2)


def _sm_ball(xs, node, j):
    return 1 / sum(((xs[l] - xs[j]).exp() for l, g in enumerate(node.groups) if g == node.groups[j] and l != j), arb(1))


OPS["softmax"] = Op(1, lambda n, d: d[0] if len(n.groups) == d[0] else None, lambda n, xs: [_sm_ball(xs[0], n, j) for j in range(len(xs[0]))],
                    _sm_interval, _sm_back, _sm_relax, prepare=_sm_prepare,
                    relax_keys=("lower_slope", "lower_intercept", "exp_lower_slope", "exp_lower_intercept", "exp_upper_slope", "exp_upper_intercept"))


# --------------------------------------------------------------------------- reading a graph model


def read_graph(path, sha256: str | None = None, key: str = "model.sha256", arrays: dict | None = None) -> Graph:
    """A certify graph model (.npz with `__graph__`: JSON {"input": n, "nodes": [...], "output": name}).
    Node: {"name", "op", "inputs": [...]} and, for linear, "weight" (out, in) and optional "bias" array
    names; for affine, "scale" and "shift". Every shape must chain; unknown ops are listed at once."""
    file = str(path)
    digest = sha256_file(path)
    need(sha256 is None or digest == sha256, file, key, f"sha256 mismatch: the file hashes to {digest}",
         "if this model is the one you mean to certify, write that hash in the spec")
    arrays = read_arrays(path) if arrays is None else arrays
    try:
        spec = json.loads(arrays["__graph__"][1])
        assert isinstance(spec, dict) and type(spec.get("input")) is int and spec["input"] > 0
        assert isinstance(spec.get("nodes"), list) and spec["nodes"] and isinstance(spec.get("output"), str)
    except (ValueError, AssertionError, TypeError, KeyError):
        raise BadInput(file, "__graph__", "not a JSON graph {input, nodes, output}", FIX_GRAPH) from None
    unknown = [f"#{i} {n.get('op')!r}" for i, n in enumerate(spec["nodes"]) if not isinstance(n, dict) or n.get("op") not in OPS]
    need(not unknown, file, "__graph__", "unsupported ops " + ", ".join(unknown), f"supported: {', '.join(OPS)}")
    dims, nodes = {"x": spec["input"]}, []
    for i, raw in enumerate(spec["nodes"]):
        where, op = f"__graph__.nodes[{i}]", OPS[raw["op"]]
        name, inputs = raw.get("name"), raw.get("inputs")
        need(isinstance(name, str) and name not in dims and isinstance(inputs, list) and len(inputs) == op.arity
             and all(isinstance(s, str) and s in dims for s in inputs), file, where,
             f"needs a new name and {op.arity} input(s) defined before it", FIX_GRAPH)

        def vec(key, shape):
            ref = raw.get(key)
            need(isinstance(ref, str) and ref in arrays and tuple(arrays[ref][0]) == shape, file, f"{where}.{key}",
                 f"names no array of shape {shape} ({ref!r})", FIX_GRAPH)
            flat = [Fraction(v) for v in arrays[ref][1]]
            return tuple(tuple(flat[r * shape[1]:(r + 1) * shape[1]]) for r in range(shape[0])) if len(shape) == 2 else tuple(flat)

        params = {}
        if raw["op"] == "linear":
            ref = raw.get("weight")
            need(isinstance(ref, str) and ref in arrays and len(arrays[ref][0]) == 2, file, f"{where}.weight", "names no matrix", FIX_GRAPH)
            out = arrays[ref][0][0]
            params = {"weight": vec("weight", (out, dims[inputs[0]])),
                      "bias": vec("bias", (out,)) if raw.get("bias") is not None else (Fraction(0),) * out}
        elif raw["op"] == "affine":
            params = {"scale": vec("scale", (dims[inputs[0]],)), "shift": vec("shift", (dims[inputs[0]],))}
        elif raw["op"] == "jumprelu":
            params = {"threshold": vec("threshold", (dims[inputs[0]],))}
        elif raw["op"] == "free":
            params = {"lower": vec("lower", (dims[inputs[0]],)), "upper": vec("upper", (dims[inputs[0]],))}
        elif raw["op"] == "softmax":
            ids = vec("groups", (dims[inputs[0]],))
            need(all(v.denominator == 1 for v in ids), file, f"{where}.groups", "group ids must be integers", FIX_GRAPH)
            params = {"groups": tuple(int(v) for v in ids)}
        node = Node(name, raw["op"], tuple(inputs), **params)
        width = op.shape(node, [dims[s] for s in inputs])
        need(width is not None, file, where, f"input widths {[dims[s] for s in inputs]} do not fit op {raw['op']!r}", FIX_GRAPH)
        dims[name] = width
        nodes.append(node)
    need(spec["output"] in dims and spec["output"] != "x", file, "__graph__.output", "names no node", FIX_GRAPH)
    return Graph(spec["input"], tuple(nodes), spec["output"], digest, file, dims)


def make_graph(in_dim: int, nodes, output: str, where: str = "graph") -> Graph:
    """A graph from nodes in topological order; their widths from the op rows (ValueError if they do not fit)."""
    dims = {"x": in_dim}
    for node in nodes:
        if node.name in dims or any(s not in dims for s in node.inputs):
            raise ValueError(f"{where}: node {node.name!r} is defined twice or reads an undefined value")
        width = OPS[node.op].shape(node, [dims[s] for s in node.inputs])
        if width is None:
            raise ValueError(f"{where}: node {node.name!r}: input widths do not fit op {node.op!r}")
        dims[node.name] = width
    return Graph(in_dim, tuple(nodes), output, dims=dims)


def joint_graph(f: Graph, g: Graph, outputs: tuple[int, ...] | None) -> Graph:
    """One graph computing d = f(x) - g(x) (the selected outputs): f's nodes, g's own nodes (g shares f's
    nodes by name where it keeps them), and `d`. Shared nodes are computed once, so bounding d relaxes
    what f and g have in common only once."""
    mine = {n.name: n for n in f.nodes}
    extra = [n for n in g.nodes if n.name not in mine]
    if any(mine[n.name] != n for n in g.nodes if n.name in mine):
        raise ValueError("g redefines a node of f under the same name")
    nodes = list(f.nodes) + extra + [Node("d.all", "sub", (f.output, g.output))]
    n = f.dims[f.output]
    rows = range(n) if outputs is None else outputs
    nodes.append(Node("d", "linear", ("d.all",), tuple(tuple(Fraction(int(r == c)) for c in range(n)) for r in rows),
                      (Fraction(0),) * len(rows)))
    return make_graph(f.in_dim, nodes, "d", "joint graph")


# --------------------------------------------------------------------------- checking a graph certificate


class TokenBox(tuple):
    """A token-sequence domain: x is `length` concatenated one-hot vectors of width `vocab`, position p's
    one-hot ranging over its allowed tokens. As a tuple it is the box (lower, upper) of x (0; 1 where
    allowed), which contains the domain, so interval rules stay sound; back-substitution concretises
    exactly instead: a linear function is minimised over a product of simplices at a vertex, i.e. per
    position at the allowed token with the least coefficient (`lowest`)."""

    def __new__(cls, vocab: int, allowed: tuple):
        up = [Fraction(int(t in set(ok))) for ok in allowed for t in range(vocab)]
        box = super().__new__(cls, ([Fraction(0)] * len(up), up))
        box.vocab, box.allowed = vocab, tuple(tuple(ok) for ok in allowed)
        return box

    def __reduce__(self):  # pickled (to a checking process) as what it is made from
        return TokenBox, (self.vocab, self.allowed)

    def lowest(self, n: fmpz_mat, den: int) -> tuple[list[int], int]:
        """Per row of the coefficients n/den on x, the minimum over the domain: sum_p min_{t allowed at p} n[p*V + t]."""
        e, cols = n.entries(), n.ncols()
        return [int(sum(min(e[r * cols + p * self.vocab + t] for t in ok) for p, ok in enumerate(self.allowed)))
                for r in range(n.nrows())], den

    def contains(self, x: list) -> bool:
        """x is a token sequence of the domain: every block one-hot on an allowed token."""
        blocks = [x[p * self.vocab:(p + 1) * self.vocab] for p in range(len(self.allowed))]
        return all(sorted(b) == [0] * (self.vocab - 1) + [1] and b.index(1) in ok for b, ok in zip(blocks, self.allowed))


def ancestors(graph: Graph, target: str) -> list[Node]:
    """The nodes `target` depends on (itself included), in topological order."""
    need_, out = {target}, []
    for node in reversed(graph.nodes):
        if node.name in need_:
            out.append(node)
            need_.update(node.inputs)
    return out[::-1]


def backsubstitute(graph: Graph, target: str, rows: fmpz_mat, box, relax: dict, where: str, prepared: dict) -> list[Fraction]:
    """Lower bounds of rows @ value(target) over the input box (rows: integers), by back-substitution
    through the verified relaxations of target's nonlinear ancestors (`relax`: node name -> verified
    relaxation; `prepared`: node name -> its parameters in exact form)."""
    coef, const, at = {target: (rows, 1)}, ([0] * rows.nrows(), 1), list(range(rows.nrows()))  # at: each row's row now
    for node in reversed(ancestors(graph, target)):
        lam = coef.pop(node.name, None)
        if lam is None:
            continue
        if not coef:  # the only coefficients left: equal rows give equal terms from here on, so each is kept once
            lam, at = _merge_rows(lam, at)
        op = OPS[node.op]
        if op.relax is not None:
            require(node.name in relax, where, f"needs a verified relaxation of node {node.name!r} first")
        fold = prepared.get((FOLD, node.name))  # a linear node after an affine node only it reads: the two as one
        parts, c = (_linear_back(node, lam, fold[1]) if fold else
                    op.back(node, lam, relax[node.name] if op.relax is not None else prepared[node.name]))
        const = add_vec(const, ([c[0][i] for i in at], c[1]))
        for name, part in zip(fold[0] if fold else node.inputs, parts):
            coef[name] = add_coef(coef[name], part) if name in coef else part
    lam = coef.pop("x", None)
    if lam is not None:
        c = box.lowest(*lam) if isinstance(box, TokenBox) else _box_lowest(lam, (ints(box[0]), ints(box[1])))
        const = add_vec(const, ([c[0][i] for i in at], c[1]))
    return [Fraction(int(v), const[1]) for v in const[0]]


def _merge_rows(lam, at: list[int]):
    """lam = (N, den) with its equal rows kept once, and `at` mapped onto them. A fingerprint per row (N times a
    fixed column) finds rows that may be equal; their entries decide."""
    n = lam[0]
    if n.nrows() < 2:
        return lam, at
    key = (n * fmpz_mat(n.ncols(), 1, [(k * 2654435761) % 4294967311 + 1 for k in range(n.ncols())])).entries()
    if len(set(key)) == len(key):  # (equal rows have equal fingerprints)
        return lam, at
    first, to = {}, []
    for row in n.table():
        to.append(first.setdefault(tuple(row), len(first)))
    if len(first) == n.nrows():
        return lam, at
    return (fmpz_mat([list(row) for row in first]), lam[1]), [to[i] for i in at]


FOLD = "fold"  # prepared[(FOLD, name)]: a linear node composed with the affine node before it (`prepare`)


def prepare(graph: Graph) -> dict:
    """Node name -> its parameters in exact form, made once per check (or per tree); and for a linear node whose input is
    an affine node that no other node reads, (FOLD, name) -> (the affine node's input, W diag(s) and W t + b in exact form):
    back-substitution goes through both at once (the same rationals, one matrix product and no column scaling)."""
    prepared = {n.name: OPS[n.op].prepare(n) for n in graph.nodes}
    readers: dict = {}
    for n in graph.nodes:
        for s in n.inputs:
            readers[s] = readers.get(s, 0) + 1
    by = graph.by_name
    for n in graph.nodes:
        a = by.get(n.inputs[0]) if n.op == "linear" else None
        if a is not None and a.op == "affine" and readers[a.name] == 1:
            ((wn, wd), _, (b, bd), _), ((sc, sd), (t, td)) = prepared[n.name], prepared[a.name]
            cols = wn.ncols()
            composed = fmpz_mat(wn.nrows(), cols, [v * c for v, c in zip(wn.entries(), list(map(fmpz, sc)) * wn.nrows())])
            prepared[(FOLD, n.name)] = (a.inputs, ((composed, wd * sd), None, add_vec(consts(wn, t, wd * td), (b, bd)), None))
    return prepared


def _free_box(graph: Graph, box, prepared: dict):
    """A leaf box of an input tree runs over x, then the free values in node order (`check_input_tree`): the graph with
    each free node's range taken from the box's tail (inside the node's own: a tree only narrows), its exact form, x's box."""
    n = graph.in_dim
    if isinstance(box, TokenBox) or len(box[0]) == n:
        return graph, box, prepared
    lo, up, nodes, prepared = list(box[0][n:]), list(box[1][n:]), [], dict(prepared)
    for node in graph.nodes:
        if node.op == "free":
            k = len(node.lower)
            node, lo, up = replace(node, lower=tuple(lo[:k]), upper=tuple(up[:k])), lo[k:], up[k:]
            prepared[node.name] = OPS["free"].prepare(node)
        nodes.append(node)
    require(not lo, "tree", "a box wider than x and the free values")  # (check_input_tree makes the boxes)
    return replace(graph, nodes=tuple(nodes)), (list(box[0][:n]), list(box[1][:n])), prepared


_EYES: dict = {}  # width n -> the 2n x n rows e_i, then -e_i
RECORD: list | None = None  # a list: each accepted step is appended with the verified bounds it started from (export-smt reads it)


def check_graph_steps(graph: Graph, box, steps, where: str, prepared: dict | None = None) -> dict:
    """Verify `bounds` and `relax` steps in order; returns node name -> verified (lower, upper).
    `prepared`: the nodes' parameters in exact form, if already made (one per tree, not per leaf)."""
    prepared = prepared or prepare(graph)
    graph, box, prepared = _free_box(graph, box, prepared)
    bounds, relax = {"x": (list(box[0]), list(box[1]))}, {}
    before = dict(bounds)
    require(isinstance(steps, list), where, "steps must be a list")
    for k, step in enumerate(steps):
        at = f"{where}[{k}]"
        require(isinstance(step, dict) and isinstance(step.get("node"), str) and step["node"] in graph.by_name, at,
                "a step names a node of the joint graph")
        node = graph.by_name[step["node"]]
        op, n = OPS[node.op], graph.dims[node.name]
        at = f"{at} ({step.get('kind')}, node {node.name})"
        missing = [s for s in node.inputs if s not in bounds]
        if step.get("kind") == "relax":
            require(set(step) == {"kind", "node", *op.relax_keys}, at, f"a relax step of {node.op} has keys kind, node, {', '.join(op.relax_keys)}")
            require(op.relax is not None and not missing, at, "a relaxation of a nonlinear node whose inputs have verified bounds")
            relax[node.name] = op.relax(step, [bounds[s] for s in node.inputs], at, node)
        elif step.get("kind") == "bounds":
            require(set(step) == {"kind", "node", "via", "lower", "upper"}, at, "bounds steps have keys kind, node, via, lower, upper")
            if step["via"] == "interval":
                require(not missing, at, f"interval needs verified bounds of {missing}")
                try:
                    lo, up = op.interval(node, [bounds[s] for s in node.inputs], prepared[node.name])
                except ValueError as exc:  # a curve's input bounds leave its domain (rsqrt of a non-positive value)
                    raise Rejected(at, str(exc)) from None
            elif step["via"] == "linear":
                if n not in _EYES:  # (made once per width: back-substitution makes new matrices, never writes this one)
                    _EYES[n] = fmpz_mat(2 * n, n, [(1 if r < n else -1) * int(r % n == c) for r in range(2 * n) for c in range(n)])
                both = backsubstitute(graph, node.name, _EYES[n], box, relax, at, prepared)  # e_i, then -e_i
                lo, up = both[:n], [-v for v in both[n:]]
            else:
                raise Rejected(at, "via must be interval or linear")
            claimed = []
            for key in ("lower", "upper"):
                vals = [parse_ratio(v) for v in step[key]] if isinstance(step[key], list) and len(step[key]) == n else None
                require(vals is not None and None not in vals, at, f"{key} must be {n} 'p/q' rationals")
                claimed.append([Fraction(*v) for v in vals])
            for i, (cl, dl, cu, du) in enumerate(zip(claimed[0], lo, claimed[1], up)):
                if not (cl <= dl and cu >= du):  # (the message only on failure: show() of every element costs)
                    raise Rejected(at, f"element {i}: claimed [{show(cl)}, {show(cu)}] is not implied by the derived [{show(dl)}, {show(du)}]")
            if node.name in bounds:
                olo, oup = bounds[node.name]
                claimed = [[max(a, b) for a, b in zip(claimed[0], olo)], [min(a, b) for a, b in zip(claimed[1], oup)]]
            bounds[node.name] = (claimed[0], claimed[1])
        else:
            raise Rejected(at, f"unknown step kind {step.get('kind')!r}")
        if RECORD is not None:
            after = dict(bounds)
            RECORD.append({"graph": graph, "box": box, "where": at, "step": step, "bounds": before, "after": after})
            before = after
    return bounds


def free_ranges(graph: Graph) -> tuple[list[Fraction], list[Fraction]]:
    """The ranges of the free nodes' elements, in node order: a witness may give their values after x."""
    frees = [n for n in graph.nodes if n.op == "free"]
    return [v for n in frees for v in n.lower], [v for n in frees for v in n.upper]


def evaluate(graph: Graph, x: list[Fraction], prec: int = 256) -> dict:
    """Every node's value at the point x as arb balls (exact ops give exact-width-zero balls). x is the
    input, then optionally a value for each free node's elements in node order (else each takes its lower end)."""
    with ctx.workprec(prec):
        values, rest = {"x": [arb(q(v)) for v in x[:graph.in_dim]]}, list(x[graph.in_dim:])
        for node in graph.nodes:
            if node.op == "free" and rest:
                values[node.name], rest = [arb(q(v)) for v in rest[:len(node.lower)]], rest[len(node.lower):]
            else:
                values[node.name] = OPS[node.op].evaluate(node, [values[s] for s in node.inputs])
        return values


def deviation_at(joint: Graph, x: list[Fraction]) -> Fraction:
    """A proven lower bound on max_i |d_i(x)|: the lower end of the arb enclosure (exact where the
    graph's ops are all rational)."""
    with ctx.workprec(256):
        return max(curves.exact(abs(v).lower(), -1) for v in evaluate(joint, x)["d"])


def goal_reached(bounds: dict, bound: Fraction, where: str) -> None:
    require("d" in bounds, where, "missing goal: no verified bounds of the output difference d")
    lo, up = bounds["d"]
    require(all(-l <= bound and u <= bound for l, u in zip(lo, up)), where, "the verified bounds of d do not prove |d_i| <= bound")


def check_token_tree(joint: Graph, box: TokenBox, tree, bound: Fraction, where: str, jobs: int | None = None) -> int:
    """Branch and bound over tokens: a node {"position": p, "parts": [[ids], ...], "children": [...]}
    partitions position p's allowed tokens among its children (each part non-empty, together exactly
    the parent's set); a leaf {"steps": [...]} proves |d_i| <= bound on its sub-domain. So the leaves
    cover the domain. The leaves are checked by `check_leaves`; returns the number of steps checked."""
    stack, leaves, ratios = [(tree, box, where)], [], []
    while stack:
        node, sub, at = stack.pop()
        require(isinstance(node, dict) and (set(node) in ({"steps"}, {"ratio"}) or set(node) == {"position", "parts", "children"}), at,
                "a token tree node is {steps}, {ratio} (checker/attention.py) or {position, parts, children}")
        if "steps" in node or "ratio" in node:
            (leaves if "steps" in node else ratios).append((node["steps"], sub, at) if "steps" in node else (node["ratio"], sub, f"{at}.ratio"))
            continue
        p, parts, kids = node["position"], node["parts"], node["children"]
        require(type(p) is int and 0 <= p < len(sub.allowed) and isinstance(parts, list) and isinstance(kids, list)
                and len(parts) == len(kids) >= 2 and all(isinstance(q, list) and q and all(type(t) is int for t in q) for q in parts), at,
                "a split names a position and as many non-empty lists of token ids as children")
        require(sorted(t for q in parts for t in q) == sorted(sub.allowed[p]), at, f"the parts do not partition position {p}'s tokens")
        for i, (part, kid) in enumerate(zip(parts, kids)):
            stack.append((kid, TokenBox(sub.vocab, sub.allowed[:p] + (tuple(sorted(part)),) + sub.allowed[p + 1:]), f"{at}.children[{i}]"))
    if ratios:  # softmax-ratio leaves (checker/attention.py)
        from .attention import check_ratio_leaves

        return check_ratio_leaves(joint, ratios, bound) + (check_leaves(joint, leaves, bound, jobs) if leaves else 0)
    return check_leaves(joint, leaves, bound, jobs)


def check_input_tree(joint: Graph, box, tree, bound: Fraction, where: str, jobs: int | None = None) -> int:
    """Branch and bound over the input box, with the dense tree's input splits (check.check_tree): a node
    {"split": "input", "dim": d, "at": c, "children": [a, b]}, c inside the parent's box, gives a the box
    with x_d <= c and b the box with x_d >= c, so the children cover their parent and the leaves the root
    box; a leaf {"steps": [...]} proves |d_i| <= bound on its own box (`check_leaves`). The root box is x's, then
    the free nodes' ranges (fill: free) in node order: a dimension past x splits a free value's range, and a leaf's
    free nodes range over its box only (`_free_box`), so the leaves cover x's box times the free ranges. Returns the
    number of steps checked."""
    from .check import MAX_TREE_NODES, SPLIT_KEYS

    require(not isinstance(box, TokenBox), where, "a token domain is split by a token_tree")
    flo, fup = free_ranges(joint)
    stack, leaves, seen = [(tree, (list(box[0]) + flo, list(box[1]) + fup), where)], [], 0
    while stack:
        node, (lo, up), at = stack.pop()
        seen += 1
        require(seen <= MAX_TREE_NODES and isinstance(node, dict) and set(node) in ({"steps"}, SPLIT_KEYS["input"]), at,
                "a tree node is {steps} or an input split {split, dim, at, children} (at most 200,000 nodes)")
        if "steps" in node:
            leaves.append((node["steps"], (lo, up), at))
            continue
        d, c, kids = node["dim"], parse_rational(node["at"]), node["children"]
        require(node["split"] == "input" and type(d) is int and 0 <= d < len(lo) and c is not None and lo[d] <= c <= up[d]
                and isinstance(kids, list) and len(kids) == 2, at, "an input split needs a dimension, a point inside the parent box and two children")
        stack += [(kids[0], (lo, up[:d] + [c] + up[d + 1:]), f"{at}.0"), (kids[1], (lo[:d] + [c] + lo[d + 1:], up), f"{at}.1")]
    return check_leaves(joint, leaves, bound, jobs)


PARALLEL_MIN_LEAVES = 8  # fewer leaves are checked in this process (a worker takes about a second to start)
_LEAF_WORKER: dict = {}  # in a worker process: the joint graph and its nodes' exact parameters


def _start_leaf_worker(joint: Graph) -> None:
    _LEAF_WORKER.update(joint=joint, prepared=prepare(joint))


def _leaves_here(joint: Graph, leaves: list, bound: Fraction, prepared: dict) -> int:
    count = 0
    for steps, sub, at in leaves:
        require(isinstance(steps, list), at, "steps must be a list")
        goal_reached(check_graph_steps(joint, sub, steps, f"{at}.steps", prepared), bound, at)
        count += len(steps)
    return count


def _leaf_part(leaves: list, bound: Fraction) -> tuple:
    try:
        return ("ok", _leaves_here(_LEAF_WORKER["joint"], leaves, bound, _LEAF_WORKER["prepared"]))
    except Rejected as exc:  # (Rejected itself does not pickle)
        return ("rejected", exc.step, exc.reason)


def check_leaves(joint: Graph, leaves: list, bound: Fraction, jobs: int | None = None) -> int:
    """Each leaf (steps, its sub-domain, where) proves |d_i| <= bound from the root's facts alone (nothing flows
    between leaves), so with `jobs` > 1 and enough leaves they are checked in that many spawned processes. Every
    part must come back "ok": one rejection rejects, and a process that dies rejects. Returns the steps checked."""
    if (jobs or 1) <= 1 or len(leaves) < PARALLEL_MIN_LEAVES or RECORD is not None:
        return _leaves_here(joint, leaves, bound, prepare(joint))
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing import get_context

    parts, count = [leaves[i::4 * jobs] for i in range(4 * jobs)], 0  # round robin: sizes even out
    try:
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_start_leaf_worker, initargs=(joint,)) as pool:
            with bare_main():  # the workers start while map submits
                results = pool.map(_leaf_part, [p for p in parts if p], [bound] * len(parts))
            for result in results:
                if result[0] != "ok":
                    raise Rejected(*result[1:])
                count += result[1]
    except BrokenProcessPool as exc:
        raise Rejected("tree", f"a checking process died ({exc}): nothing it checked is believed") from None
    return count


def check_graph(spec, f: Graph, g: Graph, cert: dict, bound: Fraction, box, jobs: int | None = None) -> tuple[Fraction | None, int]:
    """A graph certificate: its steps verify bounds of the joint graph's output d = f - g with
    |d_i| <= bound on the box; the witness, if any, is replayed (a proven lower bound, <= bound)."""
    need(spec.property.semantics == "real", str(spec.path), "property.semantics",
         f"float32 semantics has no rounding-error analysis for graph ops yet ({', '.join(sorted({n.op for n in f.nodes}))})",
         "use semantics: real")
    require(sum(k in cert for k in ("steps", "tree", "token_tree")) == 1, "certificate",
            "a graph model's certificate has steps, a tree of input splits, or a token_tree over a token domain")
    try:
        joint = joint_graph(f, g, spec.property.outputs)
    except ValueError as exc:
        raise Rejected("joint graph", str(exc)) from None
    if "token_tree" in cert:
        require(isinstance(box, TokenBox), "token_tree", "a token split tree needs a token domain (input: tokens)")
        count = check_token_tree(joint, box, cert["token_tree"], bound, "token_tree", jobs)
    elif "tree" in cert:
        count = check_input_tree(joint, box, cert["tree"], bound, "tree", jobs)
    else:
        count = len(cert["steps"])
        goal_reached(check_graph_steps(joint, box, cert["steps"], "steps"), bound, "goal")
    witness = cert.get("witness")
    if witness is None:
        return None, count
    flo, fup = free_ranges(joint)  # fill: free: the witness may give the free values after the input
    require(isinstance(witness, dict) and set(witness) == {"x", "deviation"} and isinstance(witness["x"], list)
            and len(witness["x"]) in {f.in_dim, f.in_dim + len(flo)}, "witness",
            f"a witness is {{x: {f.in_dim} rationals (then {len(flo)} free values, optional), deviation}}")
    x = [parse_ratio(v) for v in witness["x"]]
    require(None not in x, "witness", "x holds a value that is not a 'p/q' rational")
    x = [Fraction(*v) for v in x]
    require(all(l <= v <= u for v, l, u in zip(x, list(box[0]) + flo, list(box[1]) + fup))
            and (not isinstance(box, TokenBox) or box.contains(x[:f.in_dim])), "witness",
            "the input lies outside the spec's domain (or a free value outside its range)")
    try:
        dev = deviation_at(joint, x)
    except ValueError as exc:  # a value beyond the checker's range at the witness
        raise Rejected("witness", str(exc)) from None
    claimed = parse_ratio(witness["deviation"])
    require(claimed is not None and Fraction(*claimed) == dev, "witness", f"claimed deviation differs from the replay's proven {show(dev)}")
    require(dev <= bound, "witness", "the replayed deviation exceeds the certified bound: the bound is unsound")
    return dev, count
