"""Difference planes (issue 19, seventeenth session): a difference step's optional `lower_slope_b` / `upper_slope_b` make
its pair lines planes s*delta + r*z_b + t below and above D = relu(z_a) - relu(z_b) on P = {z_a, z_b in their verified
bounds, delta = z_a - z_b in its claimed bounds}. The checker tests a plane (and, in a step with planes, a line the 1-D
test refutes) at P's cell vertices (`check._plane_holds`), exactly; the exact and the numpy back-substitutions add d*r to
z_b's coefficient. Here: the checker's verdicts against an independent exact minimum over an integer grid that holds every
cell vertex, tampered and malformed planes, the back-substitutions against a direct computation, steps without the keys
checked as before, the engine's planes (random pairs, and the VeryDiff MNIST tree's leaves)."""

from __future__ import annotations

import copy
import json
import math
import random
from fractions import Fraction

import numpy as np
import pytest

from certify.bounds import driver
from certify.bounds.linear import Difference, Relaxation, backsubstitute
from certify.bounds.milp import difference_cuts
from certify.bounds.network import FloatNet
from certify.checker import check
from certify.checker.check import Verdict, check_certificate
from certify.checker.errors import Rejected
from certify.checker.numbers import rational_str
from tests.test_inherited_pairs import PAIRS, _diff_step, _layer1, _tamper, pairs_tree  # noqa: F401  (pairs_tree: a fixture)

EPS = Fraction(1, 2 ** 40)


def _grid_extreme(ends, s, r, upper: bool):
    """min (upper: max) over P of D - s*delta - r*z_b, exactly, independently of the checker: every end times their common
    denominator m is an integer, so every cell vertex of P is a point of the integer grid (in units of 1/m), where the
    minimum of a function linear on each cell is attained. None when P is empty."""
    m = math.lcm(*(x.denominator for x in ends))
    la, ua, lb, ub, cl, cu = (int(x * m) for x in ends)
    za, zb = np.meshgrid(np.arange(la, ua + 1, dtype=np.int64), np.arange(lb, ub + 1, dtype=np.int64), indexing="ij")
    inside = (za - zb >= cl) & (za - zb <= cu)
    if not inside.any():
        return None
    q = math.lcm(s.denominator, r.denominator)
    v = (np.maximum(za, 0) - np.maximum(zb, 0)) * q - int(s * q) * (za - zb) - int(r * q) * zb  # times q*m
    return Fraction(int(v[inside].max() if upper else v[inside].min()), q * m)


def _plane_step(state, pairs, rng, planes=True):
    """A difference step of layer 1 for `pairs` with the back-substituted delta bounds and random slopes (s on an 1/8 grid,
    r too where `planes`) whose intercepts are exactly tight on P (the grid extreme). Also each pair's P ends."""
    lo, up = state.bounds[1]
    d_lo, d_up = check._bounds_of([{a: 1, b: -1} for a, b in pairs], state, 1)
    step = {"kind": "difference", "layer": 1, "pairs": [list(p) for p in pairs], "lower": [], "upper": [],
            "lower_slope": [], "lower_intercept": [], "upper_slope": [], "upper_intercept": []}
    if planes:
        step["lower_slope_b"], step["upper_slope_b"] = [], []
    ends = []
    for (a, b), cl, cu in zip(pairs, d_lo, d_up):
        e = (lo[a], up[a], lo[b], up[b], cl, cu)
        ends.append(e)
        step["lower"].append(rational_str(cl))
        step["upper"].append(rational_str(cu))
        for side, upper in (("lower", False), ("upper", True)):
            s = Fraction(rng.randrange(-2, 11), 8)
            r = Fraction(rng.randrange(-8, 9), 8) if planes else Fraction(0)
            step[f"{side}_slope"].append(rational_str(s))
            step[f"{side}_intercept"].append(rational_str(_grid_extreme(e, s, r, upper)))
            if planes:
                step[f"{side}_slope_b"].append(rational_str(r))
    return step, ends


def _verdict(step, state) -> bool:
    try:
        check.check_difference(copy.deepcopy(step), copy.copy(state), "t")
        return True
    except Rejected:
        return False


def _holds(step, ends, p, side) -> bool:
    """Does pair p's `side` plane of the step hold on P (the independent grid)?"""
    s, t = (Fraction(step[f"{side}_{k}"][p]) for k in ("slope", "intercept"))
    r = Fraction(step.get(f"{side}_slope_b", ["0"] * len(ends))[p])
    ext = _grid_extreme(ends[p], s, r, side == "upper")
    return ext is None or (t <= ext if side == "lower" else t >= ext)


def test_tight_planes_are_accepted_and_one_step_past_them_rejected():
    rng = random.Random(1701)
    for _ in range(25):
        state = _layer1(rng)
        step, ends = _plane_step(state, PAIRS, rng)
        assert _verdict(step, state)  # tight on P: accepted
        for p in range(len(PAIRS)):
            for side, sign in (("lower", 1), ("upper", -1)):
                bad = copy.deepcopy(step)
                bad[f"{side}_intercept"][p] = rational_str(Fraction(bad[f"{side}_intercept"][p]) + sign * EPS)
                if not (Fraction(ends[p][4]) > Fraction(ends[p][5])):  # (an empty P holds anything)
                    assert not _verdict(bad, state), (p, side)


def test_the_checker_agrees_with_the_grid_on_tampered_planes():
    """r's sign flipped, a slope moved, a z_b key left out (r = 0): the checker accepts exactly the planes that hold on
    the grid, and the tampering is caught in most cases."""
    rng = random.Random(1702)
    caught = total = 0
    for _ in range(25):
        state = _layer1(rng)
        step, ends = _plane_step(state, PAIRS, rng)
        for p in range(len(PAIRS)):
            for side in ("lower", "upper"):
                for change in ("flip", "slope", "missing"):
                    bad = copy.deepcopy(step)
                    if change == "flip":
                        if Fraction(bad[f"{side}_slope_b"][p]) == 0:
                            continue
                        bad[f"{side}_slope_b"][p] = rational_str(-Fraction(bad[f"{side}_slope_b"][p]))
                    elif change == "slope":
                        bad[f"{side}_slope"][p] = rational_str(Fraction(bad[f"{side}_slope"][p]) + Fraction(1, 16))
                    else:
                        del bad[f"{side}_slope_b"]
                    expect = all(_holds(bad, ends, q, sd) for q in range(len(PAIRS)) for sd in ("lower", "upper"))
                    assert _verdict(bad, state) == expect, (change, p, side)
                    caught += not expect
                    total += 1
    assert caught >= total // 2


@pytest.mark.parametrize("value", [["0"], "0", ["1/2", 0.5, "0"], ["0.5", "0", "0"], [None, "0", "0"], ["1/0", "0", "0"]])
def test_malformed_z_b_slopes_are_rejected(value):
    rng = random.Random(1703)
    state = _layer1(rng)
    step, _ = _plane_step(state, PAIRS, rng)
    step["lower_slope_b"] = value
    with pytest.raises(Rejected, match="lower_slope_b"):
        check.check_difference(step, state, "t")


def test_steps_without_the_keys_keep_the_1d_test():
    """A line tight on P but not at delta's ends alone (the 1-D test): rejected in a step without z_b keys, as before,
    accepted with them (r = 0: the exact test on P). The 1-D verdict from its own formula."""
    rng = random.Random(1704)
    seen = set()
    for _ in range(40):
        state = _layer1(rng)
        lines, ends = _plane_step(state, [rng.choice(PAIRS)], rng, planes=False)
        with_keys = {**lines, "lower_slope_b": ["0"], "upper_slope_b": ["0"]}
        one_d = True
        for p, (la, ua, lb, ub, cl, cu) in enumerate(ends):
            sl, tl, su, tu = (Fraction(lines[k][p]) for k in ("lower_slope", "lower_intercept", "upper_slope", "upper_intercept"))
            low = lambda x: x if lb >= 0 else Fraction(0) if ub <= 0 else min(x, Fraction(0))  # noqa: E731
            high = lambda x: x if la >= 0 else Fraction(0) if ua <= 0 else max(x, Fraction(0))  # noqa: E731
            one_d &= all(sl * x + tl <= low(x) and su * x + tu >= high(x) for x in (cl, cu))
        assert _verdict(lines, state) == one_d
        assert _verdict(with_keys, state)
        seen.add(one_d)
    assert seen == {True, False}


def test_inherit_merges_lines_and_planes():
    """A plane step inheriting a line step's pairs (and a line step inheriting a plane step's): the kept pairs' z_b
    slopes are 0 (lines) or kept, the listed ones' as the step gives them."""
    rng = random.Random(1707)
    for _ in range(10):
        state = _layer1(rng)
        check.check_difference(_diff_step(state, PAIRS[:2]), state, "parent")
        child, _ = _plane_step(state, PAIRS[1:], rng)
        check.check_difference({**child, "inherit": True}, state, "child")
        pairs, vecs = state.diff[1]
        rb = [[Fraction(v, d) for v in vs] for vs, d in vecs[4:]]
        assert pairs == [(0, 3), (1, 4), (2, 5)] and len(vecs) == 6
        assert rb == [[Fraction(0)] + [Fraction(v) for v in child[k]] for k in ("lower_slope_b", "upper_slope_b")]
        check.check_difference(_diff_step(state, [PAIRS[0]], inherit=True), state, "grandchild")
        pairs, vecs = state.diff[1]
        assert pairs == [(1, 4), (2, 5), (0, 3)] and [[Fraction(v, d) for v in vs] for vs, d in vecs[4:]] == \
            [r[1:] + [Fraction(0)] for r in rb]


def _direct_layer2(state, step):
    """Exact lower bounds of z_2 and of -z_2 through layer 1's relu lines and the step's planes, computed directly."""
    (w1, w1d), (b1, b1d) = state.joint[0]
    (w2, w2d), (b2, b2d) = state.joint[1]
    lines = [[Fraction(v, d) for v in vs] for vs, d in state.relax[1]]  # lower slope, intercept, upper slope, intercept
    pl = {tuple(p): [Fraction(step[k][i]) for k in ("lower_slope", "lower_intercept", "upper_slope", "upper_intercept",
                                                        "lower_slope_b", "upper_slope_b")] for i, p in enumerate(step["pairs"])}
    out = []
    for sign in (1, -1):
        row = []
        for i in range(len(b2)):
            x = [sign * Fraction(v, w2d) for v in w2[i]]
            const = sign * Fraction(b2[i], b2d)
            y = [Fraction(0)] * len(x)  # coefficients on z_1
            for n, xn in enumerate(x):
                side = 0 if xn >= 0 else 2
                y[n], const = xn * lines[side][n], const + xn * lines[side + 1][n]
            for (a, b), (sl, tl, su, tu, rl, ru) in pl.items():
                xa, xb = x[a], x[b]
                if xa * xb >= 0:
                    continue
                ref, c, d = (a, xa + xb, -xb) if abs(xa) >= abs(xb) else (b, xa + xb, xa)
                for n in (a, b):  # undo the neuron-wise terms
                    side = 0 if x[n] >= 0 else 2
                    const -= x[n] * lines[side + 1][n]
                    y[n] = Fraction(0)
                side = 0 if c >= 0 else 2
                y[ref], const = c * lines[side][ref], const + c * lines[side + 1][ref]
                s, r, t = (sl, rl, tl) if d >= 0 else (su, ru, tu)
                y[a], y[b], const = y[a] + d * s, y[b] - d * s + d * r, const + d * t
            coef = [sum(y[n] * Fraction(w1[n][j], w1d) for n in range(len(y))) for j in range(len(w1[0]))]
            const += sum(y[n] * Fraction(b1[n], b1d) for n in range(len(y)))
            row.append(const + sum(c * (lo if c >= 0 else up) for c, lo, up in zip(coef, *state.box)))
        out.append(row)
    return out[0], [-v for v in out[1]]


def test_back_substitution_with_planes_equals_a_direct_computation():
    """The checker's exact back-substitution (and the engine's numpy one, to float accuracy) through verified planes."""
    rng = random.Random(1705)
    for _ in range(25):
        state = _layer1(rng)
        step, _ = _plane_step(state, PAIRS, rng)
        check.check_difference(copy.deepcopy(step), state, "t")
        assert len(state.diff[1][1]) == 6
        lower, upper = check._bounds_of(None, state, 2)
        assert (lower, upper) == _direct_layer2(state, step)
        (w1, w1d), (b1, b1d) = state.joint[0]
        (w2, w2d), (b2, b2d) = state.joint[1]
        net = FloatNet([np.array(w1, float) / w1d, np.array(w2, float) / w2d], [np.array(b1, float) / b1d, np.array(b2, float) / b2d])
        relax = [Relaxation(*(np.array(vs, float) / d for vs, d in state.relax[1]))]
        f = lambda k: np.array([float(Fraction(v)) for v in step[k]])  # noqa: E731
        diff = {1: Difference(np.array([a for a, _ in PAIRS]), np.array([b for _, b in PAIRS]),
                              Relaxation(*(f(k) for k in ("lower_slope", "lower_intercept", "upper_slope", "upper_intercept"))),
                              f("lower_slope_b"), f("upper_slope_b"))}
        lo_in, up_in = (np.array([float(v) for v in side]) for side in state.box)
        width = len(b2)
        got = backsubstitute(net, 2, np.concatenate([np.eye(width), -np.eye(width)]), relax, lo_in, up_in, diff=diff)
        want = np.array([float(v) for v in lower] + [-float(v) for v in upper])
        assert np.allclose(got, want, rtol=1e-9, atol=1e-9)


def test_engine_planes_hold_on_P():
    """The engine's planes on random pairs (P's ends on a 1/8 grid, so the independent grid holds every vertex): every
    one accepted by the checker's exact test and by the grid, none looser than the pair's line at P's centre."""
    rng = np.random.default_rng(1706)
    n = 150
    lo = rng.integers(-24, 8, 2 * n) / 8.0
    up = lo + rng.integers(1, 24, 2 * n) / 8.0
    a, b = np.arange(n), np.arange(n, 2 * n)
    ends = np.sort(rng.uniform(lo[a] - up[b], up[a] - lo[b], (2, n)), axis=0)
    cl, cu = np.floor(ends[0] * 8) / 8, np.ceil(ends[1] * 8) / 8
    lines = driver.difference_lines_fast(cl, cu, lo, up, a, b)
    planes, rl, ru, (cd, cb) = driver.difference_planes_fast(cl, cu, lo, up, a, b, (lines.lower_slope, lines.upper_slope))
    assert np.count_nonzero(rl) > n // 4 and np.count_nonzero(ru) > n // 4
    for p in range(n):
        e = tuple(Fraction(float(v)) for v in (lo[a[p]], up[a[p]], lo[b[p]], up[b[p]], cl[p], cu[p]))
        for side, r, upper in (("lower", rl[p], False), ("upper", ru[p], True)):
            s, t = (Fraction(float(getattr(planes, f"{side}_{k}")[p])) for k in ("slope", "intercept"))
            r = Fraction(float(r))
            ext = _grid_extreme(e, s, r, upper)
            assert ext is None or (t >= ext if upper else t <= ext), (p, side)
            assert check._plane_holds(e, s.as_integer_ratio(), r.as_integer_ratio(), t.as_integer_ratio(), upper)
        gap = lambda sl, tl, su, tu, r0, r1: (su - sl) * cd[p] + (r1 - r0) * cb[p] + tu - tl  # noqa: E731
        assert gap(planes.lower_slope[p], planes.lower_intercept[p], planes.upper_slope[p], planes.upper_intercept[p],
                   rl[p], ru[p]) <= gap(lines.lower_slope[p], lines.lower_intercept[p], lines.upper_slope[p],
                                         lines.upper_intercept[p], 0.0, 0.0) + 1e-9


def test_alpha_and_milp_never_take_planes_as_lines():
    d = Difference(np.array([0]), np.array([1]), Relaxation(*(np.zeros(1) for _ in range(4))), np.ones(1), np.zeros(1))
    with pytest.raises(ValueError, match="planes"):
        driver._lines_only({1: d})
    assert driver._lines_only({1: Difference(d.a, d.b, d.lines)})
    step = {"kind": "difference", "layer": 1, "pairs": [[0, 1], [2, 3]], **{k: ["0", "0"] for k in (
        "lower", "upper", "lower_slope", "lower_intercept", "upper_slope", "upper_intercept")}, "lower_slope_b": ["0", "1/2"]}
    assert [c[1:3] for c in difference_cuts([step])] == [(0, 1)]  # the plane left out, the line kept


# The engine's tree: the VeryDiff MNIST pair with CROWN leaves (tests/test_inherited_pairs.py's fixture)

def _plane_steps(cert):
    def walk(node):
        yield from (s for s in node.get("steps", []) if s["kind"] == "difference" and "lower_slope_b" in s)
        for child in node.get("children", []):
            yield from walk(child)
    return list(walk(cert["tree"]))


_SEEN: dict = {}


def _records(spec, cert, tmp_path):
    """[(where, step, ends per pair)] of the tree's difference steps with planes, as the checker saw them (its verified
    bounds of the pair's neurons and the step's delta bounds)."""
    if "r" not in _SEEN:
        out, orig = [], check.STEP_CHECKERS["difference"]

        def spy(step, state, where):
            if "lower_slope_b" in step:
                lo, up = state.bounds[step["layer"]]
                out.append((where, step, [(lo[a], up[a], lo[b], up[b], Fraction(cl), Fraction(cu))
                                          for (a, b), cl, cu in zip(step["pairs"], step["lower"], step["upper"])]))
            return orig(step, state, where)

        path = tmp_path / "seen.cert.json"
        path.write_text(json.dumps(cert))
        check.STEP_CHECKERS["difference"] = spy
        try:
            assert check_certificate(spec, path, jobs=1).verdict is not Verdict.REJECTED
        finally:
            check.STEP_CHECKERS["difference"] = orig
        _SEEN["r"] = out
    return _SEEN["r"]


def _violated(ends, s, r, t, upper) -> bool:
    """Does the plane miss D on P by more than 1e-7 at some of 40,000 sampled points (floats: independent of the checker)?"""
    la, ua, lb, ub, cl, cu = map(float, ends)
    rng = np.random.default_rng(0)
    za, zb = rng.uniform(la, ua, 40000), rng.uniform(lb, ub, 40000)
    ok = (za - zb >= cl) & (za - zb <= cu)
    za, zb = za[ok], zb[ok]
    gap = float(s) * (za - zb) + float(r) * zb + float(t) - (np.maximum(za, 0) - np.maximum(zb, 0))
    return bool(np.any(gap < -1e-7) if upper else np.any(gap > 1e-7))


def _at(cert, where):
    """The step of `cert` at the checker's `where` (tree.i.j...steps[n] (...))."""
    path, idx = where.split(".steps[")
    node = cert["tree"]
    for i in path.split(".")[1:]:
        node = node["children"][int(i)]
    return node["steps"][int(idx.split("]")[0])]


@pytest.mark.parametrize("side, change", [("lower", "flip"), ("upper", "flip"), ("lower", "missing"), ("lower", "intercept"),
                                          ("upper", "intercept")])
def test_a_tampered_plane_in_the_tree_is_rejected(pairs_tree, tmp_path, side, change):
    """r's sign flipped, the z_b key left out (r = 0), the intercept moved 2^-20 past the engine's (which is within
    2^-48 relative of tight at a vertex of P): on a pair where sampling shows the changed plane misses D, REJECTED. (The upper planes'
    r = 0 versions all held on this tree: the missing upper key is caught in test_the_checker_agrees_with_the_grid...)"""
    spec, cert, _ = pairs_tree
    upper = side == "upper"
    for where, step, ends in _records(spec, cert, tmp_path):
        for p, e in enumerate(ends):
            s, t, r = (Fraction(step[f"{side}_{k}"][p]) for k in ("slope", "intercept", "slope_b"))
            if r == 0:
                continue
            new_r = {"flip": -r, "missing": Fraction(0)}.get(change, r)
            new_t = t + (-1 if upper else 1) * Fraction(1, 2 ** 20) if change == "intercept" else t
            if change == "intercept" or _violated(e, s, new_r, new_t, upper):  # (the engine's intercept is tight at a vertex)
                break
        else:
            continue
        break
    else:
        pytest.fail("no pair whose changed plane misses D")

    def tamper(bad):
        st = _at(bad, where)
        if change == "missing":
            del st[f"{side}_slope_b"]
        else:
            st[f"{side}_slope_b"][p], st[f"{side}_intercept"][p] = rational_str(new_r), rational_str(new_t)

    assert "plane is not below/above" in _tamper(spec, cert, tmp_path, tamper)


def test_a_z_b_slope_list_too_short_in_the_tree_is_rejected(pairs_tree, tmp_path):
    spec, cert, _ = pairs_tree

    def short(bad):
        _plane_steps(bad)[0]["upper_slope_b"].pop()

    assert "upper_slope_b must be a list" in _tamper(spec, cert, tmp_path, short)
