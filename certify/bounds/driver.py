"""The bound driver for dense (sequential) networks: turns float bound computations into exact,
checkable steps (the steps of certificate format version 2, the checker's VERSION).

The engine's float bounds are padded outward (relative 1e-8) before they are claimed, so the exact
re-derivation in the checker lands inside them; ReLU relaxation lines are built from the claimed
intervals and their intercepts rounded so that each line is valid *exactly*. The output layer's
bounds and the headline bound are computed exactly here (with the checker's own arithmetic), so
they are as tight as the hints allow and any tightening of them is refuted by the checker.
`certify.certificate` writes the steps out; docs/certificate-format.md describes them.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..checker import exact
from .linear import Difference, Relaxation, crown_layer, interval_dense, interval_relu, relax_relu
from .lp import lp_alphas, lp_fits
from .network import FloatNet, box_floats as _box_floats

PAD = 1e-8


def box_floats(lo: list, up: list) -> tuple[np.ndarray, np.ndarray]:
    """`network.box_floats` (an exact box as float64 arrays rounded outward), without its exact comparisons where every
    end is a float exactly (a power-of-two denominator and a numerator of at most 53 bits: input splits at midpoints
    of such ends); the same arrays."""
    for v in (*lo, *up):
        d = v.denominator
        if d & (d - 1) or v.numerator.bit_length() > 53 or d.bit_length() > 1000:
            return _box_floats(lo, up)
    return np.array([float(v) for v in lo]), np.array([float(v) for v in up])


def _pad(lower, upper) -> tuple[np.ndarray, np.ndarray]:
    lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    return lower - PAD * (1 + np.abs(lower)), upper + PAD * (1 + np.abs(upper))


def pad_outward(lower, upper) -> tuple[list[float], list[float]]:
    return tuple(v.tolist() for v in _pad(lower, upper))


SLOPE_GRID = 2.0 ** -20  # relu upper slopes and difference-line slopes are rounded to this grid (as alpha-CROWN's
# slopes, alpha.GRID), intercepts outward to GRID: the checker's integers stay short (a float64 slope has up to 53
# significant bits; an MNIST leaf's rows times such slopes were 100-150-bit integers, times 2^-20 slopes 61 bits: FLINT's
# single-word fmpz). Each line stays exactly valid (its intercept is computed from the rounded slope); looser by ~2^-20
GRID = 2.0 ** -40


def _slope_grid(s):
    return np.ceil(np.asarray(s, dtype=np.float64) / SLOPE_GRID) * SLOPE_GRID


def _round_up(q: Fraction) -> float:
    """The least float >= q on GRID (|q| < 2^12; a float beyond is already a multiple of it)."""
    if abs(q) < 2 ** 12:
        return float(Fraction(math.ceil(q / Fraction(GRID)), 1) * Fraction(GRID))
    x = float(q)
    return math.nextafter(x, math.inf) if Fraction(x) < q else x


def exact_relaxation(lower: list[float], upper: list[float]) -> Relaxation:
    """CROWN lines on the claimed interval, upper slopes on SLOPE_GRID, upper intercepts rounded up so every line is
    exactly valid."""
    r = relax_relu(np.array(lower), np.array(upper))
    unstable = (np.asarray(lower) < 0) & (np.asarray(upper) > 0)
    slopes = np.where(unstable, _slope_grid(r.upper_slope), r.upper_slope)
    up_int = list(map(float, r.upper_intercept))
    for i, (l, u, s) in enumerate(zip(lower, upper, slopes)):
        if l < 0 < u:  # need s*l + b >= 0 and s*u + b >= u, exactly
            S, L, U = Fraction(float(s)), Fraction(l), Fraction(u)
            up_int[i] = _round_up(max(-S * L, U - S * U))
    return Relaxation(r.lower_slope, r.lower_intercept, slopes, np.array(up_int))


ULPS = 2.0 ** -50  # a bound on the relative rounding error of an intercept computed in float64 (a few operations)


def _down(v, err):
    """v - err rounded down, to a multiple of GRID: below the exact value whose float evaluation v is
    off by at most err (a float of magnitude at least 2^12 is already such a multiple). (An intercept that is 0 in
    exact arithmetic came out as -5e-324, denominator 2^1074, which the checker carried through the layer.)"""
    x = np.nextafter(v - err, -np.inf)
    small = np.abs(x) < 2.0 ** 12
    return np.where(small, np.floor(np.where(small, x, 0.0) / GRID) * GRID, x)


def exact_relaxation_fast(lower, upper) -> Relaxation:
    """`exact_relaxation` vectorised: each upper intercept is max(-s*l, u - s*u) evaluated in float64
    and raised by a bound on its rounding error, so each line is still exactly valid (2^-50 relative
    looser than the correctly rounded intercept). For branch-and-bound leaves (thousands of them)."""
    lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    r = relax_relu(lower, upper)
    unstable = (lower < 0) & (upper > 0)
    s = np.where(unstable, _slope_grid(r.upper_slope), r.upper_slope)
    v = np.maximum(-s * lower, upper - s * upper)
    err = ULPS * (np.abs(s * lower) + np.abs(upper) + np.abs(s * upper))
    return Relaxation(r.lower_slope, r.lower_intercept, s, np.where(unstable, -_down(-v, err), r.upper_intercept))


def _qlines(r: Relaxation) -> tuple:
    """The four lines as the checker's exact IntVecs (lower slope, lower intercept, upper slope, upper intercept)."""
    return tuple(exact.qvec(map(float, v)) for v in (r.lower_slope, r.lower_intercept, r.upper_slope, r.upper_intercept))


def _qdiff(d: Difference) -> tuple:
    """A layer's difference pairs and lines as the checker's exact back-substitution takes them."""
    planes = () if d.lower_b is None else tuple(exact.qvec(map(float, v)) for v in (d.lower_b, d.upper_b))
    return list(zip(d.a.tolist(), d.b.tolist())), _qlines(d.lines) + planes


def _q(values) -> list:
    """Numbers kept as they are (floats, Fractions); `serialize` writes them as exact rationals, once,
    for the steps that end up in the certificate. Arrays become lists of Python floats: numpy scalars
    pickle ~20x slower (a leaf's steps crossing to a Ray worker took 0.1 s to pickle)."""
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


@dataclass(frozen=True)
class Proposal:
    """Steps for one region; `empty` when the region's ReLU splits contradict its verified bounds."""

    steps: list[dict]
    output_lower: list[Fraction]
    output_upper: list[Fraction]
    relax: tuple = ()  # float Relaxations of layers 1..n-1 (for choosing splits)
    claims: tuple = ()  # float (lower, upper) claims of layers 1..n-1
    empty: bool = False
    margins: tuple = ()  # per output, float32 rounding error under float32 semantics (else empty)
    diff: dict | None = None  # float Differences (layer -> pairs and lines) the bounds used
    warm: dict | None = None  # alpha: layer -> (alphas, betas) optimised here (a branch-and-bound child's starting point)

    def row_bounds(self) -> list[Fraction]:
        """Per output row, the bound on |f_i - g_i| these steps prove: max(upper, -lower) plus the row's float32 margin."""
        margins = self.margins or (0,) * len(self.output_lower)
        return [max(u, -l) + m for l, u, m in zip(self.output_lower, self.output_upper, margins)]

    @functools.cached_property
    def bound(self) -> Fraction | None:
        return None if self.empty else max(self.row_bounds())


@dataclass(frozen=True)
class Below:
    """A region's hidden layers below some layer j as the checker holds them (what a ReLU-split child on layer j takes
    from its parent, `propose`'s `fixed`): float claims and relaxation lines of layers 1..j-1, and the difference lines
    of those layers. Only these travel with a child's region (to a Ray worker too), not the parent's steps."""

    claims: tuple
    relax: tuple
    diff: dict


def below(p: Proposal, j: int) -> tuple:
    """`propose`'s `fixed` for a child of a ReLU split on layer j whose parent's proposal is `p`."""
    return j, Below(p.claims[: j - 1], p.relax[: j - 1], {k: d for k, d in (p.diff or {}).items() if k < j})


def _lines_only(diff: dict | None) -> dict | None:
    """`diff` for alpha-CROWN, whose back-substitution (JAX) takes difference lines, never planes (their z_b terms
    would be dropped: unsound)."""
    if any(d.lower_b is not None for d in (diff or {}).values()):
        raise ValueError("alpha-CROWN takes difference lines only, not planes")
    return diff


def _alpha():
    """certify.bounds.alpha, imported on first use: it imports JAX (~1.3 s), which interval and CROWN steps never need
    (a Ray worker that bounds CROWN leaves starts without it)."""
    from . import alpha

    return alpha


# per-row slopes of unstable neurons cost certificate size: intermediate layers above this many use CROWN
ALPHA_MAX_ENTRIES = 300_000  # a region bounded on its own (about 4 MB of slopes)
ALPHA_MAX_ENTRIES_LEAF = 60_000  # a branch-and-bound split leaf (a tree holds hundreds)


def _unstable(claims) -> list[np.ndarray]:
    """Per hidden layer, the neurons whose claimed interval straddles 0: the only ones whose alpha
    slope is written (a stable neuron's relaxation line is already exact)."""
    return [np.flatnonzero((np.asarray(lo) < 0) & (np.asarray(up) > 0)) for lo, up in claims]


def _alpha_json(alphas, claims, rows=None, sides=None) -> dict:
    """A linear step's `alpha` from `optimise_alpha`'s slopes (2 x width rows: lower bounds, then upper). `rows` (a step
    with `neurons`): only those neurons' rows, a lower row for each claimed lower side, then an upper row for each
    claimed upper side (`sides`: the step's lower and upper claims, None where a side is not claimed)."""
    if rows is not None:
        width = len(alphas[0]) // 2 if alphas else 0
        pick = [r for r, c in zip(rows, sides[0]) if c is not None] + [width + r for r, c in zip(rows, sides[1]) if c is not None]
        if not pick:
            return {}
        alphas = [np.asarray(a)[pick] for a in alphas]
    return {str(j): {"neurons": m.tolist(), "slopes": np.asarray(a, dtype=np.float64)[:, m]}
            for j, (a, m) in enumerate(zip(alphas, _unstable(claims)), start=1) if m.size}


def _exact_alpha(alphas, claims, width: int):
    low, up = {}, {}
    for j, (a, m) in enumerate(zip(alphas, _unstable(claims)), start=1):
        if m.size:
            nums, den = exact.qmat([[float(v) for v in row] for row in np.asarray(a)[:, m]])
            low[j], up[j] = (m.tolist(), (nums[:width], den)), (m.tolist(), (nums[width:], den))
    return low, up


def _beta_json(betas) -> dict:
    return {"beta": [{"layer": j, "neuron": i, "values": np.asarray(v, dtype=np.float64)} for j, i, v in betas]} if betas else {}


def _exact_beta(betas, assume, width: int, widths) -> tuple[dict, dict]:
    """The checker's view of the split multipliers: per layer, sign*beta on the split neuron's column."""
    mats: dict = {}
    for j, i, values in betas:
        sign = 1 if assume[(j, i)] == "inactive" else -1
        m = mats.setdefault(j, [[Fraction(0)] * widths[j] for _ in range(2 * width)])
        for r, v in enumerate(values):
            m[r][i] += sign * Fraction(float(v))
    low, up = {}, {}
    for j, m in mats.items():
        nums, den = exact.qmat(m)
        low[j], up[j] = (nums[:width], den), (nums[width:], den)
    return low, up


def _round_down(q: Fraction) -> float:
    return -_round_up(-q)


def difference_lines(dlo, dup, lo, up, a, b) -> Relaxation:
    """Lines below and above D = relu(z_a) - relu(z_b) in delta = z_a - z_b on [dlo, dup]: the chords
    of its lower envelope (concave) and upper envelope (convex), intercepts rounded so that each
    line is exactly valid at both ends (what the checker's `difference` step tests)."""
    out = [[], [], [], []]
    for dl, du, i, j in zip(dlo, dup, a, b):
        L, U = Fraction(dl), Fraction(du)
        low = lambda x: x if lo[j] >= 0 else Fraction(0) if up[j] <= 0 else min(x, Fraction(0))  # noqa: E731
        high = lambda x: x if lo[i] >= 0 else Fraction(0) if up[i] <= 0 else max(x, Fraction(0))  # noqa: E731
        sl = float(_slope_grid(float((low(U) - low(L)) / (U - L)))) if U > L else 0.0
        su = float(_slope_grid(float((high(U) - high(L)) / (U - L)))) if U > L else 0.0
        out[0].append(sl)
        out[1].append(_round_down(min(low(x) - Fraction(sl) * x for x in (L, U))))
        out[2].append(su)
        out[3].append(_round_up(max(high(x) - Fraction(su) * x for x in (L, U))))
    return Relaxation(*(np.array(v) for v in out))


def _difference_slopes(dlo, dup, lo, up, a, b) -> tuple:
    """`difference_lines_fast`'s slopes (and its ends and envelopes, see there)."""
    L, U = np.asarray(dlo, dtype=np.float64), np.asarray(dup, dtype=np.float64)
    lo, up = np.asarray(lo, dtype=np.float64), np.asarray(up, dtype=np.float64)
    la, ua, lb, ub = lo[a], up[a], lo[b], up[b]
    low = lambda x: np.where(lb >= 0, x, np.where(ub <= 0, 0.0, np.minimum(x, 0.0)))  # noqa: E731
    high = lambda x: np.where(la >= 0, x, np.where(ua <= 0, 0.0, np.maximum(x, 0.0)))  # noqa: E731
    wide = U > L
    span = np.where(wide, U - L, 1.0)
    sl, su = (np.where(wide, _slope_grid((f(U) - f(L)) / span), 0.0) for f in (low, high))
    return L, U, low, high, sl, su


def difference_lines_fast(dlo, dup, lo, up, a, b) -> Relaxation:
    """`difference_lines` vectorised: slopes are the same chords in float64, intercepts are the float
    minimum (maximum) at the two ends moved outward by a bound on their rounding error, so each line
    is still exactly valid at both ends (2^-50 relative looser). For branch-and-bound leaves."""
    L, U, low, high, sl, su = _difference_slopes(dlo, dup, lo, up, a, b)
    tl = np.minimum(low(L) - sl * L, low(U) - sl * U)
    tu = np.maximum(high(L) - su * L, high(U) - su * U)
    el, eu = (ULPS * (np.maximum(np.abs(f(L)) + np.abs(t * L), np.abs(f(U)) + np.abs(t * U)) + np.abs(v))
              for f, t, v in ((low, sl, tl), (high, su, tu)))
    return Relaxation(sl, _down(tl, el), su, -_down(-tu, eu))


def _scatter(n: int, index, values, base=None) -> np.ndarray:
    """`base` (zeros when None, length n) with `values` at `index`."""
    out = np.zeros(n) if base is None else np.array(base, dtype=np.float64)
    out[index] = values
    return out


KEEP_EVERY_PAIR = False  # soundness campaigns only: `_difference_step` keeps every pair with an unstable neuron (more
# difference steps and planes to check than the rule it overrides leaves)
PLANE_GAP = 0.99  # see `_difference_step`'s `parent`, with planes
PLANES = True  # a leaf's (numpy CROWN) difference steps bound D with planes in (delta, z_b), not lines in delta
_TRIPLES = np.array([(i, j, k) for i in range(8) for j in range(i + 1, 8) for k in range(j + 1, 8)])


def _cell_points(la, ua, lb, ub, cl, cu, kink_a):
    """Per pair, candidate points (z_a, z_b) (n x 16) and whether each is in P = {la <= z_a <= ua, lb <= z_b <= ub,
    cl <= z_a - z_b <= cu} (a little outside counts as in: a plane below D there too is still valid): P's vertices
    (12 candidates), then where z_a = 0 (`kink_a` true for the pair: the lower side's kinks, D is concave across
    z_b = 0) or z_b = 0 (false: the upper side's) crosses P's boundary (4)."""
    za, zb = [], []
    for x in (la, ua):
        for y in (lb, ub):
            za.append(x), zb.append(y)
        for c in (cl, cu):
            za.append(x), zb.append(x - c)
    for y in (lb, ub):
        for c in (cl, cu):
            za.append(y + c), zb.append(y)
    z = np.zeros_like(la)
    for v, w in zip((lb, ub, -cl, -cu), (la, ua, cl, cu)):
        za.append(np.where(kink_a, z, w)), zb.append(np.where(kink_a, v, z))
    za, zb = np.stack(za, axis=1), np.stack(zb, axis=1)
    tol = 1e-9 * (1 + np.maximum(np.abs(za), np.abs(zb)))
    c = lambda v: v[:, None]  # noqa: E731
    inside = ((za >= c(la) - tol) & (za <= c(ua) + tol) & (zb >= c(lb) - tol) & (zb <= c(ub) + tol)
              & (za - zb >= c(cl) - tol) & (za - zb <= c(cu) + tol))
    return za, zb, inside


def _lower_planes(za, zb, D, inside, line_s):
    """Per pair, a plane s*delta + r*z_b + t below D at every point `inside` (so on P): of the planes through three of
    (up to) 8 points and the line of slope `line_s` (r = 0), the one highest at the mean of P's vertices (also returned)."""
    n = za.shape[0]
    delta = za - zb
    w = inside[:, :12].sum(axis=1, keepdims=True)
    cd = np.where(inside[:, :12], delta[:, :12], 0.0).sum(axis=1, keepdims=True) / np.maximum(w, 1)
    cb = np.where(inside[:, :12], zb[:, :12], 0.0).sum(axis=1, keepdims=True) / np.maximum(w, 1)
    rows, order = np.arange(n)[:, None], np.argsort(~inside, axis=1, kind="stable")[:, :8]
    pd, pb, pD, ok = delta[rows, order], zb[rows, order], D[rows, order], inside[rows, order]
    pd, pb, pD = (np.where(ok, v, v[:, :1]) for v in (pd, pb, pD))
    i, j, k = _TRIPLES.T
    u = [v[:, j] - v[:, i] for v in (pd, pb, pD)]
    v = [x[:, k] - x[:, i] for x in (pd, pb, pD)]
    nd, nb, nD = u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]
    good = np.abs(nD) > 1e-9 * (np.abs(u[0] * v[1]) + np.abs(u[1] * v[0]) + 1e-300)
    nD = np.where(good, nD, 1.0)
    s = np.where(good, -nd / nD, 0.0)
    r = np.where(good, -nb / nD, 0.0)
    good &= (np.abs(s) <= 4) & (np.abs(r) <= 4)
    s = np.concatenate([np.where(good, s, line_s[:, None]), line_s[:, None]], axis=1)
    r = np.concatenate([np.where(good, r, 0.0), np.zeros((n, 1))], axis=1)
    s, r = _slope_grid(s), _slope_grid(r)
    # each candidate's intercept at the 8 points (the others are repeats of them or implied: the final one takes all)
    big = np.where(ok, 0.0, np.inf)
    t = pD[:, :1] - s * pd[:, :1] - r * pb[:, :1] + big[:, :1]  # point by point: numpy's reduction over a short last
    for q in range(1, 8):  # axis cost 4x these (n x 57) arrays
        np.minimum(t, pD[:, q, None] - s * pd[:, q, None] - r * pb[:, q, None] + big[:, q, None], out=t)
    best = np.argmax(s * cd + r * cb + t, axis=1)
    s, r = s[rows[:, 0], best], r[rows[:, 0], best]
    terms = D - s[:, None] * delta - r[:, None] * zb
    # (the points themselves are rounded: P's vertex (z_b + c, z_b) came out as fl(z_b + c), and D - plane moves by up to
    # (1 + |s| + |r|) times such an error: a thin P far from 0 (a 2e-4 wide range of delta at z ~ 0.57, MNIST-7) was off
    # by 1e-17 where the intercept's rounding to GRID left less, and the checker rejected the tree)
    err = 2.0 ** -48 * (np.abs(D) + np.abs(s[:, None] * delta) + np.abs(r[:, None] * zb)
                        + (1 + np.abs(s[:, None]) + np.abs(r[:, None])) * (np.abs(za) + np.abs(zb)))
    t = np.min(np.where(inside, terms, np.inf), axis=1)
    e = np.max(np.where(inside, err, 0.0), axis=1)
    t = np.where(np.isfinite(t), t, 0.0)  # P empty (no point inside even with the tolerance: empty exactly): any plane
    return s, r, _down(t, e), (cd[:, 0], cb[:, 0])


def difference_planes_fast(dlo, dup, lo, up, a, b, slopes: tuple):
    """Planes below and above D = relu(z_a) - relu(z_b) over P (the pair's verified box and range of delta), as
    (Relaxation of the delta slopes and intercepts, lower z_b slopes, upper z_b slopes, a point (delta, z_b) inside P:
    the mean of its vertices). `slopes`: the pairs' line slopes (lower, upper), the r = 0 candidates
    (`_difference_slopes`). Both sides in one `_lower_planes` call (the upper side as a plane below -D), its rows the
    lower sides' then the upper sides': the same floats as two calls, half the numpy calls."""
    L, U = np.asarray(dlo, dtype=np.float64), np.asarray(dup, dtype=np.float64)
    lo, up = np.asarray(lo, dtype=np.float64), np.asarray(up, dtype=np.float64)
    sl, su = slopes
    n = len(L)
    la, ua, lb, ub = lo[a], up[a], lo[b], up[b]
    two = lambda v: np.concatenate([v, v])  # noqa: E731
    za, zb, inside = _cell_points(*map(two, (la, ua, lb, ub, L, U)), np.arange(2 * n) < n)
    D = np.maximum(za, 0) - np.maximum(zb, 0)
    D[n:] = -D[n:]
    s, r, t, mid = _lower_planes(za, zb, D, inside, np.concatenate([sl, -su]))
    return Relaxation(s[:n], t[:n], -s[n:], -t[n:]), r[:n], -r[n:], (mid[0][:n], mid[1][:n])


INHERIT_PAIRS = True  # a region inside the root's steps keeps the root's difference lines (`_difference_step`'s `parent`)
PAIR_GAP = 0.99  # see `_difference_step`'s `parent`. 300-leaf MNIST-7 / 800-leaf MNIST-0 trees (CPU s, load 4-7, noisy):
# the old rule (every pair derived again) 1.8710x / 1.2166x, 26.9/48.1/5.9 and 25.8/17.8/2.0 pairs a leaf on layers
# 1/2/3, check and write 11.9 / 14.8 s; 0.99: 1.8501x / 1.2157x, 11.4/17.3/5.8 and 6.3/15.4/2.0, 9.7 / 15.3 s; 1.0:
# 1.8527x / 1.2166x (the same tree), 11.7/27.9/5.8 and 6.4/16.6/2.0; 0.95: 1.8618x / 1.2212x, 8.8/6.0/5.8 and
# 5.4/12.1/2.0, 8.5 / 15.3 s; 0.5: 1.8644x / 1.2391x, 0/0/5.9 and 0/0.1/2.0
LINES = ("lower_slope", "lower_intercept", "upper_slope", "upper_intercept")  # a Relaxation's fields


def _lines_at(r: Relaxation, index) -> Relaxation:
    return Relaxation(r.lower_slope[index], r.lower_intercept[index], r.upper_slope[index], r.upper_intercept[index])


def _pair_list(a, b) -> list:
    """Pairs as JSON [[a, b], ...] of Python ints."""
    return np.stack([a, b], axis=1).tolist() if len(a) else []


def _slack(lines: Relaxation, lo, up) -> np.ndarray:
    """Per pair, the most the upper line exceeds the lower one on [lo, up] (at an end: both are lines)."""
    return np.maximum(*((lines.upper_slope - lines.lower_slope) * x + lines.upper_intercept - lines.lower_intercept for x in (lo, up)))


def _difference_step(net: FloatNet, k: int, relax, diff: dict, lo, up, lo_in, up_in, fast: bool = False, tight=None,
                     parent: Difference | None = None, planes: bool = False):
    """The `difference` step of layer k's pairs and its float Difference (lower > upper for some
    pair: the region is empty, as the checker concludes from the step). A pair is kept where the range of z_a - z_b
    is no wider than the narrower of the two neurons' ranges: there the joint lines are tighter than
    two separate relaxations (measured: keeping every pair loosens pruned MLPs by up to 65 %).

    `parent` (a region inside the root's steps, `propose`'s `inherited`): the enclosing region's verified Difference of
    layer k, which the step inherits (`inherit`). It lists the pairs not in `parent` that it keeps, and those of `parent`
    that it keeps whose lines here leave less than PAIR_GAP of the slack (`_slack`, on this region's range of z_a - z_b)
    that `parent`'s leave; it drops (`drop`) those of `parent` whose two neurons are stable here or that the rule above
    leaves out (each neuron's own relu line does better than the pair's, as that rule measured); the others keep
    `parent`'s lines, derived again for nothing by the checker where this region's range is no narrower. The returned
    Difference is what the checker then holds: `parent`'s pairs kept (in its order), then the listed ones, so that the
    region's float bounds use exactly the lines the checker will."""
    a, b = net.pairs[k]
    open_ = (np.asarray(lo) < 0) & (np.asarray(up) > 0)
    place = np.full(len(open_), -1)  # neuron -> the place of its pair in `parent`
    if parent is not None:
        place[parent.a] = np.arange(len(parent.a))
    a, b = a[open_[a] | open_[b]], b[open_[a] | open_[b]]  # a pair of stable neurons is exact neuron by neuron: not
    # bounded (and dropped from `parent`'s)
    dlo, dup = crown_layer(net, k, relax, lo_in, up_in, diff, pick=(a, b))  # the rows e_a - e_b
    lo_a, lo_b, up_a, up_b = (np.asarray(v)[i] for v in (lo, up) for i in (a, b))
    dlo, dup = np.maximum(dlo, lo_a - up_b), np.minimum(dup, up_a - lo_b)
    same = ((lo_a >= 0) & (lo_b >= 0)) | ((up_a <= 0) & (up_b <= 0))  # both active or both inactive: the pair's
    # lines would be D = delta or D = 0, which rewrite its two terms into the same value: kept for nothing
    if tight is not None:  # the neurons' ranges as bounded here, both sides (`_one_sided` claims one side of a stable neuron)
        lo_a, lo_b, up_a, up_b = (np.asarray(v)[i] for v in tight for i in (a, b))
    keep = ((dup - dlo <= np.minimum(up_a - lo_a, up_b - lo_b)) | KEEP_EVERY_PAIR) & ~same
    dlo, dup = _pad(dlo, dup)
    rb = None
    if planes:  # the pairs kept so far get planes in place of their lines (the others are dropped: no lines)
        cand = np.flatnonzero(keep)
        slopes = _difference_slopes(dlo[cand], dup[cand], lo, up, a[cand], b[cand])[4:]
        got, rl, ru, mid = difference_planes_fast(dlo[cand], dup[cand], lo, up, a[cand], b[cand], slopes)
        lines = Relaxation(*(_scatter(len(a), cand, getattr(got, f)) for f in LINES))
        rb = tuple(_scatter(len(a), cand, v) for v in (rl, ru))
        centre = tuple(_scatter(len(a), cand, v) for v in mid)
    elif fast or parent is not None:
        lines = difference_lines_fast(dlo, dup, lo, up, a, b)
    if parent is not None:  # see `parent`
        old = np.flatnonzero(place[a] >= 0)
        gone = a[old[~keep[old]]]  # `parent`'s pairs that the rule above leaves out here: dropped (their own lines do better)
        if planes:  # the planes' gap between upper and lower at P's centre against `parent`'s there
            ours, theirs = _lines_at(lines, old), _lines_at(parent.lines, place[a[old]])
            zero = np.zeros(len(old))
            pr = [zero if v is None else v[place[a[old]]] for v in (parent.lower_b, parent.upper_b)]
            cd, cb = centre[0][old], centre[1][old]
            gap = lambda l, r0, r1: ((l.upper_slope - l.lower_slope) * cd + (r1 - r0) * cb  # noqa: E731
                                     + l.upper_intercept - l.lower_intercept)
            keep[old] &= gap(ours, rb[0][old], rb[1][old]) < PLANE_GAP * gap(theirs, *pr)
        else:
            theirs = _slack(_lines_at(parent.lines, place[a[old]]), dlo[old], dup[old])
            keep[old] &= _slack(_lines_at(lines, old), dlo[old], dup[old]) < PAIR_GAP * theirs
    keep = np.flatnonzero(keep)
    dlo, dup, a, b = dlo[keep], dup[keep], a[keep], b[keep]
    lines = _lines_at(lines, keep) if fast or planes else difference_lines(dlo, dup, lo, up, a, b)
    rb = tuple(v[keep] for v in rb) if rb is not None and len(a) else None
    step = {"kind": "difference", "layer": k, "pairs": _pair_list(a, b), "lower": _q(dlo),
            "upper": _q(dup), "lower_slope": _q(lines.lower_slope), "lower_intercept": _q(lines.lower_intercept),
            "upper_slope": _q(lines.upper_slope), "upper_intercept": _q(lines.upper_intercept),
            **({"lower_slope_b": _q(rb[0]), "upper_slope_b": _q(rb[1])} if rb else {})}
    if parent is None:
        return step, Difference(a, b, lines, *(rb or (None, None)))
    rest = open_[parent.a] | open_[parent.b]
    rest[place[gone]] = False
    drop = _pair_list(parent.a[~rest], parent.b[~rest])
    rest[place[a][place[a] >= 0]] = False
    kept = _lines_at(parent.lines, np.flatnonzero(rest))
    planes_b = None
    if rb is not None or parent.lower_b is not None:
        pb = [(v[rest] if v is not None else np.zeros(int(rest.sum()))) for v in (parent.lower_b, parent.upper_b)]
        nb = rb or (np.zeros(len(a)), np.zeros(len(a)))
        planes_b = tuple(np.concatenate([x, y]) for x, y in zip(pb, nb))
    merged = Difference(np.concatenate([parent.a[rest], a]), np.concatenate([parent.b[rest], b]),
                        Relaxation(*(np.concatenate([getattr(kept, f), getattr(lines, f)]) for f in LINES)),
                        *(planes_b or (None, None)))
    return {**step, "inherit": True, **({"drop": drop} if drop else {})}, merged


def _interval_and_linear(net: FloatNet, k: int, steps: list, method: str, relax: list, claims: list, box: tuple,
                         assume: dict | None, diff: dict, exact_output: bool, alpha: tuple | None = None) -> tuple[list, list]:
    """Layer k's interval step and (CROWN, alpha, LP, from layer 2 on) its linear step, appended to
    `steps`: their intersection, as floats."""
    prev = box if k == 1 else interval_relu(*claims[-1])
    lo, up = pad_outward(*interval_dense(net.weights[k - 1], net.biases[k - 1], *map(np.asarray, prev)))
    steps.append({"kind": "interval", "layer": k, "lower": _q(lo), "upper": _q(up)})
    # alpha: a region's ReLU splits on layer 1 give layer 1 a linear step too, whose multipliers on the layer's own
    # splits bound its other neurons over the region, not the box (alpha.SAME_LAYER)
    own = method in ("alpha", "lp") and _alpha().SAME_LAYER and any(j == k for j, _ in (assume or {}))
    if method in ("crown", "alpha", "lp") and (k > 1 or own):
        width = net.weights[k - 1].shape[0]
        cap = ALPHA_MAX_ENTRIES if exact_output else ALPHA_MAX_ENTRIES_LEAF
        if method in ("alpha", "lp") and 2 * width * sum(m.size for m in _unstable(claims)) <= cap:
            iters, warm, state = alpha or (60, None, {})  # (Adam steps, starting parameters per layer, where to put the result)
            if k == 1:  # its own splits' multipliers only: always from zero with 60 steps (written so that a ReLU-split
                # child reproduced its parent's layer 1; children now take it from the parent, see `fixed`, and the
                # parent's start with the region's usual steps measured no better, quick runs at load 3-4: w16x2-prune50-box
                # 1.749x with it, 1.735x from zero; w32x2-prune50-ball50 1.056x and 1.052x)
                iters, warm = 60, None
            alphas, betas, clo, cup = _alpha().optimise_alpha(net, k, relax, claims, *box, assume=assume, diff=_lines_only(diff), iters=iters,
                                                     warm=(warm or {}).get(k))
            state[k] = (alphas, betas)
            extra = {"alpha": _alpha_json(alphas, claims), **_beta_json(betas)}
        else:
            (clo, cup), extra = crown_layer(net, k, relax, *box, diff), {}
        clo, cup = pad_outward(clo, cup)
        if not exact_output and all(a >= b for a, b in zip(clo, lo)) and all(a <= b for a, b in zip(cup, up)):
            steps.pop()  # a leaf's interval step adds nothing to a linear step at least as tight: not written (checked for nothing)
        steps.append({"kind": "linear", "layer": k, "lower": _q(clo), "upper": _q(cup), **extra})
        lo, up = [max(a, b) for a, b in zip(lo, clo)], [min(a, b) for a, b in zip(up, cup)]
    return lo, up


SPARSE_FIRST = True  # see `propose`'s `inherited`: layer 1 of a region inside the root's steps by a linear step on its listed neurons
SPARSE_FIRST_SHARE = 0.5  # ... where the root leaves less than this share of layer 1 unstable (else an interval step on the
# whole layer, one exact product for the checker: w16x2-svd50-box, 32 of 32 unstable, 0.37 against 0.89 CPU ms a leaf)
ONE_SIDED = True  # see `_one_sided`
ALPHA_ONE_SIDED = True  # the same for linear steps with alpha slopes (a row of slopes per claimed side)
LIST_GAP = 0.1  # see `_listed`


def _listed(lo, up, tlo, tup, paired) -> np.ndarray:
    """Which neurons a region inside the root's steps bounds again on a layer from 2 on with difference pairs
    (`propose`'s `inherited`), of those the root left unstable ([lo, up]), given the bounds the region derives for them
    ([tlo, tup]): those they make stable, those whose relaxation gap -l*u/(u-l) they shrink below LIST_GAP of the
    root's, and those in no (f, g) pair (`paired` false). The others keep the root's bounds, which the checker then need
    not derive again. On the VeryDiff MNIST pair (400 leaves) layer 2 lists 34 of 69 neurons (35 fewer rows of
    back-substitution to check on every leaf) and the tree's bound moves by 3e-6 (1.280670 against 1.280640 listing
    all 69): there the unstable neurons' own lines matter little beside the difference lines of their pairs. Without
    pairs they matter (tiny_prune at 21/20: 1.403 after 255 splits listing only stable neurons, 1.0496 after 13 listing
    all), hence every neuron of a layer without pairs is listed."""
    gap = lambda l, u: np.where((l < 0) & (u > 0), -l * u / np.where(u > l, u - l, 1.0), 0.0)  # noqa: E731
    return np.flatnonzero((tlo >= 0) | (tup <= 0) | ~paired | (gap(tlo, tup) < LIST_GAP * gap(lo, up)))


def _one_sided(lo, up, clo, cup, one_sided: bool = True) -> tuple[list, list, np.ndarray, np.ndarray]:
    """A region's claims (lower, upper) on neurons its enclosing region left unstable ([lo, up]), None where a side is
    not claimed (the checker keeps the enclosing region's): a neuron these bounds make inactive needs only its upper
    bound (its relaxation is 0 whatever the lower), an active one only its lower (its relaxation is z). The difference
    steps' caps then use the enclosing bound on the other side, as the checker does. Also the bounds the checker then
    holds (float arrays)."""
    clo, cup = np.asarray(clo, dtype=np.float64), np.asarray(cup, dtype=np.float64)
    new_lo, new_up = np.maximum(lo, clo), np.minimum(up, cup)
    step_lo, step_up = clo.tolist(), cup.tolist()
    if ONE_SIDED and one_sided:
        ok = new_lo <= new_up  # an empty region: both sides (the contradiction ends it)
        for side, step, keep, null in ((0, step_lo, lo, ok & (new_up <= 0)), (1, step_up, up, ok & (new_lo >= 0) & (new_up > 0))):
            for t in np.flatnonzero(null):
                step[t] = None
            (new_lo, new_up)[side][null] = keep[null]
    return step_lo, step_up, new_lo, new_up


def _sparse_bounds(net: FloatNet, k: int, rows, method: str, relax: list, claims: list, box: tuple, diff: dict,
                   alpha: tuple) -> tuple:
    """Float bounds of layer k's neurons `rows` over `box` (a region inside the root's steps, see `propose`'s
    `inherited`), padded outward: CROWN, or alpha-CROWN where `method` is alpha and the slopes fit ALPHA_MAX_ENTRIES_LEAF
    (`alpha`: (Adam steps, starting parameters per layer, where to put the result)). Also alpha's slopes of all of layer
    k's rows (None for CROWN)."""
    width = net.weights[k - 1].shape[0]
    if method == "alpha" and 2 * width * sum(m.size for m in _unstable(claims)) <= ALPHA_MAX_ENTRIES_LEAF:
        iters, warm, state = alpha
        alphas, betas, lo, up = _alpha().optimise_alpha(net, k, relax, claims, *box, diff=_lines_only(diff), iters=iters,
                                                        warm=(warm or {}).get(k))
        assert not betas, "a region inside the root's steps has no ReLU splits"
        state[k] = (alphas, betas)
        lo, up = pad_outward(np.asarray(lo)[rows], np.asarray(up)[rows])
        return lo, up, alphas
    lo, up = pad_outward(*crown_layer(net, k, relax, *box, diff, pick=(np.asarray(rows, dtype=np.intp), None)))
    return lo, up, None


class Enclosing(tuple):
    """`propose`'s `inherited`: an enclosing region's float (lower, upper) claims of hidden layers 1..n-1, and its float
    Differences `diff` (layer -> Difference), whose lines the region's difference steps inherit (`_difference_step`'s
    `parent`): the checker holds exactly those (the root's steps, which the certificate holds)."""

    diff: dict


def enclosing(p: Proposal) -> Enclosing:
    out = Enclosing(p.claims)
    out.diff = dict(p.diff or {})
    return out


def propose(net: FloatNet, exact_joint, box: tuple[list[Fraction], list[Fraction]], method: str,
            assume: dict | None = None, margins: tuple = (), differential: bool = True, exact_output: bool = True,
            inherited: tuple = (), alpha_iters: int = 60, warm: dict | None = None, outputs: tuple | None = None,
            fixed: tuple = ()) -> Proposal:
    """Steps for `method` ("interval", "crown", "alpha" or "lp") on the joint network (network input space).

    Layers 1..n-1: an interval step (and a linear step from layer 2 on), padded outward, then the
    ReLU relaxation built on their intersection, clamped by the region's ReLU splits `assume`
    ({(layer, neuron): "inactive" | "active"}), then (crown, alpha, `differential`) a difference step
    for the layer's (f, g) neuron pairs `net.pairs`. The output layer n: computed exactly here, or
    (`exact_output=False`, branch-and-bound leaves: about half of a leaf's time) in floats padded
    outward like the hidden layers, which the checker re-derives exactly all the same.

    `inherited` (CROWN and alpha, branch-and-bound regions inside a box whose steps the certificate holds): the
    float (lower, upper) of hidden layers 1..n-1 that the checker verified for an enclosing region
    (its `claims`). From layer 2 on, a layer then has no interval step and its linear step bounds only
    the neurons those bounds leave unstable (`neurons`), and every hidden layer's relu_relaxation step
    lists lines for those neurons only: the others keep their phase, and their exact relaxations (the
    enclosing region's lines) do not depend on their bounds. On the VeryDiff MNIST pair, 69 of layer
    2's 200 rows. Of those, a layer from 2 on lists only what `_listed` keeps (34 of the 69), layer 1
    (a linear step instead of an interval step: 70 of its 200 neurons) all of them, and each listed neuron
    the region makes stable only the side that does (`_one_sided`). Layer 1 takes an interval step on the whole layer
    instead where the root leaves SPARSE_FIRST_SHARE of it or more unstable. Alpha (`_sparse_bounds`): the listed
    neurons' rows of alpha-CROWN's slopes, a row per claimed side (ALPHA_ONE_SIDED). An `Enclosing` also holds the
    enclosing region's difference lines, which each layer's difference step then inherits (`_difference_step`'s `parent`).

    `outputs` (with `exact_output=False`: branch-and-bound leaves inside a region whose output-layer steps the
    certificate holds): (neurons, lower, upper): only these output neurons are bounded again (a linear step with
    `neurons`), the others keep the enclosing region's verified (exact) `lower` and `upper`. On the VeryDiff MNIST
    pair one output row of ten is above the target at the root; its leaves bound that one.

    alpha: `alpha_iters` Adam steps per layer, each started from `warm` (an enclosing region's
    Proposal.warm) where given; the Proposal's `warm` holds this region's optimised parameters.

    `fixed` (a ReLU-split child, which the certificate gives steps from its split layer j on): `below(the
    parent's Proposal, j)`, i.e. (j, the parent's layers below j as a `Below`). Layers 1..j-1 are taken from the parent as the checker holds them (its claims,
    lines and difference lines), not bounded again: bounded again, with alpha started from the parent's
    optimum, they can come out tighter than the parent's verified ones, and the child's claims built on
    them are then more than the checker derives (a rejected tree, seen on three hidden layers).
    """
    lo_in, up_in = box_floats(*box)
    n = len(net.weights)
    steps: list[dict] = []
    relax: list[Relaxation] = []
    claims: list[tuple[np.ndarray, np.ndarray]] = []
    diff: dict = {}  # layer -> Difference (floats); qdiff: the same lines as the checker's exact IntVecs
    qdiff: dict = {}
    pairs = (net.pairs or {}) if differential and method in ("crown", "alpha") else {}
    sparse = bool(inherited) and method in ("crown", "alpha")  # see `inherited`
    planes = PLANES and method == "crown" and sparse  # see PLANES
    state: dict = {}  # alpha: layer -> (alphas, betas)
    upto, parent = fixed or (1, None)  # parent: a Below
    for k in range(1, n if exact_output else n + 1):
        if k < upto:  # see `fixed`: the parent's layer k, as verified
            claims.append(parent.claims[k - 1])
            relax.append(parent.relax[k - 1])
            if k in parent.diff:
                diff[k] = parent.diff[k]
                if exact_output:  # (qdiff: only the exact output layer's back-substitution reads it)
                    qdiff[k] = _qdiff(diff[k])
            if warm and k in warm:
                state[k] = warm[k]
            continue
        if k == n and outputs is not None:  # see `outputs`
            rows, out_lo, out_up = list(outputs[0]), list(outputs[1]), list(outputs[2])
            clo, cup, alphas = _sparse_bounds(net, k, rows, method, relax, claims, (lo_in, up_in), diff, (alpha_iters, warm, state))
            one_sided = ONE_SIDED and (alphas is None or ALPHA_ONE_SIDED)
            for t, (i, a, b) in enumerate(zip(rows, clo, cup)):
                low, high = max(out_lo[i], Fraction(a)), min(out_up[i], Fraction(b))
                if one_sided and -out_lo[i] <= high:  # the enclosing region's lower side is within this row's bound: kept
                    clo[t] = None
                elif one_sided and out_up[i] <= -low:
                    cup[t] = None
                out_lo[i], out_up[i] = (out_lo[i] if clo[t] is None else low), (out_up[i] if cup[t] is None else high)
            extra = {} if alphas is None else {"alpha": _alpha_json(alphas, claims, rows, (clo, cup))}
            steps.append({"kind": "linear", "layer": k, "neurons": rows, "lower": clo, "upper": cup, **extra})
            return Proposal(steps, out_lo, out_up, tuple(relax), tuple(claims), margins=tuple(margins), diff=diff, warm=state)
        tight = relisted = None  # see `_difference_step`; the neurons bounded again here (sparse)
        if sparse and k < n and (k > 1 or (SPARSE_FIRST and np.mean((inherited[0][0] < 0) & (inherited[0][1] > 0)) < SPARSE_FIRST_SHARE)):
            lo, up = (np.array(v, dtype=np.float64) for v in inherited[k - 1])
            rows = np.flatnonzero((lo < 0) & (up > 0))
            alphas = None
            if k == 1:  # the first layer's range over the box, as the interval step has it (exact, up to the padding)
                clo, cup = pad_outward(*interval_dense(net.weights[0][rows], net.biases[0][rows], lo_in, up_in))
            else:
                clo, cup, alphas = _sparse_bounds(net, k, rows, method, relax, claims, (lo_in, up_in), diff,
                                                  (alpha_iters, warm, state))
            tight = lo.copy(), up.copy()
            tight[0][rows], tight[1][rows] = np.maximum(lo[rows], clo), np.minimum(up[rows], cup)
            if k > 1 and k in pairs and not assume and not planes:  # see `_listed` (a region under a ReLU split lists every one: an
                # ancestor between it and the root may have written this layer's steps, which its own then replace)
                paired = np.zeros(len(lo), dtype=bool)
                paired[np.concatenate(pairs[k])] = True
                sel = _listed(lo[rows], up[rows], tight[0][rows], tight[1][rows], paired[rows])
                rows, clo, cup = rows[sel], np.asarray(clo)[sel], np.asarray(cup)[sel]
            relisted = rows
            step_lo, step_up, lo[rows], up[rows] = _one_sided(lo[rows], up[rows], clo, cup, alphas is None or ALPHA_ONE_SIDED)
            extra = {} if alphas is None else {"alpha": _alpha_json(alphas, claims, rows, (step_lo, step_up))}
            steps.append({"kind": "linear", "layer": k, "neurons": rows.tolist(), "lower": step_lo, "upper": step_up, **extra})
            lo, up = lo.tolist(), up.tolist()
        else:
            lo, up = _interval_and_linear(net, k, steps, method, relax, claims, (lo_in, up_in), assume, diff, exact_output,
                                          (alpha_iters, warm, state))
            if sparse and k < n:  # the checker intersects with what it verified before
                lo, up = np.maximum(lo, inherited[k - 1][0]).tolist(), np.minimum(up, inherited[k - 1][1]).tolist()
        if k == n:  # the output layer in floats (exact_output=False)
            return Proposal(steps, [Fraction(v) for v in lo], [Fraction(v) for v in up], tuple(relax), tuple(claims),
                            margins=tuple(margins), diff=diff, warm=state)
        for (layer, i), phase in (assume or {}).items():
            if layer == k:
                lo[i], up[i] = (lo[i], min(up[i], 0.0)) if phase == "inactive" else (max(lo[i], 0.0), up[i])
        if any(a > b for a, b in zip(lo, up)):  # the checker sees the same contradiction
            return Proposal(steps, [], [], tuple(relax), tuple(claims), empty=True)
        claims.append((np.array(lo), np.array(up)))
        r = exact_relaxation(lo, up) if exact_output else exact_relaxation_fast(lo, up)
        relax.append(r)
        # sparse: lines only for the neurons the enclosing region left unstable; the others keep its lines, which
        # are exact for their phase (as this region's would be). Of those, only the ones bounded again here: the others
        # keep the enclosing region's bounds, and its lines on them (which are no looser than this region's `r` there:
        # the same slopes, intercepts correctly rounded where `exact_relaxation_fast` adds a rounding bound)
        listed = (relisted if relisted is not None else np.flatnonzero((inherited[k - 1][0] < 0) & (inherited[k - 1][1] > 0))) \
            if sparse else slice(None)
        steps.append({"kind": "relu_relaxation", "layer": k, **({"neurons": listed.tolist()} if sparse else {}),
                      **{key: _q(np.asarray(getattr(r, key))[listed])
                         for key in ("lower_slope", "lower_intercept", "upper_slope", "upper_intercept")}})
        if k in pairs:  # see `Enclosing`
            parent = getattr(inherited, "diff", {}).get(k) if sparse and INHERIT_PAIRS and not assume else None  # (under a
            # ReLU split the checker may hold an ancestor's pairs here, not the root's: the step replaces them)
            step, diff_k = _difference_step(net, k, relax, diff, lo, up, lo_in, up_in, fast=not exact_output, tight=tight,
                                            parent=parent, planes=planes)
            steps.append(step)  # even with no pairs: without `inherit`, a split region must not keep its parent's pairs here
            if any(x > y for x, y in zip(step["lower"], step["upper"])):  # contradictory: the region is empty
                return Proposal(steps, [], [], tuple(relax), tuple(claims), empty=True)
            if len(diff_k.a):
                diff[k] = diff_k
            if exact_output:
                qdiff[k] = _qdiff(diff_k)
    # output layer: exact
    if n == 1:
        out_lo, out_up = exact.interval_dense(exact_joint[0], *box)
    else:
        prev = [[max(Fraction(float(v)), Fraction(0)) for v in b] for b in claims[-1]]
        out_lo, out_up = exact.interval_dense(exact_joint[-1], *prev)
    steps.append({"kind": "interval", "layer": n, "lower": _q(out_lo), "upper": _q(out_up)})
    if method in ("crown", "alpha", "lp") and n > 1:
        width = len(exact_joint[-1][1][0])
        extra, alpha_low, alpha_up, beta_low, beta_up = {}, None, None, None, None
        if method in ("alpha", "lp"):  # lp: slopes from the triangle LP's dual (certify/bounds/lp.py)
            alphas, betas = ((lp_alphas(net, relax, claims, lo_in, up_in)[0], []) if method == "lp" and lp_fits(net)
                             else _alpha().optimise_alpha(net, n, relax, claims, lo_in, up_in, assume=assume, diff=_lines_only(diff),
                                                 iters=alpha_iters, warm=(warm or {}).get(n))[:2])
            state[n] = (alphas, betas)
            extra = {"alpha": _alpha_json(alphas, claims), **_beta_json(betas)}
            alpha_low, alpha_up = _exact_alpha(alphas, claims, width)
            beta_low, beta_up = _exact_beta(betas, assume, width, net.widths)
        qbox = (exact.qvec(box[0]), exact.qvec(box[1]))
        qrelax = [_qlines(r) for r in relax]
        llo = exact.backsubstitute(1, exact_joint, qrelax, qbox, alpha_low, beta_low, qdiff)  # 1, -1: the identity rows, negated
        lup = [-v for v in exact.backsubstitute(-1, exact_joint, qrelax, qbox, alpha_up, beta_up, qdiff)]
        steps.append({"kind": "linear", "layer": n, "lower": _q(llo), "upper": _q(lup), **extra})
        out_lo, out_up = [max(a, b) for a, b in zip(out_lo, llo)], [min(a, b) for a, b in zip(out_up, lup)]
    return Proposal(steps, out_lo, out_up, tuple(relax), tuple(claims), margins=tuple(margins), diff=diff, warm=state)
