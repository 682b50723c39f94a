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
from collections.abc import Sequence
from typing import Callable

from flint import arb, ctx, fmpq, fmpz, fmpz_mat

from . import curves
from .errors import BadInput, Rejected, need, require
from .model import gc_paused, read_arrays, sha256_file
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
    return fmpq(*(v if type(v) is Fraction else Fraction(v)).as_integer_ratio())


class FloatRow(Sequence):
    """A row of a weight matrix read from a float array (`read_graph`): its finite floats, each given out as its exact
    Fraction (indexing, iteration: a Fraction per float read cost a check ~0.02 s). Equal to (and hashing as) the tuple of
    those Fractions. The exact forms a check needs are read from the floats directly: `ints` (float.as_integer_ratio),
    `arbs` (arb(float)): both exact."""

    __slots__ = ("floats",)

    def __init__(self, floats: tuple):
        self.floats = floats

    def __len__(self):
        return len(self.floats)

    def __getitem__(self, i):
        return tuple(map(Fraction, self.floats[i])) if isinstance(i, slice) else Fraction(self.floats[i])

    def __iter__(self):
        return map(Fraction, self.floats)

    def __eq__(self, other):
        return self.floats == other.floats if type(other) is FloatRow else isinstance(other, tuple) and tuple(self) == other

    def __hash__(self):
        return hash(self.floats)  # (a finite float hashes as its Fraction)

    def __reduce__(self):
        return FloatRow, (self.floats,)

    def __repr__(self):
        return f"FloatRow({self.floats!r})"


def arbs(row) -> list:
    """The entries of a weight row as exact arb balls."""
    return list(map(arb, row.floats)) if type(row) is FloatRow else [arb(q(w)) for w in row]


# Back-substitution runs on integers packed by rows: a coefficient matrix N / den on a value of width m (one row per bound
# being derived) is `Coef`: for each of its m columns one integer sum_r N[r, c] 2^(K r), row r in the K-bit field at K r.
# Sums, integer multiples and integer matrix products of such columns are the same operations on N (exact for any
# integers), each one GMP operation per column instead of one Python operation per entry. Reading the fields back (a
# sign, a floor, a value) needs |N[r, c]| < 2^(K-1) in every field: each Coef carries `mag` >= every |N[r, c]|, derived
# from its inputs' `mag` (triangle inequality), and one with mag >= 2^(K-1) is never made (`Widen`: the back-substitution
# restarts with wider fields). A vector of constants (one per row) is a Coef with one column.


def ints(values) -> tuple[list[int], int]:
    """Exact numbers (a list or tuple) as integers over their least common denominator."""
    pairs = list(map(Fraction.as_integer_ratio, values)) if set(map(type, values)) <= {Fraction} else \
        [Fraction(v).as_integer_ratio() for v in values]
    return _over_lcm(pairs)


def _over_lcm(pairs: list) -> tuple[list[int], int]:
    dens = {d for _, d in pairs}
    den = math.lcm(*dens) if dens else 1
    if len(dens) == 1:
        return [p for p, _ in pairs], den
    scale = {d: den // d for d in dens}
    return [p * scale[d] for p, d in pairs], den


def consts(m: fmpz_mat, col: list[int], den: int) -> tuple[list[int], int]:
    """The rows of m @ col, divided by den: (integers, den)."""
    return ((m * fmpz_mat(len(col), 1, col)).entries() if any(col) else [0] * m.nrows()), den


def add_vec(a, b):
    """(ints, den) + (ints, den), exactly."""
    (va, da), (vb, db) = a, b
    d = math.lcm(da, db)
    fa, fb = d // da, d // db
    return [x * fa + y * fb for x, y in zip(va, vb)], d


def most(values) -> int:
    """The largest |v|."""
    return max(map(abs, values), default=0)


class Widen(Exception):
    """A packed value would need fields wider than K bits (`Coef`); args[0]: the bits it needs."""


class Rows:
    """The packing of `count` rows in K-bit fields (K a multiple of 8): ones = sum_r 2^(K r), half = 2^(K-1) in each field."""

    def __init__(self, count: int, k: int):
        self.count, self.k = count, k
        self.ones = fmpz((1 << (k * count)) - 1) // ((1 << k) - 1)
        self.half = self.ones << (k - 1)

    def encode(self, column: list[int]) -> fmpz:
        return sum((fmpz(v) << (self.k * r) for r, v in enumerate(column) if v), ZERO)

    def decode(self, x: fmpz) -> list[int]:
        """The fields of x (each |field| < 2^(K-1)): x + half has the fields + 2^(K-1) in [0, 2^K) as its base-2^K digits."""
        kb, h = self.k // 8, 1 << (self.k - 1)
        raw = int(x + self.half).to_bytes(kb * self.count, "little")
        return [int.from_bytes(raw[i:i + kb], "little") - h for i in range(0, kb * self.count, kb)]


ZERO = fmpz(0)


@dataclass(frozen=True)
class Coef:
    cols: list  # per column, the packed integer sum_r N[r, c] 2^(K r)
    den: int  # positive: the coefficients are N / den
    mag: int  # >= every |N[r, c]|
    rows: Rows
    outer: tuple | None = None  # (a, bound, w): the columns are a * w[c], a packed, |its fields| <= bound (`_linear_back`)

    def __post_init__(self):
        if self.mag.bit_length() > self.rows.k - 1:  # (mag < 2^(K-1))
            raise Widen(self.mag.bit_length() + 1)


def add_coef(a: Coef, b: Coef) -> Coef:
    if a.den == b.den:
        return Coef([x + y for x, y in zip(a.cols, b.cols)], a.den, a.mag + b.mag, a.rows)
    d = math.lcm(a.den, b.den)
    fa, fb = d // a.den, d // b.den
    return Coef([x * fa + y * fb for x, y in zip(a.cols, b.cols)], d, a.mag * fa + b.mag * fb, a.rows)


def times(lam: Coef, mat: fmpz_mat, den: int, colsum: int) -> Coef:
    """lam @ mat / den; colsum: the largest sum_i |mat[i, j]| over the columns j (one product of a packed row with mat)."""
    if not any(lam.cols):
        return Coef([ZERO] * mat.ncols(), lam.den * den, 0, lam.rows)
    return Coef((fmpz_mat(1, len(lam.cols), lam.cols) * mat).entries(), lam.den * den, lam.mag * colsum, lam.rows)


def dot(lam: Coef, vec: list[int], den: int, pos: list | None = None, vec2: list[int] | None = None) -> Coef:
    """The rows' constants lam @ vec / den (plus pos @ vec2 / den, pos: `positive(lam)`), as a one-column Coef."""
    cols, vec = (lam.cols, vec) if pos is None else (lam.cols + pos, vec + vec2)
    if not any(vec) or not any(lam.cols):
        return Coef([ZERO], lam.den * den, 0, lam.rows)
    mag = sum(map(abs, vec)) if pos is None else sum(max(abs(a), abs(a + b)) for a, b in zip(vec[:len(lam.cols)], vec[len(lam.cols):]))
    if (lam.mag * mag).bit_length() > WIDE_BITS:  # (fixed, not the field width K: the bounds derived never depend on K)
        return _wide_dot(lam, cols, vec, lam.den * den)
    total = fmpz_mat(1, len(cols), cols) * fmpz_mat(len(vec), 1, vec)
    return Coef([total[0, 0]], lam.den * den, lam.mag * mag, lam.rows)


WIDE_BITS = 240  # constants whose bound has more bits are summed in parts and rounded (`_wide_dot`), so that fields of
# 256 bits hold the shipped specs' products (an SAE's folded encoder bias set K = 320 for every product of the check)


def _wide_dot(lam: Coef, cols: list, vec: list[int], d: int) -> Coef:
    """Lower bounds' constants cols @ vec / d (the columns: lam's, or lam's then positive(lam), each entry <= lam.mag)
    whose exact values would not fit the fields (an SAE's encoder bias b_enc - W_enc b_dec has 122 bits): vec in base-2^t
    digits, each digit's products small enough to read back, their sums put together exactly per row, then rounded down
    to fit (a smaller constant is a smaller lower bound), moving each by less than 2^-(LOSS_BITS + 8); Widen where the
    fields are too narrow for that."""
    k, rows, row = lam.rows.k, lam.rows, fmpz_mat(1, len(cols), cols)
    t, exact, at, rest = k - 2 - lam.mag.bit_length() - len(vec).bit_length(), [0] * lam.rows.count, 0, vec
    while t > 0 and any(rest):
        last = (lam.mag * sum(map(abs, rest))).bit_length() < k  # the rest's products fit: it is the last part
        part, rest = (rest, []) if last else ([v & ((1 << t) - 1) for v in rest], [v >> t for v in rest])  # v = hi 2^t + lo
        total = (row * fmpz_mat(len(part), 1, part))[0, 0]  # every row's |sum| < lam.mag sum|part| < 2^(K-1): read back
        exact, at = [e + (v << at) for e, v in zip(exact, rows.decode(total))], at + t
    top = max(map(abs, exact)).bit_length()
    s = max(0, min((d & -d).bit_length() - 1, d.bit_length() - 9 - LOSS_BITS, top - ROUND_BITS))  # as `_rounded_const`
    if t <= 0 or top - s > k - 3:  # (|floor(e / 2^s)| < 2^(K-2); s never depends on K: the bounds derived do not)
        raise Widen(max(top - s, (lam.mag << max(t, 0)).bit_length()) + 3)
    low = [e >> s for e in exact]
    return Coef([rows.encode(low)], d >> s, most(low), rows)


def positive(lam: Coef) -> list:
    """Per column, the packed max(N[r, c], 0): x + half has the digit N[r, c] + 2^(K-1), whose top bit is set iff
    N[r, c] >= 0; that bit spread over its field masks the digits kept, and 2^(K-1) is taken off them."""
    k, out, ones, half = lam.rows.k, [], lam.rows.ones, lam.rows.half
    for x in lam.cols:
        if not x:
            out.append(ZERO)
            continue
        y = x + half
        m = (y >> (k - 1)) & ones
        out.append((y & ((m << k) - m)) - (m << (k - 1)))
    return out


def zero_const(lam: Coef) -> Coef:
    return Coef([ZERO], 1, 0, lam.rows)


def table(lam: Coef) -> list[list[int]]:
    """lam's rows, as lists of integers (a pass over the entries)."""
    return [list(row) for row in zip(*(lam.rows.decode(x) for x in lam.cols))] if lam.cols else [[] for _ in range(lam.rows.count)]


def untable(rows: Rows, columns: list[list[int]], den: int) -> Coef:
    """The Coef of integer columns (each rows.count long) over den (a pass over the entries)."""
    return Coef([rows.encode(col) for col in columns], den, max(map(most, columns), default=0), rows)


def lowest(lam: Coef, lo: list[int], up: list[int], den: int, pos: list | None = None) -> Coef:
    """Per row, sum_c N[r, c] (lo[c] if N[r, c] >= 0 else up[c]) / (lam.den den): N @ up + max(N, 0) @ (lo - up), the least
    value of lam @ z over the box lo/den <= z <= up/den, or the constant of signed lines."""
    return dot(lam, up, den, positive(lam) if pos is None else pos, [a - b for a, b in zip(lo, up)])


ROUND_BITS, MIN_SHIFT = 96, 32  # a coefficient matrix on a value with verified bounds keeps its top ROUND_BITS bits, once
# MIN_SHIFT or more can go (soundness.md, "Rounded coefficients"): exact products grow by a weight's bits at every node
# (~900 bits deep in a residual graph), and an integer product's time with them
LOSS_BITS = 100  # and a row's bound moves less than 2^-LOSS_BITS by it: the remainder R z can move it by up to R times z's
# magnitude, which the coefficients' bits do not bound (transformer campaign seed 2043 at 96 bits alone: values near 1e20
# moved bounds by up to 6.5, past the engine's padding, and 17 of 300 valid certificates were REJECTED)


FIX_BITS = LOSS_BITS + 10  # the constant that makes up for a rounding, rounded down to a multiple of 2^-FIX_BITS


def _picked(lam: Coef, pos: list, ls: list, us: list, sd: int, floor: tuple | None):
    """The coefficients N (ls if N >= 0 else us) over den * sd, and None; or, given the floor of the value z they multiply
    (`_floor`), those coefficients rounded (`_round`) and the constant that makes up for the rounding."""
    cols = [x * u + p * (a - u) for x, p, a, u in zip(lam.cols, pos, ls, us)]
    return _round(Coef(cols, lam.den * sd, lam.mag * most(ls + us), lam.rows), floor)


def _round(lam: Coef, floor: tuple | None):
    """lam and None; or, given floor = (p, q, m, r) of the value z lam multiplies (`_floor`: p/q = sum_c max(0, -lower_c),
    m/r = sum_c max(|lower_c|, |upper_c|) of its verified bounds): lam rounded down by 2^s (keeping its top ROUND_BITS
    bits), C = C' 2^s + R with 0 <= R < 2^s, and the constant that makes up for R: R/den . z >= -(2^s/den) p/q, rounded
    down to a multiple of 2^-FIX_BITS (q can have a thousand bits: a float's tiny bound; fields wide enough for p q
    would slow every product)."""
    d, mag = lam.den, lam.mag
    if floor is None or min((d & -d).bit_length() - 1, mag.bit_length() - ROUND_BITS) < MIN_SHIFT:
        return lam, None
    p, q, m, r = floor  # R z moves the bound by at most 2^s/d (sum |l| + sum |u|) <= 2^(s+1) m/(r d) < 2^(s + bits m - bits r - bits d + 3)
    s = min((d & -d).bit_length() - 1,  # 2^s must divide d: rounded coefficients C' / (d / 2^s)
            r.bit_length() + d.bit_length() - m.bit_length() - 3 - LOSS_BITS, mag.bit_length() - ROUND_BITS)
    if s < MIN_SHIFT:
        return lam, None
    rounded = _floor_shift(lam, s)
    fix = -((-p << FIX_BITS) // (q * rounded.den))  # ceil(2^FIX_BITS p / (q d / 2^s)) >= 0
    return rounded, Coef([-fix * lam.rows.ones], 1 << FIX_BITS, fix, lam.rows)


def _floor_shift(lam: Coef, s: int) -> Coef:
    """floor(N / 2^s) over den / 2^s (2^s divides den, s < K): each field + 2^(K-1) is a digit in [0, 2^K); shifted down
    by s, each field's low K - s bits are its digit's floor, and 2^(K-1-s) comes off it."""
    k, ones = lam.rows.k, lam.rows.ones
    mask, half, low = ones * ((1 << (k - s)) - 1), lam.rows.half, ones << (k - 1 - s)
    return Coef([(((x + half) >> s) & mask) - low for x in lam.cols], lam.den >> s, (lam.mag >> s) + 1, lam.rows)


def _rounded_const(const: Coef) -> Coef:
    """Lower bounds' constants (one column) rounded down to their top ROUND_BITS bits, so that they move by less than
    2^-(LOSS_BITS + 8) (sound: a smaller constant is a smaller lower bound)."""
    d = const.den
    s = min((d & -d).bit_length() - 1, d.bit_length() - 9 - LOSS_BITS, const.mag.bit_length() - ROUND_BITS)
    return _floor_shift(const, s) if s >= MIN_SHIFT else const


def _signed(lam: Coef, lower: tuple, upper: tuple, floor: tuple | None = None, pos: list | None = None):
    """Coefficients on z of lam . phi(z) >= lam . (s z + t): the lower line where lam >= 0, the upper where < 0.
    lower, upper: (slopes, intercepts) as ((ints, den), (ints, den)) over shared denominators. floor: z's, for rounding
    (`_picked`); pos: positive(lam), if made."""
    ((ls, sd), (li, idn)), ((us, _), (ui, _)) = lower, upper
    pos = positive(lam) if pos is None else pos
    coef, fix = _picked(lam, pos, ls, us, sd, floor)
    const = lowest(lam, li, ui, idn, pos)
    return coef, const if fix is None else add_coef(const, fix)


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
    """sum_c max(0, -lower_c) as p/q: a coefficient c on z with 0 <= c < 1 gives c z >= -this (z >= lower); and
    sum_c max(|lower_c|, |upper_c|) as m/r, which bounds |c z| (lower <= upper; not in lowest terms)."""
    (lo, q), (up, ud) = ints(lower), ints(upper)
    r = math.lcm(q, ud)
    fl, fu = r // q, r // ud
    return sum(-v for v in lo if v < 0), q, sum(max(-a * fl, b * fu) for a, b in zip(lo, up)), r


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
    return [Coef([ZERO] * len(lam.cols), lam.den, 0, lam.rows)], _box_lowest(lam, prepared)


def _box_lowest(lam: Coef, box) -> Coef:
    """Per row of lam, the least value of lam @ z over lo <= z <= up; box: ((ints, den), (ints, den))."""
    (lo, ld), (up, ud) = box
    d = math.lcm(ld, ud)
    return lowest(lam, [v * (d // ld) for v in lo], [v * (d // ud) for v in up], d)


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
    (lx, ly, ux, uy, fx, fy), pos = planes, positive(lam)
    cx, const = _signed(lam, lx, ux, fx, pos)
    cy, fix = _picked(lam, pos, ly[0][0], uy[0][0], ly[0][1], fy)
    return [cx, cy], const if fix is None else add_coef(const, fix)


def _mul_interval(node, boxes):
    (lx, ux), (ly, uy) = boxes
    corners = [[a * b for a in (l1, u1) for b in (l2, u2)] for l1, u1, l2, u2 in zip(lx, ux, ly, uy)]
    return [min(c) for c in corners], [max(c) for c in corners]


def _linear_prepare(node):
    """W (numerators over one denominator), |W|, b as integers, the largest column sum of |W|, made once per check; and
    (c, w) where W = c I + 1 w (each column equal off the diagonal: a LayerNorm's mean and centring), else None."""
    wn, wd = (_float_ints(node.weight) if all(type(row) is FloatRow for row in node.weight)
              else ints([v for row in node.weight for v in row]))
    rows, cols = len(node.weight), len(node.weight[0])
    w = [wn[(j == 0) * cols + j] for j in range(cols)] if rows > 1 else None  # an entry off the diagonal, per column
    c = wn[0] - w[0] if w and rows == cols else 0
    thin = w and all(v == w[k % cols] + c * (k // cols == k % cols) for k, v in enumerate(wn))
    mag = fmpz_mat(rows, cols, list(map(abs, wn)))
    return (fmpz_mat(rows, cols, wn), wd), mag, ints(node.bias), _colsum(mag), (c, w) if thin else None


def _float_ints(rows) -> tuple[list, int]:
    """The entries of float rows as fmpz numerators over their least common denominator, a power of two (floats are
    dyadic): made from each float's exact ratio by a shift (converting a Python integer of over 62 bits to fmpz cost
    ~0.7 us, most of a check's `prepare`)."""
    pairs = [p for row in rows for p in map(float.as_integer_ratio, row.floats)]
    e = max(d for _, d in pairs).bit_length()
    return [fmpz(p) << (e - d.bit_length()) for p, d in pairs], 1 << (e - 1)


def _colsum(mag: fmpz_mat) -> int:
    """The largest column sum of mag (entries >= 0)."""
    return int(max((fmpz_mat(1, mag.nrows(), [1] * mag.nrows()) * mag).entries(), default=0))


def _linear_interval(node, boxes, prepared):
    """W (l + u)/2 + b -/+ |W| (u - l)/2, exactly, on integers."""
    ((w, wd), mag, (b, bd), *_), ((lo, ld), (up, ud)) = prepared, map(ints, boxes[0])
    d = math.lcm(ld, ud)
    lo, up = [v * (d // ld) for v in lo], [v * (d // ud) for v in up]
    mid = (w * fmpz_mat([[x + y] for x, y in zip(lo, up)])).entries()
    rad = (mag * fmpz_mat([[y - x] for x, y in zip(lo, up)])).entries()
    den = 2 * d * wd
    return ([Fraction(c * den + int(m - r) * bd, bd * den) for c, m, r in zip(b, mid, rad)],
            [Fraction(c * den + int(m + r) * bd, bd * den) for c, m, r in zip(b, mid, rad)])


def _linear_back(node, lam, prepared):
    """lam W and lam b: one product for all rows, or c lam + (lam 1) w where W = c I + 1 w (the same integers)."""
    ((wn, wd), _, (b, bd), colsum, *thin) = prepared
    if thin and thin[0] and any(lam.cols):
        (c, w), total = thin[0], sum(lam.cols, ZERO)
        if c:
            return [Coef([x * c + total * v for x, v in zip(lam.cols, w)], lam.den * wd, lam.mag * colsum, lam.rows)], dot(lam, b, bd)
        return [Coef([total * v for v in w], lam.den * wd, lam.mag * colsum, lam.rows, (total, lam.mag * len(lam.cols), w))], dot(lam, b, bd)
    return [times(lam, wn, wd, colsum)], dot(lam, b, bd)


def _affine_back(node, lam, prepared):
    ((sc, sd), (t, td)) = prepared
    return [Coef([x * v for x, v in zip(lam.cols, sc)], lam.den * sd, lam.mag * most(sc), lam.rows)], dot(lam, t, td)


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
                 lambda n, xs: [sum((w * v for w, v in zip(arbs(row), xs[0])), arb(q(b))) for row, b in zip(n.weight, n.bias)],
                 _linear_interval, _linear_back, prepare=_linear_prepare),
    "affine": Op(1, lambda n, d: d[0] if len(n.scale) == len(n.shift) == d[0] else None,
                 lambda n, xs: [arb(q(a)) * v + arb(q(b)) for a, b, v in zip(n.scale, n.shift, xs[0])],
                 lambda n, boxes, p: ([min(a * l, a * u) + b for a, b, l, u in zip(n.scale, n.shift, *boxes[0])],
                                      [max(a * l, a * u) + b for a, b, l, u in zip(n.scale, n.shift, *boxes[0])]), _affine_back,
                 prepare=lambda n: (ints(n.scale), ints(n.shift))),
    "add": Op(2, _same, lambda n, xs: [a + b for a, b in zip(*xs)],
              lambda n, boxes, p: ([a + b for a, b in zip(boxes[0][0], boxes[1][0])], [a + b for a, b in zip(boxes[0][1], boxes[1][1])]),
              lambda n, lam, r: ([lam, lam], zero_const(lam))),
    "sub": Op(2, _same, lambda n, xs: [a - b for a, b in zip(*xs)],
              lambda n, boxes, p: ([a - b for a, b in zip(boxes[0][0], boxes[1][1])], [a - b for a, b in zip(boxes[0][1], boxes[1][0])]),
              lambda n, lam, r: ([lam, replace(lam, cols=[-x for x in lam.cols], outer=None)], zero_const(lam))),
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
    (members, pairs, to_s, (rho, rd), (tau, td), e_lower, e_upper), den, m = relax, lam.den, len(lam.cols)
    shifted, mus = [], []
    for row in table(lam):
        mu = {j: min(row[i] for i in g) for g in members for j in g}
        shifted.append([row[j] - mu[j] for j in range(m)])
        mus.append(sum(min(row[i] for i in g) for g in members))
    const = add_vec((mus, den), consts(fmpz_mat(shifted), tau, den * td))
    kappa = [[v * rho[j] for j, v in enumerate(row)] for row in shifted]  # on D_j, over den * rd
    const = add_vec(const, ([sum(row) for row in kappa], den * rd))  # D_j's constant 1
    on_e = untable(lam.rows, [[row[j] for row in kappa] for j, _ in pairs], den * rd)
    coef, c2 = _signed(on_e, e_lower, e_upper)
    return [times(coef, to_s, 1, len(pairs))], add_coef(untable(lam.rows, [const[0]], const[1]), c2)


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
            flat = arrays[ref][1]  # finite floats (`_parse_npy`)
            if len(shape) == 2 and set(map(type, flat)) <= {float}:
                return tuple(FloatRow(tuple(flat[r * shape[1]:(r + 1) * shape[1]])) for r in range(shape[0]))
            return tuple(map(Fraction, flat))

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
        up = [Fraction(int(t in ok)) for ok in map(set, allowed) for t in range(vocab)]
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


FIELD_BITS = 256  # the field width a check's back-substitutions start with; it grows within the check (or tree) only
FIELD = ("field bits",)  # prepared[FIELD]: the width this check's back-substitutions reached (`Widen`; not a node name)


def backsubstitute(graph: Graph, target: str, rows: fmpz_mat | int, box, relax: dict, where: str, prepared: dict,
                   bounds: dict | None = None) -> list[Fraction]:
    """Lower bounds of rows @ value(target) over the input box (rows: integers, or n for the 2n rows e_i, then -e_i), by
    back-substitution through the verified relaxations of target's nonlinear ancestors (`relax`: node name -> verified
    relaxation; `prepared`: node name -> its parameters in exact form; `bounds`: node name -> verified bounds, on which
    coefficients may be rounded, `_round_on`). Coefficients are packed by rows (`Coef`); where a value would not fit its
    fields, it starts again with fields wide enough."""
    while True:
        k = prepared.get(FIELD, FIELD_BITS)
        try:
            return _backsubstitute(graph, target, rows, box, relax, where, prepared, k, bounds or {})
        except Widen as exc:
            prepared[FIELD] = max(k + 64, (exc.args[0] // 8 + 5) * 8)  # (K a multiple of 8, 32 bits to spare)


def _backsubstitute(graph: Graph, target: str, rows, box, relax: dict, where: str, prepared: dict, k: int, bounds: dict) -> list[Fraction]:
    if isinstance(rows, int):
        packing = Rows(2 * rows, k)
        start = Coef([(fmpz(1) << (k * c)) - (fmpz(1) << (k * (rows + c))) for c in range(rows)], 1, 1, packing)
    else:
        packing = Rows(rows.nrows(), k)
        start = untable(packing, [list(map(int, col)) for col in rows.transpose().table()], 1)
    coef, const, merged = {target: start}, zero_const(start), None
    for node in reversed(ancestors(graph, target)):
        lam = coef.pop(node.name, None)
        if lam is None:
            continue
        op = OPS[node.op]
        if op.relax is not None:
            require(node.name in relax, where, f"needs a verified relaxation of node {node.name!r} first")
        if node.name != target:  # (the target's rows are e_i)
            lam, const = _round_on(lam, node.name, bounds, const)
        parts, c = op.back(node, lam, relax[node.name] if op.relax is not None else prepared[node.name])
        const = _rounded_const(add_coef(const, c))
        for name, part in zip(node.inputs, parts):
            coef[name] = add_coef(coef[name], part) if name in coef else part
        if merged is None and len(coef) == 1 and parts[0].outer and coef[node.inputs[0]] is parts[0]:
            merged = _merge_rows(parts[0])  # the only coefficients left are a * w: rows equal in a are equal from here on
            if merged is not None:
                coef[node.inputs[0]], merged, const = merged[0], (const, merged[1]), zero_const(merged[0])
    lam = coef.pop("x", None)
    if lam is not None:
        lam, const = _round_on(lam, "x", bounds, const)
        if isinstance(box, TokenBox):
            low, den = box.lowest(fmpz_mat(table(lam)), lam.den)
            const = add_coef(const, untable(lam.rows, [low], den))
        else:
            const = add_coef(const, _box_lowest(lam, (ints(box[0]), ints(box[1]))))
    out = [Fraction(v, const.den) for v in const.rows.decode(const.cols[0])]
    if merged is None:
        return out
    (before, at) = merged  # each row: its constant before the merge, and its merged row's after it
    return [Fraction(v, before.den) + out[i] for v, i in zip(packing.decode(before.cols[0]), at)]


def _round_on(lam: Coef, name: str, bounds: dict, const: Coef) -> tuple[Coef, Coef]:
    """lam, the coefficients on the value `name`, rounded (`_round`) on its verified bounds where MIN_SHIFT bits or more
    can go, and const plus the constant that makes up for it. bounds: name -> verified (lower, upper), and FLOORS:
    name -> (those bounds, their `_floor`)."""
    d = lam.den
    if name not in bounds or min((d & -d).bit_length() - 1, lam.mag.bit_length() - ROUND_BITS) < MIN_SHIFT:
        return lam, const
    box, floors = bounds[name], bounds.get(FLOORS, {})
    if floors.get(name, (None,))[0] is not box:
        floors[name] = (box, _floor(*box))
    lam, fix = _round(lam, floors[name][1])
    return lam, const if fix is None else add_coef(const, fix)


FLOORS = ("floors",)  # verified[FLOORS]: the floors of verified bounds, made once per bounds (`_round_on`; not a node name)


def _merge_rows(lam: Coef):
    """lam = a * w (columns) on fewer rows, one per distinct entry of a, and each row's row among them; None if a has no
    two equal entries. (Whatever the field width: the bounds derived never depend on it.)"""
    a, bound, w = lam.outer
    Coef([], 1, bound, lam.rows)  # (a's fields read back: raises Widen otherwise)
    first, at = {}, []
    for v in lam.rows.decode(a):
        at.append(first.setdefault(v, len(first)))
    if len(first) == lam.rows.count:
        return None
    rows = Rows(len(first), lam.rows.k)
    a = rows.encode(list(first))
    return Coef([a * v for v in w], lam.den, lam.mag, rows), at


def prepare(graph: Graph) -> dict:
    """Node name -> its parameters in exact form, made once per check (or per tree), and once for nodes that share them
    (g's copies of f's nodes: the same parameter objects)."""
    made, out = {}, {}
    for n in graph.nodes:
        key = (n.op, id(n.weight), id(n.bias), id(n.scale), id(n.shift), id(n.threshold), id(n.lower), id(n.upper), id(n.groups))
        if key not in made:  # (the graph holds each parameter object while `made` lives: ids are not reused)
            made[key] = OPS[n.op].prepare(n)
        out[n.name] = made[key]
    return out


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


RECORD: list | None = None  # a list: each accepted step is appended with the verified bounds it started from (export-smt reads it)


def check_graph_steps(graph: Graph, box, steps, where: str, prepared: dict | None = None) -> dict:
    """Verify `bounds` and `relax` steps in order; returns node name -> verified (lower, upper).
    `prepared`: the nodes' parameters in exact form, if already made (one per tree, not per leaf)."""
    prepared = prepared or prepare(graph)
    graph, box, prepared = _free_box(graph, box, prepared)
    bounds, relax = {"x": (list(box[0]), list(box[1]))}, {}
    before, floors = dict(bounds), {}
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
                both = backsubstitute(graph, node.name, n, box, relax, at, prepared, {**bounds, FLOORS: floors})  # e_i, then -e_i
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


def deviation_at(joint: Graph, x: list[Fraction], form=None) -> Fraction:
    """A proven lower bound on max_i |d_i(x)|: the lower end of the arb enclosure (exact where the
    graph's ops are all rational). A graph with a softmax-ratio form at an integer x: through that form
    (attention.replay: exact integers and one exp per softmax member; `form`: the caller's, of this graph), else `evaluate`."""
    from .attention import replay

    with ctx.workprec(256):
        d = replay(joint, x, form)
        return max(curves.exact(abs(v).lower(), -1) for v in (evaluate(joint, x)["d"] if d is None else d))


def goal_reached(bounds: dict, bound: Fraction, where: str) -> None:
    require("d" in bounds, where, "missing goal: no verified bounds of the output difference d")
    lo, up = bounds["d"]
    require(all(-l <= bound and u <= bound for l, u in zip(lo, up)), where, "the verified bounds of d do not prove |d_i| <= bound")


def check_token_tree(joint: Graph, box: TokenBox, tree, bound: Fraction, where: str, jobs: int | None = None,
                     forms: dict | None = None) -> int:
    """Branch and bound over tokens: a node {"position": p, "parts": [[ids], ...], "children": [...]}
    partitions position p's allowed tokens among its children (each part non-empty, together exactly
    the parent's set); a leaf {"steps": [...]} proves |d_i| <= bound on its sub-domain. So the leaves
    cover the domain. The leaves are checked by `check_leaves`; returns the number of steps checked. `forms` (a dict)
    receives the ratio leaves' form as "ratio" (the caller's witness replay reuses it)."""
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

        return check_ratio_leaves(joint, ratios, bound, forms) + (check_leaves(joint, leaves, bound, jobs) if leaves else 0)
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
    with gc_paused():
        return _check_graph(spec, f, g, cert, bound, box, jobs)


def _check_graph(spec, f: Graph, g: Graph, cert: dict, bound: Fraction, box, jobs: int | None) -> tuple[Fraction | None, int]:
    need(spec.property.semantics == "real", str(spec.path), "property.semantics",
         f"float32 semantics has no rounding-error analysis for graph ops yet ({', '.join(sorted({n.op for n in f.nodes}))})",
         "use semantics: real")
    require(sum(k in cert for k in ("steps", "tree", "token_tree")) == 1, "certificate",
            "a graph model's certificate has steps, a tree of input splits, or a token_tree over a token domain")
    try:
        joint = joint_graph(f, g, spec.property.outputs)
    except ValueError as exc:
        raise Rejected("joint graph", str(exc)) from None
    forms: dict = {}  # the ratio leaves' form (attention.py), for the witness replay; gone with this call
    if "token_tree" in cert:
        require(isinstance(box, TokenBox), "token_tree", "a token split tree needs a token domain (input: tokens)")
        count = check_token_tree(joint, box, cert["token_tree"], bound, "token_tree", jobs, forms)
    elif "tree" in cert:
        count = check_input_tree(joint, box, cert["tree"], bound, "tree", jobs)
    else:
        goal_reached(check_graph_steps(joint, box, cert["steps"], "steps"), bound, "goal")  # (it requires a list)
        count = len(cert["steps"])
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
        dev = deviation_at(joint, x, forms.get("ratio"))
    except ValueError as exc:  # a value beyond the checker's range at the witness
        raise Rejected("witness", str(exc)) from None
    claimed = parse_ratio(witness["deviation"])
    require(claimed is not None and Fraction(*claimed) == dev, "witness", f"claimed deviation differs from the replay's proven {show(dev)}")
    require(dev <= bound, "witness", "the replayed deviation exceeds the certified bound: the bound is unsound")
    return dev, count
