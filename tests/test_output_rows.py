"""A branch-and-bound tree stopped by its budget claims more than its target: its leaves' output steps list only the
output rows whose root bound exceeds that claim (bab._rows_only); the checker keeps the root's verified bounds for the
others. The checker verifies the claimed bound, and dropping one more row (one the claim needs) is rejected."""

from __future__ import annotations

import copy
import json
from fractions import Fraction

import pytest

from certify.bounds.bab import branch_and_bound
from certify.checker.check import Verdict, check_certificate
from certify.engine import attained_lower, prepare, write_and_check

from .conftest import ROOT, SPECS


@pytest.fixture(scope="module")
def stopped_tree(tmp_path_factory):
    """The VeryDiff MNIST pair at tolerance 1/100 (out of reach) by input splits with CROWN leaves, 12 leaves: every
    output row's root bound is above the target, so the leaves bound all of them, and the claim is far above it."""
    d = tmp_path_factory.mktemp("rows")
    spec = d / "spec.yaml"
    spec.write_text((SPECS / "verydiff_mnist.yaml").read_text().replace("../tests/", str(ROOT / "tests") + "/")
                    .replace("tolerance: 4", 'tolerance: "1/100"'))
    p = prepare(spec, d / "c.cert.json")
    witness, lower = attained_lower(p)
    r = branch_and_bound(p.net, p.joint, p.box, "alpha", p.spec.property.tolerance, max_leaves=12, time_budget=120)
    assert r.leaf_method == "crown" and r.bound > Fraction(1, 100)
    path = d / "t.cert.json"
    result = write_and_check(p, "bab", r.bound, {"tree": r.tree}, witness, lower, {}, path, jobs=1)
    assert result.bound == r.bound
    return spec, path, json.loads(path.read_text()), result, len(p.net.weights)


def _leaves(node):
    return [node] if "children" not in node else [leaf for c in node["children"] for leaf in _leaves(c)]


def _root_output_bounds(cert, n):
    """The root's verified output bounds (its output-layer steps, intersected)."""
    lo = up = None
    for s in cert["tree"]["steps"]:
        if s["layer"] == n and "neurons" not in s:
            a, b = [Fraction(v) for v in s["lower"]], [Fraction(v) for v in s["upper"]]
            lo, up = (a, b) if lo is None else ([max(x, y) for x, y in zip(lo, a)], [min(x, y) for x, y in zip(up, b)])
    return lo, up


def test_leaves_list_only_the_rows_the_claim_needs(stopped_tree):
    spec, path, cert, result, n = stopped_tree
    assert result.verdict is Verdict.VIOLATED, result.reason  # the bound verified; the witness is above 1/100
    lo, up = _root_output_bounds(cert, n)
    claim = result.bound
    needed = [i for i, (l, u) in enumerate(zip(lo, up)) if max(u, -l) > claim]
    above_target = [i for i, (l, u) in enumerate(zip(lo, up)) if max(u, -l) > Fraction(1, 100)]
    assert 0 < len(needed) < len(above_target), (needed, above_target)  # rows were dropped, and some are needed
    for leaf in _leaves(cert["tree"]):
        out = [s for s in leaf["steps"] if s["layer"] == n]
        assert [(s["kind"], s["neurons"]) for s in out] == [("linear", needed)]


def test_dropping_a_needed_row_is_rejected(stopped_tree, tmp_path):
    spec, path, cert, result, n = stopped_tree
    bad = copy.deepcopy(cert)
    leaf = max(_leaves(bad["tree"]), key=lambda leaf: len(leaf["steps"]))
    step = next(s for s in leaf["steps"] if s["layer"] == n and "neurons" in s)
    for key in ("neurons", "lower", "upper"):
        step[key] = step[key][1:]
    if not step["neurons"]:
        leaf["steps"].remove(step)
    out = tmp_path / "bad.cert.json"
    out.write_text(json.dumps(bad))
    assert check_certificate(spec, out, jobs=1).verdict is Verdict.REJECTED
