"""check._plane_holds (a difference plane below / above relu(z_a) - relu(z_b) on the pair's polygon) against an
independent exact oracle: z3 over the reals, with no vertex logic. Degenerate polygons included (a point interval,
a delta range of one value, a stable neuron, a side of the polygon on z_a = 0 or z_b = 0, an empty polygon), and each
plane's intercept set to its exact optimum by z3's optimiser, then moved by 2^-40 either way."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

z3 = pytest.importorskip("z3")

from certify.checker.check import _plane_holds  # noqa: E402


def _q(x: Fraction):
    return z3.Q(x.numerator, x.denominator)


def _problem(ends, s, r):
    la, ua, lb, ub, cl, cu = ends
    za, zb = z3.Reals("za zb")
    d = z3.If(za >= 0, za, 0) - z3.If(zb >= 0, zb, 0)
    gap = d - _q(s) * (za - zb) - _q(r) * zb  # the plane's intercept must be <= min gap (lower), >= max gap (upper)
    domain = [za >= _q(la), za <= _q(ua), zb >= _q(lb), zb <= _q(ub), za - zb >= _q(cl), za - zb <= _q(cu)]
    return domain, gap


def _valid(ends, s, r, t, upper: bool) -> bool:
    domain, gap = _problem(ends, s, r)
    solver = z3.Solver()
    solver.add(*domain, (gap > _q(t)) if upper else (gap < _q(t)))
    answer = solver.check()
    assert answer in (z3.sat, z3.unsat)
    return answer == z3.unsat


def _optimum(ends, s, r, upper: bool) -> Fraction | None:
    domain, gap = _problem(ends, s, r)
    opt = z3.Optimize()
    opt.add(*domain)
    handle = opt.maximize(gap) if upper else opt.minimize(gap)
    if opt.check() != z3.sat:
        return None  # the polygon is empty
    value = opt.upper(handle) if upper else opt.lower(handle)
    assert z3.is_rational_value(value) or z3.is_int_value(value), value  # bounded: every interval is finite
    return Fraction(value.as_string())


def _pair(x: Fraction) -> tuple[int, int]:
    return x.numerator, x.denominator


def _ends(rng: random.Random) -> tuple:
    def frac():
        return Fraction(rng.randint(-40, 40), rng.choice([1, 2, 3, 8, 10]))

    (la, ua), (lb, ub) = sorted((frac(), frac())), sorted((frac(), frac()))
    shape = rng.randrange(8)
    if shape == 0:
        ua = la  # a point interval
    elif shape == 1:
        la = Fraction(0)  # z_a stable, touching 0
    elif shape == 2:
        ub = Fraction(0)  # z_b inactive, touching 0
    elif shape == 3:
        lb, ub = Fraction(0), abs(ub) + 1
    cl, cu = sorted((la - ub + Fraction(rng.randint(0, 20), 4), ua - lb - Fraction(rng.randint(0, 20), 4)))
    if shape == 4:
        cu = cl  # one delta value
    elif shape == 5:
        cl, cu = ua - lb + 1, ua - lb + 2  # the polygon is empty
    elif shape in (6, 7):  # both neurons unstable, a narrow delta range: z_a = 0 and z_b = 0 cross its long edges
        la, ua, lb, ub = -abs(la) - 1, abs(ua) + 1, -abs(lb) - 1, abs(ub) + 1
        cl = Fraction(rng.randint(-8, 8), 8)
        cu = cl + Fraction(rng.randint(0, 8), 8)
    return la, ua, lb, ub, cl, cu


@pytest.mark.parametrize("seed", range(6))
def test_plane_holds_agrees_with_z3(seed):
    rng = random.Random(9100 + seed)
    eps = Fraction(1, 2 ** 40)
    checked = empty = 0
    for _ in range(40):
        ends = _ends(rng)
        s = Fraction(rng.randint(-8, 8), rng.choice([1, 2, 4, 7]))
        r = Fraction(rng.randint(-8, 8), rng.choice([1, 2, 4, 7])) if rng.random() < 0.85 else Fraction(0)
        for upper in (False, True):
            best = _optimum(ends, s, r, upper)
            if best is None:  # empty: every plane holds (no point of the region exists)
                empty += 1
                t = Fraction(rng.randint(-50, 50), 3)
                assert _plane_holds(ends, _pair(s), _pair(r), _pair(t), upper)
                continue
            inward = eps if upper else -eps  # moving the intercept this way keeps it valid
            for t, ok in ((best, True), (best + inward, True), (best - inward, False)):
                assert _valid(ends, s, r, t, upper) is ok  # the oracle agrees with itself
                assert _plane_holds(ends, _pair(s), _pair(r), _pair(t), upper) is ok, (ends, s, r, t, upper)
                checked += 1
            t = best + Fraction(rng.randint(-30, 30), 7)  # and anywhere
            assert _plane_holds(ends, _pair(s), _pair(r), _pair(t), upper) is _valid(ends, s, r, t, upper)
    assert checked > 150 and empty > 0


def test_a_plane_tight_where_z_a_is_0_on_the_delta_edge():
    """z_a in [-1, 3/2], z_b in [-3, 1/2], delta in [1, 2]: D - (z_b / 2) is least, 1/2, only at z_a = 0 on the edge
    delta = 1 (z_b = -1, inside its interval): the plane z_b / 2 + 1/2 holds, a hair higher does not (a vertex test
    that skipped where z_a = 0 meets a delta edge would accept it)."""
    ends = (Fraction(-1), Fraction(3, 2), Fraction(-3), Fraction(1, 2), Fraction(1), Fraction(2))
    s, r = Fraction(0), Fraction(1, 2)
    assert _optimum(ends, s, r, upper=False) == Fraction(1, 2)
    for t, ok in ((Fraction(1, 2), True), (Fraction(1, 2) + Fraction(1, 2 ** 40), False)):
        assert _valid(ends, s, r, t, upper=False) is ok
        assert _plane_holds(ends, _pair(s), _pair(r), _pair(t), False) is ok
