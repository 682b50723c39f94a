"""Curve relaxations (issue 16): how fast is the trusted check of a line, how tight are the engine's lines?

    python benchmarks/curves.py [--n 200] [--json benchmarks/curves.json]

Per curve, on n random intervals (fixed seed; widths up to 6, inside the domain): the engine's
least-area lines (`relax`) and CROWN-style lines (`crown_slopes`), both checked by
`certify.checker.curves` (acceptance count, time per line); the area between lower and upper line,
as a ratio least-area / CROWN-style; and on the intervals where phi has one curvature, the excess of
the engine's area over the exact best pair there (the chord and the tangent at the midpoint, which
is the least-area tangent), which is what the golden-section search and the outward nudge cost:
its largest absolute value (the nudge is about 2^-40 of the terms' size, so it dominates where the
exact gap is itself ~1e-12, as for erf far from 0) and its median relative value.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from fractions import Fraction
from pathlib import Path

import mpmath as mp
import numpy as np

from certify.bounds import curves as engine
from certify.checker import curves as checker


def sample(fn: str, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    if fn in ("reciprocal", "rsqrt", "sqrt"):
        l = rng.uniform(0.05, 4, n)
        if fn == "sqrt":
            l[: n // 10] = 0.0
    elif fn == "exp":
        l = rng.uniform(-10, 4, n)
    else:
        l = rng.uniform(-6, 4, n)
    return l, l + rng.uniform(0, 6, n)


def area(lines, l, u) -> np.ndarray:
    """Mean vertical gap between the upper and the lower line on [l, u] (their value at the midpoint)."""
    mid = 0.5 * (l + u)
    return (lines.upper_slope - lines.lower_slope) * mid + lines.upper_intercept - lines.lower_intercept


def exact_pair_area(fn: str, l: float, u: float) -> float:
    """Chord minus the tangent at the midpoint, at the midpoint, at 50 digits (one curvature on [l, u])."""
    f = {"exp": mp.exp, "square": lambda x: x * x, "reciprocal": lambda x: 1 / x, "rsqrt": lambda x: 1 / mp.sqrt(x),
         "sqrt": mp.sqrt, "tanh": mp.tanh, "sigmoid": lambda x: 1 / (1 + mp.exp(-x)), "erf": mp.erf,
         "gelu": lambda x: x * mp.ncdf(x)}[fn]
    with mp.workdps(50):
        lo, hi = mp.mpf(l), mp.mpf(u)
        return float(abs((f(lo) + f(hi)) / 2 - f((lo + hi) / 2)))


def one_curvature(fn: str, l, u) -> np.ndarray:
    cuts = engine.CURVES[fn].breaks
    return np.array([not any(a < c < b for c in cuts) for a, b in zip(l, u)])


def check_all(fn, lines, l, u):
    ok, times = 0, []
    for a, b, c, d, x, y in zip(lines.lower_slope, lines.lower_intercept, lines.upper_slope, lines.upper_intercept, l, u):
        t = time.perf_counter()
        lo = checker.line_below(fn, Fraction(a), Fraction(b), Fraction(x), Fraction(y))
        t2 = time.perf_counter()
        up = checker.line_above(fn, Fraction(c), Fraction(d), Fraction(x), Fraction(y))
        times += [t2 - t, time.perf_counter() - t2]
        ok += lo + up
    return ok, times


def run(n: int) -> dict:
    rng, out = np.random.default_rng(0), {}
    for fn in engine.CURVES:
        l, u = sample(fn, n, rng)
        t = time.perf_counter()
        best = engine.relax(fn, l, u)
        t_best = time.perf_counter() - t
        t = time.perf_counter()
        crown = engine.relax(fn, l, u, *engine.crown_slopes(fn, l, u))
        t_crown = time.perf_counter() - t
        ok_best, times = check_all(fn, best, l, u)
        ok_crown, times_crown = check_all(fn, crown, l, u)
        times += times_crown
        wide = u - l > 1e-3
        ratio = area(best, l, u)[wide] / area(crown, l, u)[wide]
        mono = np.flatnonzero(one_curvature(fn, l, u) & wide)
        areas = area(best, l, u)
        exact = [exact_pair_area(fn, l[i], u[i]) for i in mono]
        excess = [areas[i] - e for i, e in zip(mono, exact)]
        rel = [x / e for x, e in zip(excess, exact) if e > 0]
        out[fn] = {"intervals": n, "lines_checked": 4 * n, "accepted": ok_best + ok_crown,
                   "check_ms_mean": 1e3 * statistics.mean(times), "check_ms_max": 1e3 * max(times),
                   "engine_s_best": t_best, "engine_s_crown": t_crown,
                   "area_best_over_crown_mean": float(np.mean(ratio)), "area_best_over_crown_min": float(np.min(ratio)),
                   "area_best_over_crown_max": float(np.max(ratio)),
                   "one_curvature_intervals": len(mono),
                   "excess_over_chord_tangent_abs_max": float(max(excess, default=0.0)),
                   "excess_over_chord_tangent_rel_median": float(np.median(rel)) if rel else 0.0}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="intervals per curve")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    res = run(args.n)
    print(f"{'curve':10} {'accepted':>11} {'check ms':>9} {'max ms':>7} {'engine s':>9} {'area best/crown':>22} {'excess vs chord+tangent: abs max, rel median':>46}")
    for fn, r in res.items():
        print(f"{fn:10} {r['accepted']:5}/{r['lines_checked']:<5} {r['check_ms_mean']:9.3f} {r['check_ms_max']:7.2f} "
              f"{r['engine_s_best']:9.3f} {r['area_best_over_crown_mean']:8.3f} [{r['area_best_over_crown_min']:.3f}, {r['area_best_over_crown_max']:.3f}] "
              f"{r['excess_over_chord_tangent_abs_max']:16.1e} {r['excess_over_chord_tangent_rel_median']:10.1e} (n={r['one_curvature_intervals']})")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
