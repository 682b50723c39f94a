"""The engine's difference planes (driver.difference_planes_fast) hold exactly, as the checker tests them
(check._plane_holds), where P is thin and far from 0: the vertices the engine evaluates the plane at are rounded
(fl(z_b + c)), and its intercept's margin must cover that. A 125 CPU s MNIST-7 tree was rejected for one such pair."""

from fractions import Fraction

import numpy as np
import pytest

from certify.bounds import driver
from certify.checker import check


def _planes(la, ua, lb, ub, cl, cu):
    lo, up = np.array([la, lb]).T, np.array([ua, ub]).T  # (n, 2): per pair, neuron 2p is a and 2p + 1 is b
    lo, up = lo.reshape(-1), up.reshape(-1)
    n = len(cl)
    a, b = 2 * np.arange(n), 2 * np.arange(n) + 1
    return driver.difference_planes_fast(cl, cu, lo, up, a, b, driver._difference_slopes(cl, cu, lo, up, a, b)[4:])


def _failures(la, ua, lb, ub, cl, cu) -> list:
    got, rl, ru, _ = _planes(la, ua, lb, ub, cl, cu)
    bad = []
    for p in range(len(cl)):
        ends = tuple(Fraction(float(v[p])) for v in (la, ua, lb, ub, cl, cu))
        for s, r, t, upper in ((got.lower_slope[p], rl[p], got.lower_intercept[p], False),
                               (got.upper_slope[p], ru[p], got.upper_intercept[p], True)):
            if not check._plane_holds(ends, *(Fraction(float(x)).as_integer_ratio() for x in (s, r, t)), upper):
                bad.append((p, upper))
    return bad


def test_the_rejected_mnist7_pair():
    """The pair of the rejected tree (tree.0.1.0.1.1.0.0.0.0.1.1.1.0, layer 1, z_99 and z_199): its lower plane was
    above D by 1.1e-17 at (u_b + c_l, u_b)."""
    la, ua, lb, ub, cl, cu = (np.array([float.fromhex(h)]) for h in (
        "-0x1.255965b0b2a57p-3", "0x1.21ec255891b0bp-1", "-0x1.260364a640a08p-3", "0x1.21d1d00f30e84p-1",
        "0x1.2bd6772fcf8e4p-13", "0x1.90bcfa5802dddp-12"))
    assert _failures(la, ua, lb, ub, cl, cu) == []


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("grid", [driver.GRID, 2.0 ** -90])
def test_thin_polygons_far_from_zero(seed, grid, monkeypatch):
    """Random pairs whose delta range is 1e-7 to 1e-3 wide, inside neuron ranges of width about 1 (the pruned copy's
    neurons track f's closely): every plane holds exactly. With the intercepts' grid at 2^-90 the rounding to it
    leaves no slack, so the margin alone must cover the rounded vertices (the old margin failed there)."""
    monkeypatch.setattr(driver, "GRID", grid)
    rng = np.random.default_rng(seed)
    n = 3000
    la, lb = -rng.uniform(0.01, 1, n), -rng.uniform(0.01, 1, n)
    ua, ub = rng.uniform(0.01, 1, n), rng.uniform(0.01, 1, n)
    cl = rng.uniform(-1, 1, n) * 10.0 ** rng.uniform(-6, -3, n)
    cu = cl + 10.0 ** rng.uniform(-7, -3, n)
    # the engine's delta range lies inside lo_a - up_b .. up_a - lo_b, as after _difference_step's intersection
    cl, cu = np.maximum(cl, la - ub), np.minimum(cu, ua - lb)
    assert _failures(la, ua, lb, ub, cl, cu) == []
