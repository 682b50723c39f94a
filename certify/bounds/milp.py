"""Exact maximum of max_i |d_i(x)| over a box by MILP (HiGHS, through scipy.optimize.milp): an
oracle for tests and benchmarks, never a certificate.

Big-M encoding of each unstable ReLU with interval pre-activation bounds (stable ones are linear), or, in
`milp_rows`, with a proposal's tighter bounds and its difference lines as cuts.
The optimum is a float from a float solver; callers confirm it by replaying the maximiser exactly.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import lil_matrix

from .linear import interval_dense, interval_relu
from .network import FloatNet


def _encode(net: FloatNet, lo_in: np.ndarray, up_in: np.ndarray, layer_bounds=None, differences=()):
    """The MILP's constraints: (constraints, integrality, variable bounds, the last hidden layer's variables, the count of
    variables). layer_bounds[k]: sound pre-activation bounds of hidden layer k+1 (e.g. an alpha-CROWN proposal's, which
    are float proposals: padded here by 1e-7 relative), intersected with the interval bounds; differences: per pair
    (layer k (1-based), a, b, lower, upper, lower slope, lower intercept, upper slope, upper intercept) of a `difference`
    step (bounds on z_a - z_b and lines below and above relu(z_a) - relu(z_b) in it), added as cuts (padded by 1e-7)."""
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
        if layer_bounds is not None and k < len(layer_bounds):
            gl, gu = (np.asarray(v, float) for v in layer_bounds[k])
            l, u = np.maximum(l, gl - 1e-7 * (1 + abs(gl))), np.minimum(u, gu + 1e-7 * (1 + abs(gu)))
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
    for k, a_, b_, dl, du, sl, tl, su, tu in differences:  # z_a - z_b = dz.x + db; h_a - h_b between the lines in it
        wk, bk = ws[k - 1], bs[k - 1]
        pv = list(range(d)) if k == 1 else list(range(offsets[k - 2], offsets[k - 2] + wk.shape[1]))
        dz = {pv[j]: wk[a_, j] - wk[b_, j] for j in range(len(pv)) if wk[a_, j] != wk[b_, j]}
        db, ha, hb, pad = bk[a_] - bk[b_], offsets[k - 1] + a_, offsets[k - 1] + b_, 1e-7
        rows.append(dict(dz)), row_lo.append(dl - db - pad * (1 + abs(dl))), row_up.append(du - db + pad * (1 + abs(du)))
        for slope, icpt, below in ((sl, tl, True), (su, tu, False)):
            row = {ha: 1.0, hb: -1.0}
            for v, c in dz.items():
                row[v] = row.get(v, 0.0) - slope * c
            edge = slope * db + icpt
            rows.append(row)
            row_lo.append(edge - pad * (1 + abs(edge)) if below else -np.inf)
            row_up.append(np.inf if below else edge + pad * (1 + abs(edge)))
    a = lil_matrix((max(len(rows), 1), n_vars))
    for r, row in enumerate(rows):
        for v, c in row.items():
            a[r, v] = c
    return [LinearConstraint(a.tocsr(), row_lo or [0.0], row_up or [0.0])], integrality, (var_lo, var_up), prev, n_vars


def milp_max_deviation(net: FloatNet, lower: np.ndarray, upper: np.ndarray, *, time_limit: float = 60.0,
                       output_bounds=None, layer_bounds=None, differences=(), above: float = -np.inf,
                       info: dict | None = None):
    """(max over the box of max_i |net(x)_i|, maximiser x) or (None, None) if HiGHS does not finish.

    Guided (all optional): `output_bounds` ((lower, upper) per output, sound: rows whose bound is at most the best value
    known are not solved), `layer_bounds` and `differences` (as `milp_rows`), and `above`, a deviation attained at some
    input: every row is then solved with the cutoff (`milp_rows`), and if no row exceeds it, the maximum is `above`
    itself and the maximiser None (the caller holds it). Without `info`, the first row HiGHS does not finish ends the
    search; with it, every row is tried (so that "upper" covers them all), and `info` receives "rows" (per row solved: row,
    sign, status, incumbent, HiGHS's dual bound, nodes, below) and "upper": max of the incumbents, `above` and the dual
    bounds of the rows HiGHS did not finish (HiGHS's estimate of the maximum from above; None if one has no dual), and
    "x": the best incumbent's maximiser, finished or not (None if none)."""
    unbounded = np.full(np.asarray(net.biases[-1]).shape[0], np.inf)
    rows = milp_rows(net, lower, upper, output_bounds if output_bounds is not None else (-unbounded, unbounded),
                     layer_bounds=layer_bounds, differences=differences, above=above, time_limit=time_limit,
                     give_up=info is None, cutoff=bool(np.isfinite(above)))  # info: every row tried, for a valid "upper"
    if info is not None:
        info["rows"] = [{k: r[k] for k in ("row", "sign", "status", "incumbent", "dual", "nodes", "below")} for r in rows]
        open_ = [r["dual"] for r in rows if r["status"] != 0 and not r["below"]]
        known = [r["incumbent"] for r in rows if r["incumbent"] is not None] + ([float(above)] if np.isfinite(above) else [])
        info["upper"] = None if None in open_ or (not open_ and not known) else max(open_ + known)
        found = [r for r in rows if r["incumbent"] is not None]
        info["x"] = max(found, key=lambda r: r["incumbent"])["x"] if found else None  # the best incumbent's maximiser
    if any(r["status"] != 0 and not r["below"] for r in rows):
        return None, None
    found = [r for r in rows if r["incumbent"] is not None]
    if not found or max(r["incumbent"] for r in found) <= above:
        return float(above), None
    top = max(found, key=lambda r: r["incumbent"])
    return top["incumbent"], top["x"]


def difference_cuts(steps: list[dict]) -> list[tuple]:
    """The `difference` steps of a proposal as `_encode`'s cuts: (layer, a, b, lower, upper, lower slope, lower
    intercept, upper slope, upper intercept) per pair, as floats. A pair with a plane (a z_b slope that is not 0) is left
    out (a valid cut left out: the relaxation is only looser)."""
    keys = ("lower", "upper", "lower_slope", "lower_intercept", "upper_slope", "upper_intercept")
    plane = lambda st, i: any(Fraction(st[k][i]) != 0 for k in ("lower_slope_b", "upper_slope_b") if k in st)  # noqa: E731
    return [(st["layer"], a, b, *(float(Fraction(st[k][i])) for k in keys))
            for st in steps if st["kind"] == "difference" for i, (a, b) in enumerate(st["pairs"]) if not plane(st, i)]


def milp_rows(net: FloatNet, lower: np.ndarray, upper: np.ndarray, output_bounds, *, layer_bounds=None, differences=(),
              above: float = -np.inf, time_limit: float = 600.0, give_up: bool = False, cutoff: bool = False) -> list[dict]:
    """The MILP per output row and sign, guided by a sound proposal: rows taken in the order of their upper bounds
    (`output_bounds`: (lower, upper) of each output), and only those whose bound exceeds the best value found so far
    (`above` to start: an attained deviation), each within `time_limit` seconds. Per row solved: its index, sign, the
    proposal's bound, HiGHS's status (0: optimal), incumbent value and maximiser (or None), and dual bound. The
    maximum of |net| over the box is the largest incumbent when every row solved is optimal, within HiGHS's tolerances:
    an estimate for benchmarks, never a certificate (replay the maximiser exactly). give_up: stop after the first row
    HiGHS does not solve to optimality.
    cutoff: each row is solved with its value constrained to at least the best value known so far (`above`, then the
    best incumbent): a row that cannot reach it comes back infeasible (status 2, incumbent None, `below`: True: its
    maximum is below that value), which HiGHS proves with far fewer nodes than the row's own maximum (w16x2-prune50-box:
    66 CPU s for the ten rows without, see benchmarks/tightness.py)."""
    lo_in, up_in = np.asarray(lower, float), np.asarray(upper, float)
    ws, bs, d = [np.asarray(w) for w in net.weights], [np.asarray(b) for b in net.biases], lo_in.shape[0]
    cons, integrality, (var_lo, var_up), prev, n_vars = _encode(net, lo_in, up_in, layer_bounds, differences)
    ol, ou = (np.asarray(v, float) for v in output_bounds)
    order = sorted([(ou[i], i, 1.0) for i in range(len(ou))] + [(-ol[i], i, -1.0) for i in range(len(ol))], reverse=True)
    best, out = above, []
    for bound, i, sign in order:
        if bound <= best:
            continue
        c = np.zeros(n_vars)
        c[prev] = -sign * ws[-1][i]
        floor = cutoff and np.isfinite(best)  # the row's value sign * (w_i . h + b_i) >= best
        row_cons = cons + ([LinearConstraint(-c[None, :], best - sign * bs[-1][i], np.inf)] if floor else [])
        res = milp(c, constraints=row_cons, integrality=integrality, bounds=Bounds(var_lo, var_up),
                   options={"time_limit": time_limit, "mip_rel_gap": 1e-9})
        value = None if res.x is None else float(-res.fun + sign * bs[-1][i])
        dual = getattr(res, "mip_dual_bound", None)
        below = bool(floor and res.status == 2)
        out.append({"row": i, "sign": sign, "bound": float(bound), "status": int(res.status), "incumbent": value,
                    "x": None if res.x is None else np.clip(res.x[:d], lo_in, up_in), "below": below,
                    "nodes": None if getattr(res, "mip_node_count", None) is None else int(res.mip_node_count),
                    "dual": None if dual is None else float(-dual + sign * bs[-1][i])})
        if value is not None:
            best = max(best, value)
        if give_up and res.status != 0 and not below:
            break
    return out
