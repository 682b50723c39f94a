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

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import numpy as np

from ..checker.graph import Graph
from ..checker.numbers import rational_str
from . import curves

PAD_REL, PAD_ABS = 1e-9, 1e-10
GRID = 2.0 ** -24  # slopes and plane coefficients are rounded to this grid: the checker's integers stay short


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


def floats(graph: Graph) -> list[FloatNode]:
    def arr(v):
        return None if v is None else np.array([[float(x) for x in r] for r in v] if v and isinstance(v[0], tuple) else [float(x) for x in v])
    return [FloatNode(n.name, n.op, n.inputs, arr(n.weight), arr(n.bias), arr(n.scale), arr(n.shift), arr(n.threshold)) for n in graph.nodes]


def pad(lo, up):
    return lo - (PAD_REL * np.abs(lo) + PAD_ABS), up + (PAD_REL * np.abs(up) + PAD_ABS)


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


def _mccormick(bx, by):
    """Per element, a lower plane (c_x, c_y, c_0) below x*y and an upper plane above it on the box:
    McCormick's slopes (lower y_l x + x_l y or y_u x + x_u y; upper y_u x + x_l y or y_l x + x_u y,
    whichever is tighter at the centre), rounded to the grid; then the tightest c_0 for them, which
    for the bilinear x*y is the extreme of x*y - c_x x - c_y y over the four corners, computed exactly
    and rounded outward."""
    (lx, ux), (ly, uy) = bx, by
    lower, upper = [], []
    for i in range(len(lx)):
        a, b, c, d = (Fraction(float(v)) for v in (lx[i], ux[i], ly[i], uy[i]))
        corners = [(x, y) for x in (a, b) for y in (c, d)]
        mid = ((a + b) / 2, (c + d) / 2)

        def plane(cx, cy, side):
            cx, cy = Fraction(float(on_grid(float(cx)))), Fraction(float(on_grid(float(cy))))
            gaps = [x * y - cx * x - cy * y for x, y in corners]
            c0 = min(gaps) if side > 0 else max(gaps)
            return cx, cy, c0

        lo_p = max((plane(c, a, 1), plane(d, b, 1)), key=lambda p: p[0] * mid[0] + p[1] * mid[1] + p[2])
        up_p = min((plane(d, a, -1), plane(c, b, -1)), key=lambda p: p[0] * mid[0] + p[1] * mid[1] + p[2])
        lower.append((float(lo_p[0]), float(lo_p[1]), _down(lo_p[2])))
        upper.append((float(up_p[0]), float(up_p[1]), _up(up_p[2])))
    return np.array(lower), np.array(upper)


def _curve_relax(fn, l, u):
    """The least-area slopes (bounds/curves.py), rounded to the grid; then the tightest intercepts for them."""
    best = curves.best_slopes(fn, l, u)
    return curves.relax(fn, l, u, lower_slope=on_grid(best[0]), upper_slope=on_grid(best[1]))


def _unary_back(node, lam, r):
    pos = lam >= 0
    return [np.where(pos, lam * r.lower_slope, lam * r.upper_slope)], np.where(pos, lam * r.lower_intercept, lam * r.upper_intercept).sum(1)


def _mul_back(node, lam, planes):
    lower, upper = planes
    pos = lam >= 0
    pick = [np.where(pos, lam * lower[:, k], lam * upper[:, k]) for k in range(3)]
    return [pick[0], pick[1]], pick[2].sum(1)


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
               lambda n, bs: curves.interval(fn, *bs[0]), lambda n, bs: _curve_relax(fn, *bs[0]), _unary_back)


@dataclass(frozen=True)
class Row:
    eval: Callable  # (node, numpy inputs) -> numpy output (float64)
    jeval: Callable  # (node, jax inputs) -> jax output
    interval: Callable  # (node, [(lo, up)]) -> (lo, up), sound in floats
    relax: Callable | None  # (node, [(lo, up)]) -> lines or planes; None: a linear op
    back: Callable  # (node, lam (rows x out), relaxation) -> ([lam per input], constants per row)


def _linear_interval(n, bs):
    (lo, up), = bs
    mid, rad = n.weight @ ((lo + up) / 2) + n.bias, np.abs(n.weight) @ ((up - lo) / 2)
    return pad(mid - rad, mid + rad)


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
                lambda n, bs: (np.maximum(bs[0][0], 0), np.maximum(bs[0][1], 0)), lambda n, bs: _relu_lines(*bs[0]), _unary_back),
}
ENGINE["jumprelu"] = Row(lambda n, xs: np.where(xs[0] > n.threshold, xs[0], 0.0),
                         lambda n, xs: __import__("jax").numpy.where(xs[0] > n.threshold, xs[0], 0.0),
                         lambda n, bs: pad(*(np.array([float(v) for v in b]) for b in _jump_exact(n, bs))),
                         lambda n, bs: _jump_lines(n, *bs[0]), _unary_back)
ENGINE.update({fn: _curve_row(fn) for fn in ("gelu", "exp", "erf", "tanh", "sigmoid", "square", "rsqrt", "reciprocal", "sqrt")})


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


def backsubstitute(nodes, target, lam, box, relax) -> np.ndarray:
    """Lower bounds of lam @ value(target) over the box, through the relaxations (float64)."""
    coef, const = {target: lam}, np.zeros(len(lam))
    for n in _ancestors(nodes, target):
        c = coef.pop(n.name, None)
        if c is None:
            continue
        parts, k = ENGINE[n.op].back(n, c, relax.get(n.name))
        const = const + k
        for s, part in zip(n.inputs, parts):
            coef[s] = coef[s] + part if s in coef else part
    c = coef.pop("x", None)
    if c is not None:
        const = const + np.where(c >= 0, c * box[0], c * box[1]).sum(1)
    return const


def _q(values) -> list[str]:
    return [rational_str(Fraction(float(v))) for v in values]


def crown(graph: Graph, box, method: str = "crown") -> tuple[float, list[dict]]:
    """(bound on max_i |d_i| over the box, certificate steps). `method` interval: interval steps only."""
    nodes = floats(graph)
    lo, up = (np.array([float(v) for v in b]) for b in box)
    bounds, relax, steps = {"x": (lo, up)}, {}, []
    needed = {s for n in nodes if ENGINE[n.op].relax is not None for s in n.inputs} | {graph.output}
    for n in nodes:  # per node: interval bounds, its relaxation (nonlinear), then back-substitution bounds (if needed)
        row = ENGINE[n.op]
        l, u = row.interval(n, [bounds[s] for s in n.inputs])
        steps.append({"kind": "bounds", "node": n.name, "via": "interval", "lower": _q(l), "upper": _q(u)})
        if row.relax is not None and method != "interval":
            r = row.relax(n, [bounds[s] for s in n.inputs])
            relax[n.name] = r
            if n.op == "mul":
                steps.append({"kind": "relax", "node": n.name, "lower": [_q(p) for p in r[0]], "upper": [_q(p) for p in r[1]]})
            else:
                steps.append({"kind": "relax", "node": n.name, **{k: _q(getattr(r, k)) for k in
                                                                ("lower_slope", "lower_intercept", "upper_slope", "upper_intercept")}})
        if method != "interval" and n.name in needed:
            eye = np.eye(len(l))
            cl, cu = pad(backsubstitute(nodes, n.name, eye, (lo, up), relax), -backsubstitute(nodes, n.name, -eye, (lo, up), relax))
            steps.append({"kind": "bounds", "node": n.name, "via": "linear", "lower": _q(cl), "upper": _q(cu)})
            l, u = np.maximum(l, cl), np.minimum(u, cu)
        bounds[n.name] = (l, u)
    l, u = bounds[graph.output]
    return float(max(np.max(-l), np.max(u))), steps


def falsify(graph: Graph, box, *, starts: int = 64, steps: int = 100, seed: int = 0) -> np.ndarray:
    """Projected gradient ascent on max_i |d_i(x)| from many starts (JAX); the best input found."""
    import jax
    import jax.numpy as jnp

    nodes = floats(graph)
    lower, upper = (jnp.asarray([float(v) for v in b]) for b in box)
    width = upper - lower

    def objective(x):
        values = {"x": x}
        for n in nodes:
            values[n.name] = ENGINE[n.op].jeval(n, [values[s] for s in n.inputs])
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
