"""Bounds on graph models (UNTRUSTED): the engine's row of each op, CROWN over the joint graph, and
a falsifier. It only proposes: the certificate it writes is re-derived by `certify.checker.graph`.

Each op of `certify.checker.graph.OPS` has one row in `ENGINE` with its float rules:

    eval      numpy (float64) and jax.numpy forward evaluation
    interval  float bounds of the output from bounds of the inputs (padded outward)
    relax     float lines (unary) or planes (mul) valid on the inputs' bounds, made so that the
              exact check accepts them (nudged outward; McCormick constants rounded outward)
    back      one step of back-substitution, as the checker does it, in float64

CROWN: every node gets interval bounds (topological order); every input of a nonlinear node, and
the output d, also gets back-substitution bounds through the relaxations of its ancestors; both are
written as `bounds` steps (the checker intersects them, as the engine does), and each nonlinear node
gets a `relax` step. Claimed bounds are padded outward (1e-9 relative, 1e-10 absolute) so that the
checker's exact derivation stays inside them.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import time
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Callable

import numpy as np

from ..checker.graph import FloatRow, Graph, free_ranges
from ..checker.numbers import rational_str
from . import curves

PAD_REL, PAD_ABS = 1e-9, 1e-10
GRID = 2.0 ** -24  # slopes and plane coefficients are rounded to this grid: the checker's integers stay short
LINE_MARGIN = 2.0 ** -26  # curve lines' intercepts move outward by this share of their terms (bounds/curves.nudge): the
# checker proves a tangent-type line by bisecting towards where it touches, about log2(1/margin) steps; at 2^-40 that
# was ~17 arb evaluations per convex piece and ~15 % of a leaf's check, at 2^-26 ~3 (resmlp_onnx: 6,383 -> 1,101), for bounds ~1e-6 relative looser (issue 16)


def on_grid(v):
    return np.round(np.asarray(v, dtype=np.float64) / GRID) * GRID


@dataclass(frozen=True)
class FloatNode:
    name: str
    op: str
    inputs: tuple[str, ...]
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    scale: np.ndarray | None = None
    shift: np.ndarray | None = None
    threshold: np.ndarray | None = None
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    groups: tuple | None = None  # softmax: a group id per element


_FLOATS: dict = {}  # id(graph) -> (graph, its float nodes): token branch and bound bounds one graph thousands of times


def floats(graph: Graph) -> list[FloatNode]:
    hit = _FLOATS.get(id(graph))
    if hit is not None and hit[0] is graph:
        return list(hit[1])

    def arr(v):
        if v and all(type(r) is FloatRow for r in v):  # a weight read from a float array: its floats
            return np.array([r.floats for r in v])
        return None if v is None else np.array([[float(x) for x in r] for r in v] if v and isinstance(v[0], tuple) else [float(x) for x in v])
    out = [FloatNode(n.name, n.op, n.inputs, arr(n.weight), arr(n.bias), arr(n.scale), arr(n.shift), arr(n.threshold), arr(n.lower), arr(n.upper), n.groups)
           for n in graph.nodes]
    if len(_FLOATS) >= 4:
        _FLOATS.clear()
    _FLOATS[id(graph)] = (graph, out)
    return list(out)


def pad(lo, up):
    return lo - (PAD_REL * np.abs(lo) + PAD_ABS), up + (PAD_REL * np.abs(up) + PAD_ABS)


CANCEL = 2.0 ** -40  # a back-substituted bound sums terms as large as the node's interval bounds (M): its float64 rounding
# is of order terms x 2^-52 x M, however small the result; padded by CANCEL x M (transformer campaign seed 2041, case 169:
# f's and g's logits near 1e10 cancel to 1e-6 in d, and a bound padded relative to 1e-6 was tighter than the exact one)


def pad_linear(lo, up, interval):
    m = CANCEL * np.maximum(np.abs(interval[0]), np.abs(interval[1]))
    return pad(lo - m, up + m)


def _interval_of(steps: list, name: str):
    """The node's interval bounds as its `interval` step claims them (floats)."""
    step = next(s for s in steps if s["kind"] == "bounds" and s["node"] == name and s["via"] == "interval")
    return tuple(np.array([float(Fraction(v)) for v in step[k]]) for k in ("lower", "upper"))


# --------------------------------------------------------------------------- rows


def _relu_lines(l, u):
    """CROWN's lines: upper chord where unstable (slope on the grid, rounded up, and the smallest
    intercept that keeps it above relu at both ends, computed exactly and rounded up); lower slope 1
    where u > -l, else 0 (intercept 0)."""
    unstable = (l < 0) & (u > 0)
    up_s = np.where(unstable, np.ceil(u / np.where(unstable, u - l, 1.0) / GRID) * GRID, (l >= 0).astype(float))
    up_b = np.zeros_like(l)
    for i in np.flatnonzero(unstable):
        a, lo, hi = Fraction(float(up_s[i])), Fraction(float(l[i])), Fraction(float(u[i]))
        up_b[i] = _up(max(-a * lo, hi - a * hi))
    lo_s = np.where(unstable, (u > -l).astype(float), (l >= 0).astype(float))
    return curves.Lines(lo_s, np.zeros_like(l), up_s, up_b)


def _jump_lines(n, l, u):
    """Lines below/above z*[z > t] on [l, u]: slope 1 above the jump, 0 below it; across it, the upper
    slope of the chord (l, 0)-(u, u) and the lower slope 0 or 1 (the larger area under the line). The
    intercepts are the tightest for those slopes over the ends of the two pieces (the checker's points),
    computed exactly and rounded outward."""
    out = np.zeros((4, len(l)))
    for i, (a, b, t) in enumerate(zip(l, u, n.threshold)):
        lo, hi, t = Fraction(float(a)), Fraction(float(b)), Fraction(float(t))
        pts = [(z, Fraction(0)) for z in (lo, min(t, hi)) if lo <= t] + [(z, z) for z in (max(t, lo), hi) if hi > t]
        across = lo <= t < hi
        up_s = float(on_grid(float(hi / (hi - lo)))) if across else float(lo > t)
        cand = [Fraction(s) for s in ((0, 1) if across else (float(lo > t),))]
        low = max(((s, min(y - s * z for z, y in pts)) for s in cand), key=lambda p: p[0] * (lo + hi) / 2 + p[1])
        out[:, i] = float(low[0]), _down(low[1]), up_s, _up(max(y - Fraction(up_s) * z for z, y in pts))
    return curves.Lines(*out)


def _jump_exact(n, bs):
    """The checker's interval rule of jumprelu on the float bounds (exact for them)."""
    from ..checker.graph import _jump_interval

    (lo, up), = bs
    exact = FloatNode(n.name, n.op, n.inputs, threshold=[Fraction(float(t)) for t in n.threshold])
    return _jump_interval(exact, [([Fraction(float(v)) for v in lo], [Fraction(float(v)) for v in up])])


def _down(q: Fraction) -> float:
    x = float(q)
    return x if Fraction(x) <= q else math.nextafter(x, -math.inf)


def _up(q: Fraction) -> float:
    x = float(q)
    return x if Fraction(x) >= q else math.nextafter(x, math.inf)


MUL_RULE = ["weights"]  # which McCormick planes `_mccormick` takes (see there); `mul_rule` sets it for a block


@contextlib.contextmanager
def mul_rule(rule: str):
    """McCormick's plane choice inside the block: "weights" (the default: "x_low" on elements whose first factor
    lies in [0, 1], "mid" elsewhere), "mid" (the mean of McCormick's two planes per side: slopes at the box's
    centre, y_mid x + x_mid y; deterministic, where "centre" decides a tie by float rounding, which made CROWN's
    bound jump by up to 3 % on the residual specs when a line moved by 1e-10), "centre" or "x_low" (the planes exact where the first factor is at its
    lower bound: for attention pattern x value products, the value's range is not paid where the pattern is small,
    and the pattern gets the value's bound as its coefficient, so that a softmax row's sum-to-one applies).
    Max-of-K V = 16, softmax form: CROWN 138.3 (centre) -> 39.03 (weights) on all sequences; on a box of radius
    1/20 around a one-hot sequence 94.30 -> 51.27 (attained 50.48)."""
    old, MUL_RULE[0] = MUL_RULE[0], rule
    try:
        yield
    finally:
        MUL_RULE[0] = old


def _mccormick(bx, by):
    """Per element, a lower plane (c_x, c_y, c_0) below x*y and an upper plane above it on the box:
    the mean of McCormick's two slopes (y_mid x + x_mid y; under `mul_rule("centre")` one of lower y_l x + x_l y or
    y_u x + x_u y, upper y_u x + x_l y or y_l x + x_u y, whichever is tighter at the centre, where they tie up to
    rounding; under `mul_rule("x_low")` the first of each: exact where x = x_l), rounded to the grid; then the tightest c_0 for them, which
    for the bilinear x*y is the extreme of x*y - c_x x - c_y y over the four corners. Vectorised in
    float64: each corner's gap is moved outward by a bound on its rounding error (three products and
    two sums, each within 2^-53 relative: 8 * 2^-53 of the terms' magnitude, plus the smallest normal),
    so the planes hold exactly (the checker re-proves them at the corners in rationals)."""
    (lx, ux), (ly, uy) = (np.asarray(v, dtype=np.float64) for v in bx), (np.asarray(v, dtype=np.float64) for v in by)
    corners = [(x, y) for x in (lx, ux) for y in (ly, uy)]
    mx, my = (lx + ux) / 2, (ly + uy) / 2

    def plane(cx, cy, side):
        cx, cy = on_grid(cx), on_grid(cy)
        gaps = []
        for x, y in corners:
            mag = np.abs(x * y) + np.abs(cx * x) + np.abs(cy * y)
            gaps.append(x * y - cx * x - cy * y - side * (8 * 2.0 ** -53 * mag + np.finfo(float).tiny))
        c0 = np.min(gaps, axis=0) if side > 0 else np.max(gaps, axis=0)
        return np.stack([cx, cy, c0], axis=1)

    def pick(p, q, better):
        vp, vq = p[:, 0] * mx + p[:, 1] * my + p[:, 2], q[:, 0] * mx + q[:, 1] * my + q[:, 2]
        return np.where((better(vp, vq) | (vp == vq))[:, None], p, q)

    if MUL_RULE[0] == "x_low":
        return plane(ly, lx, 1), plane(uy, lx, -1)
    if MUL_RULE[0] == "centre":
        lower = pick(plane(ly, lx, 1), plane(uy, ux, 1), np.greater)
        upper = pick(plane(uy, lx, -1), plane(ly, ux, -1), np.less)
    else:  # the mean of the two planes is below (above) their max (min), so below (above) x*y; the exact c_0 is recomputed
        lower, upper = plane(my, mx, 1), plane(my, mx, -1)
    if MUL_RULE[0] == "weights":  # x_low where the first factor is a weight in [0, 1] (an attention pattern), else the above
        w = ((lx >= -1e-6) & (ux <= 1 + 1e-6))[:, None]
        lower, upper = np.where(w, plane(ly, lx, 1), lower), np.where(w, plane(uy, lx, -1), upper)
    return lower, upper


def _curve_relax(fn, l, u):
    """The least-area slopes (bounds/curves.py), rounded to the grid; then the tightest intercepts for them."""
    best = curves.best_slopes(fn, l, u)
    return curves.relax(fn, l, u, lower_slope=on_grid(best[0]), upper_slope=on_grid(best[1]), margin=LINE_MARGIN)


def _xp(*arrays):
    """jax.numpy where an array is a JAX array or tracer (alpha-CROWN differentiates back-substitution), else numpy."""
    import jax

    return __import__("jax.numpy").numpy if any(isinstance(a, jax.Array) for a in arrays) else np


def _unary_back(node, lam, r):
    """Lines per element (n,) or per row (rows, n): the lower line where the coefficient is >= 0."""
    xp, pos = _xp(lam, r.lower_slope, r.upper_slope, r.lower_intercept), lam >= 0
    return ([xp.where(pos, lam * r.lower_slope, lam * r.upper_slope)],
            xp.where(pos, lam * r.lower_intercept, lam * r.upper_intercept).sum(1))


def _mul_back(node, lam, planes):
    lower, upper = planes
    xp, pos = _xp(lam), lam >= 0
    pick = [xp.where(pos, lam * lower[:, k], lam * upper[:, k]) for k in range(3)]
    return [pick[0], pick[1]], pick[2].sum(1)


OPEN_AT_ZERO = {"reciprocal": True, "rsqrt": True, "sqrt": False}  # curves defined on (0, inf) / [0, inf), as the checker's


def _curve_interval(fn, n, l, u):
    """The curve's float interval rule; an input range that leaves the curve's domain (a reciprocal's or
    rsqrt's reaching 0, e.g. a sum of exps so small that the outward padding crosses 0) is refused like a float
    overflow (OverflowError: no certificate), instead of a certificate that the checker must reject."""
    if fn in OPEN_AT_ZERO and np.any((l <= 0) if OPEN_AT_ZERO[fn] else (l < 0)):
        raise OverflowError(f"node {n.name!r}: {fn} of an input range reaching {float(np.min(l)):.3g} on this domain "
                            f"(it needs {'positive' if OPEN_AT_ZERO[fn] else 'non-negative'} values)")
    return curves.interval(fn, l, u)


def _curve_row(fn):
    import jax.numpy as jnp
    from jax.scipy.special import erf as jerf

    jfn = {"gelu": lambda x: 0.5 * x * (1 + jerf(x / np.sqrt(2))), "exp": jnp.exp, "erf": jerf, "tanh": jnp.tanh,
           "sigmoid": lambda x: 1 / (1 + jnp.exp(-x)), "square": jnp.square, "rsqrt": lambda x: 1 / jnp.sqrt(x),
           "reciprocal": lambda x: 1 / x, "sqrt": jnp.sqrt}[fn]
    from scipy.special import erf, expit

    npfn = {"gelu": lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2))), "exp": np.exp, "erf": erf, "tanh": np.tanh, "sigmoid": expit,
            "square": np.square, "rsqrt": lambda x: 1 / np.sqrt(x), "reciprocal": lambda x: 1 / x, "sqrt": np.sqrt}[fn]
    return Row(lambda n, xs: npfn(xs[0]), lambda n, xs: jfn(xs[0]),
               lambda n, bs: _curve_interval(fn, n, *bs[0]), lambda n, bs: _curve_relax(fn, *bs[0]), _unary_back,
               FreeSlopes(lambda n, bs, base: _curve_data(fn, *bs[0], base), lambda t, d: _curve_free_lines(fn, t, d),
                          lambda t, d: _curve_final(fn, t, d)))


# Free slopes (alpha-CROWN). A unary relaxation's slopes are lo + t*span, t in [0, 1] per element (and per
# row of a back-substitution, or shared by its rows), for the lower line and the upper line: relu's lower
# slope in [0, 1] on an unstable element (its upper line is the chord: no freedom), a curve's slopes over
# the range of phi' on [l, u] (every slope has a valid line: bounds/curves.py takes the tightest intercept
# for it). `data` holds one relaxation's arrays; `lines` gives the lines for parameters t with, per line,
# the touching point x* (d intercept / d slope = -x*, the envelope theorem) and d slope / d t: what the
# gradient needs; `final` is the line the certificate gets: slopes on the grid, the tightest intercepts
# nudged outward.


@dataclass(frozen=True)
class FreeSlopes:
    data: Callable  # (node, [(lo, up)], base relaxation) -> dict of arrays, with "t0": (lower t, upper t) per element
    lines: Callable  # ((t_lower, t_upper) of shape (rows or 1, n), data) -> (Lines, (x*_lower, x*_upper), (span_lower, span_upper))
    final: Callable  # ((t_lower, t_upper) of shape (n,), data) -> Lines on the grid, nudged (what the checker gets)


def _relu_data(l, u, base):
    unstable = (l < 0) & (u > 0)
    return {"unstable": unstable, "base": np.asarray(base.lower_slope, dtype=float), "up_s": base.upper_slope,
            "up_b": base.upper_intercept, "t0": (np.asarray(base.lower_slope, dtype=float), np.zeros_like(l))}


def _relu_free_lines(t, d):
    slope = np.where(d["unstable"], np.clip(t[0], 0.0, 1.0), d["base"])
    zero = np.zeros_like(slope)
    return (curves.Lines(slope, zero, np.broadcast_to(d["up_s"], slope.shape), np.broadcast_to(d["up_b"], slope.shape)),
            (zero, zero), (d["unstable"].astype(float), zero))


def _relu_final(t, d):
    slope = np.where(d["unstable"], on_grid(np.clip(t[0], 0.0, 1.0)), d["base"])
    return curves.Lines(slope, np.zeros_like(slope), np.asarray(d["up_s"], dtype=float), np.asarray(d["up_b"], dtype=float))


def _curve_data(fn, l, u, base):
    """phi' ranges over [lo, lo + span] on [l, u]: its extremes are at the ends or the inflection points
    (phi' is monotone on each curvature piece); a non-finite one (sqrt' at 0) is replaced by the chord's slope."""
    c = curves.CURVES[fn]
    with np.errstate(all="ignore"):
        d = np.stack([c.df(x, curves.NP) for x in [l, u] + [np.clip(b, l, u) for b in c.breaks]])
    d = np.where(np.isfinite(d), d, curves.chord_slope(fn, l, u))
    lo = np.minimum(d.min(0), np.minimum(base.lower_slope, base.upper_slope))
    hi = np.maximum(d.max(0), np.maximum(base.lower_slope, base.upper_slope))
    span = np.where(hi > lo, hi - lo, 0.0)
    safe = np.where(span > 0, span, 1.0)
    return {"l": l, "u": u, "lo": lo, "span": span, "t0": ((base.lower_slope - lo) / safe, (base.upper_slope - lo) / safe)}


def _touch(fn, a, l, u, side):
    """(the tightest intercept for slope a, the point x* where the line touches): bounds/curves.intercept's
    candidates (the ends and where phi' = a on each side-convex piece), keeping the argument."""
    c = curves.CURVES[fn]
    a, l, u = np.broadcast_arrays(a, l, u)
    xs = [l, u] + [curves._solve(c.df, a, p, q, curves.SCORE_BISECTIONS) for (p, q), s in zip(curves._pieces(c, l, u), c.shape) if s == side]
    with np.errstate(all="ignore"):
        vals = np.stack([c.f(x, curves.NP) - a * x for x in xs])
    k = np.argmin(side * np.where(np.isnan(vals), side * np.inf, vals), axis=0)
    pick = lambda arr: np.take_along_axis(arr, k[None], 0)[0]  # noqa: E731
    return pick(vals), pick(np.stack(xs))


def _curve_free_lines(fn, t, d):
    a, b = (d["lo"] + np.clip(v, 0.0, 1.0) * d["span"] for v in t)
    (ai, ax), (bi, bx) = _touch(fn, a, d["l"], d["u"], 1), _touch(fn, b, d["l"], d["u"], -1)
    return curves.Lines(a, ai, b, bi), (ax, bx), (d["span"], d["span"])


def _curve_final(fn, t, d):
    a, b = (on_grid(d["lo"] + np.clip(v, 0.0, 1.0) * d["span"]) for v in t)
    return curves.relax(fn, d["l"], d["u"], lower_slope=a, upper_slope=b, margin=LINE_MARGIN)


@dataclass(frozen=True)
class Row:
    eval: Callable  # (node, numpy inputs) -> numpy output (float64)
    jeval: Callable  # (node, jax inputs) -> jax output
    interval: Callable  # (node, [(lo, up)]) -> (lo, up), sound in floats
    relax: Callable | None  # (node, [(lo, up)]) -> lines or planes; None: a linear op
    back: Callable  # (node, lam (rows x out), relaxation) -> ([lam per input], constants per row)
    free: FreeSlopes | None = None  # free slopes for alpha-CROWN (None: the relaxation has none, e.g. McCormick)


def _linear_interval(n, bs):
    (lo, up), = bs
    pos, neg = np.maximum(n.weight, 0), np.minimum(n.weight, 0)
    k = (n.weight.shape[1] + 2) * 2.0 ** -52  # the sums' float rounding, relative to their terms' magnitude (wide exp ranges)
    err_l, err_u = (k * (pos @ np.abs(a) - neg @ np.abs(b) + np.abs(n.bias)) for a, b in ((lo, up), (up, lo)))
    return pad(pos @ lo + neg @ up + n.bias - err_l, pos @ up + neg @ lo + n.bias + err_u)


def _affine_interval(n, bs):
    (lo, up), = bs
    a, b = n.scale * lo + n.shift, n.scale * up + n.shift
    return pad(np.minimum(a, b), np.maximum(a, b))


def _mul_interval(n, bs):
    (lx, ux), (ly, uy) = bs
    c = np.stack([lx * ly, lx * uy, ux * ly, ux * uy])
    return pad(c.min(0), c.max(0))


ENGINE: dict[str, Row] = {
    "linear": Row(lambda n, xs: n.weight @ xs[0] + n.bias, lambda n, xs: xs[0] @ n.weight.T + n.bias, _linear_interval, None,
                  lambda n, lam, r: ([lam @ n.weight], lam @ n.bias)),
    "affine": Row(lambda n, xs: n.scale * xs[0] + n.shift, lambda n, xs: n.scale * xs[0] + n.shift, _affine_interval, None,
                  lambda n, lam, r: ([lam * n.scale], lam @ n.shift)),
    "add": Row(lambda n, xs: xs[0] + xs[1], lambda n, xs: xs[0] + xs[1],
               lambda n, bs: pad(bs[0][0] + bs[1][0], bs[0][1] + bs[1][1]), None, lambda n, lam, r: ([lam, lam], np.zeros(len(lam)))),
    "sub": Row(lambda n, xs: xs[0] - xs[1], lambda n, xs: xs[0] - xs[1],
               lambda n, bs: pad(bs[0][0] - bs[1][1], bs[0][1] - bs[1][0]), None, lambda n, lam, r: ([lam, -lam], np.zeros(len(lam)))),
    "mul": Row(lambda n, xs: xs[0] * xs[1], lambda n, xs: xs[0] * xs[1], _mul_interval, lambda n, bs: _mccormick(*bs), _mul_back),
    "relu": Row(lambda n, xs: np.maximum(xs[0], 0), lambda n, xs: __import__("jax").numpy.maximum(xs[0], 0),
                lambda n, bs: (np.maximum(bs[0][0], 0), np.maximum(bs[0][1], 0)), lambda n, bs: _relu_lines(*bs[0]), _unary_back,
                FreeSlopes(lambda n, bs, base: _relu_data(*bs[0], base), _relu_free_lines, _relu_final)),
}
ENGINE["jumprelu"] = Row(lambda n, xs: np.where(xs[0] > n.threshold, xs[0], 0.0),
                         lambda n, xs: __import__("jax").numpy.where(xs[0] > n.threshold, xs[0], 0.0),
                         lambda n, bs: pad(*(np.array([float(v) for v in b]) for b in _jump_exact(n, bs))),
                         lambda n, bs: _jump_lines(n, *bs[0]), _unary_back)
ENGINE["free"] = Row(lambda n, xs: ((xs[0] * 0).T + n.lower).T, lambda n, xs: ((xs[0] * 0).T + n.lower).T,
                     lambda n, bs: pad(n.lower, n.upper), None,
                     lambda n, lam, r: ([lam * 0], (lam.clip(min=0) * n.lower + lam.clip(max=0) * n.upper).sum(1)))
ENGINE.update({fn: _curve_row(fn) for fn in ("gelu", "exp", "erf", "tanh", "sigmoid", "square", "rsqrt", "reciprocal", "sqrt")})


# softmax over groups (checker/graph.py's `softmax` row): y_j = 1 / (1 + sum_{pairs (j, l)} exp(s_l - s_j)); its relaxation
# is a line below 1/D_j and lines below/above exp per pair; back-substitution first shifts each group's coefficients by their
# least one (the outputs of a group sum to 1), as the checker does.


@dataclass(frozen=True)
class SoftmaxRelax:
    rho: np.ndarray  # the line below 1/D_j: slope and intercept per element
    tau: np.ndarray
    exp: curves.Lines  # per pair
    members: list
    to_j: np.ndarray  # (pairs, m): 1 at the pair's j
    to_s: np.ndarray  # (pairs, m): +1 at l, -1 at j


def _sm_groups(n):
    members = {}
    for j, g in enumerate(n.groups):
        members.setdefault(g, []).append(j)
    pairs = [(j, l) for j, g in enumerate(n.groups) for l in members[g] if l != j]
    m = len(n.groups)
    to_j, to_s = np.zeros((len(pairs), m)), np.zeros((len(pairs), m))
    for p, (j, l) in enumerate(pairs):
        to_j[p, j], to_s[p, l], to_s[p, j] = 1.0, 1.0, -1.0
    return list(members.values()), np.array([j for j, _ in pairs], dtype=int), np.array([l for _, l in pairs], dtype=int), to_j, to_s


def _sm_eval(n, s, xp):
    """Batch-first (..., m): 1 / (1 + sum_l exp(s_l - s_j)) (an overflowing exp gives weight 0, as it should)."""
    _, pj, pl, to_j, _ = _sm_groups(n)
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + xp.exp(s[..., pl] - s[..., pj]) @ to_j)


def _sm_interval(n, bs):
    (lo, up), = bs
    _, pj, pl, to_j, _ = _sm_groups(n)
    with np.errstate(over="ignore"):
        d_lo, d_hi = 1.0 + np.exp(lo[pl] - up[pj]) @ to_j, 1.0 + np.exp(up[pl] - lo[pj]) @ to_j
    return pad(1.0 / (d_hi * (1 + 1e-12)), 1.0 / (d_lo * (1 - 1e-12)))


def _sm_relax(n, bs):
    (lo, up), = bs
    members, pj, pl, to_j, to_s = _sm_groups(n)
    a, b = pad(lo[pl] - up[pj], up[pl] - lo[pj])  # the pairs' difference ranges, outward of the checker's exact ones
    with np.errstate(over="ignore"):
        d_lo, d_hi = (1.0 + np.exp(a) @ to_j) * (1 - 1e-9), (1.0 + np.exp(b) @ to_j) * (1 + 1e-9)
    if not (np.all(np.isfinite(d_hi)) and np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise OverflowError(f"node {n.name!r}: exp of its score differences overflows on this domain")
    e = _curve_relax("exp", a, b) if len(pj) else curves.Lines(*(np.zeros(0),) * 4)
    r = _curve_relax("reciprocal", d_lo, d_hi)
    return SoftmaxRelax(np.asarray(r.lower_slope, dtype=float), np.asarray(r.lower_intercept, dtype=float), e, members, to_j, to_s)


def _sm_back(n, lam, r):
    mu = np.zeros_like(lam)
    for g in r.members:
        mu[:, g] = lam[:, g].min(1, keepdims=True)
    shifted = lam - mu  # >= 0: the lower line of 1/D, then exp's lines by the sign of kappa
    const = sum(lam[:, g].min(1) for g in r.members) + shifted @ r.tau
    kappa = shifted * r.rho
    const = const + kappa.sum(1)
    ke = kappa @ r.to_j.T
    pos = ke >= 0
    coef = np.where(pos, ke * r.exp.lower_slope, ke * r.exp.upper_slope)
    const = const + np.where(pos, ke * r.exp.lower_intercept, ke * r.exp.upper_intercept).sum(1)
    return [coef @ r.to_s], const


ENGINE["softmax"] = Row(lambda n, xs: _sm_eval(n, np.asarray(xs[0]).T, np).T, lambda n, xs: _sm_eval(n, xs[0], _xp(xs[0])),
                        _sm_interval, _sm_relax, _sm_back)


# --------------------------------------------------------------------------- evaluation, CROWN, falsifier


def evaluate(nodes: list[FloatNode], x: np.ndarray, out: str = "d") -> np.ndarray:
    values = {"x": x}
    for n in nodes:
        values[n.name] = ENGINE[n.op].eval(n, [values[s] for s in n.inputs])
    return values[out]


def _ancestors(nodes, target):
    need, out = {target}, []
    for n in reversed(nodes):
        if n.name in need:
            out.append(n)
            need.update(n.inputs)
    return out


def backsubstitute(nodes, target, lam, box, relax, with_x: bool = False, free: dict | None = None):
    """Lower bounds of lam @ value(target) over the box, through the relaxations (float64; JAX where lam or
    a relaxation is traced, for alpha-CROWN). with_x: (bounds, the coefficients on x). free: a dict that gets
    the coefficients on each free node."""
    coef, const = {target: lam}, np.zeros(len(lam))
    for n in _ancestors(nodes, target):
        c = coef.pop(n.name, None)
        if c is None:
            continue
        if free is not None and n.op == "free":
            free[n.name] = c
        parts, k = ENGINE[n.op].back(n, c, relax.get(n.name))
        const = const + k
        for s, part in zip(n.inputs, parts):
            coef[s] = coef[s] + part if s in coef else part
    c = coef.pop("x", None)
    if c is not None:  # a token domain (bounds/tokens.py) is concretised per position over its allowed tokens
        const = const + (box.lowest(c) if hasattr(box, "lowest") else _xp(c).where(c >= 0, c * box[0], c * box[1]).sum(1))
    return (const, c) if with_x else const


def _q(values) -> list[str]:
    return [rational_str(Fraction(float(v))) for v in values]


def crown(graph: Graph, box, method: str = "crown") -> tuple[float, list[dict]]:
    """(bound on max_i |d_i| over the box, certificate steps). `method` interval: interval steps only."""
    st = crown_state(graph, box, method)
    return st.bound, st.steps


@dataclass
class State:
    """What CROWN verified on a box, for alpha-CROWN and branch and bound to build on."""

    nodes: list
    output: str
    box: tuple  # float (lower, upper) of x, or a token domain
    bounds: dict  # node -> (lower, upper) float arrays, as claimed in `steps`
    relax: dict  # node -> relaxation, as written in `steps`
    steps: list

    @property
    def bound(self) -> float:
        l, u = self.bounds[self.output]
        return float(max(np.max(-l), np.max(u)))


def _relax_step(n, r) -> dict:
    if n.op == "mul":
        return {"kind": "relax", "node": n.name, "lower": [_q(p) for p in r[0]], "upper": [_q(p) for p in r[1]]}
    if n.op == "softmax":
        return {"kind": "relax", "node": n.name, "lower_slope": _q(r.rho), "lower_intercept": _q(r.tau),
                **{f"exp_{k}": _q(getattr(r.exp, k)) for k in ("lower_slope", "lower_intercept", "upper_slope", "upper_intercept")}}
    return {"kind": "relax", "node": n.name, **{k: _q(getattr(r, k)) for k in ("lower_slope", "lower_intercept", "upper_slope", "upper_intercept")}}


def crown_state(graph: Graph, box, method: str = "crown", per_row: bool = False, nodes: list | None = None) -> State:
    """CROWN over the joint graph: interval bounds for every node, relaxations, and back-substitution
    bounds for the inputs of nonlinear nodes and the output, written only where they tighten an element
    (the checker re-derives each written step: one that tightens nothing costs it a back-substitution).
    `method` alpha: those back-substitution bounds are alpha-CROWN's (`Alpha`, slopes shared by a node's
    rows; `per_row`: the output's rows get their own)."""
    from .tokens import as_float

    nodes = floats(graph) if nodes is None else nodes
    lo, up = (np.array([float(v) for v in b]) for b in box)
    fbox = as_float(box) or (lo, up)  # a token domain keeps its structure (exact concretisation per position)
    bounds, relax, steps, base = {"x": (lo, up)}, {}, [], {}
    needed = {s for n in nodes if ENGINE[n.op].relax is not None for s in n.inputs} | {graph.output}
    for n in nodes:  # per node: interval bounds, its relaxation (nonlinear), then back-substitution bounds (if needed)
        row = ENGINE[n.op]
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused just below, not warned about
            l, u = row.interval(n, [bounds[s] for s in n.inputs])
        if not (np.all(np.isfinite(l)) and np.all(np.isfinite(u))):
            raise OverflowError(f"node {n.name!r}: its float64 interval bounds overflow on this domain (exp or a product of wide ranges)")
        steps.append({"kind": "bounds", "node": n.name, "via": "interval", "lower": _q(l), "upper": _q(u)})
        if row.relax is not None and method != "interval":
            r = row.relax(n, [bounds[s] for s in n.inputs])
            relax[n.name] = base[n.name] = r
            steps.append(_relax_step(n, r))
        if method != "interval" and n.name in needed:
            eye = np.eye(len(l))
            cl, cu = pad_linear(backsubstitute(nodes, n.name, eye, fbox, relax), -backsubstitute(nodes, n.name, -eye, fbox, relax), (l, u))
            if method == "alpha" and not hasattr(fbox, "lowest"):  # alpha starts from CROWN's lines: never looser
                bounds[n.name] = (l, u)
                a = Alpha(graph, per_row and n.name == graph.output, target=n.name, nodes=nodes)
                st = a.improve(State(nodes, n.name, fbox, bounds, relax, steps), start=(cl, cu), base=base)
                bounds, relax, steps = st.bounds, st.relax, st.steps
                l, u = bounds[n.name]
            elif np.any(cl > l) or np.any(cu < u) or n.name == graph.output:
                steps.append({"kind": "bounds", "node": n.name, "via": "linear", "lower": _q(cl), "upper": _q(cu)})
                l, u = np.maximum(l, cl), np.minimum(u, cu)
        bounds[n.name] = (l, u)
    return State(nodes, graph.output, fbox, bounds, relax, steps)


def falsify(graph: Graph, box, *, starts: int = 64, steps: int = 100, seed: int = 0) -> np.ndarray:
    """Projected gradient ascent on max_i |d_i(x)| from many starts (JAX); the best input found. A graph
    with free nodes (`fill: free`) is searched over its free values too: the point is then the input
    followed by the free values (in node order), as a witness gives them (checker.graph.free_ranges)."""
    import jax
    import jax.numpy as jnp

    from ..checker.graph import free_ranges

    nodes, flo, fup = floats(graph), *free_ranges(graph)
    lower, upper = (jnp.asarray([float(v) for v in list(b) + list(f)]) for b, f in zip(box, (flo, fup)))
    width, cuts = upper - lower, {}
    at = graph.in_dim
    for n in nodes:
        if n.op == "free":
            cuts[n.name], at = (at, at + len(n.lower)), at + len(n.lower)

    def objective(z):
        values = {"x": z[:graph.in_dim]}
        for n in nodes:
            values[n.name] = z[slice(*cuts[n.name])] if n.name in cuts else ENGINE[n.op].jeval(n, [values[s] for s in n.inputs])
        return jnp.max(jnp.abs(values[graph.output]))

    key1, key2 = jax.random.split(jax.random.PRNGKey(seed))
    x = jnp.concatenate([((lower + upper) / 2)[None], lower + width * jax.random.uniform(key1, (starts, len(lower)))])
    x = jnp.concatenate([x, jnp.where(jax.random.bernoulli(key2, 0.5, (starts // 4, len(lower))), upper, lower)])
    value, grad = jax.jit(jax.vmap(objective)), jax.jit(jax.vmap(jax.grad(objective)))
    best_x, best_v = x, value(x)
    for i in range(steps):
        x = jnp.clip(x + (width * 0.25 * (1 - i / steps) + width * 1e-3) * jnp.sign(grad(x)), lower, upper)
        v = value(x)
        better = v > best_v
        best_x, best_v = jnp.where(better[:, None], x, best_x), jnp.where(better, v, best_v)
    return np.asarray(best_x[int(jnp.argmax(best_v))], dtype=np.float64)


# --------------------------------------------------------------------------- alpha-CROWN and branch and bound

ALPHA_ITERS, ALPHA_LR = 40, 0.1


def _backward(nodes, output, lam, box, relax):
    """backsubstitute, keeping every node's coefficients: (row lower bounds, {node: coefficients}, those on x)."""
    coef, const, seen = {output: lam}, np.zeros(len(lam)), {}
    for n in _ancestors(nodes, output):
        c = coef.pop(n.name, None)
        if c is None:
            continue
        seen[n.name] = c
        parts, k = ENGINE[n.op].back(n, c, relax.get(n.name))
        const = const + k
        for s, part in zip(n.inputs, parts):
            coef[s] = coef[s] + part if s in coef else part
    c = coef.pop("x", None)
    if c is not None:
        const = const + np.where(c >= 0, c * box[0], c * box[1]).sum(1)
    return const, seen, c


def _primal(nodes, box, relax, seen, cx, rows):
    """The point of the relaxation where each row's bound is attained: x at the box corner its
    coefficients pick, every nonlinear node on the line (plane) its coefficient's sign picks. A row's
    bound is linear in each line's slope and intercept with coefficient c * (that node's input value there),
    which makes the gradient of every row's bound without autodiff: no JAX program to compile per graph."""
    z = {"x": np.broadcast_to(box[0], (rows, len(box[0]))) if cx is None else np.where(cx >= 0, box[0], box[1])}
    for n in nodes:
        if n.name not in seen and n.name != "x":
            if not all(s in z for s in n.inputs):
                continue
        xs = [z[s] for s in n.inputs]
        r, c = relax.get(n.name), seen.get(n.name)
        if n.op == "free":  # a free value: the end of its range that its coefficient's sign picks
            z[n.name] = np.where(c >= 0, n.lower, n.upper) if c is not None else np.broadcast_to(n.lower, (rows, len(n.lower)))
        elif ENGINE[n.op].relax is None:
            z[n.name] = np.asarray(ENGINE[n.op].jeval(n, xs))
        elif c is None:
            continue
        elif n.op == "softmax":  # its exact value: only the gradient's estimate of the input, never a bound
            z[n.name] = np.asarray(ENGINE[n.op].jeval(n, xs))
        elif n.op == "mul":
            lo, up = r
            z[n.name] = np.where(c >= 0, lo[:, 0] * xs[0] + lo[:, 1] * xs[1] + lo[:, 2], up[:, 0] * xs[0] + up[:, 1] * xs[1] + up[:, 2])
        else:
            z[n.name] = np.where(c >= 0, r.lower_slope * xs[0] + r.lower_intercept, r.upper_slope * xs[0] + r.upper_intercept)
    return z


class Alpha:
    """alpha-CROWN on one node's bounds (the output d by default): the free slopes (`FreeSlopes`) of its
    nonlinear ancestors are optimised with Adam (numpy) on the back-substitution bounds of the node,
    either shared by all of its rows (the objective is a soft maximum of the row bounds: the claim on d is
    their maximum) or one set per row (`per_row`; every row whose current bound exceeds the best row bound
    reached gets its own relax and bounds steps). Either way the certificate holds relax steps (checked by
    the unchanged checker) and a bounds step via linear; the state's relaxations become the last written
    ones, as the checker's do."""

    def __init__(self, graph: Graph, per_row: bool = False, iters: int = ALPHA_ITERS, target: str | None = None,
                 nodes: list | None = None):
        self.nodes = floats(graph) if nodes is None else nodes
        self.output, self.per_row, self.iters = target or graph.output, per_row, iters
        names = {n.name for n in _ancestors(self.nodes, self.output)}
        self.free = [n for n in self.nodes if n.name in names and ENGINE[n.op].free is not None]
        width = graph.dims[self.output]
        self.lam = np.concatenate([np.eye(width), -np.eye(width)])

    def _bounds(self, st, relax, fdata, params):
        """Row lower bounds for parameters t, and their gradients (d bound_r / d t, per row)."""
        relax, touch, span = dict(relax), {}, {}
        for n in self.free:
            relax[n.name], touch[n.name], span[n.name] = ENGINE[n.op].free.lines(params[n.name], fdata[n.name])
        b, seen, cx = _backward(self.nodes, self.output, self.lam, st.box, relax)
        z = _primal(self.nodes, st.box, relax, seen, cx, len(self.lam))
        grads = {}
        for n in self.free:
            c = seen.get(n.name, np.zeros((len(self.lam), 1)))
            zin = z.get(n.inputs[0], 0.0)
            (xl, xu), (sl, su) = touch[n.name], span[n.name]
            grads[n.name] = (np.where(c >= 0, c, 0.0) * (zin - xl) * sl, np.where(c < 0, c, 0.0) * (zin - xu) * su)
        return b, grads

    def improve(self, st: State, start=None, base: dict | None = None) -> State:
        """A state on a box, with alpha-CROWN's bounds of the node added (relax and bounds steps).
        `start`: CROWN's bounds of the node with the state's lines, not yet written: they are written
        (before alpha's relax steps replace those lines) where they are tighter on some element."""
        lo, up = st.bounds[self.output]
        cur = (lo, up) if start is None else (np.maximum(lo, start[0]), np.minimum(up, start[1]))
        best_t, groups = ({}, []) if hasattr(st.box, "lowest") or not self.free else self._optimise(st, cur, base or {})
        steps, bounds, relax, new = list(st.steps), dict(st.bounds), st.relax, []
        interval = _interval_of(st.steps, self.output) if groups else None
        for r in groups:
            relax = dict(st.relax)
            lines = []
            for n in self.free:
                relax[n.name] = ENGINE[n.op].free.final(tuple(v[r] for v in best_t[n.name][0]), best_t[n.name][1])
                lines.append(_relax_step(n, relax[n.name]))
            b = backsubstitute(self.nodes, self.output, self.lam, st.box, relax)
            cl, cu = pad_linear(b[:len(lo)], -b[len(lo):], interval)
            new.append((lines, cl, cu))
        a_lo = np.max([cl for _, cl, _ in new], axis=0) if new else -np.inf
        a_up = np.min([cu for _, _, cu in new], axis=0) if new else np.inf
        if start is not None and (np.any(start[0] > np.maximum(lo, a_lo)) or np.any(start[1] < np.minimum(up, a_up))
                                  or (not new and self.output == st.output)):
            new.insert(0, ([], *start))  # CROWN's bounds with the lines in force now: written before alpha's lines
        for lines, cl, cu in new:
            steps += lines + [{"kind": "bounds", "node": self.output, "via": "linear", "lower": _q(cl), "upper": _q(cu)}]
            l0, u0 = bounds[self.output]
            bounds[self.output] = (np.maximum(l0, cl), np.minimum(u0, cu))
        return State(st.nodes, st.output, st.box, bounds, relax, steps)

    def _optimise(self, st: State, cur, base: dict):
        """Adam on the free slopes: ({node: (best t per row or shared, data)}, rows to write as groups)."""
        # slopes start from CROWN's own lines (`base`), not from lines the last target's alpha left in force
        fdata = {n.name: ENGINE[n.op].free.data(n, [st.bounds[s] for s in n.inputs], base.get(n.name, st.relax[n.name]))
                 for n in self.free}
        rows = len(self.lam) if self.per_row else 1
        t = {k: [np.broadcast_to(v, (rows, len(v))).astype(float) for v in d["t0"]] for k, d in fdata.items()}
        m = {k: [np.zeros_like(v) for v in p] for k, p in t.items()}
        v2 = {k: [np.zeros_like(v) for v in p] for k, p in t.items()}
        best_t = {k: [v.copy() for v in p] for k, p in t.items()}
        claim = self.output == st.output  # the output: its rows' maximum is the claim; else every row counts
        best = np.full(rows, np.inf)
        cur_rows = np.concatenate([-cur[0], cur[1]])
        tau = max(1e-3 * float(np.max(cur_rows)), 1e-12) if np.all(np.isfinite(cur_rows)) else 1.0
        for i in range(self.iters + 1):
            b, grads = self._bounds(st, st.relax, fdata, t)
            score = -b if self.per_row else np.array([np.max(-b) if claim else -np.sum(b)])
            better = score < best
            best = np.minimum(best, score)
            for k in t:
                for j in (0, 1):
                    best_t[k][j] = np.where(better[:, None], t[k][j], best_t[k][j])
            if i == self.iters:
                break
            if self.per_row or not claim:
                w = np.ones((len(b), 1))
            else:  # a soft maximum of the row bounds -b
                w = np.exp(-(b - b.min()) / tau)
                w = (w / w.sum())[:, None]
            for k in t:
                for j in (0, 1):
                    g = -(w * grads[k][j])  # the loss is -bound: descend on it
                    g = g if self.per_row else g.sum(0, keepdims=True)
                    m[k][j] = 0.9 * m[k][j] + 0.1 * g
                    v2[k][j] = 0.999 * v2[k][j] + 0.001 * g * g
                    step = ALPHA_LR * (m[k][j] / (1 - 0.9 ** (i + 1))) / (np.sqrt(v2[k][j] / (1 - 0.999 ** (i + 1))) + 1e-12)
                    t[k][j] = np.clip(t[k][j] - step, 0.0, 1.0)
        if self.per_row:  # rows whose bound exceeds what alpha reaches on the worst row get their own slopes
            target = np.max(np.minimum(cur_rows, best))
            groups = [int(r) for r in np.argsort(-cur_rows) if cur_rows[r] > target]
        else:
            groups = [0]
        return {k: (v, fdata[k]) for k, v in best_t.items()}, groups


MAX_DEPTH = 120  # splits along one path at most: a region this deep is left as it is (past float resolution a split
# moves no bound: the residual campaign's seed 2043 case 247 was split hundreds deep within its 1 s budget), and a tree
# stays shallower than the recursion of the certificate writer and the checker's JSON reader


@dataclass
class Leaf:
    box: tuple  # exact (lower, upper) lists of Fractions
    state: State | None = None
    split: dict | None = None
    children: list = field(default_factory=list)
    depth: int = 0

    def to_json(self) -> dict:
        if not self.children:
            return {"steps": self.state.steps}
        return {**self.split, "children": [c.to_json() for c in self.children]}


@dataclass(frozen=True)
class BabResult:
    tree: dict
    bound: float
    leaves: int
    seconds: float
    leaf_method: str


def _split_dim(st: State, box) -> int | None:
    """The input (x, then the free values) whose width times its coefficient in the worst row of d's linear bound
    is largest (the row's bound changes by at most that much when it is fixed), among inputs of positive width."""
    l, u = st.bounds[st.output]
    i = int(np.argmax(np.maximum(-l, u)))
    lam = np.zeros((1, len(l)))
    lam[0, i] = 1.0 if -l[i] >= u[i] else -1.0  # the row whose lower bound is the worst
    free = {}
    _, c = backsubstitute(st.nodes, st.output, lam, st.box, st.relax, with_x=True, free=free)
    width = np.array([float(b - a) for a, b in zip(*box)])
    nx = len(st.box[0])
    coef = np.concatenate([np.abs(c[0]) if c is not None else np.ones(nx)] +
                          [np.abs(free[n.name][0]) if n.name in free else np.zeros(len(n.lower)) for n in st.nodes if n.op == "free"])
    score = width * coef + width * 1e-12  # ties (and a row blind to x): the widest
    return int(np.argmax(score)) if np.max(width) > 0 else None


def branch_and_bound(graph: Graph, box, *, leaf_method: str = "crown", target: float = 0.0, time_budget: float = 30.0,
                     max_leaves: int = 100_000) -> BabResult:
    """Best first on input splits: split the leaf with the largest bound (on `_split_dim`, at a float
    midpoint) until every leaf's bound is <= target (the tolerance, or the attained deviation: a leaf
    below it cannot lower the claim), the time budget is spent, or no leaf can be split. Each leaf is
    bounded with CROWN or alpha-CROWN on its own box; the tree is the certificate's `tree`. A leaf's box is x's,
    then the free nodes' ranges (fill: free; checker/graph.py's check_input_tree): a split may narrow a free value,
    which no split of x can (resmlp_ablate: CROWN 2.13 over both, 1.76 with the free values fixed)."""
    start = time.perf_counter()
    nodes, nx = floats(graph), len(box[0])
    frees = [k for k, n in enumerate(nodes) if n.op == "free"]

    def bound(leaf):
        mine, lo, up = list(nodes), leaf.box[0][nx:], leaf.box[1][nx:]
        for k in frees:  # the leaf's free ranges
            w = len(nodes[k].lower)
            mine[k] = replace(nodes[k], lower=np.array([float(v) for v in lo[:w]]), upper=np.array([float(v) for v in up[:w]]))
            lo, up = lo[w:], up[w:]
        leaf.state = crown_state(graph, (leaf.box[0][:nx], leaf.box[1][:nx]), leaf_method, nodes=mine)
        return leaf

    flo, fup = free_ranges(graph)
    root = bound(Leaf((list(box[0]) + flo, list(box[1]) + fup)))
    heap, order, leaves = [(-root.state.bound, 0, root)], itertools.count(1), 1
    while heap and leaves < max_leaves and time.perf_counter() - start < time_budget:
        worst = heap[0][2]
        if worst.state.bound <= target:
            break
        d = _split_dim(worst.state, worst.box) if worst.depth < MAX_DEPTH else None
        if d is None:
            break
        lo, up = worst.box
        at = Fraction(float((lo[d] + up[d]) / 2))
        at = at if lo[d] < at < up[d] else (lo[d] + up[d]) / 2
        heapq.heappop(heap)
        left_up, right_lo = list(up), list(lo)
        left_up[d], right_lo[d] = at, at
        worst.split = {"split": "input", "dim": d, "at": rational_str(at)}
        worst.children = [bound(Leaf((lo, left_up), depth=worst.depth + 1)), bound(Leaf((right_lo, up), depth=worst.depth + 1))]
        worst.state = None
        for c in worst.children:
            heapq.heappush(heap, (-c.state.bound, next(order), c))
        leaves += 1
    claim = max(-h[0] for h in heap)
    return BabResult(root.to_json(), claim, leaves, time.perf_counter() - start, leaf_method)
