"""Lines below/above scalar curves: the engine (certify.bounds.curves, float64) proposes, the trusted
checker (certify.checker.curves, arb balls) decides, and mpmath at 50 digits is the independent
reference. Wrong lines (a tangent raised by 1e-12, a chord lowered by 1e-12, a tilted slope) must be
rejected; the engine's lines must be accepted and truly valid."""

from __future__ import annotations

import ast
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import mpmath as mp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certify.bounds import curves as engine
from certify.checker import curves as checker
from certify.checker.curves import interval_image, line_above, line_below, plane_above, plane_below

ROOT = Path(__file__).resolve().parent.parent
FUZZ = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DPS = 50

REF = {  # phi and phi' in mpmath
    "exp": (mp.exp, mp.exp),
    "square": (lambda x: x * x, lambda x: 2 * x),
    "reciprocal": (lambda x: 1 / x, lambda x: -1 / (x * x)),
    "rsqrt": (lambda x: 1 / mp.sqrt(x), lambda x: -1 / (2 * x * mp.sqrt(x))),
    "sqrt": (mp.sqrt, lambda x: 1 / (2 * mp.sqrt(x))),
    "tanh": (mp.tanh, lambda x: 1 - mp.tanh(x) ** 2),
    "sigmoid": (lambda x: 1 / (1 + mp.exp(-x)), lambda x: mp.exp(-x) / (1 + mp.exp(-x)) ** 2),
    "erf": (mp.erf, lambda x: 2 / mp.sqrt(mp.pi) * mp.exp(-x * x)),
    "gelu": (lambda x: x * mp.ncdf(x), lambda x: mp.ncdf(x) + x * mp.npdf(x)),
}
# where each curve is fuzzed: lower end range, widest width (sqrt also starts at 0 exactly)
DOMAIN = {"exp": (-20.0, 8.0, 10.0), "reciprocal": (2.0 ** -6, 8.0, 8.0), "rsqrt": (2.0 ** -6, 8.0, 8.0),
          "sqrt": (0.0, 8.0, 8.0)}
CONVEX_RUNS = {  # intervals inside one curvature piece where phi is convex (tangents valid below)
    "exp": (-6, 4), "square": (-3, 3), "reciprocal": (0.1, 5), "rsqrt": (0.1, 5), "tanh": (-5, 0),
    "sigmoid": (-6, 0), "erf": (-3, 0), "gelu": (-1.4, 1.4)}


def mpf(q) -> mp.mpf:
    q = Fraction(q)
    return mp.mpf(q.numerator) / q.denominator


def frac(x: mp.mpf) -> Fraction:
    sign, man, exp, _ = mp.mpf(x)._mpf_  # exact: x = (-1)^sign man 2^exp (mpmath 1.3 has no as_integer_ratio)
    return (-1) ** sign * Fraction(int(man)) * Fraction(2) ** int(exp)


def gap_min(fn, a, b, l, u, side, extra=()):
    """min over sample points of side*(phi(x) - (a x + b)) at 50 digits: ends, midpoint, the
    touching points where phi'(x) = a (from the engine's root finder), their neighbours, random points."""
    f = REF[fn][0]
    pts = [float(l), float(u), (float(l) + float(u)) / 2, *extra]
    c = engine.CURVES[fn]
    for p, q in engine._pieces(c, np.array(float(l)), np.array(float(u))):
        t = engine._solve(c.df, np.array(float(a)), p, q)
        if np.isfinite(t):
            pts += [float(t), float(t) * (1 + 1e-9), float(t) * (1 - 1e-9) + 1e-12]
    pts += list(np.random.default_rng(len(pts)).uniform(float(l), float(u), 12))
    with mp.workdps(DPS):
        xs = [mpf(x) for x in pts if float(l) <= x <= float(u)]
        return min(side * (f(x) - (mpf(a) * x + mpf(b))) for x in xs)


@st.composite
def intervals(draw, fn, n=6):
    lo, hi, width = DOMAIN.get(fn, (-8.0, 6.0, 8.0))
    ls, us = [], []
    for _ in range(draw(st.integers(1, n))):
        l = 0.0 if fn == "sqrt" and draw(st.booleans()) else draw(st.floats(lo, hi))
        w = draw(st.one_of(st.just(0.0), st.floats(1e-9, 1e-3), st.floats(0.0, width)))
        ls.append(l)
        us.append(l + w)
    return np.array(ls), np.array(us)


def accepted(fn, lines, l, u):
    return [(line_below(fn, Fraction(a), Fraction(b), Fraction(x), Fraction(y)),
             line_above(fn, Fraction(c), Fraction(d), Fraction(x), Fraction(y)))
            for a, b, c, d, x, y in zip(lines.lower_slope, lines.lower_intercept, lines.upper_slope,
                                        lines.upper_intercept, l, u)]


@pytest.mark.parametrize("fn", sorted(REF))
@settings(FUZZ, max_examples=10)
@given(data=st.data())
def test_engine_lines_are_accepted_and_true_at_50_digits(fn, data):
    """Least-area, CROWN-style and random-tangent-point lines: the checker accepts all of them, and
    mpmath finds no point where one crosses phi."""
    l, u = data.draw(intervals(fn))
    t = l + (u - l) * data.draw(st.floats(0, 1))
    for how, lines in (("best", engine.relax(fn, l, u)),
                       ("crown", engine.relax(fn, l, u, *engine.crown_slopes(fn, l, u))),
                       ("tangent", engine.relax(fn, l, u, engine.tangent_slope(fn, t), engine.tangent_slope(fn, t)))):
        for i, (lo_ok, up_ok) in enumerate(accepted(fn, lines, l, u)):
            where = f"{fn} {how} on [{l[i]!r}, {u[i]!r}]"
            assert lo_ok and up_ok, f"{where}: the checker rejected the engine's {'lower' if not lo_ok else 'upper'} line"
            assert gap_min(fn, lines.lower_slope[i], lines.lower_intercept[i], l[i], u[i], 1) >= 0, where
            assert gap_min(fn, lines.upper_slope[i], lines.upper_intercept[i], l[i], u[i], -1) >= 0, where


@pytest.mark.parametrize("fn", sorted(CONVEX_RUNS))
@FUZZ
@given(data=st.data())
def test_tangent_raised_by_1e12_is_rejected_and_lowered_accepted(fn, data):
    """The true tangent at t (50 digits) on a convex run: raised by 1e-12 (relative) it crosses phi at
    t and is rejected; lowered by 1e-12 it is valid and accepted (the check resolves 1e-12)."""
    lo, hi = CONVEX_RUNS[fn]
    l = Fraction(data.draw(st.floats(lo, hi)))
    u = l + Fraction(data.draw(st.floats(0, hi - float(l))))
    t = l + (u - l) * Fraction(data.draw(st.floats(0, 1)))
    f, df = REF[fn]
    with mp.workdps(DPS):
        a = frac(df(mpf(t)))
        b, scale = frac(f(mpf(t)) - mpf(a) * mpf(t)), 1 + abs(frac(f(mpf(t))))
    shift = scale / 10 ** 12
    assert not line_below(fn, a, b + shift, l, u), f"{fn}: tangent at {t} raised by {shift} accepted"
    assert line_below(fn, a, b - shift, l, u), f"{fn}: tangent at {t} lowered by {shift} rejected"
    tilt = scale / 10 ** 6
    for da in (tilt, -tilt):  # tilted about (t, phi(t) - 1e-15): crosses phi near t wherever there is room
        line = (a + da, b - da * t - scale / 10 ** 15)
        if gap_min(fn, *line, l, u, 1) < 0:  # (gap_min samples where phi' equals the tilted slope)
            assert not line_below(fn, *line, l, u), f"{fn}: tilted tangent at {t} accepted"


@pytest.mark.parametrize("fn", sorted(REF))
@FUZZ
@given(data=st.data())
def test_chord_lowered_by_1e12_is_rejected(fn, data):
    """The chord through (l, phi(l)) and (u, phi(u)) lowered by 1e-12 is below phi at both ends:
    rejected as an upper line. Raised by 1e-12 it is accepted where phi is convex on [l, u]."""
    (l,), (u,) = data.draw(intervals(fn, n=1))
    l, u = Fraction(l), Fraction(u)
    if u - l < Fraction(1, 10 ** 6):
        u = l + 1
    f = REF[fn][0]
    with mp.workdps(DPS):
        fl, fu = f(mpf(l)), f(mpf(u))
        a = frac((fu - fl) / (mpf(u) - mpf(l)))
        b, scale = frac(fl - mpf(a) * mpf(l)), 1 + abs(frac(fl)) + abs(frac(fu))
    assert not line_above(fn, a, b - scale / 10 ** 12, l, u)
    convex = all(s == 1 for s in engine.CURVES[fn].shape) or (fn in ("tanh", "sigmoid", "erf") and u <= 0)
    if convex:
        assert line_above(fn, a, b + scale / 10 ** 12, l, u)


@pytest.mark.parametrize("fn", sorted(REF))
@FUZZ
@given(data=st.data())
def test_random_lines_crossing_phi_are_rejected(fn, data):
    """Any line that mpmath sees cross phi somewhere in [l, u] is rejected (both sides)."""
    (l,), (u,) = data.draw(intervals(fn, n=1))
    a, b = data.draw(st.floats(-3, 3)), data.draw(st.floats(-3, 3))
    if gap_min(fn, a, b, l, u, 1) < 0:
        assert not line_below(fn, Fraction(a), Fraction(b), Fraction(l), Fraction(u))
    if gap_min(fn, a, b, l, u, -1) < 0:
        assert not line_above(fn, Fraction(a), Fraction(b), Fraction(l), Fraction(u))


@pytest.mark.parametrize("fn", sorted(REF))
@FUZZ
@given(data=st.data())
def test_interval_image_encloses_50_digit_values(fn, data):
    """interval_image's exact ends enclose phi at the ends, interior minima and random points, and are
    tight (within 1e-40 of the true extremes); the engine's float interval encloses them too."""
    (l,), (u,) = data.draw(intervals(fn, n=1))
    lo, hi = interval_image(fn, Fraction(l), Fraction(u))
    elo, ehi = engine.interval(fn, np.array(l), np.array(u))
    f = REF[fn][0]
    with mp.workdps(DPS):
        minima = [x for x in {"square": [0], "gelu": [mp.findroot(REF["gelu"][1], -0.75)]}.get(fn, []) if l <= x <= u]
        xs = [mpf(l), mpf(u), *minima, *(mpf(x) for x in np.random.default_rng(0).uniform(l, u, 16))]
        vals = [f(x) for x in xs]
        scale = 1 + max(abs(v) for v in vals)
        ref_error = scale * mpf(10) ** -45  # the 50-digit reference's own error
        assert all(mpf(lo) <= v + ref_error and v - ref_error <= mpf(hi) for v in vals), f"{fn} on [{l}, {u}]"
        assert all(elo <= float(v) <= ehi for v in vals), f"{fn} engine interval on [{l}, {u}]"
        assert mpf(hi) - max(vals[:2]) < scale * mpf(10) ** -40
        assert min(vals[:2 + len(minima)]) - mpf(lo) < scale * mpf(10) ** -40, f"{fn} on [{l}, {u}]: lo {lo} is loose"


def test_domains_unknown_curves_and_empty_intervals_fail_closed():
    one = Fraction(1)
    assert not line_below("reciprocal", -one, 2 * one, Fraction(0), one)  # 1/x needs l > 0
    assert not line_below("rsqrt", -one, -one, Fraction(-1), one)
    assert not line_above("sqrt", one, one, Fraction(-1), one)  # sqrt needs l >= 0
    assert line_below("sqrt", Fraction(0), Fraction(0), Fraction(0), one)
    assert not line_below("exp", Fraction(0), Fraction(0), one, Fraction(0))  # l > u
    with pytest.raises(ValueError, match="unknown curve 'relu'"):
        line_below("relu", one, one, one, one)
    with pytest.raises(ValueError, match="leaves the domain"):
        interval_image("reciprocal", Fraction(0), one)


def test_far_tails_round_outward_and_huge_values_fail_closed():
    """exp(-10^40) is a ball with a binary exponent near -1.4e40: its exact value would be a Fraction of
    10^40 bits (a certificate found by the soundness campaign made the checker eat 17 GB). Ends nearer 0
    than 2^-EXP_BITS are rounded outward instead; values beyond 2^EXP_BITS are refused, never built."""
    from flint import arb

    tiny = Fraction(1, 2 ** checker.EXP_BITS)
    big = Fraction(10 ** 40)
    assert interval_image("exp", -big, -big + 1) == (0, tiny)
    assert interval_image("gelu", -big, -big + 1) == (-tiny, tiny)  # |gelu| < 2^-EXP_BITS: balls around 0
    lo, hi = interval_image("sigmoid", big, big + 1)
    assert lo <= 1 <= hi and hi - lo < Fraction(1, 2 ** 150)  # 192-bit balls
    with pytest.raises(ValueError, match="out of the checker's range"):
        interval_image("exp", big, big + 1)
    with pytest.raises(ValueError, match="out of the checker's range"):
        checker.exact(arb(2) ** -(10 ** 6))  # side 0: only an exact value will do
    assert checker.exact(arb(-3) / 8, -1) == Fraction(-3, 8)  # moderate values stay exact


def test_a_line_too_tight_by_1e40_is_rejected_within_the_budget():
    """Fail closed: exp's tangent at 1/3 raised by 1e-40 crosses exp by 1e-40; the checker does not
    prove it (the bisection budget runs out or the negative gap is proved) and rejects."""
    t = Fraction(1, 3)
    with mp.workdps(80):
        a = frac(mp.exp(mpf(t)))
        b = frac(mp.exp(mpf(t)) - mpf(a) * mpf(t))
    assert not line_below("exp", a, b + Fraction(1, 10 ** 40), Fraction(-1), Fraction(2))
    assert line_below("exp", a, b - Fraction(1, 10 ** 40), Fraction(-1), Fraction(2))
    assert line_below("exp", Fraction(1), Fraction(1), Fraction(-1), Fraction(1))  # tangent at 0: exact touch at x = 0


@given(st.lists(st.fractions(-4, 4, max_denominator=64), min_size=4, max_size=4), st.integers(0, 3))
@settings(max_examples=150, deadline=None)
def test_mccormick_planes_are_accepted_and_shifted_ones_rejected(ends, which):
    """The four McCormick planes of x*y are valid on the box (exact, each touches x*y at two corners);
    shifted by 1e-12 towards x*y they are rejected; an accepted plane holds at sampled interior points."""
    lx, ux = sorted(ends[:2])
    ly, uy = sorted(ends[2:])
    box = (lx, ux, ly, uy)
    below = [(ly, lx, -lx * ly), (uy, ux, -ux * uy)]
    above = [(uy, lx, -lx * uy), (ly, ux, -ux * ly)]
    eps = Fraction(1, 10 ** 12)
    for c1, c2, c0 in below:
        assert plane_below(c1, c2, c0, box) and not plane_below(c1, c2, c0 + eps, box)
    for c1, c2, c0 in above:
        assert plane_above(c1, c2, c0, box) and not plane_above(c1, c2, c0 - eps, box)
    c1, c2, c0 = below[which % 2]
    c2 += Fraction(which - 1, 7)
    if plane_below(c1, c2, c0, box):
        for i in range(9):
            x, y = lx + (ux - lx) * Fraction(i, 8), ly + (uy - ly) * Fraction(8 - i, 8)
            assert c1 * x + c2 * y + c0 <= x * y
    assert not plane_below(0, 0, 0, (ux + 1, ux, ly, uy))  # an empty box proves nothing


def test_trusted_curves_module_imports_only_stdlib_and_flint_and_holds_no_float():
    """The kernel's curve checker: imports from an allow-list only; no float literal, no float() call."""
    tree = ast.parse((ROOT / "certify" / "checker" / "curves.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    assert imported <= {"__future__", "dataclasses", "fractions", "typing", "flint"}, imported
    local = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0}
    assert local <= {"numbers"}, local  # the checker's own exact-number helpers (certify/checker/numbers.py)
    assert not [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, float)]
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "float"]


def test_curve_checker_runs_with_jax_and_numpy_blocked():
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('jax', 'jaxlib', 'numpy', 'scipy', 'torch', 'mpmath'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
from fractions import Fraction as F
from certify.checker.curves import line_below, interval_image
assert line_below('gelu', F(0), F(-17, 100), F(-3), F(3)) and not line_below('gelu', F(0), F(-16, 100), F(-3), F(3))
print('ok', interval_image('tanh', F(-1), F(1))[0] < 0)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok True"


def test_the_two_curve_tables_agree():
    """Engine and checker declare the same curves, curvature pieces and inflection points."""
    assert set(engine.CURVES) == set(checker.CURVES)
    for fn, c in checker.CURVES.items():
        e = engine.CURVES[fn]
        assert e.shape == c.shape, fn
        with checker.ctx.workprec(checker.PREC):
            exact_breaks = [float(b.mid()) for b in c.breaks()]
        assert exact_breaks == pytest.approx(list(e.breaks), abs=1e-15), fn


@pytest.mark.parametrize("fn", sorted(REF))
def test_checker_derivatives_enclose_50_digit_derivatives(fn):
    """The convex-piece rule trusts each row's phi' (its tangent bounds): at points across the domain,
    and at the inflection points, the checker's phi and phi' balls contain mpmath's values, and
    mpmath's numerical derivative of phi agrees with the closed form used by both."""
    lo, hi, width = DOMAIN.get(fn, (-8.0, 6.0, 8.0))
    points = [Fraction(x) for x in np.linspace(max(lo, 2.0 ** -6), hi + width, 23)] + [Fraction(0)] * (lo <= -8)
    c = checker.CURVES[fn]
    f, df = REF[fn]
    with checker.ctx.workprec(checker.PREC), mp.workdps(DPS):
        for x in points:
            fx, dfx = c.f(checker.ball(x)), c.df(checker.ball(x))
            for ball_value, ref in ((fx, f(mpf(x))), (dfx, df(mpf(x)))):
                lo_b, hi_b = checker.exact(ball_value.lower()), checker.exact(ball_value.upper())
                tol = (1 + abs(ref)) * mpf(10) ** -45
                assert mpf(lo_b) - tol <= ref <= mpf(hi_b) + tol, f"{fn} at {x}"
            assert abs(mp.diff(f, mpf(x)) - df(mpf(x))) < mpf(10) ** -30 * (1 + abs(df(mpf(x)))), f"{fn}'s derivative at {x}"


EXTREMES = {"exp": [(-800, -700), (-50, 50), (0, 700)], "tanh": [(-1e6, 1e6), (-30, 40), (20, 1e3)],
            "sigmoid": [(-800, 800), (-1e5, 3)], "erf": [(-1e5, 1e5), (-30, -20)],
            "gelu": [(-1e4, 1e4), (-40, -30), (-1e-8, 1e-8), (30, 40)], "reciprocal": [(1e-300, 1e300), (1e-8, 1e8)],
            "rsqrt": [(1e-300, 1e300), (1e-10, 1e10)], "sqrt": [(0, 1e300), (0, 1e-300), (0, 5e-324), (0, 1e-320)],
            "square": [(-1e150, 1e150), (-1e-200, 1e-200)]}


@pytest.mark.parametrize("fn", sorted(EXTREMES))
def test_engine_lines_are_accepted_on_extreme_intervals(fn):
    """Tails and huge or tiny ranges: values near 1e-300 (exp), near -1e-197 (gelu's left tail, where
    1 + erf would cancel in the balls: the checker uses erfc), near +-1 (tanh, erf), 1e300, and sqrt
    on subnormal intervals (its touching point is only placed to a subnormal spacing)."""
    l, u = (np.array(v, dtype=np.float64) for v in zip(*EXTREMES[fn]))
    assert all(all(ok) for ok in accepted(fn, engine.relax(fn, l, u), l, u)), fn
    lines = engine.relax("exp", np.array([700.0]), np.array([709.5]))
    assert not (np.isfinite(lines.upper_slope[0]) and np.isfinite(lines.upper_intercept[0]))  # overflow shows, no warning


def test_intercepts_trace_in_jax_and_differentiate_to_the_touching_point():
    """alpha-CROWN's path: with JAX arrays the same lines come out (to rounding), and the gradient of
    an intercept in its slope is -x* (envelope theorem), matching central differences in numpy."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(7)
    for fn in ("tanh", "gelu"):
        l = rng.uniform(-4.0, 1.0, 5)
        u, a = l + rng.uniform(0.1, 3.0, 5), rng.uniform(0.05, 0.9, 5)
        if fn == "gelu":
            lines, traced = engine.relax(fn, l, u, a, a), engine.relax(fn, jnp.asarray(l), jnp.asarray(u), jnp.asarray(a), jnp.asarray(a))
            for name in ("lower_intercept", "upper_intercept"):
                assert np.allclose(getattr(lines, name), np.asarray(getattr(traced, name)), rtol=1e-13, atol=1e-15), name
        for side in (1, -1):
            value, grad = jax.value_and_grad(lambda s: jnp.sum(engine.intercept(fn, s, jnp.asarray(l), jnp.asarray(u), side)[0]))(jnp.asarray(a))
            assert np.isclose(float(value), np.sum(engine.intercept(fn, a, l, u, side)[0]), rtol=1e-13, atol=1e-15), (fn, side)
            central = (engine.intercept(fn, a + 1e-6, l, u, side)[0] - engine.intercept(fn, a - 1e-6, l, u, side)[0]) / 2e-6
            assert np.allclose(np.asarray(grad), central, rtol=1e-5, atol=1e-6), (fn, side, grad, central)
