"""The dense checker's faster paths compute what the slower code computed (issue 19, "checking stays
cheaper than bounding"): split multipliers read as integer rows (`_beta`), "0"/"1" read from a
table, the goal with and without export-smt's recording, and the sizes that order a tree's parts
for worker processes (which never changes what is checked)."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from certify.checker import check
from certify.checker.errors import Rejected
from certify.checker.exact import qmat
from certify.checker.numbers import parse_ratio


def _old_beta(step, state, k, width, where):
    """`_beta` before issue 19's change (kept verbatim as the reference): Fractions, one dense matrix per layer."""
    raw = step.get("beta", [])
    mats: dict = {}
    for t in raw:
        j, i = t["layer"], t["neuron"]
        values = check._vector(t, "values", 2 * width, where)
        assert all(v >= 0 for v in values)
        sign = 1 if state.assume[(j, i)] == "inactive" else -1
        n_j = len(state.joint[j - 1][1][0])
        m = mats.setdefault(j, [[Fraction(0)] * n_j for _ in range(2 * width)])
        for r, v in enumerate(values):
            m[r][i] += sign * v
    low, up = {}, {}
    for j, m in mats.items():
        nums, den = qmat(m)
        low[j], up[j] = (nums[:width], den), (nums[width:], den)
    return low, up


def _as_fractions(side: dict) -> dict:
    return {j: [[Fraction(x, den) for x in row] for row in rows] for j, (rows, den) in side.items()}


def _state(widths: list[int], assume: dict) -> check._State:
    joint = [(([[0] * a for _ in range(b)], 1), ([0] * b, 1)) for a, b in zip(widths[:-1], widths[1:])]
    return check._State(joint, ([], []), {}, {}, assume)


def _value(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.5:
        return "0"
    if kind < 0.6:
        return "1"
    p, e = rng.randrange(1, 2**53), rng.randrange(40, 70)
    return f"{p}/{2**e}" if kind < 0.9 else f"{2 * p}/{2 * 3**rng.randrange(1, 5)}"  # not in lowest terms


def test_beta_rows_equal_the_old_fraction_matrices():
    rng = random.Random(19)
    for _ in range(60):
        widths = [3, rng.randrange(2, 6), rng.randrange(2, 6), 2]
        splits = [(j, i) for j in (1, 2) for i in range(widths[j]) if rng.random() < 0.5]
        assume = {s: rng.choice(["active", "inactive"]) for s in splits}
        width = widths[3]
        terms = [{"layer": j, "neuron": i, "values": [_value(rng) for _ in range(2 * width)]}
                 for j, i in splits + splits[:1]]  # one split twice: the multipliers add
        step, state = {"beta": terms}, _state(widths, assume)
        new, old = check._beta(step, state, 3, width, "t"), _old_beta(step, state, 3, width, "t")
        assert [_as_fractions(side) for side in new] == [_as_fractions(side) for side in old]


@pytest.mark.parametrize("values, message", [
    (["-1/2", "0"], "must be >= 0"),
    ([["0"], "0"], "not a 'p/q' rational"),  # unhashable: rejected, not a TypeError
    ([{"a": 1}, "0"], "not a 'p/q' rational"),
    ([0, "0"], "not a 'p/q' rational"),
    (["1/0", "0"], "not a 'p/q' rational"),
    (["0"], "list of 2 rationals"),
])
def test_bad_multipliers_reject(values, message):
    state = _state([2, 2, 1], {(1, 0): "active"})
    with pytest.raises(Rejected, match=message):
        check._beta({"beta": [{"layer": 1, "neuron": 0, "values": values}]}, state, 2, 1, "t")


def test_common_values_read_as_the_parser_reads_them():
    raw = ["0", "1", "1/1", "0/5", "-1", "3/4"]
    assert check._ratios(raw, len(raw), "t", "k") == [parse_ratio(v) for v in raw]


def test_goal_by_comparison_agrees_with_z3(monkeypatch):
    """The goal gives the same answer with and without RECORD (export-smt) on boxes near the limit."""
    rng = random.Random(7)
    for _ in range(150):
        n = rng.randrange(1, 4)
        lo = [Fraction(rng.randrange(-9, 5), rng.randrange(1, 4)) for _ in range(n)]
        up = [v + Fraction(rng.randrange(-1, 6), 2) for v in lo]  # sometimes empty (lower > upper)
        bound = Fraction(rng.randrange(0, 8), 2)
        margins = [Fraction(rng.randrange(0, 3), 4) for _ in range(n)] if rng.random() < 0.3 else None
        state = _state([1, n], {})
        state.bounds[1] = (lo, up)
        monkeypatch.setattr(check, "RECORD", None)
        fast = check.goal_holds(bound, state, "t", margins)
        monkeypatch.setattr(check, "RECORD", [])
        assert check.goal_holds(bound, state, "t", margins) == fast, (lo, up, bound, margins)


def test_subtree_sizes():
    leaf = {"steps": []}
    tree = {"split": "input", "children": [{"split": "input", "children": [leaf, {"steps": []}]}, {"steps": []}]}
    size = check._subtree_sizes(tree, 100)
    assert size[id(tree)] == 5 and size[id(tree["children"][0])] == 3 and size[id(leaf)] == 1
    bad = {"children": [1, "x"]}  # malformed nodes are counted (the check itself rejects them)
    assert check._subtree_sizes(bad, 100)[id(bad)] == 3
    assert check._subtree_sizes(tree, 2)[id(tree)] <= 2  # a limit stops the count


def test_engine_lines_are_short_and_exactly_valid():
    """The engine's relu and difference lines (certify.bounds.driver) have slopes on SLOPE_GRID and intercepts on
    GRID (short integers for the checker), and each line is still exactly valid on its interval: at both ends and at 0,
    as the checker tests it."""
    import numpy as np

    from certify.bounds import driver

    rng = np.random.default_rng(19)
    lo = rng.normal(size=400) * 10.0 ** rng.integers(-6, 3, size=400)
    up = lo + np.abs(rng.normal(size=400)) * 10.0 ** rng.integers(-6, 3, size=400)
    for r in (driver.exact_relaxation(list(lo), list(up)), driver.exact_relaxation_fast(lo, up)):
        for l, u, a, b, c, d in zip(lo, up, r.lower_slope, r.lower_intercept, r.upper_slope, r.upper_intercept):
            assert Fraction(float(c)).denominator <= 2 ** 20 and Fraction(float(d)).denominator <= 2 ** 40
            for z in (Fraction(l), Fraction(u), *((Fraction(0),) if l < 0 < u else ())):
                relu = max(z, Fraction(0))
                assert Fraction(float(a)) * z + Fraction(float(b)) <= relu <= Fraction(float(c)) * z + Fraction(float(d))
    # difference lines of relu(z_a) - relu(z_b) on [dlo, dup], with both neurons' intervals
    a, b = np.arange(0, 200), np.arange(200, 400)
    dlo = np.maximum(lo[a] - up[b], -np.abs(rng.normal(size=200)))
    dup = np.minimum(up[a] - lo[b], np.abs(rng.normal(size=200)))
    keep = dlo <= dup
    dlo, dup, a, b = dlo[keep], dup[keep], a[keep], b[keep]
    for lines in (driver.difference_lines(list(dlo), list(dup), lo, up, a, b), driver.difference_lines_fast(dlo, dup, lo, up, a, b)):
        for x0, x1, i, j, sl, tl, su, tu in zip(dlo, dup, a, b, *(lines.lower_slope, lines.lower_intercept, lines.upper_slope,
                                                                  lines.upper_intercept)):
            assert Fraction(float(sl)).denominator <= 2 ** 20 and Fraction(float(su)).denominator <= 2 ** 20
            assert Fraction(float(tl)).denominator <= 2 ** 40 and Fraction(float(tu)).denominator <= 2 ** 40
            for x in (Fraction(x0), Fraction(x1)):  # the checker's test (check_difference)
                low = x if lo[j] >= 0 else Fraction(0) if up[j] <= 0 else min(x, Fraction(0))
                high = x if lo[i] >= 0 else Fraction(0) if up[i] <= 0 else max(x, Fraction(0))
                assert Fraction(float(sl)) * x + Fraction(float(tl)) <= low and Fraction(float(su)) * x + Fraction(float(tu)) >= high
