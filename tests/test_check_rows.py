"""One-sided claims (issue 19): a linear step with `neurons` may write null for a side it does not claim; that side keeps
the layer's verified bound and is not derived again. The checker against the plain rule: on random nets, claims at,
just inside and just outside the exact bounds, with random null sides, are rejected exactly when a claimed side is
outside, and the layer's bounds afterwards are the verified ones intersected with the claimed sides only. Nulls are
refused where a step has no `neurons`, in interval and difference steps, and beside multipliers (alpha slopes beside
nulls: tests/test_alpha_leaves.py). The engine writes
them only for a neuron its own bounds make stable (the side that does not decide its phase), and for an output row
whose other side already attains the row's bound; its trees with them are accepted."""

from __future__ import annotations

import copy
import json
import random
from fractions import Fraction

import pytest

from certify.checker import check, exact
from certify.checker.check import Verdict, check_certificate
from certify.checker.errors import Rejected
from certify.checker.numbers import rational_str
from tests.test_check_fast_paths import _near, _problem
from tests.test_output_rows import stopped_tree  # noqa: F401 (a fixture: the VeryDiff MNIST pair's 12-leaf tree)


def _relu_lines(lo, up):
    """Exact ReLU lines on [lo, up] (lower slope 0 or 1, chord above) as the checker keeps them (four IntVecs)."""
    out = [[], [], [], []]
    for l, u in zip(lo, up):
        if u <= 0:
            v = (0, 0, 0, 0)
        elif l >= 0:
            v = (1, 0, 1, 0)
        else:
            s = u / (u - l)
            v = (1 if u > -l else 0, 0, s, -s * l)
        for line, x in zip(out, v):
            line.append(Fraction(x))
    return tuple(exact.qvec(line) for line in out)


def _step(layer, neurons, lo, up):
    return {"kind": "linear", "layer": layer, "neurons": neurons,
            "lower": [None if v is None else rational_str(v) for v in lo], "upper": [None if v is None else rational_str(v) for v in up]}


@pytest.mark.parametrize("layer", [1, 2])
def test_one_sided_claims_follow_the_plain_rule(layer):
    rng = random.Random(1990 + layer)
    outcomes = set()
    for _ in range(250):
        layers, box, state = _problem(rng, [3, 5, 4, 2])
        lo1, up1 = exact.interval_dense(layers[0], *box)
        state.bounds[1] = (lo1, up1)
        if layer == 2:
            state.relax[1] = _relu_lines(lo1, up1)
            state.bounds[2] = check._bounds_of(None, state, 2)
        width = len(state.bounds[layer][0])
        derived = check._bounds_of([{i: 1} for i in range(width)], state, layer)
        verified = tuple(list(v) for v in state.bounds[layer])
        ns = sorted(rng.sample(range(width), rng.randrange(1, width + 1)))
        claim_lo = [None if rng.random() < 0.4 else _near(rng, derived[0][i]) for i in ns]
        claim_up = [None if rng.random() < 0.4 else _near(rng, derived[1][i]) for i in ns]
        if all(v is None for v in claim_lo + claim_up):
            claim_lo[0] = derived[0][ns[0]]
        calls = []
        plain = exact.backsubstitute
        exact_calls = lambda lam, *a, **k: calls.append(lam) or plain(lam, *a, **k)  # noqa: E731
        bad = any(c is not None and c > derived[0][i] for i, c in zip(ns, claim_lo)) or \
            any(c is not None and c < derived[1][i] for i, c in zip(ns, claim_up))
        check.backsubstitute = exact_calls
        try:
            check.check_linear(_step(layer, ns, claim_lo, claim_up), state, "test")
        except Rejected:
            assert bad
            outcomes.add("rejected")
            continue
        finally:
            check.backsubstitute = plain
        assert not bad
        outcomes.add("accepted")
        lo, up = verified
        for i, cl, cu in zip(ns, claim_lo, claim_up):
            lo[i] = lo[i] if cl is None else max(lo[i], cl)
            up[i] = up[i] if cu is None else min(up[i], cu)
        assert state.bounds[layer] == (lo, up)
        # rows derived: one per claimed side, nothing for a null side
        assert sum(len(lam) for lam in calls) == sum(c is not None for c in claim_lo + claim_up)
    assert outcomes == {"accepted", "rejected"}


def test_nulls_are_refused_where_no_bound_is_kept():
    rng = random.Random(1993)
    layers, box, state = _problem(rng, [3, 5, 2])
    lo, up = exact.interval_dense(layers[0], *box)
    full = {"kind": "interval", "layer": 1, "lower": list(map(rational_str, lo)), "upper": list(map(rational_str, up))}
    for key in ("lower", "upper"):  # an interval step: every neuron, both sides
        bad = copy.deepcopy(full)
        bad[key][2] = None
        with pytest.raises(Rejected):
            check.check_interval(bad, state, "test")
    no_neurons = {**full, "kind": "linear"}  # a first linear step (the layer has no verified bounds yet) without neurons
    no_neurons["upper"] = [None] + no_neurons["upper"][1:]
    with pytest.raises(Rejected):
        check.check_linear(no_neurons, state, "test")
    check.check_interval(full, state, "test")
    with pytest.raises(Rejected):  # with the layer verified, still not without `neurons`
        check.check_linear(no_neurons, state, "test")
    step = _step(1, [0, 1], [None, lo[1]], [up[0], None])
    check.check_linear(copy.deepcopy(step), state, "test")  # the same step is fine on its own
    for broken in ({**step, "beta": []}, {**step, "lower": [None]}, {**step, "upper": [None, None, None]},
                   {**step, "lower": [None, 3]}, {**step, "upper": "null"}):
        with pytest.raises(Rejected):
            check.check_linear(copy.deepcopy(broken), state, "test")


def test_difference_steps_take_no_nulls():
    rng = random.Random(1994)
    layers, box, state = _problem(rng, [3, 4, 2])
    state.bounds[1] = exact.interval_dense(layers[0], *box)
    d_lo, d_up = check._bounds_of([{0: 1, 1: -1}], state, 1)
    step = {"kind": "difference", "layer": 1, "pairs": [[0, 1]], "lower": [None], "upper": [rational_str(d_up[0])],
            "lower_slope": ["0"], "lower_intercept": ["-1000"], "upper_slope": ["0"], "upper_intercept": ["1000"]}
    with pytest.raises(Rejected):
        check.check_difference(step, state, "test")


def _leaves(node):
    return [node] if "children" not in node else [leaf for c in node["children"] for leaf in _leaves(c)]


def test_engine_trees_with_one_sided_rows_are_accepted(stopped_tree):
    """The MNIST pair's tree (tests/test_output_rows.py): nulls in hidden-layer and output-layer steps, only on sides
    that do not decide a stable neuron's phase, and the checker verifies the tree's bound."""
    spec, path, cert, result, n = stopped_tree
    assert result.verdict is Verdict.VIOLATED and result.bound is not None, result.reason  # verified; the witness > 1/100
    nulls = {"hidden": 0, "output": 0}
    for leaf in _leaves(cert["tree"]):
        assert not any(s["kind"] == "interval" for s in leaf["steps"])  # layer 1 by a linear step on its listed neurons
        for s in leaf["steps"]:
            if s["kind"] != "linear":
                continue
            assert "neurons" in s
            for lo, up in zip(s["lower"], s["upper"]):
                assert lo is not None or up is not None
                if s["layer"] < n and lo is None:  # a hidden neuron: only the side that makes it stable
                    assert Fraction(up) <= 0
                if s["layer"] < n and up is None:
                    assert Fraction(lo) >= 0
                nulls["hidden" if s["layer"] < n else "output"] += (lo is None) + (up is None)
    assert nulls["hidden"] > 0 and nulls["output"] > 0, nulls


def _tamper(spec, cert, tmp_path, change) -> str:
    bad = copy.deepcopy(cert)
    leaf = max(_leaves(bad["tree"]), key=lambda leaf: sum(None in s.get("lower", ()) for s in leaf["steps"]))
    step = next(s for s in leaf["steps"] if s["kind"] == "linear" and s["layer"] == 2 and None in s["lower"])
    change(step, step["lower"].index(None))  # an inactive neuron: its upper claimed (<= 0), its lower null
    out = tmp_path / "bad.cert.json"
    out.write_text(json.dumps(bad))
    result = check_certificate(spec, out, jobs=1)
    assert result.verdict is Verdict.REJECTED
    return result.reason


def test_a_null_side_filled_too_tight_is_rejected(stopped_tree, tmp_path):
    spec, _, cert, _, _ = stopped_tree

    def fill(step, t):  # the null lower side claimed at the neuron's upper bound: above what it derives
        step["lower"][t] = step["upper"][t]

    assert "claimed lower bound" in _tamper(spec, cert, tmp_path, fill)


def test_a_null_on_the_deciding_side_is_rejected(stopped_tree, tmp_path):
    spec, _, cert, _, _ = stopped_tree

    def drop(step, t):  # the upper side (what makes the neuron inactive) null too: it keeps the root's unstable interval,
        step["upper"][t] = None  # on which its lines (0, 0) are not above relu

    assert "not below/above relu" in _tamper(spec, cert, tmp_path, drop)


def test_backsubstitute_plans_are_reused_exactly():
    """exact._layer_plan keeps a layer's plan (kept columns, intercept pickers, pair lines) per region: calls on the same
    lines with row sets of every size (so that columns are left out in some calls and not in others), in random order,
    with and without alpha slopes and multipliers (never cached), each equal the pre-issue-19 code on fresh matrices."""
    from certify.checker.exact import backsubstitute, weight_mats
    from tests.test_exact_columns import _case, _old_backsubstitute

    rng = random.Random(1995)
    hits = 0
    for _ in range(120):
        lam, layers, relax, box, alpha, beta, diff = _case(rng)
        width = len(layers[-1][1][0])
        mats = weight_mats(layers)
        for _ in range(4):
            rows = [{i: rng.choice([1, -1])} for i in rng.sample(range(width), rng.randrange(1, width + 1))]
            plain = rng.random() < 0.6  # no alpha, no beta: the plan is cached
            a, b = ({}, {}) if plain else (alpha, {j: (m[:len(rows)] + [[0] * len(m[0])] * (len(rows) - len(m)), d)
                                                  for j, (m, d) in beta.items()})
            if not plain:
                a = {j: (ns, ([r[:] for r in (m * len(rows))[:len(rows)]], d)) for j, (ns, (m, d)) in alpha.items()}
            before = len(exact._PLANS)
            got = backsubstitute(rows, layers, relax, box, a, b, diff, mats)
            hits += plain and len(exact._PLANS) == before
            assert got == _old_backsubstitute(rows, layers, relax, box, a, b, diff, weight_mats(layers))
    assert hits > 50, hits


def test_sparse_relu_lines_merge_exactly():
    """A relu_relaxation step with `neurons` replaces those neurons' lines and keeps the others, the same rationals
    (the merged lines on a common denominator: the inherited one's and the listed lines')."""
    rng = random.Random(1996)
    for _ in range(200):
        layers, box, state = _problem(rng, [3, 6, 2])
        lo, up = exact.interval_dense(layers[0], *box)
        state.bounds[1] = (lo, up)
        old = _relu_lines(lo, up)
        state.relax[1] = old
        ns = sorted(rng.sample(range(6), rng.randrange(0, 7)))
        # looser valid lines for the listed neurons: lower 0, upper the chord raised by a random dyadic or third
        new = [[], [], [], []]
        for i in ns:
            l, u = lo[i], up[i]
            s = Fraction(1) if l >= 0 else Fraction(0) if u <= 0 else u / (u - l)
            t = max(Fraction(0), -s * l) + rng.choice([Fraction(1, 8), Fraction(1, 3), Fraction(0)])
            for line, v in zip(new, (0, 0, s, t)):
                line.append(Fraction(v))
        step = {"kind": "relu_relaxation", "layer": 1, "neurons": ns,
                **{key: list(map(rational_str, v)) for key, v in zip(("lower_slope", "lower_intercept", "upper_slope", "upper_intercept"), new)}}
        check.check_relu_relaxation(step, state, "test")
        for t, ((nums, den), (onums, oden)) in enumerate(zip(state.relax[1], old)):
            want = [Fraction(x, oden) for x in onums]
            for i, v in zip(ns, new[t]):
                want[i] = v
            assert [Fraction(x, den) for x in nums] == want
