"""Branch and bound over free values (issue 16): a graph input tree's dimensions run over x, then the free nodes'
ranges (`ablate` with `fill: free`), so a split may narrow a free value, which no split of x can. The checker gives
each leaf's free nodes the leaf's ranges (checker/graph.py `_free_box`): the leaves cover x's box times the free
ranges. A hand-built tree that splits a free value is CERTIFIED; swapped children, a point outside the range and a
dimension past the free values are REJECTED; the engine's tree splits free values where they weigh most."""

import copy
import json
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest

from certify.bounds import graph as gb
from certify.checker import Verdict, check_certificate
from certify.checker.graph import free_ranges
from certify.checker.numbers import rational_str
from certify.engine_graph import prepare_graph, write_and_check_graph

from .test_graph import random_graph


def _steps(p, box):
    """CROWN steps on a box over x and the free values (as the engine's branch and bound bounds a leaf)."""
    nx, nodes = len(p.box[0]), gb.floats(p.joint)
    lo, up = box[0][nx:], box[1][nx:]
    for k, n in enumerate(nodes):
        if n.op == "free":
            w = len(n.lower)
            nodes[k] = replace(n, lower=np.array([float(v) for v in lo[:w]]), upper=np.array([float(v) for v in up[:w]]))
            lo, up = lo[w:], up[w:]
    st = gb.crown_state(p.joint, (box[0][:nx], box[1][:nx]), nodes=nodes)
    return st.bound, st.steps


@pytest.fixture(scope="module")
def split_cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("free")
    spec = random_graph(d, 1, "free")
    p = prepare_graph(spec, d / "t.cert.json")
    flo, fup = free_ranges(p.joint)
    nx = len(p.box[0])
    assert len(flo) == 4
    lo, up = list(p.box[0]) + flo, list(p.box[1]) + fup
    dim = nx + 2
    at = (lo[dim] + up[dim]) / 2
    left, right = (lo, up[:dim] + [at] + up[dim + 1:]), (lo[:dim] + [at] + lo[dim + 1:], up)
    (b0, s0), (b1, s1) = _steps(p, left), _steps(p, right)
    tree = {"split": "input", "dim": dim, "at": rational_str(at), "children": [{"steps": s0}, {"steps": s1}]}
    bound = Fraction(max(b0, b1))
    result = write_and_check_graph(p, "bab", bound, {"tree": tree}, None, Fraction(0), {})
    return spec, p, result, json.loads((d / "t.cert.json").read_text()), gb.crown_state(p.joint, p.box).bound


def test_a_split_of_a_free_value_is_checked(split_cert):
    spec, p, result, cert, root = split_cert
    assert result.verdict is Verdict.CERTIFIED, result.reason
    assert cert["tree"]["dim"] >= len(p.box[0])  # past x: a free value


MUTATIONS = {
    "children_swapped": lambda c: c["tree"].__setitem__("children", c["tree"]["children"][::-1]),
    "point_outside_the_free_range": lambda c: c["tree"].__setitem__("at", "1000"),
    "dimension_past_the_free_values": lambda c: c["tree"].__setitem__("dim", 3 + 4),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_tampered_free_splits_are_rejected(split_cert, name, tmp_path):
    spec, _, _, cert, _ = split_cert
    tampered = copy.deepcopy(cert)
    MUTATIONS[name](tampered)
    out = tmp_path / "t.cert.json"
    out.write_text(json.dumps(tampered))
    assert check_certificate(spec, out).verdict is Verdict.REJECTED, f"{name} was accepted"


def test_branch_and_bound_splits_free_values_and_is_checked(tmp_path):
    """The engine scores a free value like an input (its width times its coefficient in the worst row): on this graph
    its tree narrows free values, beats its root, and the checker accepts it; no sampled point exceeds the bound."""
    spec = random_graph(tmp_path, 1, "free")
    p = prepare_graph(spec, tmp_path / "b.cert.json")
    root = gb.crown_state(p.joint, p.box).bound
    r = gb.branch_and_bound(p.joint, p.box, target=0.0, time_budget=30.0, max_leaves=8)
    dims = []

    def walk(t):
        if "split" in t:
            dims.append(t["dim"])
            for k in t["children"]:
                walk(k)
    walk(r.tree)
    assert any(d >= len(p.box[0]) for d in dims), dims
    result = write_and_check_graph(p, "bab", Fraction(r.bound), {"tree": r.tree}, None, Fraction(0), {})
    assert result.verdict is Verdict.CERTIFIED and r.bound < root, (result.reason, r.bound, root)
    nodes, rng = gb.floats(p.joint), np.random.default_rng(0)
    flo, fup = (np.array([float(v) for v in b]) for b in free_ranges(p.joint))
    lo, up = (np.array([float(v) for v in b]) for b in p.box)
    for _ in range(300):  # x and the free values sampled together
        v = flo + (fup - flo) * rng.uniform(size=flo.size)
        mine = [replace(n, lower=v, upper=v) if n.op == "free" else n for n in nodes]
        x = lo + (up - lo) * rng.uniform(size=lo.size)
        assert float(np.max(np.abs(gb.evaluate(mine, x)))) <= r.bound * (1 + 1e-9) + 1e-9
