"""The leaves' cheaper float CROWN (issue 19, sixteenth session) gives the same floats as before: `crown_layer`'s `pick`
(the rows e_a - e_b of difference pairs, or e_a, multiplied into layer k by a gather) against the same rows as a matrix,
the numpy rewrite of difference pairs against the generic (JAX-shaped) formula, and `driver.box_floats` against
`network.box_floats`. The engine's trees then stay the same, which the MNIST hashes in the commit message also showed."""

from __future__ import annotations

import random
from fractions import Fraction

import numpy as np
import pytest

from certify.bounds import linear
from certify.bounds.driver import box_floats, exact_relaxation_fast
from certify.bounds.linear import Difference, Relaxation, backsubstitute, crown_layer, interval_dense, interval_relu
from certify.bounds.network import FloatNet, box_floats as network_box_floats


def _problem(seed: int, widths=(6, 20, 20, 4)):
    """A random joint-like net whose hidden layers pair neuron i with neuron i + width/2, its box, and per hidden layer the
    CROWN relaxation of its interval bounds and difference lines (valid or not: only the floats are compared)."""
    rng = np.random.default_rng(seed)
    ws = tuple(rng.normal(0, 1, (o, i)) for i, o in zip(widths[:-1], widths[1:]))
    bs = tuple(rng.normal(0, 0.5, o) for o in widths[1:])
    pairs = {k: (np.arange(widths[k] // 2), widths[k] // 2 + np.arange(widths[k] // 2)) for k in range(1, len(widths) - 1)}
    net = FloatNet(ws, bs, pairs=pairs)
    lo = -rng.uniform(0, 1, widths[0])
    up = lo + rng.uniform(0, 2, widths[0])
    relax, diff, prev = [], {}, (lo, up)
    for k in range(1, len(widths) - 1):
        l, u = interval_dense(ws[k - 1], bs[k - 1], *prev)
        relax.append(exact_relaxation_fast(l, u))
        a, b = pairs[k]
        keep = rng.uniform(size=len(a)) < 0.7
        diff[k] = Difference(a[keep], b[keep], Relaxation(*(rng.uniform(-1, 1, int(keep.sum())) for _ in range(4))))
        prev = interval_relu(l, u)
    return net, relax, diff, lo, up


@pytest.mark.parametrize("seed", range(12))
def test_pick_is_the_matrix_product(seed):
    net, relax, diff, lo, up = _problem(seed)
    rng = np.random.default_rng(100 + seed)
    for k in range(1, len(net.weights) + 1):
        width = net.weights[k - 1].shape[0]
        a = rng.permutation(width)[: width // 2]
        b = rng.permutation(width)[: width // 2]
        rows = np.zeros((len(a), width))
        rows[np.arange(len(a)), a] += 1.0
        rows[np.arange(len(a)), b] -= 1.0
        same = a == b  # e_a - e_a = 0: the gather gives 0 too
        for mat, pick in ((rows[~same], (a[~same], b[~same])), (np.eye(width)[a], (a, None)), (np.eye(width), None)):
            want = crown_layer(net, k, relax[: k - 1], lo, up, diff, mat)
            got = crown_layer(net, k, relax[: k - 1], lo, up, diff, pick=pick)
            for w, g in zip(want, got):
                assert np.array_equal(w, g)  # bit for bit (0.0 == -0.0)


@pytest.mark.parametrize("seed", range(12))
def test_numpy_difference_rewrite_is_the_former_one(seed, monkeypatch):
    net, relax, diff, lo, up = _problem(seed)
    k = len(net.weights)
    lam = np.random.default_rng(seed).normal(0, 1, (7, net.weights[-1].shape[0]))
    got = backsubstitute(net, k, lam, relax, lo, up, diff=diff)
    monkeypatch.setattr(linear, "_apply_difference_np", _former)
    want = backsubstitute(net, k, lam, relax, lo, up, diff=diff)
    assert np.array_equal(got, want)


def _former(h, lam, const, r, d):
    """The pre-sixteenth-session numpy rewrite of difference pairs (where(s, x * p, x * q) and a copy of lam)."""
    xa, xb = h[:, d.a], h[:, d.b]
    opp = xa * xb < 0
    ref_a = np.abs(xa) >= np.abs(xb)
    c, dd = xa + xb, np.where(ref_a, -xb, xa)
    take = lambda v, i: v[..., i]  # noqa: E731
    pick = lambda v: np.where(ref_a, take(v, d.a), take(v, d.b))  # noqa: E731
    c_slope = np.where(c >= 0, c * pick(r.lower_slope), c * pick(r.upper_slope))
    c_int = np.where(c >= 0, c * pick(r.lower_intercept), c * pick(r.upper_intercept))
    ds = np.where(dd >= 0, dd * d.lines.lower_slope, dd * d.lines.upper_slope)
    dt = np.where(dd >= 0, dd * d.lines.lower_intercept, dd * d.lines.upper_intercept)
    std_int = sum(np.where(x >= 0, x * take(r.lower_intercept, i), x * take(r.upper_intercept, i)) for x, i in ((xa, d.a), (xb, d.b)))
    new_a = np.where(ref_a, c_slope, 0.0) + ds
    new_b = np.where(ref_a, 0.0, c_slope) - ds
    lam = lam.copy()
    lam[:, d.a], lam[:, d.b] = np.where(opp, new_a, lam[:, d.a]), np.where(opp, new_b, lam[:, d.b])
    return lam, const + np.where(opp, c_int + dt - std_int, 0.0).sum(axis=1)


def test_box_floats_as_the_networks():
    rng = random.Random(1601)
    for _ in range(3000):
        ends = [Fraction(rng.randint(-10 ** 6, 10 ** 6), 2 ** rng.randint(0, 60)) for _ in range(6)]
        if rng.random() < 0.3:  # not a float: rounded outward
            ends[rng.randrange(6)] = Fraction(rng.randint(-10 ** 6, 10 ** 6), rng.randint(1, 10 ** 4))
        if rng.random() < 0.1:  # a 54-bit numerator or a tiny power of two
            ends[rng.randrange(6)] = Fraction(rng.choice([2 ** 53 + 1, 3]), 2 ** rng.choice([0, 1100]))
        lo, up = ends[:3], ends[3:]
        for got, want in zip(box_floats(lo, up), network_box_floats(lo, up)):
            assert np.array_equal(got, want)
