"""Interval (IBP) and backward linear (CROWN) bounds on a dense/ReLU network, in JAX.

Per-operator rules (Soundness lines state why each is an over-approximation in real arithmetic;
float rounding is absorbed by the outward padding in `certify.bounds.driver` and re-checked exactly):

| op    | interval_<op>                                   | relax_<op> (lower, upper line)              |
|-------|-------------------------------------------------|---------------------------------------------|
| dense | W+ l + W- u + b, W+ u + W- l + b                | exact (linear)                              |
| relu  | max(l, 0), max(u, 0)                            | unstable l<0<u: (alpha z, u(z-l)/(u-l));     |
|       |                                                 | active: (z, z); inactive: (0, 0)             |

Soundness (dense): each output is a sum of w*x terms, each minimised at a box corner.
Soundness (relu): relu is monotone; on [l, u] with l < 0 < u the chord lies above the convex relu
and alpha*z (0 <= alpha <= 1) below it.
"""

from __future__ import annotations

from dataclasses import dataclass

import sys

import numpy as np

from .network import FloatNet


@dataclass(frozen=True)
class Relaxation:
    """ReLU lines per neuron: lower_slope*z + lower_intercept <= relu(z) <= upper_slope*z + upper_intercept."""

    lower_slope: np.ndarray
    lower_intercept: np.ndarray
    upper_slope: np.ndarray
    upper_intercept: np.ndarray


def _xp(*arrays):
    """jax.numpy while tracing (alpha-CROWN's autodiff), numpy otherwise: op-by-op JAX dispatch
    compiles every new shape, which dominates on small networks. No JAX array exists before JAX is imported, and
    this module does not import it (see network.py)."""
    jax = sys.modules.get("jax")
    return jax.numpy if jax is not None and any(isinstance(a, jax.Array) for a in arrays) else np


def interval_dense(w, b, lower, upper):
    xp = _xp(w, lower)
    wp, wn = xp.maximum(w, 0.0), xp.minimum(w, 0.0)
    return wp @ lower + wn @ upper + b, wp @ upper + wn @ lower + b


def interval_relu(lower, upper):
    xp = _xp(lower)
    return xp.maximum(lower, 0.0), xp.maximum(upper, 0.0)


def relax_relu(lower, upper, alpha=None) -> Relaxation:
    """CROWN's relaxation; `alpha` (lower slopes of unstable neurons) defaults to the adaptive 0/1 choice."""
    lower, upper = np.asarray(lower), np.asarray(upper)
    active, inactive = lower >= 0, upper <= 0
    unstable = ~(active | inactive)
    denom = np.where(unstable, upper - lower, 1.0)
    up_slope = np.where(active, 1.0, np.where(unstable, upper / denom, 0.0))
    up_int = np.where(unstable, -up_slope * lower, 0.0)
    if alpha is None:
        alpha = (upper >= -lower).astype(np.float64)
    lo_slope = np.where(active, 1.0, np.where(unstable, np.clip(alpha, 0.0, 1.0), 0.0))
    return Relaxation(lo_slope, np.zeros_like(lo_slope), up_slope, up_int)


@dataclass(frozen=True)
class Difference:
    """Differential lines of one layer: for pair p = (a[p], b[p]), lower_slope*delta + lower_intercept
    <= relu(z_a) - relu(z_b) <= upper_slope*delta + upper_intercept, delta = z_a - z_b (the checker's
    `difference` step)."""

    a: np.ndarray
    b: np.ndarray
    lines: Relaxation
    lower_b: np.ndarray | None = None  # planes (numpy only): lower_slope*delta + lower_b*z_b + lower_intercept <= D
    upper_b: np.ndarray | None = None  # <= upper_slope*delta + upper_b*z_b + upper_intercept; None: 0 (lines)


def _apply_difference(xp, h, lam, const, r: Relaxation, d: Difference):
    """Rows h (coefficients on relu(z)) already relaxed neuron by neuron into (lam, const): where h_a,
    h_b have opposite signs, redo the pair as c*relu(z_ref) + d*D (see exact.backsubstitute)."""
    if xp is np:
        return _apply_difference_np(h, lam, const, r, d)
    if d.lower_b is not None:
        raise ValueError("difference planes are for numpy back-substitution only")
    xa, xb = h[:, d.a], h[:, d.b]
    opp = xa * xb < 0
    ref_a = xp.abs(xa) >= xp.abs(xb)
    c, dd = xa + xb, xp.where(ref_a, -xb, xa)
    take = lambda v, i: v[..., i]  # slopes are per neuron, or per row and neuron (alpha)
    pick = lambda v: xp.where(ref_a, take(v, d.a), take(v, d.b))
    c_slope = xp.where(c >= 0, c * pick(r.lower_slope), c * pick(r.upper_slope))
    c_int = xp.where(c >= 0, c * pick(r.lower_intercept), c * pick(r.upper_intercept))
    ds = xp.where(dd >= 0, dd * d.lines.lower_slope, dd * d.lines.upper_slope)
    dt = xp.where(dd >= 0, dd * d.lines.lower_intercept, dd * d.lines.upper_intercept)
    std_int = sum(xp.where(x >= 0, x * take(r.lower_intercept, i), x * take(r.upper_intercept, i)) for x, i in ((xa, d.a), (xb, d.b)))
    new_a = xp.where(ref_a, c_slope, 0.0) + ds
    new_b = xp.where(ref_a, 0.0, c_slope) - ds
    cols = xp.arange(h.shape[1])
    ea, eb = (d.a[:, None] == cols[None, :]) * 1.0, (d.b[:, None] == cols[None, :]) * 1.0
    lam = lam + xp.where(opp, new_a - lam[:, d.a], 0.0) @ ea + xp.where(opp, new_b - lam[:, d.b], 0.0) @ eb
    return lam, const + xp.where(opp, c_int + dt - std_int, 0.0).sum(axis=1)


def _apply_difference_np(h, lam, const, r: Relaxation, d: Difference):
    """`_apply_difference` in numpy, the same floats with fewer operations (x * where(s, p, q) for where(s, x * p,
    x * q)), `lam` changed in place (`backsubstitute`'s own array: a neuron is in at most one pair, its columns set)."""
    a, b = d.a, d.b
    xa, xb = h[:, a], h[:, b]
    opp = xa * xb < 0
    if not opp.any():  # no pair to redo (a neuron's own rows: f's neurons depend on f's alone)
        return lam, const
    ref_a = np.abs(xa) >= np.abs(xb)
    c, dd = xa + xb, np.where(ref_a, -xb, xa)
    take = lambda v, i: v[..., i]  # noqa: E731  (slopes are per neuron, or per row and neuron: alpha)
    pick = lambda v: np.where(ref_a, take(v, a), take(v, b))  # noqa: E731
    cpos, dpos = c >= 0, dd >= 0
    c_slope = c * np.where(cpos, pick(r.lower_slope), pick(r.upper_slope))
    c_int = c * np.where(cpos, pick(r.lower_intercept), pick(r.upper_intercept))
    ds = dd * np.where(dpos, d.lines.lower_slope, d.lines.upper_slope)
    dt = dd * np.where(dpos, d.lines.lower_intercept, d.lines.upper_intercept)
    std_int = sum(x * np.where(x >= 0, take(r.lower_intercept, i), take(r.upper_intercept, i)) for x, i in ((xa, a), (xb, b)))
    new_a = np.where(ref_a, c_slope, 0.0) + ds
    new_b = np.where(ref_a, 0.0, c_slope) - ds
    if d.lower_b is not None:  # the planes' z_b terms
        new_b = new_b + dd * np.where(dpos, d.lower_b, d.upper_b)
    lam[:, a], lam[:, b] = np.where(opp, new_a, lam[:, a]), np.where(opp, new_b, lam[:, b])
    return lam, const + np.where(opp, c_int + dt - std_int, 0.0).sum(axis=1)


def backsubstitute(net: FloatNet, k: int, lam, relax: list[Relaxation], lower_in, upper_in, trace=None, split_terms=None,
                   diff: dict | None = None, top: tuple | None = None):
    """Lower bounds of lam @ z_k (z_k = pre-activation of dense layer k, 1-based) over the input box.

    If `trace` is a dict, trace[j] receives the coefficients on relu(z_j) for each hidden layer j, and
    trace[0] those on the input.
    `split_terms[j]` (rows x width_j), if given, is added to the coefficients on z_j (beta-CROWN; j <= k).
    `diff[j]` (a Difference), if given, relaxes pairs of layer j jointly (differential bounds).
    `top` (numpy, no `split_terms` on layer k): (lam @ W_k, lam @ b_k), already computed (`crown_layer`'s `pick`).
    """
    xp = _xp(lam, *(r.lower_slope for r in relax), *(split_terms or {}).values())
    const = xp.zeros(lam.shape[0])
    if split_terms is not None and k in split_terms:  # split multipliers of layer k's own splits: on z_k itself
        lam = lam + split_terms[k]
    for j in range(k, 0, -1):
        if j == k and top is not None:
            lam, const = top[0], const + top[1]
        else:
            w, b = net.weights[j - 1], net.biases[j - 1]
            const = const + lam @ b
            lam = lam @ w
        if j > 1:
            if trace is not None:
                trace[j - 1] = lam
            r, h = relax[j - 2], lam
            pos = lam >= 0
            if xp is np:  # the same floats, half the products
                const = const + (lam * np.where(pos, r.lower_intercept, r.upper_intercept)).sum(axis=1)
                lam = lam * np.where(pos, r.lower_slope, r.upper_slope)
            else:
                const = const + xp.where(pos, lam * r.lower_intercept, lam * r.upper_intercept).sum(axis=1)
                lam = xp.where(pos, lam * r.lower_slope, lam * r.upper_slope)
            if diff and (j - 1) in diff:
                lam, const = _apply_difference(xp, h, lam, const, r, diff[j - 1])
            if split_terms is not None and (j - 1) in split_terms:
                lam = lam + split_terms[j - 1]
    if trace is not None:
        trace[0] = lam  # the coefficients on the input
    return const + xp.maximum(lam, 0.0) @ lower_in + xp.minimum(lam, 0.0) @ upper_in


def crown_layer(net: FloatNet, k: int, relax: list[Relaxation], lower_in, upper_in, diff: dict | None = None, rows=None,
                pick: tuple | None = None):
    """(lower, upper) of every neuron of layer k (or of `rows` @ z_k) by back-substitution. `pick` = (a, b) instead of
    `rows`: the rows e_a[p] - e_b[p] (b None: e_a[p]; a None: every neuron), whose products with layer k's weights and
    bias are gathers, not a matrix product (the same floats: each sum has at most two terms that are not 0)."""
    if rows is not None:
        both = backsubstitute(net, k, np.concatenate([rows, -rows]), relax, np.asarray(lower_in), np.asarray(upper_in), diff=diff)
        n = rows.shape[0]
        return both[:n], -both[n:]
    a, b = pick or (None, None)
    w, bias = np.asarray(net.weights[k - 1]), np.asarray(net.biases[k - 1])
    if a is not None:
        w, bias = (w[a], bias[a]) if b is None else (w[a] - w[b], bias[a] - bias[b])
    n, lam = w.shape[0], np.concatenate([w, -w])
    both = backsubstitute(net, k, lam, relax, np.asarray(lower_in), np.asarray(upper_in), diff=diff,
                          top=(lam, np.concatenate([bias, -bias])))
    return both[:n], -both[n:]
