"""ReLU splits inside the root's steps (issue 19): a branch-and-bound tree whose root writes its hidden-layer (and
output) steps once, its regions bounding only the neurons the root left unstable, may split a region on a ReLU. The
children's steps start at the split layer, take the layers below it from their parent (`propose`'s `fixed`), and list
the split neuron, whose inherited bounds the checker clamps (`check._child`). Such a split is taken where no input
split can help: a point box (no free input), or a neuron unstable only through the engine's outward padding (a range
of exactly 0 comes out as [-1e-8, 1e-8]), relaxed apart in f and g, which no input split makes stable: there an
explanation equal to f is CERTIFIED at tolerance 0 (test_campaign's exact-zero cases, seed 2026 cases 2 and 120,
stopped 1-2e-9 above 0 with input splits only). Also: tampered copies REJECTED, and the pipelined (Ray) search makes
the serial tree."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from certify.bounds import bab
from certify.certificate import serialize
from certify.checker.check import Verdict, check_certificate
from certify.engine import attained_lower, prepare, write_and_check
from certify.model import save_model

# x = (1/2, 1/2): layer 2's neuron 0 is h1 - h2 = 0 exactly (both x0 + x1), which g drops (f = g)
LATER = ([[[1, 1], [1, 1], [1, -1]], [[1, -1, 0], [1, 1, 1], [0, 1, -1]], [[1, 1, 1], [1, -1, 1]]],
         '"1/2"', '"1/2"', "{layer: 2, keep: [1, 2], fill: zero}")
# a free box: layer 1's neuron 0 is 0 everywhere, g drops it (layer 2 active: biases 1)
FREE = ([[[0, 0], [1, 1], [1, -1]], [[1, 1, 1], [2, 1, 1]], [[1, -1]]], "[0, 0]", "[1, 1]",
        "{layer: 1, keep: [1, 2], fill: zero}", [[0, 0, 0], [1, 1], [0]])
# x = (1/2, 1/2): layer 1's neuron 0 (x0 - x1) and layer 2's neuron 0 (h0 + h1 - h2) are 0, g drops both
TWO = ([[[1, -1], [1, 1], [1, 1]], [[1, 1, -1], [0, 1, 1], [1, 0, 1]], [[1, 2, 1], [1, -1, 3]]], '"1/2"', '"1/2"',
       "{layer: 1, keep: [1, 2], fill: zero}\n  - prune: {layer: 2, keep: [1, 2], fill: zero}")


def _problem(tmp_path, case):
    ws, lower, upper, prune, *biases = case
    ws = [np.array(w, dtype=float) for w in ws]
    sha = save_model(tmp_path / "m.npz", ws, [np.array(b, dtype=float) for b in biases[0]] if biases else [np.zeros(len(w)) for w in ws])
    spec = tmp_path / "spec.yaml"
    spec.write_text(f'version: 1\nmodel: {{path: m.npz, sha256: "{sha}"}}\ninput:\n  box: {{lower: {lower}, upper: {upper}}}\n'
                    f"explanation:\n  - prune: {prune}\nproperty: {{deviation: linf, tolerance: 0}}\n")
    return prepare(spec, tmp_path / "c.cert.json")


def _nodes(node):
    yield node
    for child in node.get("children", []):
        yield from _nodes(child)


def _run(tmp_path, case, method, **kwargs):
    """Branch and bound at tolerance 0, the certificate written and checked: (result, verdict, certificate path)."""
    p = _problem(tmp_path, FREE if case == "free" else TWO if case == "two" else LATER)
    witness, lower = attained_lower(p)
    r = bab.branch_and_bound(p.net, p.joint, p.box, method, p.spec.property.tolerance, time_budget=60, max_leaves=64,
                             margins=p.margins, **kwargs)
    path = tmp_path / "p.cert.json"
    result = write_and_check(p, "bab", r.bound, {"tree": r.tree}, witness, lower, {}, path, jobs=1)
    return r, result, path


@pytest.mark.parametrize("method", ["crown", "alpha"])
def test_a_relu_split_inside_the_roots_steps_proves_zero_on_a_point(tmp_path, method):
    """A one-point box (no free input) with a layer-2 neuron unstable only through the padding: one ReLU split on it,
    two leaves, CERTIFIED at exactly 0. The root keeps its hidden-layer steps above the split layer (the children's
    sparse steps need them), and each child bounds only that neuron on layer 2, taking layer 1 from the root."""
    r, result, _ = _run(tmp_path, "later", method)
    assert result.verdict is Verdict.CERTIFIED and result.bound == 0, (result.verdict, result.bound, result.reason)
    tree = r.tree
    assert (tree.get("split"), tree.get("layer"), tree.get("neuron"), r.leaves) == ("relu", 2, 0, 2), tree
    root_layers = {s["layer"] for s in tree["steps"]}
    assert {1, 2} <= root_layers  # inside the root's steps: the root writes layer 2 too, not only the layers below the split
    for child in tree["children"]:
        assert min(s["layer"] for s in child["steps"]) == 2  # layer 1 from the root (`fixed`)
        linear2 = [s for s in child["steps"] if s["kind"] == "linear" and s["layer"] == 2]
        relu2 = [s for s in child["steps"] if s["kind"] == "relu_relaxation" and s["layer"] == 2]
        assert [s.get("neurons") for s in linear2] == [[0]] and [s.get("neurons") for s in relu2] == [[0]]


def test_a_padded_neuron_is_split_on_a_free_box(tmp_path):
    """A box with free inputs, f = g, a layer-1 neuron that is 0 everywhere (unstable only through the padding): input
    splits never make it stable; CROWN leaves inside the root's steps split it once and prove exactly 0."""
    r, result, _ = _run(tmp_path, "free", "crown")
    assert result.verdict is Verdict.CERTIFIED and result.bound == 0, (result.verdict, result.bound, result.reason)
    assert (r.tree.get("split"), r.tree.get("layer"), r.tree.get("neuron"), r.leaves) == ("relu", 1, 0, 2), r.tree
    assert all("neurons" in s for child in r.tree["children"] for s in child["steps"] if s["kind"] == "relu_relaxation")


@pytest.mark.parametrize("method", ["crown", "alpha"])
def test_nested_relu_splits_inside_the_roots_steps(tmp_path, method):
    """Two padded neurons on layers 1 and 2 (layer 2 has (f, g) pairs): ReLU splits on both layers, nested, every region
    under a split listing every neuron the root left unstable (an ancestor's own steps may sit between it and the root).
    CERTIFIED at 0."""
    r, result, _ = _run(tmp_path, "two", method)
    assert result.verdict is Verdict.CERTIFIED and result.bound == 0, (result.verdict, result.bound, result.reason)
    splits = [(n["layer"], n["neuron"]) for n in _nodes(r.tree) if n.get("split") == "relu"]
    assert {layer for layer, _ in splits} == {1, 2} and len(splits) >= 3, splits
    assert {s["layer"] for s in r.tree["steps"]} >= {1, 2}  # the root's hidden-layer steps, whatever layer it splits
    assert all(n.get("split") != "input" for n in _nodes(r.tree))


def _tampered(path, change) -> Verdict:
    cert = json.loads(path.read_text())
    bad = copy.deepcopy(cert)
    change(bad["tree"] if "tree" in bad else bad["body"]["tree"])
    out = path.with_name("bad.cert.json")
    out.write_text(json.dumps(bad))
    return check_certificate(path.with_name("spec.yaml"), out, jobs=1)


def _swap_children(tree):
    tree["children"][0]["steps"], tree["children"][1]["steps"] = tree["children"][1]["steps"], tree["children"][0]["steps"]


def _swap_split_lines(tree):
    """The split neuron's lines on layer 2, exact only under the clamp of one child, moved to the other child."""
    relu = [next(s for s in c["steps"] if s["kind"] == "relu_relaxation" and s["layer"] == 2) for c in tree["children"]]
    keys = ("lower_slope", "lower_intercept", "upper_slope", "upper_intercept")
    a, b = ({k: r[k] for k in keys} for r in relu)
    relu[0].update(b)
    relu[1].update(a)


def _root_below_split(tree):
    """The root writes only the layers below its split, as a ReLU-split region outside the root's steps does: its
    children's sparse steps then find no verified bounds for their layer."""
    tree["steps"] = [s for s in tree["steps"] if s["layer"] < tree["layer"]]


@pytest.mark.parametrize("change", [_swap_children, _swap_split_lines, _root_below_split])
def test_tampered_relu_split_inside_the_roots_steps_is_rejected(tmp_path, change):
    """The point-box tree with its children's steps swapped (the first child of a ReLU split is the inactive one), the
    split neuron's lines swapped between the children, or the root's steps cut to the layers below the split: REJECTED.
    The untampered copy is CERTIFIED."""
    r, result, path = _run(tmp_path, "later", "crown")
    assert result.verdict is Verdict.CERTIFIED and r.tree.get("split") == "relu"
    steps = [[(s["kind"], s.get("upper_slope")) for s in c["steps"] if s["kind"] == "relu_relaxation"] for c in r.tree["children"]]
    assert steps[0] != steps[1], steps  # the children differ where the clamp decides
    bad = _tampered(path, change)
    assert bad.verdict is Verdict.REJECTED, (bad.verdict, bad.bound)


def test_pipelined_search_makes_the_serial_tree_with_relu_splits(tmp_path, monkeypatch):
    """The Ray search on an in-process stand-in (tests.test_ray._InProcess): a region a worker bounded whose split to try
    is a ReLU split keeps its whole proposal (its children take their lower layers from it), and the tree is the serial
    one; the checker accepts it."""
    from tests.test_ray import _InProcess

    serial, result, _ = _run(tmp_path, "two", "crown")
    assert result.verdict is Verdict.CERTIFIED and serial.splits >= 3
    monkeypatch.setattr(bab, "_RayBounders", _InProcess)
    ray_like, result, _ = _run(tmp_path, "two", "crown", workers=2)
    assert result.verdict is Verdict.CERTIFIED and result.bound == 0, result.reason
    tree = lambda r: json.dumps(serialize(r.tree), sort_keys=True)  # noqa: E731
    assert (ray_like.bound, ray_like.leaves, tree(ray_like)) == (serial.bound, serial.leaves, tree(serial))
