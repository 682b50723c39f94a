"""CROWN input-split trees: strong branching above `bab.VOTE_DEPTH`; below, one candidate, the heuristic that won strong
branching more often on the region's path (`Node.votes`); node-local, so the Ray search still makes the serial tree
(issue 19, VeryDiff MNIST-0 / MNIST-7)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from certify.checker import exact

from .test_ray import _InProcess, _mnist, _tree


def _node(depth, votes):
    from certify.bounds.bab import Node
    from certify.bounds.driver import propose
    from certify.bounds.network import from_exact

    layers = [(exact.qmat([[2.0, 0.0], [0.0, 1.0]]), exact.qvec([0.5, 0.5])), (exact.qmat([[0.1, 10.0]]), exact.qvec([0.0]))]
    net = from_exact(layers)
    box = ([Fraction(0), Fraction(0)], [Fraction(1), Fraction(1)])
    node = Node(box, {}, depth=depth, votes=votes)
    node.set_proposal(propose(net, layers, box, "crown", exact_output=False))
    return net, node


def test_votes_choose_the_candidates(monkeypatch):
    """Input 0 is the mass-best, input 1 the input_scores-best (as in test_quick_mass_split). Fails with the rule reverted."""
    from certify.bounds import bab

    dims = lambda depth, votes, k=2: [s["dim"] for s in bab.input_candidates(*_node(depth, votes), k)]
    assert dims(bab.VOTE_DEPTH - 1, (9, 0)) == [0, 1]  # above VOTE_DEPTH: strong branching whatever the votes
    assert dims(bab.VOTE_DEPTH, (3, 3)) == [0]  # ties: the mass
    for alone, want in ((True, [1]), (False, [0, 1])):
        monkeypatch.setattr(bab, "VOTE_SCORE_ALONE", alone)
        assert dims(bab.VOTE_DEPTH, (2, 4)) == want
    assert dims(bab.VOTE_DEPTH, (0, 6), k=1) == [0]  # one candidate (alpha leaves): the mass, votes or not


def test_kept_split_children_carry_the_votes():
    from certify.bounds import bab

    net, node = _node(0, (1, 2))
    options = [(s, bab._children(node, s)) for s in bab.input_candidates(net, node, 2)]
    assert all(kid.votes == (1, 2) for _, kids in options for kid in kids)
    bab._vote(options, 1)
    assert [kid.votes for kid in options[1][1]] == [(1, 3), (1, 3)] and options[0][1][0].votes == (1, 2)
    bab._vote(options[:1], 0)  # one option: no strong branching, no vote
    assert options[0][1][0].votes == (1, 2)


def test_voted_tree_is_the_serial_tree(tmp_path, monkeypatch):
    """VOTE_DEPTH 2 (most of the tree below it) on CROWN leaves: the Ray search on an out-of-order stand-in makes the
    serial tree, and the tree has splits on one candidate."""
    from certify.bounds import bab

    monkeypatch.setattr(bab, "VOTE_DEPTH", 2)
    monkeypatch.setattr(bab, "ALPHA_PAYS", 1e9)  # CROWN leaves
    p = _mnist(tmp_path, '"7/5"')
    args = (p.net, p.joint, p.box, "alpha", p.spec.property.tolerance)
    sizes, candidates = [], bab.input_candidates
    monkeypatch.setattr(bab, "input_candidates", lambda *a: sizes.append(len(out := candidates(*a))) or out)
    serial = bab.branch_and_bound(*args, max_leaves=400, time_budget=300, margins=p.margins)
    assert serial.leaf_method == "crown" and serial.bound <= p.spec.property.tolerance and serial.splits >= 8
    monkeypatch.setattr(bab, "_RayBounders", _InProcess)
    monkeypatch.setattr(bab, "RAY_BATCH_HOT", 1)
    monkeypatch.setattr(bab, "RAY_BATCH", 3)
    ray_like = bab.branch_and_bound(*args, max_leaves=400, time_budget=300, margins=p.margins, workers=2)
    assert sizes[0] == 2 and 1 in sizes, sizes  # strong branching at the root, one candidate below VOTE_DEPTH
    assert (ray_like.bound, ray_like.leaves, _tree(ray_like)) == (serial.bound, serial.leaves, _tree(serial))
