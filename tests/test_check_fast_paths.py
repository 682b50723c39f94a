"""The checker's session-11 shortcuts (issue 19) against the plain exact computations they replace:

- exact.backsubstitute keeps a layer's sums of weight rows (rows with several coefficients, e.g. a
  difference step's e_a - e_b) and its column-dropped sub-matrices per LayerMats, and reuses them on
  later calls: every lower bound equals the verbatim pre-issue-19 code's, call after call on the same
  matrices;
- check._accept_bounds and _set_bounds compare Fractions on their integers (_less);
- check.check_difference tests its lines on integers instead of Fraction arithmetic.

Each is compared, case by case, with the plain Fraction rule it replaces, on random inputs that sit on
both sides of the rule and exactly on it (where a wrong strictness or a wrong sign shows)."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from certify.checker import check, exact
from certify.checker.errors import Rejected
from certify.checker.exact import backsubstitute, weight_mats
from certify.checker.numbers import rational_str
from tests.test_exact_columns import _case, _old_backsubstitute


def test_backsubstitute_reuses_its_sums_and_sub_matrices_exactly():
    """The same mats across calls (as in one region's steps): each call equals the old code on fresh matrices."""
    rng = random.Random(1911)
    reused = 0
    for _ in range(150):
        lam, layers, relax, box, alpha, beta, diff = _case(rng)
        if isinstance(lam, list) and rng.random() < 0.5:  # rows with several coefficients (the sums cache)
            width = len(layers[-1][1][0])
            lam = [{a: rng.choice([1, -1, 2]), b: rng.choice([-1, 1, -3])} for a, b in zip(range(width), range(1, width))] or lam
        mats = weight_mats(layers)
        old = _old_backsubstitute(lam, layers, relax, box, alpha, beta, diff, weight_mats(layers))
        for _ in range(3):
            assert backsubstitute(lam, layers, relax, box, alpha, beta, diff, mats) == old
        # the same matrices, other regions: each layer's lines permuted (as many inactive neurons, others dropped)
        for _ in range(2):
            order = [rng.sample(range(len(r[0][0])), len(r[0][0])) for r in relax]
            moved = [tuple(([v[i] for i in perm], d) for v, d in r) for r, perm in zip(relax, order)]
            old = _old_backsubstitute(lam, layers, moved, box, alpha, beta, diff, weight_mats(layers))
            assert backsubstitute(lam, layers, moved, box, alpha, beta, diff, mats) == old
        reused += bool(mats[-1].sums) + sum(bool(m._subs) for m in mats)
    assert reused > 40, "too few cases that reuse a sum or a sub-matrix"


def _net(rng, widths):
    return [(([[rng.randrange(-9, 10) for _ in range(a)] for _ in range(b)], 4),
             ([rng.randrange(-9, 10) for _ in range(b)], 2)) for a, b in zip(widths[:-1], widths[1:])]


def _state(layers, box):
    return check._State(layers, box, {}, {}, {}, mats=weight_mats(layers))


def _problem(rng, widths):
    """A random net of these widths, a random box around 0 on its inputs and a fresh check state."""
    layers = _net(rng, widths)
    box = ([Fraction(rng.randrange(-4, 1), 2) for _ in range(widths[0])], [Fraction(rng.randrange(0, 5), 2) for _ in range(widths[0])])
    return layers, box, _state(layers, box)


def _near(rng, v: Fraction) -> Fraction:
    """v itself, or v moved by a small amount either way."""
    return v + rng.choice([0, 0, Fraction(1, 64), -Fraction(1, 64), Fraction(1, 10 ** 6), -Fraction(1, 10 ** 6)])


def test_accept_bounds_compares_exactly():
    """Interval steps with claims at, just inside and just outside the derived bounds, twice per layer (the
    second intersects): rejected exactly when a plain Fraction comparison says so, and the same bounds kept."""
    rng = random.Random(1912)
    outcomes = set()
    for _ in range(300):
        layers, box, state = _problem(rng, [3, 5, 2])
        derived = exact.interval_dense(layers[0], *box)
        kept = None
        for _ in range(2):
            lo, up = ([_near(rng, v) for v in side] for side in derived)
            step = {"kind": "interval", "layer": 1, "lower": list(map(rational_str, lo)), "upper": list(map(rational_str, up))}
            bad = any(c > d for c, d in zip(lo, derived[0])) or any(c < d for c, d in zip(up, derived[1]))
            try:
                check.check_interval(step, state, "test")
            except Rejected:
                assert bad
                outcomes.add("rejected")
                break
            assert not bad
            kept = (lo, up) if kept is None else ([max(a, b) for a, b in zip(kept[0], lo)], [min(a, b) for a, b in zip(kept[1], up)])
            assert state.bounds[1] == kept
            assert state.empty == any(l > u for l, u in zip(*kept))
            outcomes.add("accepted")
    assert outcomes == {"accepted", "rejected"}


def _line_ok(sl, tl, su, tu, cl, cu, la, ua, lb, ub) -> bool:
    """check_difference's line test before session 11, verbatim in Fractions."""
    for x in (cl, cu):
        low = x if lb >= 0 else Fraction(0) if ub <= 0 else min(x, Fraction(0))
        high = x if la >= 0 else Fraction(0) if ua <= 0 else max(x, Fraction(0))
        if sl * x + tl > low or su * x + tu < high:
            return False
    return True


def test_difference_lines_are_tested_exactly():
    """Difference steps on layer 1 of random 3-6-2 nets: pairs whose neurons are active, inactive or unstable,
    claimed delta bounds at the derived ones, and lines drawn near the tight ones (slopes 0, 1 or between,
    intercepts at and near 0): rejected exactly when the plain Fraction test rejects a line."""
    rng = random.Random(1913)
    outcomes = set()
    for _ in range(400):
        layers, box, state = _problem(rng, [3, 6, 2])
        lo, up = exact.interval_dense(layers[0], *box)
        for i in range(6):  # some neurons stable either way
            if rng.random() < 0.3:
                lo[i], up[i] = (Fraction(0), up[i] + 1) if rng.random() < 0.5 else (lo[i] - 1, Fraction(0))
        state.bounds[1] = (lo, up)
        ids = rng.sample(range(6), 6)
        pairs = [[ids[0], ids[1]], [ids[2], ids[3]], [ids[4], ids[5]]]
        d_lo, d_up = check._bounds_of([{a: 1, b: -1} for a, b in pairs], state, 1)
        cl = [max(d, lo[a] - up[b]) for d, (a, b) in zip(d_lo, pairs)]
        cu = [min(d, up[a] - lo[b]) for d, (a, b) in zip(d_up, pairs)]
        sl, tl, su, tu = [], [], [], []
        for (a, b), x0, x1 in zip(pairs, cl, cu):  # the tightest intercept for a random slope, then at, above or below it
            low = lambda x: x if lo[b] >= 0 else Fraction(0) if up[b] <= 0 else min(x, Fraction(0))
            high = lambda x: x if lo[a] >= 0 else Fraction(0) if up[a] <= 0 else max(x, Fraction(0))
            s0, s1 = (rng.choice([Fraction(0), Fraction(1), Fraction(rng.randrange(1, 8), 8)]) for _ in range(2))
            sl.append(s0)
            tl.append(_near(rng, min(low(x0) - s0 * x0, low(x1) - s0 * x1)))
            su.append(s1)
            tu.append(_near(rng, max(high(x0) - s1 * x0, high(x1) - s1 * x1)))
        ok = all(_line_ok(*v, lo[a], up[a], lo[b], up[b]) for v, (a, b) in zip(zip(sl, tl, su, tu, cl, cu), pairs))
        step = {"kind": "difference", "layer": 1, "pairs": pairs, **{k: list(map(rational_str, v)) for k, v in (
            ("lower", cl), ("upper", cu), ("lower_slope", sl), ("lower_intercept", tl), ("upper_slope", su), ("upper_intercept", tu))}}
        try:
            check.check_difference(step, state, "test")
        except Rejected as exc:
            assert not ok and "a line is not below/above" in str(exc)
            outcomes.add("rejected")
            continue
        assert ok
        assert state.diff[1][0] == [tuple(p) for p in pairs]
        got = [[Fraction(x, d) for x in v] for v, d in state.diff[1][1]]
        assert got == [sl, tl, su, tu]
        outcomes.add("accepted")
    assert outcomes == {"accepted", "rejected"}


@pytest.mark.parametrize("text", ["2/4", "-6/8", "0/5"])
def test_difference_lines_in_other_terms_are_the_same_numbers(text):
    """A line written in other terms ("2/4") is the same rational in the verified state."""
    rng = random.Random(1914)
    layers = _net(rng, [3, 6, 2])
    box = ([Fraction(-1)] * 3, [Fraction(1)] * 3)
    state = _state(layers, box)
    state.bounds[1] = (lo, up) = exact.interval_dense(layers[0], *box)
    d_lo, d_up = check._bounds_of([{0: 1, 1: -1}], state, 1)
    cl, cu = max(d_lo[0], lo[0] - up[1]), min(d_up[0], up[0] - lo[1])
    step = {"kind": "difference", "layer": 1, "pairs": [[0, 1]], "lower": [rational_str(cl)], "upper": [rational_str(cu)],
            "lower_slope": ["0"], "lower_intercept": [rational_str(min(cl, Fraction(0)) - 1)],
            "upper_slope": ["0"], "upper_intercept": [rational_str(max(cu, Fraction(0)) + 1)]}
    step["lower_slope"] = [text] if Fraction(text) == 0 else step["lower_slope"]
    try:
        check.check_difference(step, state, "test")
    except Rejected:
        assert Fraction(text) != 0  # a slope of -3/4 may not lie below; the point is the numbers
        return
    (s, sd), _, _, _ = state.diff[1][1]
    assert Fraction(s[0], sd) == Fraction(step["lower_slope"][0])
