"""Branch and bound on alpha-CROWN input-split leaves splits each region on the input with the largest first-layer
weight mass times width alone (`bab.ALPHA_CANDIDATES` = 1: no strong branching), CROWN leaves keep strong branching over
INPUT_CANDIDATES (issue 19, the quick tightness benchmark's w64x2-svd50-ball50)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from certify.checker import exact
from certify.checker.check import Verdict


def test_one_candidate_is_the_mass_best_input():
    """Input 0 has twice input 1's first-layer weight mass, but the output weighs input 1's path 100x more: one candidate
    is input 0 (the mass), two are input 0 and input 1 (the worst row's score), and `choose_split` takes input 1."""
    from certify.bounds.bab import Node, _candidates, choose_split, input_candidates, input_scores, mass_scores
    from certify.bounds.driver import propose
    from certify.bounds.network import from_exact

    layers = [(exact.qmat([[2.0, 0.0], [0.0, 1.0]]), exact.qvec([0.5, 0.5])), (exact.qmat([[0.1, 10.0]]), exact.qvec([0.0]))]
    net = from_exact(layers)
    box = ([Fraction(0), Fraction(0)], [Fraction(1), Fraction(1)])
    node = Node(box, {})
    node.set_proposal(propose(net, layers, box, "crown", exact_output=False))
    assert np.argmax(mass_scores(net, node)) == 0 and np.argmax(input_scores(net, node)) == 1
    assert [s["dim"] for s in input_candidates(net, node, 1)] == [0]
    assert [s["dim"] for s in input_candidates(net, node, 2)] == [0, 1]
    assert choose_split(net, node)["dim"] == 1
    plan = {"shared_first": False, "input_splits": True, "inherited": False}
    assert [s["dim"] for s in _candidates(net, node, {**plan, "candidates": 1})] == [0]
    assert [s["dim"] for s in _candidates(net, node, {**plan, "candidates": 2})] == [0, 1]


def _problem(tmp_path):
    """A small tightness-benchmark-like problem: a random 6-24-24-3 MLP, every layer at half rank (svd50), an L-inf ball."""
    from certify.engine import attained_lower, prepare
    from certify.model import save_model

    rng = np.random.default_rng(7)
    widths = [6, 24, 24, 3]
    ws = [rng.normal(0, 1 / math.sqrt(a), (b, a)) for a, b in zip(widths[:-1], widths[1:])]
    bs = [rng.normal(0, 0.1, b) for b in widths[1:]]
    sha = save_model(tmp_path / "m.npz", ws, bs)
    np.save(tmp_path / "x0.npy", rng.uniform(-1, 1, widths[0]))
    lines = [f"  - low_rank: {{layer: {k}, rank: {math.ceil(min(w.shape) / 2)}}}" for k, w in enumerate(ws, start=1)]
    spec = tmp_path / "spec.yaml"
    spec.write_text("\n".join(["version: 1", f'model: {{path: m.npz, sha256: "{sha}"}}', "input:",
                               "  linf_ball: {center: x0.npy, radius: \"1/2\"}", "explanation:", *lines,
                               "property: {deviation: linf, tolerance: 1000000}", ""]))
    p = prepare(spec, tmp_path / "c.cert.json")
    return p, *attained_lower(p)


def _input_splits(tree, box):
    """(box, dim) of every input split of the tree, the boxes rebuilt from the splits."""
    stack = [(tree, box)]
    while stack:
        node, (lo, up) = stack.pop()
        if node.get("split") != "input":
            continue
        d, at = node["dim"], Fraction(node["at"])
        yield (lo, up), d
        left, right = (lo, [*up[:d], at, *up[d + 1:]]), ([*lo[:d], at, *lo[d + 1:]], up)
        stack += [(node["children"][0], left), (node["children"][1], right)]


@pytest.mark.parametrize("method", ["alpha", "crown"])
def test_alpha_leaves_split_on_the_mass_best_input(tmp_path, monkeypatch, method):
    """Alpha-CROWN leaves (forced: ALPHA_PAYS 0): every input split of the tree is on the input with the largest
    width times first-layer weight mass of its region, and the checker accepts the tree. CROWN leaves: strong branching
    over two candidates, and some of its splits are on another input."""
    from certify.bounds import bab
    from certify.engine import write_and_check

    monkeypatch.setattr(bab, "ALPHA_PAYS", 0.0)
    p, witness, lower = _problem(tmp_path)
    r = bab.branch_and_bound(p.net, p.joint, p.box, method, p.spec.property.tolerance, max_leaves=40, time_budget=120,
                             stop_below=Fraction(0))
    assert r.leaf_method == method and r.splits == 39
    mass = np.abs(np.asarray(p.net.weights[0])).sum(axis=0)
    on_mass = [d == int(np.argmax([float(u - l) * m for l, u, m in zip(*box, mass)])) for box, d in _input_splits(r.tree, p.box)]
    assert len(on_mass) == r.splits
    assert all(on_mass) if method == "alpha" else not all(on_mass), on_mass
    result = write_and_check(p, "bab", r.bound, {"tree": r.tree}, witness, lower, {}, tmp_path / "t.cert.json", jobs=1)
    assert result.verdict is Verdict.CERTIFIED, result.reason
