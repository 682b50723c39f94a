"""A ReLU-split child in branch and bound takes its parent's layers below the split as the checker holds them
(`propose`'s `fixed`): bounded again with alpha started from the parent's optimum, they came out tighter than the
parent's verified ones, and on three hidden layers the child's claims built on them were rejected (exit 3)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from certify.bounds import bab
from certify.bounds.driver import below, propose
from certify.checker.check import Verdict
from certify.engine import attained_lower, prepare, write_and_check
from certify.model import save_model


def _spec(tmp_path, widths, seed):
    rng = np.random.default_rng(seed)
    weights, biases = [], []
    for a, b in zip(widths[:-1], widths[1:]):
        weights.append(rng.normal(0, 1 / np.sqrt(a), (b, a)))
        biases.append(rng.normal(0, 0.1, b))
    model = tmp_path / "m.npz"
    digest = save_model(str(model), weights, biases)
    spec = tmp_path / "s.yaml"
    spec.write_text(f"""version: 1
model: {{path: {model}, sha256: "{digest}"}}
input:
  box: {{lower: -1, upper: 1}}
explanation:
  - prune: {{layer: 2, keep: {list(range(0, widths[2], 2))}, fill: zero}}
property:
  deviation: linf
  tolerance: 10
""")
    return prepare(spec, tmp_path / "c.cert.json")


def _tree_layers(node, out):
    if node.get("split") == "relu":
        out.add(node["layer"])
    for child in node.get("children", []):
        _tree_layers(child, out)
    return out


def test_a_split_child_keeps_its_parents_lower_layers(tmp_path):
    p = _spec(tmp_path, [6, 8, 8, 8, 3], 0)
    parent = propose(p.net, p.joint, p.box, "alpha", assume={(1, 0): "active"}, margins=p.margins, exact_output=False)
    child_assume = {(1, 0): "active", (3, 1): "inactive"}
    child = propose(p.net, p.joint, p.box, "alpha", assume=child_assume, margins=p.margins, exact_output=False,
                    warm=parent.warm, fixed=below(parent, 3))
    for k in (0, 1):  # layers 1 and 2: the parent's, exactly
        assert np.array_equal(child.claims[k][0], parent.claims[k][0]) and np.array_equal(child.claims[k][1], parent.claims[k][1])
        assert child.relax[k] is parent.relax[k]
    assert all(s["layer"] >= 1 for s in child.steps)


def test_a_three_hidden_layer_relu_split_tree_is_accepted(tmp_path):
    """Rejected before (a layer-3 interval claim above what the checker derives from the parent's layer 2)."""
    p = _spec(tmp_path, [6, 8, 8, 8, 3], 0)
    witness, lower = attained_lower(p)
    r = bab.branch_and_bound(p.net, p.joint, p.box, "alpha", Fraction(1, 1000), max_leaves=300, time_budget=120)
    assert {2, 3} <= _tree_layers(r.tree, set()), "the tree should split ReLUs above layer 1"
    result = write_and_check(p, "bab", r.bound, {"tree": r.tree}, witness, lower, {}, tmp_path / "c.cert.json", jobs=1)
    assert result.verdict is Verdict.CERTIFIED, result.reason
