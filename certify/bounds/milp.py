"""Exact maximum of max_i |d_i(x)| over a box by MILP (HiGHS, through scipy.optimize.milp): an
oracle for tests and benchmarks, never a certificate.

Big-M encoding of each unstable ReLU with interval pre-activation bounds (stable ones are linear).
The optimum is a float from a float solver; callers confirm it by replaying the maximiser exactly.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import lil_matrix

from .linear import interval_dense, interval_relu
from .network import FloatNet


def milp_max_deviation(net: FloatNet, lower: np.ndarray, upper: np.ndarray, *, time_limit: float = 60.0):
    """(max over the box of max_i |net(x)_i|, maximiser x) or (None, None) if HiGHS does not finish."""
    lo_in, up_in = np.asarray(lower, float), np.asarray(upper, float)
    ws = [np.asarray(w) for w in net.weights]
    bs = [np.asarray(b) for b in net.biases]
    d = lo_in.shape[0]
    # variable layout: x, then per hidden layer (h_k, delta_k)
    offsets, n_vars = [], d
    for w in ws[:-1]:
        offsets.append(n_vars)
        n_vars += 2 * w.shape[0]
    var_lo, var_up = np.zeros(n_vars), np.zeros(n_vars)
    var_lo[:d], var_up[:d] = lo_in, up_in
    integrality = np.zeros(n_vars)
    rows, row_lo, row_up = [], [], []
    prev, l, u = list(range(d)), lo_in, up_in
    for k, (w, b) in enumerate(zip(ws[:-1], bs[:-1])):
        l, u = map(np.asarray, interval_dense(w, b, l, u))
        l, u = l - 1e-9 * (1 + abs(l)), u + 1e-9 * (1 + abs(u))
        base = offsets[k]
        for i in range(w.shape[0]):
            h, dl = base + i, base + w.shape[0] + i
            integrality[dl] = 1
            var_up[dl] = 1.0
            var_up[h] = max(u[i], 0.0)
            if u[i] <= 0:
                continue  # h = 0
            coef = {prev[j]: w[i, j] for j in range(len(prev)) if w[i, j] != 0}
            if l[i] >= 0:  # h = z
                rows.append({h: 1.0, **{v: -c for v, c in coef.items()}}), row_lo.append(b[i]), row_up.append(b[i])
                continue
            rows.append({h: -1.0, **coef}), row_lo.append(-np.inf), row_up.append(-b[i])  # h >= z
            rows.append({h: 1.0, dl: -l[i], **{v: -c for v, c in coef.items()}}), row_lo.append(-np.inf), row_up.append(b[i] - l[i])
            rows.append({h: 1.0, dl: -u[i]}), row_lo.append(-np.inf), row_up.append(0.0)  # h <= u delta
        prev = list(range(base, base + w.shape[0]))
        l, u = map(np.asarray, interval_relu(l, u))
    a = lil_matrix((max(len(rows), 1), n_vars))
    for r, row in enumerate(rows):
        for v, c in row.items():
            a[r, v] = c
    cons = [LinearConstraint(a.tocsr(), row_lo or [0.0], row_up or [0.0])]
    best, arg = -np.inf, None
    for i in range(ws[-1].shape[0]):
        for sign in (1.0, -1.0):
            c = np.zeros(n_vars)
            c[prev] = -sign * ws[-1][i]
            res = milp(c, constraints=cons, integrality=integrality, bounds=Bounds(var_lo, var_up),
                       options={"time_limit": time_limit, "mip_rel_gap": 1e-9})
            if res.status != 0:
                return None, None
            value = -res.fun + sign * bs[-1][i]
            if value > best:
                best, arg = value, np.clip(res.x[:d], lo_in, up_in)
    return float(best), arg
