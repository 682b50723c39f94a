"""Difference steps that inherit pairs (issue 19, fifteenth session): with `"inherit": true` a difference step keeps the
verified difference pairs and lines of its layer (an enclosing region's, valid on this one) and checks and replaces only
the pairs it lists. The checker's merge against a single step listing the merged pairs (the same exact lines, the same
back-substitution), `drop` (inherited pairs forgotten), its refusals (no verified pairs to inherit, a listed pair sharing a
neuron with another verified pair, a value other than a JSON boolean, `drop` naming a pair not verified or without
inherit), and an engine tree of the VeryDiff MNIST pair whose leaves inherit the root's
pairs: accepted, fewer pairs listed than the root holds, and five tampered copies REJECTED; `certify export-smt` reads
it (the kept pairs' delta bounds from the root's step) and cvc5 confirms a leaf's obligations."""

from __future__ import annotations

import copy
import json
import random
from fractions import Fraction

import pytest

from certify.checker import check, exact
from certify.checker.check import Verdict, check_certificate
from certify.checker.errors import Rejected
from certify.bounds.bab import branch_and_bound
from certify.checker.numbers import rational_str
from certify.engine import attained_lower, prepare, write_and_check
from tests.test_check_rows import _relu_lines
from tests.test_check_fast_paths import _problem
from tests.conftest import ROOT, SPECS
from tests.test_output_rows import _leaves

PAIRS = [[0, 3], [1, 4], [2, 5]]  # a net [3, 6, 4, 2] whose layer 1 pairs neuron i with neuron i + 3


def _layer1(rng):
    """A random net [3, 6, 4, 2] with verified bounds and lines of layer 1."""
    layers, box, state = _problem(rng, [3, 6, 4, 2])
    lo, up = exact.interval_dense(layers[0], *box)
    state.bounds[1], state.relax[1] = (lo, up), _relu_lines(lo, up)
    return state


def _diff_step(state, pairs, inherit=..., shift=Fraction(0)):
    """A difference step of layer 1 for `pairs`: delta bounds from the verified intervals, lines 0*delta + min(lower, 0)
    below and 0*delta + max(upper, 0) + shift above (valid: the envelopes lie between min(delta, 0) and max(delta, 0))."""
    lo, up = state.bounds[1]
    dl, du = [lo[a] - up[b] for a, b in pairs], [up[a] - lo[b] for a, b in pairs]
    step = {"kind": "difference", "layer": 1, "pairs": [list(p) for p in pairs], "lower": list(map(rational_str, dl)),
            "upper": list(map(rational_str, du)), "lower_slope": ["0"] * len(pairs),
            "lower_intercept": [rational_str(min(v, Fraction(0))) for v in dl], "upper_slope": ["0"] * len(pairs),
            "upper_intercept": [rational_str(max(v, Fraction(0)) + shift) for v in du]}
    return step if inherit is ... else {**step, "inherit": inherit}


def _exact_lines(state):
    """Layer 1's verified difference pairs and their lines as Fractions (pair -> four values)."""
    pairs, vecs = state.diff[1]
    return {p: tuple(Fraction(v[t], d) for v, d in vecs) for t, p in enumerate(pairs)}


def test_inherit_keeps_the_unlisted_pairs_and_replaces_the_listed():
    rng = random.Random(1501)
    for _ in range(40):
        state = _layer1(rng)
        check.check_difference(_diff_step(state, PAIRS[:2], shift=Fraction(1, 3)), state, "parent")
        parent = _exact_lines(state)
        check.check_difference(_diff_step(state, PAIRS[1:], inherit=True), state, "child")
        merged = _exact_lines(state)
        assert list(merged) == [(0, 3), (1, 4), (2, 5)]  # the kept pair first, then the listed ones
        assert merged[(0, 3)] == parent[(0, 3)]  # kept exactly
        assert merged[(1, 4)][3] == parent[(1, 4)][3] - Fraction(1, 3)  # replaced by the listed (tighter) line
        # the same verified state as one plain step listing the merged pairs with the same lines
        plain = copy.copy(state)
        plain.diff = {}
        one = _diff_step(state, list(map(list, merged)))
        for key, col in (("lower_slope", 0), ("lower_intercept", 1), ("upper_slope", 2), ("upper_intercept", 3)):
            one[key] = [rational_str(merged[p][col]) for p in merged]
        check.check_difference(one, plain, "plain")
        assert _exact_lines(plain) == merged
        state.bounds[2] = check._bounds_of(None, state, 2)
        assert state.bounds[2] == check._bounds_of(None, plain, 2)  # and the same back-substitution through them


def test_inherit_false_replaces_every_pair():
    state = _layer1(random.Random(1502))
    check.check_difference(_diff_step(state, PAIRS[:2]), state, "parent")
    check.check_difference(_diff_step(state, PAIRS[2:], inherit=False), state, "child")
    assert list(_exact_lines(state)) == [(2, 5)]


@pytest.mark.parametrize("value", [1, "true", None, [True]])
def test_inherit_must_be_a_boolean(value):
    state = _layer1(random.Random(1503))
    check.check_difference(_diff_step(state, PAIRS[:2]), state, "parent")
    with pytest.raises(Rejected, match="inherit must be"):
        check.check_difference(_diff_step(state, PAIRS[2:], inherit=value), state, "child")


def test_inherit_without_verified_pairs_is_rejected():
    state = _layer1(random.Random(1504))
    with pytest.raises(Rejected, match="inherit must be"):
        check.check_difference(_diff_step(state, PAIRS, inherit=True), state, "root")


@pytest.mark.parametrize("listed", [[[3, 0]], [[0, 4]], [[1, 0]]])
def test_a_listed_pair_sharing_a_neuron_with_another_inherited_pair_is_rejected(listed):
    state = _layer1(random.Random(1505))
    check.check_difference(_diff_step(state, PAIRS[:2]), state, "parent")
    with pytest.raises(Rejected, match="shares a neuron"):
        check.check_difference(_diff_step(state, listed, inherit=True), state, "child")


def test_drop_forgets_inherited_pairs():
    state = _layer1(random.Random(1507))
    check.check_difference(_diff_step(state, PAIRS), state, "parent")
    parent = _exact_lines(state)
    check.check_difference({**_diff_step(state, [[1, 4]], inherit=True), "drop": [[0, 3]]}, state, "child")
    merged = _exact_lines(state)
    assert list(merged) == [(2, 5), (1, 4)] and merged[(2, 5)] == parent[(2, 5)]
    plain = copy.copy(state)  # the same back-substitution as one plain step listing what is left
    plain.diff = {}
    one = _diff_step(state, [[2, 5], [1, 4]])
    for key, col in (("lower_slope", 0), ("lower_intercept", 1), ("upper_slope", 2), ("upper_intercept", 3)):
        one[key] = [rational_str(merged[p][col]) for p in merged]
    check.check_difference(one, plain, "plain")
    assert check._bounds_of(None, state, 2) == check._bounds_of(None, plain, 2)


@pytest.mark.parametrize("drop", [[[0, 4]], [[3, 0]], [[2, 5]], [[True, 3]], [[0, 3.0]], "[[0, 3]]", [[0, 3, 1]], [(0, 3)]])
def test_drop_must_name_verified_pairs(drop):
    state = _layer1(random.Random(1508))
    check.check_difference(_diff_step(state, PAIRS[:2]), state, "parent")  # (0, 3) and (1, 4) verified
    with pytest.raises(Rejected, match="drop must list verified pairs"):
        check.check_difference({**_diff_step(state, [], inherit=True), "drop": drop}, state, "child")


@pytest.mark.parametrize("inherit", [False, ...])
def test_drop_needs_inherit(inherit):
    state = _layer1(random.Random(1509))
    check.check_difference(_diff_step(state, PAIRS[:2]), state, "parent")
    with pytest.raises(Rejected, match="inherit must be"):
        check.check_difference({**_diff_step(state, [], inherit=inherit), "drop": [[0, 3]]}, state, "child")


def test_an_inherited_step_with_no_pairs_keeps_every_pair():
    state = _layer1(random.Random(1506))
    check.check_difference(_diff_step(state, PAIRS), state, "parent")
    before = _exact_lines(state)
    check.check_difference(_diff_step(state, [], inherit=True), state, "child")
    assert _exact_lines(state) == before


# The engine: the VeryDiff MNIST pair's tree, whose leaves' difference steps inherit the root's pairs

@pytest.fixture(scope="module")
def pairs_tree(tmp_path_factory):
    """The VeryDiff MNIST pair at tolerance 1/100 (out of reach) by input splits with CROWN leaves, 16 leaves."""
    d = tmp_path_factory.mktemp("pairs")
    spec = d / "spec.yaml"
    spec.write_text((SPECS / "verydiff_mnist.yaml").read_text().replace("../tests/", str(ROOT / "tests") + "/")
                    .replace("tolerance: 4", 'tolerance: "1/100"'))
    p = prepare(spec, d / "c.cert.json")
    witness, lower = attained_lower(p)
    r = branch_and_bound(p.net, p.joint, p.box, "alpha", p.spec.property.tolerance, max_leaves=16, time_budget=120)
    assert r.leaf_method == "crown"
    path = d / "t.cert.json"
    result = write_and_check(p, "bab", r.bound, {"tree": r.tree}, witness, lower, {}, path, jobs=1)
    assert result.verdict is not Verdict.REJECTED and result.bound == r.bound, result.reason
    return spec, json.loads(path.read_text()), len(p.net.weights)


def _inherit_steps(cert):
    return [s for leaf in _leaves(cert["tree"]) if leaf is not cert["tree"] for s in leaf["steps"]
            if s["kind"] == "difference"]


def test_leaves_inherit_the_roots_pairs_and_list_fewer(pairs_tree):
    spec, cert, n = pairs_tree
    root = {s["layer"]: [tuple(p) for p in s["pairs"]] for s in cert["tree"]["steps"] if s["kind"] == "difference"}
    steps = _inherit_steps(cert)
    assert steps and all(s.get("inherit") is True for s in steps)
    assert {s["layer"] for s in steps} <= set(root)
    listed = sum(len(s["pairs"]) for s in steps)
    assert listed < sum(len(root[s["layer"]]) for s in steps)  # fewer pairs to derive again than the root holds
    dropped = [tuple(p) for s in steps for p in s.get("drop", [])]
    assert dropped and all(p in root[s["layer"]] for s in steps for p in map(tuple, s.get("drop", [])))


def _tamper(spec, cert, tmp_path, change) -> str:
    bad = copy.deepcopy(cert)
    change(bad)
    out = tmp_path / "bad.cert.json"
    out.write_text(json.dumps(bad))
    result = check_certificate(spec, out, jobs=1)
    assert result.verdict is Verdict.REJECTED
    return result.reason


def _listed_step(cert):
    return next(s for s in _inherit_steps(cert) if s["pairs"])


def test_a_forged_line_in_an_inherited_step_is_rejected(pairs_tree, tmp_path):
    spec, cert, _ = pairs_tree

    def forge(bad):
        step = _listed_step(bad)
        step["lower_intercept"][0] = rational_str(Fraction(step["lower_intercept"][0]) + 1)

    assert "not below/above" in _tamper(spec, cert, tmp_path, forge)


def test_a_listed_pair_swapped_against_an_inherited_one_is_rejected(pairs_tree, tmp_path):
    spec, cert, _ = pairs_tree

    def swap(bad):  # an inherited pair [a, b] listed as [b, a], with lines valid for it (loose): the pairs would overlap
        def unlisted(step):  # the root's pairs of the step's layer that the step neither lists nor drops: it inherits them
            root = next(s for s in bad["tree"]["steps"] if s["kind"] == "difference" and s["layer"] == step["layer"])
            return [p for p in root["pairs"] if p not in step["pairs"] and p not in step.get("drop", [])]
        step = next(s for s in _inherit_steps(bad) if unlisted(s))  # (with planes a leaf relists most pairs, not all)
        a, b = unlisted(step)[0]
        big = "1000"
        for key, value in (("pairs", [b, a]), ("lower", "-" + big), ("upper", big), ("lower_slope", "0"),
                           ("lower_intercept", "-" + big), ("upper_slope", "0"), ("upper_intercept", big),
                           ("lower_slope_b", "0"), ("upper_slope_b", "0")):
            if key in step:  # (a step with planes carries z_b slopes for every listed pair)
                step[key].append(value)

    assert "shares a neuron" in _tamper(spec, cert, tmp_path, swap)


def test_inherit_at_the_root_is_rejected(pairs_tree, tmp_path):
    spec, cert, _ = pairs_tree

    def root_inherits(bad):
        next(s for s in bad["tree"]["steps"] if s["kind"] == "difference")["inherit"] = True

    assert "inherit must be" in _tamper(spec, cert, tmp_path, root_inherits)


def test_an_inherited_step_claiming_too_tight_a_delta_is_rejected(pairs_tree, tmp_path):
    spec, cert, _ = pairs_tree

    def tight(bad):
        step = _listed_step(bad)
        step["upper"][0] = step["lower"][0]

    assert "not implied" in _tamper(spec, cert, tmp_path, tight)


def test_dropping_inherit_from_a_leaf_loses_the_roots_pairs(pairs_tree, tmp_path):
    """Without `inherit` (and `drop`) a leaf's step replaces the root's pairs; the leaves' claims were built with them kept, so some
    claim (a bound, or a later layer's delta range) is then more than the checker derives: the key is load-bearing (and
    the engine's float model holds the merged pairs, as the checker does)."""
    spec, cert, _ = pairs_tree

    def drop(bad):
        for step in _inherit_steps(bad):
            del step["inherit"]
            step.pop("drop", None)

    reason = _tamper(spec, cert, tmp_path, drop)
    assert any(why in reason for why in ("exceeds the derived", "is below the derived", "are not implied"))


def test_export_smt_reads_inherited_pairs(pairs_tree, tmp_path):
    """`certify export-smt` on the tree: the kept pairs' delta bounds come from the root's step, obligations are derived
    for the listed pairs only; cvc5 confirms one leaf's difference and link obligations."""
    from certify.cli import main
    from tests.test_smt_export import _subset, blocks, check_syntax, confirmed

    spec, cert, _ = pairs_tree
    path, out = tmp_path / "t.cert.json", tmp_path / "t.smt2"
    path.write_text(json.dumps(cert))
    assert main(["export-smt", str(spec), str(path), "-o", str(out)]) == 0
    check_syntax(out)
    leaf = next(w for w, leaf in _paths(cert["tree"], "tree") if any(s["kind"] == "difference" and s["pairs"] for s in leaf.get("steps", []))
                and leaf is not cert["tree"])
    mine = [t for t in blocks(out) if f"{leaf}.steps[" in t]
    assert any("[difference]" in t for t in mine)  # the leaf's listed pairs' own obligations
    pytest.importorskip("cvc5")
    confirmed(_subset(out, lambda t, b: t in mine, tmp_path / "leaf.smt2"), len(mine))


def _paths(node, where):
    yield where, node
    for i, child in enumerate(node.get("children", [])):
        yield from _paths(child, f"{where}.{i}")
