"""The graph checker's faster back-substitution (issue 16) computes the rationals of the version it replaced (exactly,
or within its proven rounding). The old functions are kept below, verbatim apart from their names, as the reference:
each new helper is compared with its old counterpart on random integer matrices and lines (hypothesis; the new ones
work on rows packed into one integer per column, `graph.Coef`, converted here), and every back-substitution the checker
runs on random graphs of every op and on shipped residual specs is re-run by the old code and must agree.
"""

import math
from contextlib import contextmanager
from fractions import Fraction

import numpy as np
import pytest
from flint import fmpz, fmpz_mat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certify.bounds.graph import crown
from certify.checker import curves, graph
from certify.checker.errors import Rejected
from certify.checker.graph import OPS, TokenBox, ancestors, joint_graph
from certify.checker.model import read_model
from certify.checker.network import build_g, input_box
from certify.checker.spec import read_spec

from .conftest import SPECS
from .test_graph import random_graph

# --------------------------------------------------------------------------- the old code (reference)


def old_ints(values) -> tuple[list[int], int]:
    pairs = [Fraction(v).as_integer_ratio() for v in values]
    den = math.lcm(*(d for _, d in pairs)) if pairs else 1
    return [p * (den // d) for p, d in pairs], den


def old_diag(vec: list[int]) -> fmpz_mat:
    n = len(vec)
    return fmpz_mat(n, n, [vec[r] if r == c else 0 for r in range(n) for c in range(n)])


def old_split(n: fmpz_mat) -> tuple[fmpz_mat, fmpz_mat]:
    e = n.entries()
    return (fmpz_mat(n.nrows(), n.ncols(), [v if v > 0 else 0 for v in e]),
            fmpz_mat(n.nrows(), n.ncols(), [v if v < 0 else 0 for v in e]))


def old_consts(m: fmpz_mat, col: list[int], den: int) -> tuple[list[int], int]:
    return [int(v) for v in (m * fmpz_mat([[c] for c in col])).entries()], den


def old_add_vec(a, b):
    (va, da), (vb, db) = a, b
    d = math.lcm(da, db)
    return [x * (d // da) + y * (d // db) for x, y in zip(va, vb)], d


def old_add_coef(a, b):
    (na, da), (nb, db) = a, b
    d = math.lcm(da, db)
    return na * (d // da) + nb * (d // db), d


def old_signed(lam, lower: tuple, upper: tuple):
    (n, den), ((ls, sd), (li, idn)), ((us, _), (ui, _)) = lam, lower, upper
    rows, cols, e = n.nrows(), n.ncols(), n.entries()
    pos = fmpz_mat(rows, cols, [v if v > 0 else 0 for v in e])
    coef = fmpz_mat(rows, cols, [v * (a if v >= 0 else b) for v, a, b in zip(e, ls * rows, us * rows)])
    const = n * fmpz_mat([[c] for c in ui]) + pos * fmpz_mat([[a - b] for a, b in zip(li, ui)])
    return (coef, den * sd), ([int(v) for v in const.entries()], den * idn)


def old_free_back(node, lam, prepared):
    (n, den), ((lo, ld), (up, ud)) = lam, prepared
    pos, neg = old_split(n)
    return [(fmpz_mat(n.nrows(), n.ncols()), den)], old_add_vec(old_consts(pos, lo, den * ld), old_consts(neg, up, den * ud))


def old_unary_back(node, lam, relax):
    coef, const = old_signed(lam, *relax)
    return [coef], const


def old_mul_back(node, lam, planes):
    lx, ly, ux, uy = planes
    cx, const = old_signed(lam, lx, ux)
    cy, _ = old_signed(lam, ly, uy)
    return [cx, cy], const


def old_linear_prepare(node):
    wn, wd = old_ints([v for row in node.weight for v in row])
    rows, cols = len(node.weight), len(node.weight[0])
    return (fmpz_mat(rows, cols, wn), wd), fmpz_mat(rows, cols, [abs(v) for v in wn]), old_ints(node.bias)


def old_linear_back(node, lam, prepared):
    (n, den), ((wn, wd), _, (b, bd)) = lam, prepared
    return [(n * wn, den * wd)], old_consts(n, b, den * bd)


def old_affine_back(node, lam, prepared):
    (n, den), ((s, sd), (t, td)) = lam, prepared
    return [(n * old_diag(s), den * sd)], old_consts(n, t, den * td)


def old_zero_const(lam):
    return [0] * lam[0].nrows(), 1


def old_sm_back(node, lam, relax):
    (n, den), (members, pairs, to_s, (rho, rd), (tau, td), e_lower, e_upper) = lam, relax
    rows, m, e = n.nrows(), n.ncols(), [int(v) for v in n.entries()]
    shifted, mus = [], []
    for r in range(rows):
        row = e[r * m:(r + 1) * m]
        mu = {j: min(row[i] for i in g) for g in members for j in g}
        shifted += [row[j] - mu[j] for j in range(m)]
        mus.append(sum(min(row[i] for i in g) for g in members))
    const = old_add_vec((mus, den), old_consts(fmpz_mat(rows, m, shifted), tau, den * td))
    kappa = [v * rho[j] for r in range(rows) for j, v in enumerate(shifted[r * m:(r + 1) * m])]
    const = old_add_vec(const, ([sum(kappa[r * m:(r + 1) * m]) for r in range(rows)], den * rd))
    on_e = fmpz_mat(rows, len(pairs), [kappa[r * m + j] for r in range(rows) for j, _ in pairs])
    (coef, cd), c2 = old_signed((on_e, den * rd), e_lower, e_upper)
    return [(coef * to_s, cd)], old_add_vec(const, c2)


OLD_BACK = {  # (a linear node's prepared tuple gained a fourth entry, its thin form; the first three are the old ones.
    # A verified unary relaxation gained a third entry and mul's planes two more, the input's floor for rounding: not used here)
    "linear": lambda node, lam, prepared: old_linear_back(node, lam, prepared[:3]), "affine": old_affine_back, "free": old_free_back,
    "mul": lambda node, lam, planes: old_mul_back(node, lam, planes[:4]), "softmax": old_sm_back,
    "add": lambda n, lam, r: ([lam, lam], old_zero_const(lam)),
    "sub": lambda n, lam, r: ([lam, (-lam[0], lam[1])], old_zero_const(lam)),
    **{op: (lambda node, lam, relax: old_unary_back(node, lam, relax[:2])) for op in ("relu", "jumprelu", *graph.CURVE_OPS)},
}


def eye(n: int) -> fmpz_mat:
    """The 2n x n rows e_i, then -e_i (what `graph.backsubstitute` is given as n)."""
    return fmpz_mat(2 * n, n, [(1 if r < n else -1) * int(r % n == c) for r in range(2 * n) for c in range(n)])


def old_backsubstitute(g, target: str, rows: fmpz_mat | int, box, relax: dict, where: str, prepared: dict) -> list[Fraction]:
    rows = eye(rows) if isinstance(rows, int) else rows
    coef, const = {target: (rows, 1)}, ([0] * rows.nrows(), 1)
    for node in reversed(ancestors(g, target)):
        lam = coef.pop(node.name, None)
        if lam is None:
            continue
        op = OPS[node.op]
        parts, c = OLD_BACK[node.op](node, lam, relax[node.name] if op.relax is not None else prepared[node.name])
        const = old_add_vec(const, c)
        for name, part in zip(node.inputs, parts):
            coef[name] = old_add_coef(coef[name], part) if name in coef else part
    lam = coef.pop("x", None)
    if lam is not None and isinstance(box, TokenBox):
        const = old_add_vec(const, box.lowest(*lam))
    elif lam is not None:
        (lo, ld), (up, ud) = old_ints(box[0]), old_ints(box[1])
        pos, neg = old_split(lam[0])
        const = old_add_vec(const, old_add_vec(old_consts(pos, lo, lam[1] * ld), old_consts(neg, up, lam[1] * ud)))
    return [Fraction(v, const[1]) for v in const[0]]


def old_plane_holds(c1: Fraction, c2: Fraction, c0: Fraction, box: tuple[Fraction, ...], side: int) -> bool:
    lx, ux, ly, uy = map(Fraction, box)
    c1, c2, c0 = map(Fraction, (c1, c2, c0))
    return lx <= ux and ly <= uy and all(side * (x * y - c1 * x - c2 * y - c0) >= 0 for x in (lx, ux) for y in (ly, uy))


def old_convex_gap_ok(gap, dgap, p, q) -> bool:
    for _ in range(curves.STEPS):
        m = ((p + q) / 2).mid()
        if not p < m < q:
            return gap(p.union(q)) >= 0
        g, d = gap(m), dgap(m)
        if g < 0:
            return False
        if g + d * (p - m) >= 0 and g + d * (q - m) >= 0:
            return True
        if d > 0:
            q = m
        elif d < 0:
            p = m
        else:
            return False
    return False


def old_line_holds(fn: str, a: Fraction, b: Fraction, l: Fraction, u: Fraction, side: int) -> bool:
    c = curves._curve(fn)
    a, b, l, u = map(Fraction, (a, b, l, u))
    if not (l <= u and c.admits(l)):
        return False
    with curves.ctx.workprec(curves.PREC):
        la, lb = curves.ball(a), curves.ball(b)
        gap = lambda x: side * (c.f(x) - la * x - lb)  # noqa: E731
        dgap = lambda x: side * (c.df(x) - la)  # noqa: E731
        pieces = curves._pieces(c, curves.ball(l), curves.ball(u))
        if pieces is None:
            return False
        for p, q, shape in pieces:
            if side * shape < 0:
                if not (gap(p) >= 0 and gap(q) >= 0):
                    return False
            elif not old_convex_gap_ok(gap, dgap, p, q):
                return False
    return True


def old_interval_image(fn: str, l: Fraction, u: Fraction):
    c = curves._curve(fn)
    l, u = Fraction(l), Fraction(u)
    if not (l <= u and c.admits(l)):
        raise ValueError("empty")
    with curves.ctx.workprec(curves.PREC):
        lo, hi = curves.ball(l), curves.ball(u)
        ends = [c.f(lo), c.f(hi)]
        inner = [c.f(m.mid()) + c.df(m) * (m - m.mid()) for m in c.minima() if not (m < lo or m > hi)]
        if not all(v.is_finite() for v in ends + inner):
            raise ValueError("not finite")
        return min(curves.exact(v.lower(), -1) for v in ends + inner), max(curves.exact(v.upper(), 1) for v in ends)


# --------------------------------------------------------------------------- the helpers, one by one

def pack(lam, k: int = 1024) -> graph.Coef:
    """(fmpz_mat, den) as the new code's packed rows (K = k bits a field)."""
    n, den = lam
    return graph.untable(graph.Rows(n.nrows(), k), [[int(v) for v in col] for col in n.transpose().table()] or
                         [[] for _ in range(n.ncols())], den)


def unpack(coef: graph.Coef) -> tuple[fmpz_mat, int]:
    """A packed Coef as (fmpz_mat, den), after checking its bound: every |entry| <= mag."""
    cols = [coef.rows.decode(x) for x in coef.cols]
    assert all(abs(v) <= coef.mag for col in cols for v in col)
    return fmpz_mat(coef.rows.count, len(cols), [v for r in range(coef.rows.count) for v in (col[r] for col in cols)]), coef.den


def vec(coef: graph.Coef) -> tuple[list[int], int]:
    """A one-column Coef (a constant per row) as (ints, den)."""
    (n, den) = unpack(coef)
    return [int(v) for v in n.entries()], den


@contextmanager
def exact_constants():
    """No constant rounded for its width (`graph._wide_dot`: test_constants_too_wide_for_the_fields_are_rounded_down):
    the exact comparisons with the old code below draw 200-bit entries."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(graph, "WIDE_BITS", 10**9)
        yield


def same(new_vec, old_vec) -> bool:
    """Equal vectors of rationals (the denominators may differ)."""
    return [Fraction(int(v), new_vec[1]) for v in new_vec[0]] == [Fraction(int(v), old_vec[1]) for v in old_vec[0]]


ZERO_INT = fmpz(0)
BIG = st.integers(-(2**200), 2**200)
SMALL = st.integers(-(2**30), 2**30)
DENS = st.sampled_from([1, 2, 3, 2**25, 2**61, 3 * 2**40])


def _matrix(draw, rows, cols, zeros=True):
    vals = st.one_of(BIG, st.just(0)) if zeros else BIG
    return fmpz_mat(rows, cols, draw(st.lists(vals, min_size=rows * cols, max_size=rows * cols)))


def _line(draw, cols):
    """One side's (slopes, intercepts) as ((ints, den), (ints, den)); sometimes all-zero intercepts (relu's lower line)."""
    slopes = draw(st.lists(SMALL, min_size=cols, max_size=cols))
    icpts = draw(st.one_of(st.just([0] * cols), st.lists(SMALL, min_size=cols, max_size=cols)))
    return (slopes, draw(DENS)), (icpts, draw(DENS))


@st.composite
def signed_case(draw):
    rows, cols = draw(st.integers(0, 5)), draw(st.integers(1, 5))  # (no node has width 0: a linear of 0 rows fails to prepare)
    n = _matrix(draw, rows, cols)
    (ls, sd), (li, idn) = _line(draw, cols)
    kind = draw(st.sampled_from(["differ", "same slopes", "same intercepts", "same lines"]))
    (us, _), (ui, _) = _line(draw, cols)
    us = ls if kind in ("same slopes", "same lines") else us
    ui = li if kind in ("same intercepts", "same lines") else ui
    return (n, draw(DENS)), ((ls, sd), (li, idn)), ((us, sd), (ui, idn))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(signed_case())
def test_signed_lines_equal_the_old(case):
    lam, lower, upper = case
    with exact_constants():
        coef, const = graph._signed(pack(lam), lower, upper)
    (oc, od), oconst = old_signed(lam, lower, upper)
    assert unpack(coef) == (oc, od) and vec(const) == ([int(v) for v in oconst[0]], oconst[1])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_box_minimum_mul_affine_add_and_free_equal_the_old(data):
    with exact_constants():
        _box_minimum_mul_affine_add_and_free(data.draw)


def _box_minimum_mul_affine_add_and_free(draw):
    rows, cols = draw(st.integers(0, 5)), draw(st.integers(1, 5))  # (no node has width 0: a linear of 0 rows fails to prepare)
    lam = (_matrix(draw, rows, cols), draw(DENS))
    lo = draw(st.lists(st.fractions(max_denominator=2**70), min_size=cols, max_size=cols))
    up = [v + draw(st.sampled_from([Fraction(0), Fraction(1, 3), Fraction(5, 2**40), Fraction(7)])) for v in lo]
    box = (old_ints(lo), old_ints(up))
    assert same(vec(graph._box_lowest(pack(lam), box)), old_free_back(None, lam, box)[1])
    (zero,), low = graph._free_back(None, pack(lam), box)
    assert unpack(zero)[0] == fmpz_mat(rows, cols) and same(vec(low), old_free_back(None, lam, box)[1])
    cd, zd = draw(DENS), draw(DENS)  # as _mul_planes makes them: one denominator for the c_x and c_y, one for the c_0
    cxl, cyl, cxu, cyu = (draw(st.lists(SMALL, min_size=cols, max_size=cols)) for _ in range(4))
    c0l, c0u = (draw(st.one_of(st.just([0] * cols), st.lists(SMALL, min_size=cols, max_size=cols))) for _ in range(2))
    planes = [((cxl, cd), (c0l, zd)), ((cyl, cd), (c0l, zd)), ((cxu, cd), (c0u, zd)), ((cyu, cd), (c0u, zd))]
    (cx, cy), const = graph._mul_back(None, pack(lam), planes + [None, None])  # (no floors: exact, never rounded)
    (ox, oy), oconst = old_mul_back(None, lam, planes)
    assert unpack(cx) == ox and unpack(cy) == oy and same(vec(const), oconst)
    scales = draw(st.one_of(st.lists(SMALL, min_size=cols, max_size=cols), SMALL.map(lambda v: [v] * cols)))  # (one scale: a product)
    scale, shift = (scales, draw(DENS)), \
        (draw(st.one_of(st.just([0] * cols), st.lists(SMALL, min_size=cols, max_size=cols))), draw(DENS))
    (coef,), const = graph._affine_back(None, pack(lam), (scale, shift))
    (oc,), oconst = old_affine_back(None, lam, (scale, shift))
    assert unpack(coef) == oc and same(vec(const), oconst)
    other = (_matrix(draw, rows, cols), draw(st.sampled_from([lam[1], 2 * lam[1], 3])))
    assert unpack(graph.add_coef(pack(lam), pack(other))) == old_add_coef(lam, other)


@st.composite
def linear_case(draw):
    """A linear node: dense, or of the thin forms c I + 1 w (square) and 1 w (equal rows), and rows of coefficients."""
    rows, cols = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    kind = draw(st.sampled_from(["dense", "c I + 1 w", "1 w"]))
    num = st.fractions(min_value=-4, max_value=4, max_denominator=2**30)
    w, c = draw(st.lists(num, min_size=cols, max_size=cols)), draw(num)
    if kind == "dense":
        weight = [draw(st.lists(num, min_size=cols, max_size=cols)) for _ in range(rows)]
    elif kind == "1 w":
        weight = [w] * rows
    else:
        rows = cols
        weight = [[v + (c if r == j else 0) for j, v in enumerate(w)] for r in range(rows)]
    bias = draw(st.one_of(st.just([Fraction(0)] * rows), st.lists(num, min_size=rows, max_size=rows)))
    node = graph.Node("n", "linear", ("x",), tuple(map(tuple, weight)), tuple(bias))
    return kind, node, (_matrix(draw, draw(st.integers(0, 4)), rows), draw(DENS))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(linear_case())
def test_linear_back_substitution_equals_the_old(case):
    kind, node, lam = case
    with exact_constants():
        _linear_back_equals_the_old(kind, node, lam)


def _linear_back_equals_the_old(kind, node, lam):
    prepared = graph._linear_prepare(node)
    assert prepared[:3] == old_linear_prepare(node)
    assert prepared[4] is not None or (kind == "dense" or len(node.weight) == 1)  # the thin forms are found
    (coef,), const = graph._linear_back(node, pack(lam), prepared)
    (oc,), oconst = old_linear_back(node, lam, old_linear_prepare(node))
    assert unpack(coef) == oc and same(vec(const), oconst)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.fractions(max_denominator=2**20), min_size=4, max_size=4), st.integers(0, 4),
       st.sampled_from([Fraction(0), Fraction(1, 2**30), -Fraction(1, 2**30), Fraction(1, 3)]), st.sampled_from([1, -1]))
def test_mccormick_plane_checks_equal_the_old(box, which, nudge, side):
    """Planes on a box (empty boxes too): McCormick's four (exact), nudged up or down, or a random one; same verdicts."""
    lx, ux, ly, uy = box
    planes = [(ly, lx, -lx * ly), (uy, ux, -ux * uy), (uy, lx, -lx * uy), (ly, ux, -ux * ly), (box[1], box[2], box[3])]
    c1, c2, c0 = planes[which]
    plane = (c1, c2, c0 + nudge)
    assert curves._plane_holds(*plane, box, side) == old_plane_holds(*plane, box, side)
    assert curves._plane_holds(*plane, sorted(box[:2]) + sorted(box[2:]), side) == old_plane_holds(*plane, sorted(box[:2]) + sorted(box[2:]), side)


@st.composite
def curve_lines(draw):
    """A curve, an interval in its domain (across its breaks or not, a point too), and lines below and above it: tangents,
    chords and random lines, nudged by nothing, by 2^-40 or 2^-26 of their size (the engine's old and new margins), either way."""
    fn = draw(st.sampled_from(sorted(curves.CURVES)))
    c = curves.CURVES[fn]
    lo = Fraction(1, 64) if c.lowest is not None else Fraction(-4)
    l, u = sorted(draw(st.lists(st.fractions(lo, 4, max_denominator=2**12), min_size=2, max_size=2)))
    lines = []
    for side in (1, -1):
        with curves.ctx.workprec(curves.PREC):  # a rational near phi' and phi at a point t of [l, u]
            t = l + (u - l) * draw(st.fractions(0, 1, max_denominator=16))
            a = curves.exact(c.df(curves.ball(t)).mid()) if draw(st.booleans()) else draw(st.fractions(-3, 3, max_denominator=2**24))
            b = curves.exact((c.f(curves.ball(t)) - curves.ball(a) * curves.ball(t)).mid())
        size = abs(b) + abs(a * t) + 1
        lines.append((a, b - side * size * draw(st.sampled_from([0, Fraction(1, 2**40), Fraction(1, 2**26), -Fraction(1, 2**26)])), side))
    return fn, l, u, lines


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(curve_lines())
def test_curve_line_checks_equal_the_old(case):
    """lines_hold (both sides sharing pieces and phi at their ends; gelu's Phi once per point; breaks and minima made once
    per precision) gives the old _line_holds' verdict on each line, alone and as a pair; interval_image the same rationals."""
    fn, l, u, lines = case
    old = [old_line_holds(fn, a, b, l, u, side) for a, b, side in lines]
    assert [curves.lines_hold(fn, [line], l, u) for line in lines] == old
    assert curves.lines_hold(fn, lines, l, u) == all(old)
    assert curves.interval_image(fn, l, u) == old_interval_image(fn, l, u)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(-10**30, 10**30), st.fractions(), st.floats(allow_nan=False, allow_infinity=False)), max_size=8))
def test_exact_vectors_equal_the_old(values):
    assert graph.ints(values) == old_ints(values)


# --------------------------------------------------------------------------- whole back-substitutions


def close(new: list[Fraction], old: list[Fraction]) -> bool:
    """A back-substitution with rounded coefficients (`graph._picked`) against the exact one: each rounding moves a bound
    by at most 2^-ROUND_BITS of its largest term (about 2^-90 relative to the row's terms here), far inside 2^-64 (1 + |old|)."""
    return len(new) == len(old) and all(abs(a - b) <= Fraction(1 + abs(b), 2**64) for a, b in zip(new, old))


@pytest.fixture
def compared(monkeypatch):
    """Every back-substitution the checker runs is run again by the old code; the results must agree (`close`: the new code
    rounds coefficients on values with verified bounds, a sound change of ~2^-90 relative). `compared.rounded` counts the
    matrices it rounded."""
    calls = Calls()
    new, rounding = graph.backsubstitute, graph._round

    def both(g, target, rows, box, relax, where, prepared, bounds=None):
        got = new(g, target, rows, box, relax, where, prepared, bounds)
        assert close(got, old_backsubstitute(g, target, rows, box, relax, where, prepared)), f"{where}: the new back-substitution differs"
        calls.append({node.op for node in ancestors(g, target)})
        return got

    def counted(*args):
        out = rounding(*args)
        calls.rounded.append(out[1] is not None)
        return out

    monkeypatch.setattr(graph, "backsubstitute", both)
    monkeypatch.setattr(graph, "_round", counted)
    return calls


class Calls(list):
    def __init__(self):
        super().__init__()
        self.rounded: list[bool] = []


def _joint(spec_path):
    spec = read_spec(spec_path)
    f = read_model(spec.model.path, spec.model.sha256)
    return joint_graph(f, build_g(spec, f, None), spec.property.outputs), input_box(spec, f)


@pytest.mark.parametrize("op", sorted(OPS))
def test_random_graphs_back_substitute_as_before(op, tmp_path, compared):
    """Random residual graphs around every op (tests/test_graph.py's generator, with an SAE), CROWN and alpha
    certificates: every back-substitution equals the old code's, and the verified bounds are those claimed."""
    for seed in range(2):
        joint, box = _joint(random_graph(tmp_path, seed, op))
        for method in ("crown", "alpha"):
            _, steps = crown(joint, box, method)
            bounds = graph.check_graph_steps(joint, box, steps, "steps")
            assert "d" in bounds
    assert any(op in ops for ops in compared), f"no back-substitution passed through {op}"


@pytest.mark.parametrize("name", ["resmlp_ablate", "resmlp_sae_jumprelu"])
def test_shipped_residual_specs_back_substitute_as_before(name, compared, monkeypatch):
    """Shipped residual specs (LayerNorm, GELU, an SAE; free values; JumpReLU) on their whole box or a corner of it, starting
    from fields too narrow (16 bits): every back-substitution widens them and agrees with the old code."""
    monkeypatch.setattr(graph, "FIELD_BITS", 16)
    widths, inner = [], graph._backsubstitute
    monkeypatch.setattr(graph, "_backsubstitute", lambda *a: widths.append(a[-2]) or inner(*a))
    joint, box = _joint(SPECS / f"{name}.yaml")
    if name == "resmlp_sae_jumprelu":  # a leaf of a split tree: the lower half of every input's range
        box = (list(box[0]), [(lo + up) / 2 for lo, up in zip(*box)])
    _, steps = crown(joint, box)
    graph.check_graph_steps(joint, box, steps, "steps")
    assert len(compared) >= 10 and any("linear" in ops and "gelu" in ops for ops in compared)
    assert any(compared.rounded) and not all(compared.rounded), "no coefficients were rounded (or all were)"
    assert widths[0] == 16 and max(widths) > 16 and widths == sorted(widths)  # (widened within the check, never narrowed)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_merged_rows_back_substitute_as_before(data):
    """x -> linear a -> relu -> linear c (some rows of its weight equal) -> relu -> linear t, random weights and
    lines, rows with repeats: equal rows are merged, and every bound equals the old code's."""
    draw = data.draw
    num = st.fractions(min_value=-3, max_value=3, max_denominator=16)

    def matrix(r, c):
        return tuple(tuple(draw(st.lists(num, min_size=c, max_size=c))) for _ in range(r))

    def vector(n):
        return tuple(draw(st.lists(num, min_size=n, max_size=n)))

    weight = matrix(1, 3) * draw(st.integers(1, 3)) + matrix(draw(st.integers(0, 2)), 3)
    k = len(weight)
    g = graph.make_graph(2, [graph.Node("a", "linear", ("x",), matrix(3, 2), vector(3)), graph.Node("b", "relu", ("a",)),
                             graph.Node("c", "linear", ("b",), weight, vector(k)), graph.Node("e", "relu", ("c",)),
                             graph.Node("t", "linear", ("e",), matrix(2, k), vector(2))], "t")
    box = ([Fraction(-1), Fraction(0)], [Fraction(1), Fraction(1, 2)])

    def line(n):  # any lines: what is tested is that the arithmetic is the same
        return (draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)), 4), (draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n)), 8)

    relax = {"b": (line(3), line(3), None), "e": (line(k), line(k), None)}  # (no floors: exact, never rounded)
    prepared = {n.name: OPS[n.op].prepare(n) for n in g.nodes}
    rows = fmpz_mat([draw(st.lists(st.integers(-2, 2), min_size=2, max_size=2)) for _ in range(draw(st.integers(1, 5)))])
    twice = fmpz_mat([[int(i == j) for j in range(k)] for i in range(k)] * 2)  # each row twice
    for target, r in (("t", rows), ("c", twice), ("e", twice)):
        assert graph.backsubstitute(g, target, r, box, relax, "t", prepared) == old_backsubstitute(g, target, r, box, relax, "t", prepared)


def test_a_claim_beyond_the_derived_bound_is_rejected_with_the_same_message(tmp_path):
    """The claimed-vs-derived message is made only on failure now; it reads as before."""
    joint, box = _joint(random_graph(tmp_path, 3, "gelu"))
    _, steps = crown(joint, box)
    k, step = next((k, s) for k, s in enumerate(steps) if s.get("via") == "linear")
    lo = [str(Fraction(v) + Fraction(1, 10**6)) for v in step["lower"]]
    forged = steps[:k] + [{**step, "lower": lo}] + steps[k + 1:]
    with pytest.raises(Rejected, match=r"element 0: claimed \[.*\] is not implied by the derived \[.*\]") as exc:
        graph.check_graph_steps(joint, box, forged, "steps")
    assert exc.value.step == f"steps[{k}] (bounds, node {step['node']})"


def test_old_and_new_agree_on_a_random_point_box():
    """A box of one point (lower = upper: the box minimum is the value there) and random integer rows."""
    rng = np.random.default_rng(0)
    n = fmpz_mat(4, 3, [int(v) for v in rng.integers(-1000, 1000, size=12)])
    pt = [Fraction(int(v), 7) for v in rng.integers(-50, 50, size=3)]
    box = (old_ints(pt), old_ints(pt))
    assert same(vec(graph._box_lowest(pack((n, 5)), box)), old_free_back(None, (n, 5), box)[1])


# --------------------------------------------------------------------------- rounded coefficients


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_rounded_coefficients_lose_at_most_the_floor(data):
    """`_picked` with a floor: C = C' 2^s + R, 0 <= R < 2^s entrywise, and on every z of the box the rounded coefficients
    plus the constant it adds stay at or below the exact coefficients (min over the box of R/d . z, exact at its corners,
    >= the added constant). Rounding is forced (few bits kept); cases where it cannot (2^s must divide the denominator)
    are exact. Fields just wide enough for the entries (the floor is taken fieldwise on the packed rows)."""
    draw = data.draw
    rows, cols = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    lam = (_matrix(draw, rows, cols), draw(st.sampled_from([1, 3, 2**25, 2**61, 3 * 2**40, 2**200])))
    (ls, sd), _ = _line(draw, cols)
    (us, _), _ = _line(draw, cols)
    lo = draw(st.lists(st.fractions(min_value=-10**6, max_value=10**6, max_denominator=2**40), min_size=cols, max_size=cols))
    up = [v + draw(st.fractions(min_value=0, max_value=10**3, max_denominator=2**10)) for v in lo]
    bits = max((graph.most(lam[0].entries()) * max(graph.most(ls + us), 1)).bit_length(), graph.FIX_BITS + 24)  # (sum_c max(0, -lo_c) < 2^23)
    packed = pack(lam, (bits // 8 + 1) * 8 + 8 * draw(st.integers(0, 2)))  # (room for the sign, and sometimes more)
    pos = graph.positive(packed)
    exact, none = graph._picked(packed, pos, ls, us, sd, None)
    assert none is None and unpack(exact) == (old_signed(lam, ((ls, sd), ([0] * cols, 1)), ((us, sd), ([0] * cols, 1)))[0])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(graph, "ROUND_BITS", draw(st.integers(2, 40)))
        mp.setattr(graph, "MIN_SHIFT", 1)
        capped = draw(st.booleans())
        if not capped:  # (the loss cap off: rounding as coarse as ROUND_BITS says, to test the rest)
            mp.setattr(graph, "LOSS_BITS", -10**9)
        rounded, fix = graph._picked(packed, pos, ls, us, sd, graph._floor(lo, up))
    (c, d), (c2, d2) = unpack(exact), unpack(rounded)
    if fix is None:
        assert (c2, d2) == (c, d)
        return
    s = (d // d2).bit_length() - 1
    assert d == d2 << s and s >= 1
    rest = [int(a) - (int(b) << s) for a, b in zip(c.entries(), c2.entries())]
    assert all(0 <= r < 2**s for r in rest)
    fix = vec(fix)
    added = Fraction(int(fix[0][0]), fix[1])
    assert all(Fraction(int(v), fix[1]) == added for v in fix[0]) and len(fix[0]) == rows and added <= 0
    # the cap: the remainder moves a row by at most 2^s/d sum_c max(|l_c|, |u_c|) (and the constant by less), < 2^-LOSS_BITS
    assert not capped or Fraction(2**s, d) * sum(max(abs(a), abs(b)) for a, b in zip(lo, up)) < Fraction(1, 2**graph.LOSS_BITS)
    assert -added < Fraction(2**s, d) * sum(max(-a, 0) for a in lo) + Fraction(1, 2**graph.FIX_BITS)  # (rounded down to 2^-FIX_BITS)
    for r in range(rows):
        least = sum(min(Fraction(rest[r * cols + j], d) * lo[j], Fraction(rest[r * cols + j], d) * up[j]) for j in range(cols))
        assert least >= added


def test_rounding_keeps_bounds_sound_with_few_bits(tmp_path, monkeypatch):
    """With only 24 bits kept at every rounding (far coarser than ROUND_BITS), at sign splits and where coefficients enter a
    value with verified bounds, every back-substitution of a CROWN check is still a valid bound: it holds at points sampled
    in the box (the joint graph evaluated in balls), and it is within 2^-8 (1 + |exact|) of the exact one (the check itself
    goes on with the exact bounds, as the claims are padded for those)."""
    monkeypatch.setattr(graph, "ROUND_BITS", 24)
    monkeypatch.setattr(graph, "MIN_SHIFT", 1)
    monkeypatch.setattr(graph, "LOSS_BITS", -10**9)  # (no cap on the loss)
    seen, rounded, new, rounding = [], [], graph.backsubstitute, graph._round

    def both(g, target, rows, box, relax, where, prepared, bounds=None):
        got, exact = new(g, target, rows, box, relax, where, prepared, bounds), old_backsubstitute(g, target, rows, box, relax, where, prepared)
        seen.append((target, got, exact))
        return exact

    on, entered = graph._round_on, []

    def entry(lam, name, bounds, const):  # rounding where the coefficients enter a value with verified bounds
        out = on(lam, name, bounds, const)
        entered.append(out[0] is not lam)
        return out

    monkeypatch.setattr(graph, "backsubstitute", both)
    monkeypatch.setattr(graph, "_round", lambda *a: rounded.append(rounding(*a)[1] is not None) or rounding(*a))
    monkeypatch.setattr(graph, "_round_on", entry)
    joint, box = _joint(random_graph(tmp_path, 5, "gelu"))
    _, steps = crown(joint, box)
    assert "d" in graph.check_graph_steps(joint, box, steps, "steps")
    assert any(rounded) and any(entered) and len(seen) >= 3
    for _, got, exact in seen:
        assert all(abs(a - b) <= Fraction(1, 2**8) * (1 + abs(b)) for a, b in zip(got, exact))
    rng = np.random.default_rng(1)
    for _ in range(20):
        values = graph.evaluate(joint, [Fraction(float(rng.uniform(float(l), float(u)))) for l, u in zip(*box)])
        for target, got, _ in seen:
            n = len(values[target])
            for i, v in enumerate(values[target]):
                assert got[i] <= curves.exact(v.lower(), -1) and -got[n + i] >= curves.exact(v.upper(), 1)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_packed_rows_read_back_split_by_sign_and_floor_as_the_integers(data):
    """Rows packed in K-bit fields (`graph.Rows`), entries up to the limit |v| < 2^(K-1): decode gives them back, `positive`
    gives max(v, 0) of each, and `_picked`'s fieldwise floor gives floor(v / 2^s) (Python's floor division)."""
    draw = data.draw
    k = 8 * draw(st.integers(1, 12))
    entry = st.one_of(st.integers(-(2 ** (k - 1)) + 1, 2 ** (k - 1) - 1), st.sampled_from([0, 1, -1, 2 ** (k - 1) - 1, -(2 ** (k - 1)) + 1]))
    rows = graph.Rows(draw(st.integers(0, 6)), k)
    cols = [draw(st.lists(entry, min_size=rows.count, max_size=rows.count)) for _ in range(draw(st.integers(1, 4)))]
    coef = graph.untable(rows, cols, 1)
    assert [rows.decode(x) for x in coef.cols] == cols and coef.mag == graph.most([v for c in cols for v in c])
    assert [rows.decode(x) for x in graph.positive(coef)] == [[max(v, 0) for v in c] for c in cols]
    s = draw(st.integers(1, k - 1))
    with pytest.MonkeyPatch.context() as mp:  # (a floor with s = k - 1 - ROUND_BITS' worth: force it)
        mp.setattr(graph, "ROUND_BITS", coef.mag.bit_length() - s)
        mp.setattr(graph, "MIN_SHIFT", 1)
        mp.setattr(graph, "LOSS_BITS", -10**9)
        rounded, fix = graph._picked(coef, graph.positive(coef), [1] * len(cols), [1] * len(cols), 2**k, (0, 1, 1, 1))
    if fix is not None:
        got = (2**k // rounded.den).bit_length() - 1
        assert [rows.decode(x) for x in rounded.cols] == [[v >> got for v in c] for c in cols]


def test_a_value_too_wide_for_its_fields_is_never_made():
    """A Coef whose bound reaches 2^(K-1) raises Widen (nothing reads fields that may have overflowed); back-substitution
    then starts again with wider fields."""
    rows = graph.Rows(3, 16)
    graph.Coef([ZERO_INT], 1, 2**15 - 1, rows)
    with pytest.raises(graph.Widen):
        graph.Coef([ZERO_INT], 1, 2**15, rows)
    with pytest.raises(graph.Widen):
        graph.add_coef(graph.Coef([ZERO_INT], 1, 2**14, rows), graph.Coef([ZERO_INT], 1, 2**14, rows))


def test_bounds_on_the_entries_hold_in_every_back_substitution(tmp_path, monkeypatch):
    """Every packed value made while checking CROWN certificates (random graphs of several ops, and a shipped residual
    spec) has its entries within its `mag` (fields far wider than needed here, so every field reads back exactly)."""
    monkeypatch.setattr(graph, "FIELD_BITS", 4096)
    made, post = [], graph.Coef.__post_init__

    def check(self):
        post(self)
        made.append(len(self.cols))
        assert all(abs(v) <= self.mag for x in self.cols for v in self.rows.decode(x))
        assert self.outer is None or all(abs(v) <= self.outer[1] for v in self.rows.decode(self.outer[0]))

    monkeypatch.setattr(graph.Coef, "__post_init__", check)
    for joint, box in [_joint(random_graph(tmp_path, 1, op)) for op in ("softmax", "mul", "free", "jumprelu")] + [_joint(SPECS / "resmlp_sae.yaml")]:
        _, steps = crown(joint, box)
        assert "d" in graph.check_graph_steps(joint, box, steps, "steps")
    assert len(made) > 1000 and graph.FIELD_BITS == 4096


def test_rounding_loses_too_little_to_reject_a_transformer_certificate(tmp_path):
    """Transformer campaign seed 2043, case 57 (crown): values near -1e20 upstream made the rounding's correction (the
    remainder times the sum of the value's negative lower bounds) 6e-9 at 96 bits, past the engine's padding, and the
    valid certificate was REJECTED. The loss is now capped at 2^-LOSS_BITS per rounding: CERTIFIED, as before rounding."""
    import sys

    from certify.checker.check import Verdict

    from .conftest import ROOT

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import soundness

    record = soundness.run_transformer_case(np.random.default_rng([2043, 57]), tmp_path, 57, "crown")
    assert record["verdict"] is Verdict.CERTIFIED, record.get("reason")


def test_derived_bounds_do_not_depend_on_the_field_width(monkeypatch):
    """The same back-substitutions from fields too narrow (16 bits: widened on the way) and from wide ones (4096 bits):
    the same exact bounds, so a verdict never depends on the width a check reached (an SAE's wide constants included)."""
    joint, box = _joint(SPECS / "resmlp_sae_saelens.yaml")
    _, steps = crown(joint, box)
    runs, new = [], graph.backsubstitute

    def recorded(*args):
        runs[-1].append(new(*args))
        return runs[-1][-1]

    monkeypatch.setattr(graph, "backsubstitute", recorded)
    for k in (16, 4096):
        monkeypatch.setattr(graph, "FIELD_BITS", k)
        runs.append([])
        graph.check_graph_steps(joint, box, steps, "steps")
    assert runs[0] == runs[1] and len(runs[0]) >= 10


# --------------------------------------------------------------------------- weights read as floats, floors on integers


@pytest.mark.parametrize("name", ["resmlp_sae", "resmlp_low_rank"])
def test_float_rows_are_their_fractions(name):
    """A graph model's weight rows stay floats (`FloatRow`) and read as their exact Fractions: equal and hashing as the
    tuple of them, sliced and pickled as them; the exact forms made from the floats directly (`_linear_prepare`, the
    witness replay's arb balls) equal those made from the Fractions, to the last bit."""
    import pickle
    from dataclasses import replace

    spec = read_spec(SPECS / f"{name}.yaml")
    f = read_model(spec.model.path, spec.model.sha256)
    linear = [n for n in f.nodes if n.op == "linear"]
    assert linear and all(type(r) is graph.FloatRow for n in linear for r in n.weight)
    plain = {n.name: replace(n, weight=tuple(tuple(Fraction(v) for v in r.floats) for r in n.weight)) for n in linear}
    for n in linear:
        row, fr = n.weight[0], plain[n.name].weight[0]
        assert row == fr and fr == tuple(row) and hash(row) == hash(fr) and row[1:3] == fr[1:3] and row[-1] == fr[-1]
        assert all(type(v) is Fraction for v in row) and pickle.loads(pickle.dumps(row)) == row
        assert n == plain[n.name] and graph._linear_prepare(n)[0][1] == graph._linear_prepare(plain[n.name])[0][1]
        assert graph._linear_prepare(n)[:4] == graph._linear_prepare(plain[n.name])[:4]
    x = [Fraction(int(v), 97) for v in np.random.default_rng(0).integers(-97, 97, size=f.in_dim)]
    old = graph.evaluate(replace(f, nodes=tuple(plain.get(n.name, n) for n in f.nodes)), x)
    new = graph.evaluate(f, x)
    assert all(a.mid() == b.mid() and a.rad() == b.rad() for k in new for a, b in zip(new[k], old[k]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.fractions(max_denominator=2**70), st.fractions(min_value=0, max_value=10**4, max_denominator=2**30)), min_size=1, max_size=8))
def test_floor_on_integers(pairs):
    """`_floor` on integers (not in lowest terms) has the values of sum max(0, -l) and sum max(|l|, |u|)."""
    lo = [a for a, _ in pairs]
    up = [a + w for a, w in pairs]
    p, q, m, r = graph._floor(lo, up)
    assert Fraction(p, q) == sum(max(-a, 0) for a in lo) and Fraction(m, r) == sum(max(abs(a), abs(b)) for a, b in zip(lo, up))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_constants_too_wide_for_the_fields_are_rounded_down(data):
    """`dot` where the exact constants would not fit the fields (`_wide_dot`): each row is the exact lam @ vec / den rounded
    down by less than 2^-(LOSS_BITS + 8) (a smaller lower bound), or Widen; with or without positive(lam) (`lowest`)."""
    draw = data.draw
    rows, cols = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    lam = (_matrix(draw, rows, cols), draw(st.sampled_from([2**150, 2**200, 3 * 2**180, 2**40])))
    values = st.integers(-(2**draw(st.integers(1, 400))), 2**400)
    lo, up = (draw(st.lists(values, min_size=cols, max_size=cols)) for _ in range(2))
    lo, up = [min(a, b) for a, b in zip(lo, up)], [max(a, b) for a, b in zip(lo, up)]
    den = draw(st.sampled_from([1, 2**61, 2**130, 5]))
    packed = pack(lam, 8 * draw(st.integers(28, 60)))  # (fields of 224-480 bits: the entries need up to 201)
    n = [[int(v) for v in row] for row in lam[0].tolist()]
    for low in (False, True):
        exact = [Fraction(sum(c * (a if low and c >= 0 else b) for c, a, b in zip(row, lo, up)), lam[1] * den) for row in n]
        try:
            got = graph.lowest(packed, lo, up, den) if low else graph.dot(packed, up, den)
        except graph.Widen:
            continue
        assert all(v < 2**(packed.rows.k - 1) for v in map(abs, vec(got)[0]))
        for g, e in zip((Fraction(v, got.den) for v in vec(got)[0]), exact):
            assert e - Fraction(1, 2**(graph.LOSS_BITS + 8)) < g <= e
