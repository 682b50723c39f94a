"""Branch and bound on boxes with fixed inputs (issue 19): the checker folds them into the first
layer's bias, the engine does the same, and the vectorised relaxation lines of the leaves are
exactly valid."""

from __future__ import annotations

import copy
import json
from fractions import Fraction

import numpy as np
import pytest

from certify.bounds.driver import difference_lines_fast, exact_relaxation_fast
from certify.checker import exact
from certify.checker.check import Verdict, check_certificate
from certify.engine import run_check

from .conftest import ROOT, SPECS, shipped_copy, shipped_text


def _layers(rng, widths):
    return [(exact.qmat(rng.normal(0, 1, (b, a)).tolist()), exact.qvec(rng.normal(0, 0.1, b).tolist()))
            for a, b in zip(widths[:-1], widths[1:])]


@pytest.mark.parametrize("seed", range(5))
def test_folding_fixed_inputs_gives_the_same_exact_bounds(seed):
    """Interval and back-substitution bounds on the folded first layer over the free inputs are the
    same rationals as on the whole layer over the whole box."""
    rng = np.random.default_rng(seed)
    layers = _layers(rng, [7, 6, 5])
    lo = [Fraction(float(v)) for v in rng.uniform(-1, 0, 7)]
    up = [Fraction(float(v)) for v in rng.uniform(0, 1, 7)]
    for d in (1, 4, 5):
        up[d] = lo[d] = Fraction(int(rng.integers(-9, 9)), 7)  # not dyadic: the folded bias gets a new denominator
    first, free, flo, fup = exact.fold_fixed(layers[0], lo, up)
    assert free == [0, 2, 3, 6] and flo == [lo[d] for d in free] and fup == [up[d] for d in free]
    assert exact.interval_dense(first, flo, fup) == exact.interval_dense(layers[0], lo, up)
    l1, u1 = exact.interval_dense(layers[0], lo, up)
    lines = tuple(exact.qvec(map(float, v)) for v in _crown_lines(l1, u1))
    whole = exact.backsubstitute(1, layers, [lines], (exact.qvec(lo), exact.qvec(up)))
    folded = exact.backsubstitute(1, [first, layers[1]], [lines], (exact.qvec(flo), exact.qvec(fup)))
    assert whole == folded


def _crown_lines(lo, up):
    from certify.bounds.driver import exact_relaxation

    r = exact_relaxation([float(v) - 1e-9 for v in lo], [float(v) + 1e-9 for v in up])
    return r.lower_slope, r.lower_intercept, r.upper_slope, r.upper_intercept


def test_fold_keeps_a_box_without_fixed_inputs_or_a_single_point():
    rng = np.random.default_rng(0)
    layer = _layers(rng, [3, 2])[0]
    for lo, up in (([0, 0, 0], [1, 1, 1]), ([1, 2, 3], [1, 2, 3])):
        lo, up = list(map(Fraction, lo)), list(map(Fraction, up))
        assert exact.fold_fixed(layer, lo, up) == (layer, [0, 1, 2], lo, up)


def test_vectorised_lines_are_exactly_valid():
    """The checker's conditions, in Fractions: relu lines at l, 0, u; difference lines at both ends of
    the delta range, against the envelopes the neurons' bounds allow."""
    rng = np.random.default_rng(1)
    for t in range(60):
        n, scale = 40, 10.0 ** rng.integers(-9, 4)
        lo = rng.normal(0, 1, n) * scale
        up = lo + np.abs(rng.normal(0, 1, n)) * 10.0 ** rng.integers(-12, 3)
        r = exact_relaxation_fast(lo, up)
        for i in range(n):
            a, b, c, d, L, U = (Fraction(float(v[i])) for v in (r.lower_slope, r.lower_intercept, r.upper_slope,
                                                               r.upper_intercept, lo, up))
            for z in (L, U, Fraction(0)) if L < 0 < U else (L, U):
                assert a * z + b <= max(z, 0) <= c * z + d, (t, i)
        m = n // 2
        ia, ib = np.arange(m), m + np.arange(m)
        dlo = rng.normal(0, 1, m) * scale
        dup = dlo + np.abs(rng.normal(0, 1, m)) * 10.0 ** rng.integers(-12, 3)
        dup[::5] = dlo[::5]
        lines = difference_lines_fast(dlo, dup, lo, up, ia, ib)
        for p, (i, j) in enumerate(zip(ia, ib)):
            sl, tl, su, tu = (Fraction(float(v[p])) for v in (lines.lower_slope, lines.lower_intercept, lines.upper_slope,
                                                             lines.upper_intercept))
            for x in (Fraction(float(dlo[p])), Fraction(float(dup[p]))):
                low = x if lo[j] >= 0 else Fraction(0) if up[j] <= 0 else min(x, Fraction(0))
                high = x if lo[i] >= 0 else Fraction(0) if up[i] <= 0 else max(x, Fraction(0))
                assert sl * x + tl <= low and su * x + tu >= high, (t, p)


VNNLIB = "".join(f"(declare-const X_{i} Real)\n" for i in range(4)) + "(declare-const Y_0 Real)\n" + \
    "(assert (>= X_0 -1))\n(assert (<= X_0 1))\n(assert (>= X_1 0.5))\n(assert (<= X_1 0.5))\n" + \
    "(assert (>= X_2 -1))\n(assert (<= X_2 1))\n(assert (>= X_3 -0.25))\n(assert (<= X_3 -0.25))\n"


@pytest.fixture(scope="module")
def fixed_input_tree(tmp_path_factory):
    """tiny_prune over a region with inputs 1 and 3 fixed, at a tolerance only splits reach."""
    d = tmp_path_factory.mktemp("bab-fixed")
    (d / "r.vnnlib").write_text(VNNLIB)
    text = shipped_text()
    spec = d / "spec.yaml"
    spec.write_text(text.replace("box: {lower: -1, upper: 1}", "vnnlib: r.vnnlib").replace("tolerance: 3", 'tolerance: "3/5"'))
    path = d / "t.cert.json"
    with pytest.MonkeyPatch.context() as mp:  # input splits (tiny_prune's shared layer 1 would be split on ReLUs first)
        mp.setattr("certify.bounds.bab.SHARED_FIRST", 2.0)
        outcome = run_check(spec, path, "bab")
    assert outcome.verdict is not Verdict.REJECTED, outcome.check.reason
    cert = json.loads(path.read_text())
    assert "children" in cert["tree"], "branch and bound made no split"
    return spec, path, cert


def _input_splits(node):
    stack, out = [node], []
    while stack:
        n = stack.pop()
        if n.get("split") == "input":
            out.append(n)
        stack += n.get("children", [])
    return out


def test_split_tree_on_fixed_inputs_names_free_inputs_and_is_accepted(fixed_input_tree):
    spec, path, cert = fixed_input_tree
    splits = _input_splits(cert["tree"])
    assert splits and {n["dim"] for n in splits} <= {0, 2}  # dimensions of the whole box, free ones only
    assert check_certificate(spec, path).verdict is not Verdict.REJECTED


@pytest.mark.parametrize("at, accepted", [("1/2", True), ("3/4", False), ("0", False)])
def test_split_on_a_fixed_input_must_name_its_value(fixed_input_tree, tmp_path, at, accepted):
    """A split on a fixed input (dimension 1 = 1/2) leaves both children the parent's box: accepted
    only at the input's value, rejected anywhere else."""
    spec, _, cert = fixed_input_tree
    bad = copy.deepcopy(cert)
    bad["tree"] = {"split": "input", "dim": 1, "at": at, "steps": [], "children": [cert["tree"], copy.deepcopy(cert["tree"])]}
    path = tmp_path / "m.cert.json"
    path.write_text(json.dumps(bad))
    result = check_certificate(spec, path)
    assert (result.verdict is not Verdict.REJECTED) is accepted, result.reason
    if not accepted:
        assert "input split needs a point inside the parent box" in result.reason


def test_split_moved_between_free_inputs_is_rejected(fixed_input_tree, tmp_path):
    """Each split's point must lie in its own dimension's range: moving a split's point outside the
    parent box (in the whole box's coordinates) rejects."""
    spec, _, cert = fixed_input_tree
    bad = copy.deepcopy(cert)
    _input_splits(bad["tree"])[0]["at"] = "2"
    path = tmp_path / "m.cert.json"
    path.write_text(json.dumps(bad))
    assert check_certificate(spec, path).verdict is Verdict.REJECTED


def test_stop_below_ends_the_search_above_an_unreachable_tolerance(tmp_path):
    """At tolerance 0 (out of reach: f != g) a target of 1.01 x an attained deviation is what ends
    branch and bound; it used to be min(tolerance, stop_below) = 0, and the run went to its budget."""
    from certify.engine import bound_with, prepare

    spec = shipped_copy(tmp_path, tolerance="0")
    p = prepare(spec, tmp_path / "c.cert.json")
    root, _, _ = bound_with(p, "alpha", time_budget=30)
    bound, body, notes = bound_with(p, "bab", time_budget=120, stop_below=root * 2)
    assert notes["bab"]["leaves"] == 1 and bound <= root * 2 and notes["bab"]["seconds"] < 60


def test_input_score_follows_the_worst_rows_coefficients():
    """Two inputs of equal width and equal first-layer weight mass: the last layer weighs input 1's
    path 100x more, so the worst row's linear bound loses most along input 1, which is split
    (the first-layer mass alone could not tell the two apart)."""
    from certify.bounds.bab import Node, choose_split, input_scores
    from certify.bounds.driver import propose
    from certify.bounds.network import from_exact

    layers = [(exact.qmat([[1.0, 0.0], [0.0, 1.0]]), exact.qvec([0.5, 0.5])), (exact.qmat([[0.1, 10.0]]), exact.qvec([0.0]))]
    net = from_exact(layers)
    box = ([Fraction(0), Fraction(0)], [Fraction(1), Fraction(1)])
    node = Node(box, {})
    node.set_proposal(propose(net, layers, box, "crown", exact_output=False))
    score = input_scores(net, node)
    assert score[1] > 50 * score[0], score
    assert choose_split(net, node) == {"split": "input", "dim": 1, "at": "1/2"}


def test_strong_branching_tree_is_accepted(tmp_path):
    """Input splits chosen among 3 scored candidates by their bounded children: the tree holds only
    the kept splits, and the checker accepts it."""
    from certify.bounds.bab import branch_and_bound
    from certify.engine import attained_lower, prepare, write_and_check

    spec = shipped_copy(tmp_path, tolerance="21/20")
    p = prepare(spec, tmp_path / "c.cert.json")
    witness, lower = attained_lower(p)
    r = branch_and_bound(p.net, p.joint, p.box, "crown", p.spec.property.tolerance, time_budget=120, candidates=3)
    assert r.splits >= 2 and r.bound <= p.spec.property.tolerance
    result = write_and_check(p, "bab", r.bound, {"tree": r.tree}, witness, lower, {}, tmp_path / "s.cert.json", jobs=1)
    assert result.verdict is Verdict.CERTIFIED, result.reason
    assert len(_input_splits(r.tree)) == r.splits


def test_strong_branching_keeps_the_split_whose_children_sum_least():
    """Of two candidate splits, the one whose children's bounds sum least is kept, even where its worse child is
    the worse of the two (best-first splits that child next); an empty child counts as 0."""
    from certify.bounds.bab import Node, _split_score

    def kids(*bounds):
        out = []
        for b in bounds:
            n = Node(([Fraction(0)], [Fraction(1)]), {})
            n.bound = None if b is None else Fraction(b)
            out.append(n)
        return out

    options = [("even", kids("1/2", "1/2")), ("uneven", kids("11/20", "3/10"))]
    assert min(options, key=lambda o: _split_score(o[1]))[0] == "uneven"
    assert min([("a", kids("1/2", "1/2")), ("b", kids("1/2", None))], key=lambda o: _split_score(o[1]))[0] == "b"
    # equal sums: the smaller worse child
    assert min([("a", kids("3/5", "2/5")), ("b", kids("1/2", "1/2"))], key=lambda o: _split_score(o[1]))[0] == "b"


@pytest.fixture(scope="module")
def inherited_tree(tmp_path_factory):
    """tiny_prune at tolerance 21/20 by input splits with CROWN leaves: the root's hidden-layer steps are
    in the certificate, and each region's linear steps bound only the neurons the root leaves unstable."""
    spec, path, p, _ = _certified_tree(tmp_path_factory.mktemp("bab-inherited"), "tiny_prune.yaml", "../models/",
                                       ("tolerance: 3", 'tolerance: "21/20"'), "crown")
    return spec, path, json.loads(path.read_text()), len(p.net.weights), p.net.widths


def _certified_tree(d, name: str, prefix: str, tolerance: tuple, method: str):
    """A shipped spec (its `prefix` paths made absolute, its tolerance changed) bounded by branch and bound on
    `method` leaves; the certificate written to d/t.cert.json and CERTIFIED. (spec, certificate, problem, result)."""
    from certify.bounds.bab import branch_and_bound
    from certify.engine import attained_lower, prepare, write_and_check

    spec = d / "spec.yaml"
    spec.write_text((SPECS / name).read_text().replace(prefix, str(ROOT / prefix.strip("./")) + "/").replace(*tolerance))
    p = prepare(spec, d / "c.cert.json")
    witness, lower = attained_lower(p)
    r = branch_and_bound(p.net, p.joint, p.box, method, p.spec.property.tolerance, time_budget=120)
    path = d / "t.cert.json"
    result = write_and_check(p, "bab", r.bound, {"tree": r.tree}, witness, lower, {}, path, jobs=1)
    assert result.verdict is Verdict.CERTIFIED, result.reason
    return spec, path, p, r


def _nodes(node):
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack += n.get("children", [])


def _sparse_steps(cert):
    return [s for n in _nodes(cert["tree"]) if "children" not in n for s in n["steps"] if "neurons" in s]


def test_regions_inherit_the_roots_bounds_and_bound_only_its_unstable_neurons(inherited_tree):
    spec, path, cert, n, widths = inherited_tree
    root = cert["tree"]
    assert "children" in root and {s["layer"] for s in root["steps"]} == set(range(1, n))  # hidden layers, checked once
    sparse = _sparse_steps(cert)
    assert {s["kind"] for s in sparse} == {"linear", "relu_relaxation"}
    assert all(len(v) == len(s["neurons"]) for s in sparse for key, v in s.items() if key not in ("kind", "layer", "neurons"))
    assert any(len(s["neurons"]) < widths[s["layer"]] for s in sparse)  # fewer rows than the layer has
    root_bounds: dict = {}
    for s in root["steps"]:
        if s["kind"] in ("interval", "linear"):
            lo, up = [Fraction(v) for v in s["lower"]], [Fraction(v) for v in s["upper"]]
            old = root_bounds.get(s["layer"], (lo, up))
            root_bounds[s["layer"]] = ([max(a, b) for a, b in zip(lo, old[0])], [min(a, b) for a, b in zip(up, old[1])])
    for s in sparse:  # exactly the neurons the root left unstable
        assert s["neurons"] == [i for i, (l, u) in enumerate(zip(*root_bounds[s["layer"]])) if l < 0 < u]


def _tampered(tmp_path, spec, cert, change) -> str:
    bad = copy.deepcopy(cert)
    change(bad)
    path = tmp_path / "bad.cert.json"
    path.write_text(json.dumps(bad))
    result = check_certificate(spec, path)
    assert result.verdict is Verdict.REJECTED
    return result.reason


def test_a_sparse_linear_step_is_checked_like_a_whole_one(inherited_tree, tmp_path):
    spec, _, cert, _, _ = inherited_tree

    def first(bad, kind="linear"):
        return next(s for s in _sparse_steps(bad) if s["neurons"] and s["kind"] == kind)

    def raise_lower(bad):  # a listed neuron's claimed lower bound above what back-substitution derives
        s = first(bad)
        t = next(t for t, (l, u) in enumerate(zip(s["lower"], s["upper"])) if l is not None and u is not None)
        s["lower"][t] = s["upper"][t]

    assert "claimed lower bound" in _tampered(tmp_path, spec, cert, raise_lower)

    def shuffle(bad):
        s = first(bad)
        s["neurons"] = s["neurons"][::-1] if len(s["neurons"]) > 1 else [-1]

    assert "neurons must be increasing neuron indices" in _tampered(tmp_path, spec, cert, shuffle)

    def orphan(bad):  # without the root's steps, a region's layer has no verified bounds to keep
        bad["tree"]["steps"] = []

    assert "neurons must be increasing neuron indices of a layer with verified" in _tampered(tmp_path, spec, cert, orphan)

    def longer(bad):  # one more claim than listed neurons
        s = first(bad)
        s["lower"].append(s["lower"][0])

    assert "lower must be a list of" in _tampered(tmp_path, spec, cert, longer)

    def flat_line(bad):  # an unstable neuron's upper line below relu
        s = first(bad, "relu_relaxation")
        s["upper_slope"][0], s["upper_intercept"][0] = "0", "0"

    assert "a line is not below/above relu" in _tampered(tmp_path, spec, cert, flat_line)

    def root_without_relu(bad):  # the root's lines of its last hidden layer (which it does not use itself) gone:
        # a region's sparse lines of that layer have nothing to keep
        last = max(s["layer"] for s in bad["tree"]["steps"])
        bad["tree"]["steps"] = [s for s in bad["tree"]["steps"] if (s["kind"], s["layer"]) != ("relu_relaxation", last)]

    assert "neurons must be increasing neuron indices of a layer with verified lines" in _tampered(tmp_path, spec, cert, root_without_relu)


def test_merged_relu_lines_equal_a_whole_step(inherited_tree, tmp_path):
    """A leaf whose sparse relu_relaxation steps are expanded to whole ones (the root's lines for the
    neurons left out) is accepted with the same verdict and bound."""
    spec, path, cert, _, _ = inherited_tree
    root = {s["layer"]: s for s in cert["tree"]["steps"] if s["kind"] == "relu_relaxation"}
    whole = copy.deepcopy(cert)
    for node in _nodes(whole["tree"]):
        if "children" in node:
            continue
        for s in node["steps"]:
            if s["kind"] == "relu_relaxation" and "neurons" in s:
                for key in ("lower_slope", "lower_intercept", "upper_slope", "upper_intercept"):
                    line = list(root[s["layer"]][key])
                    for i, v in zip(s["neurons"], s[key]):
                        line[i] = v
                    s[key] = line
                del s["neurons"]
    out = tmp_path / "whole.cert.json"
    out.write_text(json.dumps(whole))
    a, b = check_certificate(spec, path), check_certificate(spec, out)
    assert a.verdict is b.verdict is Verdict.CERTIFIED and a.bound == b.bound


def test_intercepts_rounded_down_stay_on_a_coarse_grid():
    """`_down` moves below the exact value and, for tiny results, to a multiple of 2^-100: an intercept
    that is 0 in exact arithmetic used to come out as -5e-324, and the checker then scaled every
    intercept of its layer to a denominator of 2^1074."""
    from certify.bounds.driver import GRID, _down

    v = np.array([0.0, 1e-320, -1e-300, 2.0 ** -60, -3.5, 0.1, 1e300, -1e308])
    err = np.array([0.0, 0.0, 1e-310, 0.0, 1e-16, 0.0, 1e284, 0.0])
    got = _down(v, err)
    for d, x, e in zip(got, v, err):
        assert Fraction(float(d)) < Fraction(float(x)) - Fraction(float(e))  # strictly below the exact v - err
        assert Fraction(float(d)).denominator <= 2 ** 100 or abs(d) >= 2.0 ** -48
    assert all(np.isfinite(got)) and got[0] == -GRID


def test_an_inheriting_tree_splits_a_relu_on_a_point_box(tmp_path):
    """A point box where a neuron's pre-activation is exactly 0, at tolerance 0: padding makes the neuron look unstable,
    so the float bound is a hair above 0. A tree inside the root's steps (CROWN and alpha leaves) has no input to split:
    it splits that ReLU, the root keeping its steps (layer 1's lines, which the children's sparse steps need), and
    proves exactly 0. (History: a ReLU split there once dropped the root's steps, REJECTED: soundness campaign seed
    2028, case 39; then such trees stopped at the root, UNKNOWN; tests/test_relu_in_root.py has more.)"""
    from certify.bounds.bab import branch_and_bound
    from certify.engine import attained_lower, prepare, write_and_check
    from certify.model import save_model

    ws = [np.array([[1.0, -1.0], [1.0, 1.0]]), np.array([[1.0, 1.0]])]
    sha = save_model(tmp_path / "m.npz", ws, [np.zeros(2), np.zeros(1)])
    spec = tmp_path / "spec.yaml"
    spec.write_text(f'version: 1\nmodel: {{path: m.npz, sha256: "{sha}"}}\ninput:\n  box: {{lower: "1/2", upper: "1/2"}}\n'
                    "explanation:\n  - prune: {layer: 1, keep: [1], fill: zero}\nproperty: {deviation: linf, tolerance: 0}\n")
    p = prepare(spec, tmp_path / "c.cert.json")
    witness, lower = attained_lower(p)
    for method in ("crown", "alpha"):
        r = branch_and_bound(p.net, p.joint, p.box, method, p.spec.property.tolerance, time_budget=30)
        assert (r.tree.get("split"), r.tree.get("layer"), r.tree.get("neuron"), r.leaves) == ("relu", 1, 0, 2), r.tree
        assert any(s["kind"] == "relu_relaxation" and s["layer"] == 1 for s in r.tree["steps"])  # the root keeps its steps
        assert all("neurons" in s for c in r.tree["children"] for s in c["steps"] if s["kind"] == "relu_relaxation")
        result = write_and_check(p, "bab", r.bound, {"tree": r.tree}, witness, lower, {}, tmp_path / "p.cert.json", jobs=1)
        assert result.verdict is Verdict.CERTIFIED and result.bound == 0, (method, result.verdict, result.reason)


def test_shared_layer_relus_are_split_first_on_a_wide_box(tmp_path):
    """tiny_prune on its box leaves every neuron of the shared layer 1 (f's and g's alike) unstable:
    branch and bound splits those ReLUs before any other, an input only in a region whose ReLUs are all split or
    stable (multipliers on a layer's own splits make them stable sooner), and the checker accepts the tree. With the
    rule off, the same run splits inputs."""
    from certify.bounds import bab
    from certify.engine import attained_lower, prepare, write_and_check

    spec = shipped_copy(tmp_path, tolerance="1/100")
    p = prepare(spec, tmp_path / "c.cert.json")
    assert p.shared == 1
    root = bab.Node(p.box, {})
    root.set_proposal(bab.propose(p.net, p.joint, p.box, "alpha"))
    unstable = [i for i, (l, u) in enumerate(zip(*root.proposal.claims[0])) if l < 0 < u]
    assert len(unstable) >= bab.SHARED_FIRST * 8
    split = bab.shared_split(p.net, root)
    assert split["layer"] == 1 and split["neuron"] in unstable
    witness, lower = attained_lower(p)
    inputs = []  # the regions split on an input: every ReLU of theirs must be split or stable (choose_split's fallback)
    children = bab._children

    def record(node, split):
        if split["split"] == "input":
            inputs.append(node)
        return children(node, split)

    try:
        bab._children = record
        r = bab.branch_and_bound(p.net, p.joint, p.box, "alpha", p.spec.property.tolerance, max_leaves=40, time_budget=120)
    finally:
        bab._children = children
    for node in inputs:
        assert not [(j, i) for j, (l, u) in enumerate(node.proposal.claims, start=1) for i in np.flatnonzero((l < 0) & (u > 0))
                    if (j, int(i)) not in node.assume]
    paths, stack = [], [(r.tree, [])]  # the ReLU split layers along each root-to-leaf path, up to its first input split
    while stack:
        n, path = stack.pop()
        if "children" not in n or n["split"] == "input":
            paths.append(path)
            continue
        stack += [(c, path + [n["layer"]]) for c in n["children"]]
    assert r.splits >= 3 and paths[0] and all(p[0] == 1 for p in paths if p)
    assert all(p == sorted(p) for p in paths)  # a layer-2 split only once layer 1 has no unstable neuron left
    result = write_and_check(p, "bab", r.bound, {"tree": r.tree}, witness, lower, {}, tmp_path / "s.cert.json", jobs=1)
    assert result.verdict is not Verdict.REJECTED, result.check.reason
    off = bab.SHARED_FIRST
    try:
        bab.SHARED_FIRST = 2.0
        r2 = bab.branch_and_bound(p.net, p.joint, p.box, "alpha", p.spec.property.tolerance, max_leaves=8, time_budget=120)
    finally:
        bab.SHARED_FIRST = off
    assert r2.tree["split"] == "input"


def _alpha_problem(seed: int = 3):
    from certify.bounds.driver import propose
    from certify.bounds.network import from_exact

    rng = np.random.default_rng(seed)
    layers = _layers(rng, [4, 8, 8, 3])
    net = from_exact(layers)
    box = ([Fraction(-1)] * 4, [Fraction(1)] * 4)
    return net, layers, box, propose(net, layers, box, "alpha")


def test_alpha_warm_start_resumes_from_the_parent():
    """A warm-started optimisation with no step returns its starting point: the parent's slopes give
    the parent's bounds again on the parent's region, and each split's multiplier is carried over by
    (layer, neuron), not by column (a child's new split sorts between them and starts at 0)."""
    from certify.bounds.alpha import optimise_alpha
    from certify.bounds.network import box_floats

    net, _, box, root = _alpha_problem()
    lo, up = box_floats(*box)
    claims = [(np.asarray(a), np.asarray(b)) for a, b in root.claims]
    assert 3 in root.warm and 2 in root.warm
    alphas, betas, low, high = optimise_alpha(net, 3, list(root.relax), claims, lo, up, warm=root.warm[3])
    again = optimise_alpha(net, 3, list(root.relax), claims, lo, up, warm=(alphas, betas), iters=0)
    assert np.array_equal(again[2], low) and np.array_equal(again[3], high)
    for a, b in zip(again[0], alphas):
        assert np.array_equal(a, b)
    unstable = [i for i, (l, u) in enumerate(zip(*claims[0])) if l < 0 < u]
    assert len(unstable) >= 3
    i0, i1, i2 = unstable[:3]
    parent = {(1, i0): "active", (1, i2): "inactive"}
    _, pbetas, *_ = optimise_alpha(net, 3, list(root.relax), claims, lo, up, assume=parent)
    assert any(np.any(v > 0) for _, _, v in pbetas), "the parent's splits got no multiplier"
    child = {**parent, (1, i1): "active"}
    _, cbetas, *_ = optimise_alpha(net, 3, list(root.relax), claims, lo, up, assume=child, warm=(alphas, pbetas), iters=0)
    got = {(j, i): v for j, i, v in cbetas}
    for j, i, v in pbetas:
        assert np.array_equal(got[(j, i)], v), (j, i)
    assert not np.any(got[(1, i1)])


def test_warm_started_leaves_are_sound_on_sub_boxes():
    """Children of an input split, started from their parent's optimised slopes with a few steps
    (branch and bound's INPUT_ALPHA_ITERS): every sampled deviation inside the child lies within its
    bounds."""
    from certify.bounds import bab
    from certify.bounds.driver import propose

    net, layers, box, root = _alpha_problem()
    rng = np.random.default_rng(0)
    for d in range(4):
        for half in (0, 1):
            lo, up = list(box[0]), list(box[1])
            (up if half == 0 else lo)[d] = Fraction(0)
            p = propose(net, layers, (lo, up), "alpha", exact_output=False, alpha_iters=bab.INPUT_ALPHA_ITERS, warm=root.warm)
            x = rng.uniform([float(v) for v in lo], [float(v) for v in up], (200, 4))
            y = np.asarray(net(x))
            assert np.all(y >= np.array([float(v) for v in p.output_lower]) - 1e-9), (d, half)
            assert np.all(y <= np.array([float(v) for v in p.output_upper]) + 1e-9), (d, half)


@pytest.fixture(scope="module")
def mnist_rows_tree(tmp_path_factory):
    """The VeryDiff MNIST pair at tolerance 7/5 by input splits with CROWN leaves: at the root some output
    rows of ten are above 7/5 (CROWN: up to 1.63), so the root's output steps go into the certificate and
    every leaf bounds that output neuron only."""
    spec, path, p, r = _certified_tree(tmp_path_factory.mktemp("bab-rows"), "verydiff_mnist.yaml", "../tests/",
                                       ("tolerance: 4", 'tolerance: "7/5"'), "alpha")
    assert r.splits >= 2
    return spec, json.loads(path.read_text()), len(p.net.weights)


def _output_bounds(steps, n):
    lo = up = None
    for s in steps:
        if s["layer"] == n and s["kind"] in ("interval", "linear") and "neurons" not in s:
            a, b = [Fraction(v) for v in s["lower"]], [Fraction(v) for v in s["upper"]]
            lo, up = (a, b) if lo is None else ([max(x, y) for x, y in zip(lo, a)], [min(x, y) for x, y in zip(up, b)])
    return lo, up


def test_leaves_bound_only_the_output_rows_the_root_leaves_above_the_target(mnist_rows_tree):
    spec, cert, n = mnist_rows_tree
    root = cert["tree"]
    lo, up = _output_bounds(root["steps"], n)  # the root's output layer, checked once
    assert lo is not None
    above = [i for i, (l, u) in enumerate(zip(lo, up)) if max(u, -l) > Fraction(7, 5)]
    assert 0 < len(above) < len(lo)
    leaves = [node for node in _nodes(root) if "children" not in node]
    for leaf in leaves:
        out = [s for s in leaf["steps"] if s["layer"] == n]
        assert [(s["kind"], s["neurons"]) for s in out] == [("linear", above)]


def test_a_leafs_output_rows_are_checked(mnist_rows_tree, tmp_path):
    """Tightening a leaf's one output row, or dropping the root's output steps it inherits, is rejected."""
    spec, cert, n = mnist_rows_tree

    def tighter(bad):
        leaf = next(node for node in _nodes(bad["tree"]) if "children" not in node)
        step = next(s for s in leaf["steps"] if s["layer"] == n)
        step["upper"] = [str(Fraction(v) - Fraction(1, 10)) for v in step["upper"]]
    assert "is below the derived" in _tampered(tmp_path, spec, cert, tighter)

    def orphan(bad):
        bad["tree"]["steps"] = [s for s in bad["tree"]["steps"] if s["layer"] != n]
    assert "neurons must be increasing neuron indices of a layer with verified bounds" in _tampered(tmp_path, spec, cert, orphan)


def test_difference_steps_leave_out_pairs_of_stable_neurons():
    """A pair whose two neurons are both stable (either phase) is exact neuron by neuron: no row, no pair."""
    from certify.bounds.driver import _difference_step
    from certify.bounds.network import FloatNet

    rng = np.random.default_rng(3)
    w = rng.normal(0, 1, (8, 3))
    net = FloatNet((w, rng.normal(0, 1, (2, 8))), (np.zeros(8), np.zeros(2)), pairs={1: (np.arange(4), 4 + np.arange(4))})
    lo = np.array([1.0, 1.0, -2.0, -1.0, 0.5, -3.0, -1.0, -1.0])  # pairs: (0, 4) active/active, (1, 5) active/inactive,
    up = np.array([2.0, 2.0, 1.0, 1.0, 3.0, -0.5, 2.0, 1.0])  # (2, 6) and (3, 7) unstable
    step, d = _difference_step(net, 1, [], {}, lo, up, -np.ones(3), np.ones(3), fast=True)
    assert {tuple(p) for p in step["pairs"]} <= {(2, 6), (3, 7)}
    assert set(d.a.tolist()) <= {2, 3}
