"""Linear relaxations of scalar curves in float64 (UNTRUSTED): lines lower <= phi <= upper on [l, u]
for the curves of `certify.checker.curves` (exp, square, reciprocal, rsqrt, sqrt, tanh, sigmoid, erf,
gelu), vectorised over arrays of intervals. They only propose: `certify.checker.curves` decides.
`intercept`, `tangent_slope`, `chord_slope` and `relax` with given slopes also take JAX arrays and
trace (alpha-CROWN differentiates an intercept in its slope); the slope searches are numpy.

Every line is built from a slope. For a slope a, the tightest lines with that slope are

    lower: a*x + min_[l,u] (phi(x) - a*x)        upper: a*x + max_[l,u] (phi(x) - a*x)

and phi - a*x has its extrema on [l, u] at the ends or where phi'(x) = a. phi' is monotone on each
curvature piece (between inflection points), so each piece holds at most one such point, found by
bisection. So every slope gives a valid line (up to float rounding, which `nudge` covers by moving
the intercept outward), and the slope is the free parameter for alpha-style optimisation:

* `tangent_slope(fn, t)`: the tangent at t (t in [l, u]); on a piece where the line's side of phi
  is convex (lower line, convex phi) that line is the tangent at t itself;
* `chord_slope(fn, l, u)`: the chord; where it is valid (upper line of a convex phi) it is the chord;
* `crown_slopes`: the CROWN / auto_LiRPA choice: chord on the side where it is valid, else the tangent
  at the midpoint, or for an interval across an S-curve's inflection the tangent through the far end;
* `best_slopes` (the default of `relax`): the slope whose line has the least area between it and phi
  on [l, u]. That area is (u - l) * |phi's mean - the line's value at (l + u)/2|, so the best lower
  line is the valid line highest at the midpoint; intercept(a) + a*mid is concave in a (a minimum of
  affine functions), so a golden-section search over a in [min phi', max phi'] finds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from functools import reduce
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import jax.scipy.special
import numpy as np
import scipy.special

jax.config.update("jax_enable_x64", True)  # as certify.bounds.network: the engine is float64

NUDGE = 2.0 ** -40  # intercepts move outward by NUDGE * (the size of the terms that made them)
BISECTIONS = 44  # the touching point to 2^-44 of the width: the intercept is flat there (error ~ width^2 2^-88)
SCORE_BISECTIONS = 26  # enough to compare slopes (the intercept's error is ~ width^2 2^-52)
GOLDEN = 40  # the slope to 0.618^40 = 4e-9 of its range: only tightness depends on it
SQRT2 = float(np.sqrt(2.0))
GELU_MIN = -0.7517915246935645  # the zero of gelu' (mpmath, 40 digits: -0.75179152469356445745...)


NP = SimpleNamespace(xp=np, erf=scipy.special.erf, erfc=scipy.special.erfc, expit=scipy.special.expit)
JAX = SimpleNamespace(xp=jnp, erf=jax.scipy.special.erf, erfc=jax.scipy.special.erfc, expit=jax.scipy.special.expit)


def _ops(*arrays) -> SimpleNamespace:
    """jax.numpy (and jax.scipy.special) for JAX arrays and tracers (alpha-CROWN's autodiff through
    `intercept`), numpy and scipy.special otherwise."""
    return JAX if any(isinstance(a, jax.Array) for a in arrays) else NP


def _ncdf(x, m):
    return 0.5 * m.erfc(-x / SQRT2)


def _npdf(x, m):
    return m.xp.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)


@dataclass(frozen=True)
class Curve:
    """The float64 twin of a `certify.checker.curves.CURVES` row: phi, phi', inflection points,
    curvature per piece (+1 convex, -1 concave), interior minima."""

    f: Callable
    df: Callable
    shape: tuple[int, ...]
    breaks: tuple[float, ...] = ()
    minima: tuple[float, ...] = ()


_S = (1, -1)
CURVES: dict[str, Curve] = {  # f(x, ops), df(x, ops): ops is NP or JAX
    "exp": Curve(lambda x, m: m.xp.exp(x), lambda x, m: m.xp.exp(x), (1,)),
    "square": Curve(lambda x, m: x * x, lambda x, m: 2 * x, (1,), minima=(0.0,)),
    "reciprocal": Curve(lambda x, m: 1 / x, lambda x, m: -1 / (x * x), (1,)),
    "rsqrt": Curve(lambda x, m: 1 / m.xp.sqrt(x), lambda x, m: -0.5 / (x * m.xp.sqrt(x)), (1,)),
    "sqrt": Curve(lambda x, m: m.xp.sqrt(x), lambda x, m: 0.5 / m.xp.sqrt(x), (-1,)),
    "tanh": Curve(lambda x, m: m.xp.tanh(x), lambda x, m: 1 - m.xp.tanh(x) ** 2, _S, (0.0,)),
    "sigmoid": Curve(lambda x, m: m.expit(x), lambda x, m: m.expit(x) * m.expit(-x), _S, (0.0,)),
    "erf": Curve(lambda x, m: m.erf(x), lambda x, m: 2 / np.sqrt(np.pi) * m.xp.exp(-x * x), _S, (0.0,)),
    "gelu": Curve(lambda x, m: x * _ncdf(x, m), lambda x, m: _ncdf(x, m) + x * _npdf(x, m), (-1, 1, -1),
                  (-SQRT2, SQRT2), (GELU_MIN,)),
}


@dataclass(frozen=True)
class Lines:
    """lower_slope*x + lower_intercept <= phi(x) <= upper_slope*x + upper_intercept on [l, u]."""

    lower_slope: np.ndarray
    lower_intercept: np.ndarray
    upper_slope: np.ndarray
    upper_intercept: np.ndarray


def _pieces(c: Curve, l, u, m=NP):
    """[l, u] cut at the inflection points: a list of (start, end) arrays (empty pieces have start = end)."""
    cuts = [l] + [m.xp.clip(p, l, u) for p in c.breaks] + [u]
    return list(zip(cuts, cuts[1:]))


def _solve(df, a, p, q, steps: int = 0, m=NP):
    """x in [p, q] with df(x) = a where df is monotone on [p, q] and a is in its range there; else p
    (a point of [l, u] like any other: as a candidate it cannot push a min below the true one, and
    unlike nan it keeps JAX's gradients finite). The bisection's branch choices carry no gradient, so
    under autodiff d(phi(x) - a x)/da = -x: the envelope theorem's derivative of the intercept."""
    with np.errstate(all="ignore"):
        dp, dq = df(p, m) - a, df(q, m) - a
        found = (dp <= 0) != (dq <= 0)
        lo, hi = p, q
        for _ in range(steps or BISECTIONS):
            mid = 0.5 * (lo + hi)
            left = (df(mid, m) - a <= 0) == (dp <= 0)  # same sign as at p: the root is right of mid
            lo, hi = m.xp.where(left, mid, lo), m.xp.where(left, hi, mid)
    return m.xp.where(found, 0.5 * (lo + hi), p)


def intercept(fn: str, a, l, u, side: int, steps: int = 0):
    """min (side +1) or max (side -1) over [l, u] of phi(x) - a*x, and the size of the terms it came
    from (for `nudge`). Besides the ends, only a piece where side*phi is convex can hold the extremum
    (there phi(x) - a*x is side-convex, with its side-extremum where phi'(x) = a). numpy or JAX
    (traceable: the slope `a` is alpha-CROWN's free parameter)."""
    c, m = CURVES[fn], _ops(a, l, u)
    a, l, u = (m.xp.asarray(v, dtype=np.float64) for v in m.xp.broadcast_arrays(a, l, u))
    xs = [l, u] + [_solve(c.df, a, p, q, steps, m) for (p, q), s in zip(_pieces(c, l, u, m), c.shape) if s == side]
    with np.errstate(all="ignore"):
        vals = [c.f(x, m) - a * x for x in xs]
        size = reduce(m.xp.fmax, [m.xp.abs(c.f(x, m)) + m.xp.abs(a * x) for x in xs])
    return reduce(m.xp.fmin if side == 1 else m.xp.fmax, vals), size


def nudge(intercept, size, slope, side: int, margin: float = NUDGE):
    """Move an intercept outward (down for side +1, a lower line; up for -1) past float rounding:
    `margin` of the terms' size, plus |slope| * 2^-1060 for a touching point that bisection can only
    place to a subnormal spacing (sqrt on [0, 5e-324]), plus 2^-1000."""
    return intercept - side * (margin * size + abs(slope) * 2.0 ** -1060 + 2.0 ** -1000)


def tangent_slope(fn: str, t):
    """phi'(t): with `relax`, the tangent at t (t in [l, u]) where that tangent is valid."""
    m = _ops(t)
    with np.errstate(all="ignore"):
        return CURVES[fn].df(m.xp.asarray(t, dtype=np.float64), m)


def chord_slope(fn: str, l, u):
    c, m = CURVES[fn], _ops(l, u)
    l, u = m.xp.asarray(l, dtype=np.float64), m.xp.asarray(u, dtype=np.float64)
    with np.errstate(all="ignore"):
        k = m.xp.where(u > l, (c.f(u, m) - c.f(l, m)) / m.xp.where(u > l, u - l, 1.0), c.df(l, m))
    return m.xp.where(m.xp.isfinite(k), k, 0.0)  # a point where phi' is infinite (sqrt at 0): any slope will do


def _bracket(c: Curve, fn: str, l, u, side: int):
    """Slopes between which the least-area line of that side lies. The line of chord slope k is valid,
    with value v0 at mid = (l + u)/2; the best line is at least as good there (v >= v0 for a lower
    line) and still valid at l and u, so side*a lies between side*(v0 - phi(l))/h and side*(phi(u) - v0)/h,
    h = (u - l)/2: finite, even where phi' is not (sqrt at 0)."""
    k, mid, h = chord_slope(fn, l, u), 0.5 * (l + u), 0.5 * (u - l)
    v0 = intercept(fn, k, l, u, side)[0] + k * mid
    with np.errstate(all="ignore"):
        p, q = (v0 - c.f(l, NP)) / h, (c.f(u, NP) - v0) / h
    p, q = np.where(h > 0, p, k), np.where(h > 0, q, k)
    return np.minimum(p, q), np.maximum(p, q)


def best_slopes(fn: str, l, u):
    """(lower, upper) slopes of the least-area lines (module docstring): golden-section searches."""
    c = CURVES[fn]
    l, u = np.asarray(l, dtype=np.float64), np.asarray(u, dtype=np.float64)
    mid, r = 0.5 * (l + u), (np.sqrt(5) - 1) / 2
    out = []
    for side in (1, -1):  # maximise the lower line at mid; minimise the upper line there
        score = lambda a: side * (intercept(fn, a, l, u, side, SCORE_BISECTIONS)[0] + a * mid)  # noqa: E731
        p, q = _bracket(c, fn, l, u, side)
        x1, x2 = q - r * (q - p), p + r * (q - p)
        f1, f2 = score(x1), score(x2)
        for _ in range(GOLDEN):
            right = f1 < f2  # the maximum lies in [x1, q]
            p, q = np.where(right, x1, p), np.where(right, q, x2)
            new = np.where(right, p + r * (q - p), q - r * (q - p))
            fn_new = score(new)
            x1, f1, x2, f2 = (np.where(right, x2, new), np.where(right, f2, fn_new),
                              np.where(right, new, x1), np.where(right, fn_new, f1))
        out.append(0.5 * (p + q))
    return tuple(out)


def crown_slopes(fn: str, l, u):
    """(lower, upper) slopes of the CROWN-style lines: the chord where it is valid on that side, else
    the tangent at the midpoint; across an S-curve's inflection (tanh, sigmoid, erf) the tangent
    through the far end (through (u, phi(u)) for the lower line, (l, phi(l)) for the upper)."""
    c = CURVES[fn]
    l, u = np.asarray(l, dtype=np.float64), np.asarray(u, dtype=np.float64)
    k = chord_slope(fn, l, u)
    (lo_b, size), (up_b, _) = intercept(fn, k, l, u, 1), intercept(fn, k, l, u, -1)
    chord_b = c.f(l, NP) - k * l
    chord_lo, chord_up = chord_b - lo_b <= 1e-12 * size, up_b - chord_b <= 1e-12 * size
    tmid = tangent_slope(fn, 0.5 * (l + u))
    lower, upper = np.where(chord_lo, k, tmid), np.where(chord_up, k, tmid)
    if c.shape == _S:
        across = (l < 0) & (u > 0)
        for side, end, piece in ((1, u, (l, np.minimum(u, 0))), (-1, l, (np.maximum(l, 0), u))):
            # the tangent at t through (end, phi(end)): phi(t) + phi'(t)(end - t) - phi(end) = 0 on the piece
            g = lambda t: c.f(t, NP) + c.df(t, NP) * (end - t) - c.f(end, NP)  # noqa: E731
            p, q = (np.where(across, v, 0.0) for v in piece)
            gp = g(p)
            for _ in range(BISECTIONS):
                m = 0.5 * (p + q)
                same = (g(m) <= 0) == (gp <= 0)
                p, q = np.where(same, m, p), np.where(same, q, m)
            t = tangent_slope(fn, 0.5 * (p + q))
            if side == 1:
                lower = np.where(across & ~chord_lo, t, lower)
            else:
                upper = np.where(across & ~chord_up, t, upper)
    return lower, upper


def relax(fn: str, l, u, lower_slope=None, upper_slope=None, margin: float = NUDGE) -> Lines:
    """Lines below and above phi on [l, u] with the given slopes (default: `best_slopes`; an infinite
    one, sqrt's tangent at 0, becomes the chord's), the tightest intercepts for them, nudged outward.
    [l, u] must lie in phi's domain (l > 0 for reciprocal and rsqrt, l >= 0 for sqrt); where a float64
    value overflows (exp above ~709) the lines are not finite, and the caller must refuse or fall
    back. `margin` (relative outward move of the intercepts): a caller whose line the checker
    rejects may retry with a larger one."""
    m = _ops(l, u, lower_slope, upper_slope)
    l, u = m.xp.asarray(l, dtype=np.float64), m.xp.asarray(u, dtype=np.float64)
    with np.errstate(all="ignore"):
        if lower_slope is None or upper_slope is None:  # (numpy: a search, not for tracing)
            best = best_slopes(fn, l, u)
            lower_slope = best[0] if lower_slope is None else lower_slope
            upper_slope = best[1] if upper_slope is None else upper_slope
        chord = chord_slope(fn, l, u)
        lower_slope, upper_slope = (m.xp.where(m.xp.isfinite(s), s, chord) for s in (lower_slope, upper_slope))
        lo_b, lo_size = intercept(fn, lower_slope, l, u, 1)
        up_b, up_size = intercept(fn, upper_slope, l, u, -1)
        shape = m.xp.broadcast_shapes(l.shape, u.shape)
        return Lines(m.xp.broadcast_to(lower_slope, shape), nudge(lo_b, lo_size, lower_slope, 1, margin),
                     m.xp.broadcast_to(upper_slope, shape), nudge(up_b, up_size, upper_slope, -1, margin))


def interval(fn: str, l, u):
    """Float bounds of phi on [l, u] (ends, and interior minima), padded outward like intercepts."""
    c = CURVES[fn]
    l, u = np.asarray(l, dtype=np.float64), np.asarray(u, dtype=np.float64)
    ends = [c.f(l, NP), c.f(u, NP)]
    inner = [np.where((l <= m) & (m <= u), c.f(np.float64(m), NP), np.inf) for m in c.minima]
    lo, hi = np.minimum.reduce(ends + inner), np.maximum(*ends)
    return lo - (NUDGE * np.abs(lo) + 2.0 ** -1000), hi + (NUDGE * np.abs(hi) + 2.0 ** -1000)
