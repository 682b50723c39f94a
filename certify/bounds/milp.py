"""Exact maximum of max_i |d_i(x)| over a box by MILP (cvxpy + HiGHS): an oracle, never a certificate.

Big-M encoding of each ReLU with interval pre-activation bounds. The optimum is a float from a
float solver; tests confirm it by replaying the maximiser exactly.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np

from .linear import interval_dense, interval_relu
from .network import FloatNet


def milp_max_deviation(net: FloatNet, lower: np.ndarray, upper: np.ndarray, *, time_limit: float = 60.0):
    """(max over the box of max_i |net(x)_i|, maximiser x) or (None, None) if HiGHS does not finish."""
    n = len(net.weights)
    lo, up = np.asarray(lower, float), np.asarray(upper, float)
    pre = []
    l, u = lo, up
    for k in range(n):
        l, u = map(np.asarray, interval_dense(net.weights[k], net.biases[k], l, u))
        l, u = l - 1e-9 * (1 + abs(l)), u + 1e-9 * (1 + abs(u))
        pre.append((l, u))
        l, u = map(np.asarray, interval_relu(l, u))
    x = cp.Variable(lo.shape[0])
    cons = [x >= lo, x <= up]
    a = x
    for k in range(n - 1):
        w, b = np.asarray(net.weights[k]), np.asarray(net.biases[k])
        z = w @ a + b
        pl, pu = pre[k]
        h = cp.Variable(w.shape[0])
        d = cp.Variable(w.shape[0], boolean=True)
        cons += [h >= 0, h >= z, h <= z - cp.multiply(pl, 1 - d), h <= cp.multiply(np.maximum(pu, 0), d)]
        a = h
    out = np.asarray(net.weights[-1]) @ a + np.asarray(net.biases[-1])
    best, arg = -np.inf, None
    for i in range(net.weights[-1].shape[0]):
        for sign in (1.0, -1.0):
            prob = cp.Problem(cp.Maximize(sign * out[i]), cons)
            try:
                prob.solve(solver=cp.HIGHS, time_limit=time_limit)
            except cp.error.SolverError:
                return None, None
            if prob.status != cp.OPTIMAL:
                return None, None
            if prob.value > best:
                best, arg = prob.value, np.clip(x.value, lo, up)
    return float(best), arg
