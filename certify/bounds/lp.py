"""LP bounds: the triangle-relaxation LP of the network with fixed intermediate bounds, solved with
cvxpy and HiGHS, and turned into per-row ReLU lower slopes from its dual solution.

For each output row `lam` (+e_o or -e_o) the LP is

    min  lam . z_n     over x in the input box, z_j = W_j h_{j-1} + b_j (h_0 = x) and, per hidden
                       neuron of layer j < n (as classified by the claimed bounds):
                         unstable:  h >= 0 (mu0),  h >= z (mu1),  h <= s z + t (the claimed upper line)
                         active:    h = z          inactive:  h = 0

Dual (Salman et al. 2019, "A convex relaxation barrier to tight robustness verification"): every
dual-feasible point is a back-substitution in which an unstable neuron with coefficient c >= 0 on
h uses the lower line alpha*z with alpha = mu1/(mu0+mu1) (c = mu0+mu1), one with c < 0 the upper
line. The claimed bounds are padded outward and valid over the relaxation of the layers below, so
at every feasible point z lies strictly inside the neuron's triangle, where lower and upper facets
are never both tight: by complementary slackness no optimal dual uses both, and the back-substitution
with these slopes attains the LP optimum. The slopes go into a `linear` step's `alpha`, which the
checker re-derives exactly; the float solver is never trusted.

Only the LP's dual is used; a wrong or inaccurate solution can only make the certified bound looser.
"""

from __future__ import annotations

import functools
import os
import sys

import numpy as np

from .linear import Relaxation, backsubstitute
from .network import FloatNet

LP_MAX_VARIABLES = 20_000  # inputs plus hidden ReLU outputs; larger networks use alpha-CROWN instead
TINY = 1e-12  # a neuron whose lower-facet multipliers sum below this keeps its default slope


@functools.cache
def _quiet_highs() -> None:
    """HiGHS prints a banner on stdout when its first instance is made (whatever the options): make
    that first instance with stdout pointed at /dev/null, so `certify check --json` stays JSON."""
    import highspy

    sys.stdout.flush()
    saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


def lp_variables(net: FloatNet) -> int:
    """Variables of the LP: the inputs and every hidden ReLU output (pre-activations are eliminated)."""
    return int(sum(net.widths[:-1]))


def lp_fits(net: FloatNet) -> bool:
    return lp_variables(net) <= LP_MAX_VARIABLES


def lp_alphas(net: FloatNet, relax: list[Relaxation], claims: list[tuple[np.ndarray, np.ndarray]],
              lower_in, upper_in, rows: np.ndarray | None = None):
    """Per-row lower slopes for the output layer from the LP duals, and the LP optima.

    Returns (alphas, values): alphas[j-1] has shape (len(rows), width_j) (rows default to
    [I; -I] over the outputs: the first half bounds the outputs from below, the second half the
    negated outputs, as in `optimise_alpha`); values[r] is the LP minimum of rows[r] . z_n.
    Stable neurons get their relaxation's lower slope (1 active, 0 inactive).
    """
    import cvxpy as cp

    _quiet_highs()
    n = len(net.weights)
    assert n >= 2 and len(relax) == len(claims) == n - 1
    width = net.widths[-1]
    if rows is None:
        eye = np.eye(width)
        rows = np.concatenate([eye, -eye])
    x = cp.Variable(net.widths[0])
    cons = [x >= np.asarray(lower_in, float), x <= np.asarray(upper_in, float)]
    prev, facets, masks = x, [], []
    for j in range(1, n):
        w, b = np.asarray(net.weights[j - 1]), np.asarray(net.biases[j - 1])
        lo, up = (np.asarray(v, float) for v in claims[j - 1])
        r = relax[j - 1]
        unstable, active = (lo < 0) & (up > 0), lo >= 0
        inactive = ~(unstable | active)
        h = cp.Variable(w.shape[0])
        z = w @ prev + b
        u_idx, a_idx, i_idx = (np.flatnonzero(m) for m in (unstable, active, inactive))
        c0 = c1 = None
        if u_idx.size:
            hu, zu = h[u_idx], z[u_idx]
            c0, c1 = hu >= 0, hu >= zu
            cons += [c0, c1, hu <= cp.multiply(np.asarray(r.upper_slope, float)[u_idx], zu) + np.asarray(r.upper_intercept, float)[u_idx]]
        if a_idx.size:
            cons.append(h[a_idx] == z[a_idx])
        if i_idx.size:
            cons.append(h[i_idx] == 0)
        facets.append((u_idx, c0, c1))
        masks.append(np.asarray(r.lower_slope, float))
        prev = h
    w_out, b_out = np.asarray(net.weights[-1]), np.asarray(net.biases[-1])
    c = cp.Parameter(w_out.shape[1])
    prob = cp.Problem(cp.Minimize(c @ prev), cons)
    alphas = [np.broadcast_to(base, (rows.shape[0], base.shape[0])).copy() for base in masks]
    values = np.empty(rows.shape[0])
    for r_i, lam in enumerate(rows):
        c.value = lam @ w_out
        prob.solve(solver=cp.HIGHS)
        if prob.status not in ("optimal", "optimal_inaccurate"):
            raise RuntimeError(f"LP row {r_i}: HiGHS status {prob.status}")
        values[r_i] = prob.value + lam @ b_out
        for j, (u_idx, c0, c1) in enumerate(facets):
            if not u_idx.size:
                continue
            mu0 = np.maximum(np.asarray(c0.dual_value, float).reshape(-1), 0.0)
            mu1 = np.maximum(np.asarray(c1.dual_value, float).reshape(-1), 0.0)
            total = mu0 + mu1
            slope = np.where(total > TINY, mu1 / np.where(total > TINY, total, 1.0), masks[j][u_idx])
            alphas[j][r_i, u_idx] = np.clip(slope, 0.0, 1.0)
    return alphas, values


def lp_rows_bound(net: FloatNet, relax: list[Relaxation], alphas, lower_in, upper_in, rows: np.ndarray) -> np.ndarray:
    """Float back-substitution of each row with its LP slopes (for comparing with the LP optimum)."""
    out = np.empty(rows.shape[0])
    for r_i, lam in enumerate(rows):
        rs = [Relaxation(a[r_i], r.lower_intercept * 0, r.upper_slope, r.upper_intercept) for a, r in zip(alphas, relax)]
        out[r_i] = backsubstitute(net, len(net.weights), lam[None, :], rs, np.asarray(lower_in), np.asarray(upper_in))[0]
    return out
