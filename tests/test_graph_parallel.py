"""Graph split trees (input splits, token splits) checked in parallel processes: the verdict, the count of
steps and the place of a rejection are the serial ones; a tampered leaf anywhere rejects."""

from __future__ import annotations

import copy
import json
from fractions import Fraction

import pytest

from certify.bounds import graph as gb
from certify.checker import Verdict, check_certificate
from certify.checker import graph as cg
from certify.engine_graph import prepare_graph, write_and_check_graph

from .test_graph import random_graph


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    d = tmp_path_factory.mktemp("ptree")
    spec = random_graph(d, 5, "gelu")
    p = prepare_graph(spec, d / "t.cert.json")
    r = gb.branch_and_bound(p.joint, p.box, target=0.0, time_budget=8.0, max_leaves=12)
    result = write_and_check_graph(p, "bab", Fraction(r.bound), {"tree": r.tree}, None, Fraction(0), {})
    assert result.verdict is Verdict.CERTIFIED, result.reason
    return spec, json.loads((d / "t.cert.json").read_text())


def _leaves(t, path="tree"):
    return [(t, path)] if "steps" in t else [x for i, c in enumerate(t["children"]) for x in _leaves(c, f"{path}.{i}")]


def test_parallel_check_is_the_serial_one(tree, monkeypatch, tmp_path):
    spec, cert = tree
    monkeypatch.setattr(cg, "PARALLEL_MIN_LEAVES", 2)
    assert len(_leaves(cert["tree"])) >= 4
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cert))
    serial, parallel = check_certificate(spec, path, 1), check_certificate(spec, path, 2)
    assert serial.verdict is parallel.verdict is Verdict.CERTIFIED
    assert (serial.steps, serial.bound) == (parallel.steps, parallel.bound)


@pytest.mark.parametrize("which", [0, -1])
def test_a_tampered_leaf_rejects_in_parallel_where_it_does_serially(tree, which, monkeypatch, tmp_path):
    spec, cert = tree
    monkeypatch.setattr(cg, "PARALLEL_MIN_LEAVES", 2)
    bad = copy.deepcopy(cert)
    leaf, where = _leaves(bad["tree"])[which]
    step = next(s for s in leaf["steps"] if s["node"] == "d" and s["via"] == "linear")
    step["upper"][0] = str(Fraction(step["upper"][0]) - Fraction(1, 10 ** 6))  # tighter than the leaf proves
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    serial, parallel = check_certificate(spec, path, 1), check_certificate(spec, path, 2)
    assert serial.verdict is parallel.verdict is Verdict.REJECTED
    assert serial.reason == parallel.reason and f"{where}.steps" in parallel.reason


def test_token_trees_too(tmp_path, monkeypatch):
    from certify.bounds.tokens import FloatTokens, token_bab
    from certify.checker.errors import Rejected
    from certify.checker.graph import TokenBox, check_token_tree

    from .test_transformer import crown, pair

    monkeypatch.setattr(cg, "PARALLEL_MIN_LEAVES", 2)
    joint, _, _ = pair(tmp_path, 99, 4, 3)
    allowed = ((0, 1, 2, 3),) * 3
    bound, tree, leaves = token_bab(lambda b: crown(joint, b), FloatTokens(4, allowed), 0.0, max_leaves=16, seconds=60)
    assert leaves >= 4
    claim = Fraction(bound) * (1 + Fraction(1, 10 ** 6))
    assert check_token_tree(joint, TokenBox(4, allowed), tree, claim, "tree", 2) == check_token_tree(joint, TokenBox(4, allowed), tree, claim, "tree")
    with pytest.raises(Rejected) as serial:
        check_token_tree(joint, TokenBox(4, allowed), tree, claim / 3, "tree")
    with pytest.raises(Rejected) as parallel:
        check_token_tree(joint, TokenBox(4, allowed), tree, claim / 3, "tree", 2)
    assert str(serial.value) == str(parallel.value)
