"""Soundness by sampling and by an exact oracle, on random small networks and boxes.

Every bound (interval and CROWN, as certified by the checker) must contain f - g at sampled
points, and be at least the exact maximum (MILP, its maximiser replayed exactly).
"""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certify.bounds.milp import milp_max_deviation
from certify.bounds.network import from_exact
from certify.bounds.driver import propose
from certify.checker import exact
from certify.checker.exact import qmat, qvec


def random_joint(rng, widths, prune_frac):
    """f and a pruned g, then the exact joint network (as the checker would build it)."""
    from certify.checker.network import joint_network

    f = []
    for a, b in zip(widths[:-1], widths[1:]):
        w = rng.normal(0, 1 / np.sqrt(a), (b, a))
        if rng.random() < 0.3:  # dead and always-active neurons
            w[0] = 0.0
        bias = rng.normal(0, 0.5, b)
        f.append(([[Fraction(v) for v in row] for row in w], [Fraction(v) for v in bias]))
    g = [(list(map(list, w)), list(b)) for w, b in f]
    layer = int(rng.integers(1, len(widths) - 1))  # a hidden layer's neurons, read by dense layer+1
    pruned = [j for j in range(widths[layer]) if rng.random() < prune_frac] or [0]
    w, b = g[layer]
    for row in w:
        for j in pruned:
            row[j] = Fraction(0)
    joint, _ = joint_network(f, g, None)
    return joint


boxes = st.sampled_from(["unit", "zero_straddling", "degenerate", "offset"])


def make_box(rng, dim, kind):
    if kind == "unit":
        lo, up = -np.ones(dim), np.ones(dim)
    elif kind == "zero_straddling":
        c = rng.normal(0, 0.1, dim)
        lo, up = c - 0.5, c + 0.5
    elif kind == "degenerate":  # some coordinates fixed
        lo = rng.uniform(-1, 0, dim)
        up = lo + np.where(rng.random(dim) < 0.5, 0.0, rng.uniform(0, 1, dim))
    else:
        lo = rng.uniform(0.5, 1.0, dim)
        up = lo + rng.uniform(0, 0.3, dim)
    return [Fraction(float(v)) for v in lo], [Fraction(float(v)) for v in up]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), depth=st.integers(2, 3), width=st.integers(2, 6),
       dim=st.integers(1, 3), box_kind=boxes)
def test_bounds_contain_samples_and_exact_maximum(seed, depth, width, dim, box_kind):
    rng = np.random.default_rng(seed)
    widths = [dim] + [width] * (depth - 1) + [2]
    joint = random_joint(rng, widths, 0.5)
    net = from_exact(joint)
    box = make_box(rng, dim, box_kind)
    lo = np.array([float(v) for v in box[0]])
    up = np.array([float(v) for v in box[1]])
    xs = lo + (up - lo) * rng.random((2000, dim))
    dev = np.max(np.abs(np.asarray(net(xs))), axis=1)
    top = xs[np.argsort(dev)[-20:]]  # the best samples, replayed exactly (no float slack)
    sampled = max(max(abs(v) for v in exact.forward(joint, [Fraction(float(c)) for c in x])) for x in top)
    exact_max, arg = milp_max_deviation(net, lo, up)
    assert exact_max is not None
    replay = max(abs(v) for v in exact.forward(joint, [Fraction(float(v)) for v in arg]))
    assert abs(float(replay) - exact_max) <= 1e-6 * (1 + exact_max), "MILP optimum does not replay"
    for method in ("interval", "crown"):
        bound = propose(net, joint, box, method).bound
        assert bound >= replay, f"{method}: bound {float(bound)} below the exactly replayed maximum {float(replay)}"
        assert bound >= sampled, f"{method}: bound {float(bound)} below a sampled deviation {float(sampled)}"


def test_one_dimensional_enumeration_matches_milp():
    """In one input dimension the maximum is attained at a breakpoint: enumerate them on a fine grid."""
    rng = np.random.default_rng(7)
    joint = random_joint(rng, [1, 6, 6, 2], 0.5)
    net = from_exact(joint)
    grid = np.linspace(-1, 1, 200001)[:, None]
    enumerated = float(np.max(np.abs(np.asarray(net(grid)))))
    exact_max, _ = milp_max_deviation(net, np.array([-1.0]), np.array([1.0]))
    assert exact_max == pytest.approx(enumerated, rel=1e-4, abs=1e-6)
    box = ([Fraction(-1)], [Fraction(1)])
    assert float(propose(net, joint, box, "crown").bound) >= exact_max


def _naive_interval(layer, lo, up):
    """w @ a + b over the box, one Fraction at a time (the reference for exact.interval_dense)."""
    (w, wden), (b, bden) = layer
    out = ([], [])
    for row, bias in zip(w, b):
        terms = [Fraction(x, wden) for x in row]
        out[0].append(Fraction(bias, bden) + sum(t * (l if t >= 0 else u) for t, l, u in zip(terms, lo, up)))
        out[1].append(Fraction(bias, bden) + sum(t * (u if t >= 0 else l) for t, l, u in zip(terms, lo, up)))
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), depth=st.integers(2, 3), width=st.integers(1, 6),
       dim=st.integers(1, 3), box_kind=boxes)
def test_flint_paths_match_the_fraction_reference(seed, depth, width, dim, box_kind):
    """The checker's FLINT interval step (W mid -/+ |W| rad) equals the per-term Fraction sums, and
    back-substituting the identity rows (read off the weights) equals back-substituting an explicit
    identity matrix, on triangle relaxations; both contain the exact forward pass at sampled points."""
    rng = np.random.default_rng(seed)
    joint = random_joint(rng, [dim] + [width] * depth + [2], 0.5)
    lo, up = make_box(rng, dim, box_kind)
    mats = exact.weight_mats(joint)
    relax, a, b = [], lo, up
    for k, layer in enumerate(joint[:-1]):
        got = exact.interval_dense(layer, a, b, mats[k])
        assert got == _naive_interval(layer, a, b) == exact.interval_dense(layer, a, b)
        lines = ([], [], [], [])
        for l, u in zip(*got):
            if l >= 0 or u <= 0:
                s = Fraction(1 if l >= 0 else 0)
                vals = (s, 0, s, 0)
            else:
                s = u / (u - l)
                vals = (Fraction(int(rng.random() < 0.5)), 0, s, -s * l)
            for line, v in zip(lines, vals):
                line.append(Fraction(v))
        relax.append(tuple(qvec(v) for v in lines))
        a, b = [max(v, Fraction(0)) for v in got[0]], [max(v, Fraction(0)) for v in got[1]]
    box = (qvec(lo), qvec(up))
    for k in range(1, len(joint) + 1):
        n = len(joint[k - 1][1][0])
        low = exact.backsubstitute(1, joint[:k], relax[: k - 1], box, mats=mats[:k])
        high = [-v for v in exact.backsubstitute(-1, joint[:k], relax[: k - 1], box, mats=mats[:k])]
        assert low == exact.backsubstitute([{i: 1} for i in range(n)], joint[:k], relax[: k - 1], box)
        assert high == [-v for v in exact.backsubstitute([{i: -1} for i in range(n)], joint[:k], relax[: k - 1], box)]
        # rows with several coefficients (e_a - e_b, 3 e_0): back-substitution is positively homogeneous,
        # and a difference's bounds hold at every point
        combos = [{0: 3}, {n - 1: -2}] + ([{0: 1, n - 1: -1}, {n - 1: 2, 0: 5}] if n > 1 else [])
        got = exact.backsubstitute(combos, joint[:k], relax[: k - 1], box, mats=mats[:k])
        assert got[:2] == [3 * low[0], 2 * -high[n - 1]]
        for _ in range(5):
            x = [l + (u - l) * Fraction(int(rng.integers(0, 9)), 8) for l, u in zip(lo, up)]
            z = exact.forward(joint[:k], x)  # the pre-activation of layer k (relu between layers)
            assert all(l <= v <= h for l, v, h in zip(low, z, high))
            assert all(g <= sum(c * z[i] for i, c in row.items()) for g, row in zip(got, combos))

