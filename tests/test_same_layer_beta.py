"""Split multipliers on the bounded layer's own ReLU splits (beta with layer == k; docs/soundness.md O6b):
the checker's bounds hold at every sampled point of the region, a branch-and-bound tree that uses them is
accepted, and tampered multipliers are rejected."""

from __future__ import annotations

import copy
import json
from fractions import Fraction

import numpy as np
import pytest

from certify.bounds import alpha, bab
from certify.bounds.driver import exact_relaxation
from certify.bounds.linear import Relaxation, backsubstitute
from certify.bounds.network import from_exact
from certify.checker import check, exact
from certify.checker.check import Verdict, check_certificate

from .conftest import shipped_copy


def _layers(rng, widths):
    return [(exact.qmat(rng.normal(0, 1, (b, a)).tolist()), exact.qvec(rng.normal(0, 0.3, b).tolist()))
            for a, b in zip(widths[:-1], widths[1:])]


def _forward(layers, x):
    """Pre-activations of every layer at the points x (float64)."""
    out, h = [], x
    for k, ((w, wd), (b, bd)) in enumerate(layers):
        z = h @ (np.array(w, dtype=float) / wd).T + np.array(b, dtype=float) / bd
        out.append(z)
        h = np.maximum(z, 0)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_same_layer_multipliers_bound_every_point_of_the_region(seed):
    """Random 5-6-6-2 nets, random splits on layers 1 and 2, random multipliers >= 0 on splits of layers 1..k:
    the checker's exact bounds of layer k contain z_k at 20,000 random points of the box that satisfy the splits
    (whether the multipliers tighten them is `test_the_multipliers_are_what_makes_the_claims_hold`)."""
    rng = np.random.default_rng(seed)
    layers = _layers(rng, [5, 6, 6, 2])
    box = ([Fraction(-1)] * 5, [Fraction(1)] * 5)
    x = rng.uniform(-1, 1, (20000, 5))
    zs = _forward(layers, x)
    assume = {(j, int(i)): ("inactive" if rng.random() < 0.5 else "active") for j in (1, 2) for i in rng.choice(6, 2, replace=False)}
    inside = np.ones(len(x), bool)
    for (j, i), phase in assume.items():
        inside &= (zs[j - 1][:, i] <= 0) if phase == "inactive" else (zs[j - 1][:, i] >= 0)
    state = check._State(layers, box, {}, {}, assume, mats=exact.weight_mats(layers))
    lo1, up1 = exact.interval_dense(layers[0], *box)
    state.bounds[1] = (lo1, up1)
    state.relax[1] = tuple(exact.qvec(map(float, v)) for v in
                           (lambda r: (r.lower_slope, r.lower_intercept, r.upper_slope, r.upper_intercept))(
                               exact_relaxation([float(v) - 1e-9 for v in lo1], [float(v) + 1e-9 for v in up1])))
    for k in (1, 2):
        entries = [{"layer": j, "neuron": i, "values": [str(Fraction(int(rng.integers(0, 5)), 4)) for _ in range(12)]}
                   for (j, i) in sorted(assume) if j <= k]
        beta = check._beta({"beta": entries}, state, k, 6, "test")
        lower, upper = check._bounds_of(None, state, k, (None, None), beta)
        if inside.any():
            z = zs[k - 1][inside]
            assert np.all(z >= np.array([float(v) for v in lower]) - 1e-9), (seed, k)
            assert np.all(z <= np.array([float(v) for v in upper]) + 1e-9), (seed, k)
        assert inside.sum() > 20, seed  # the points do test the bounds
        # the same number as the engine's float back-substitution with these multipliers (a multiplier scaled wrongly
        # is still sound, only looser: this is what catches it)
        terms: dict = {}
        for e in entries:
            t = terms.setdefault(e["layer"], np.zeros((12, 6)))
            t[:, e["neuron"]] += (1.0 if assume[(e["layer"], e["neuron"])] == "inactive" else -1.0) * np.array([float(Fraction(v)) for v in e["values"]])
        net = from_exact(layers)
        lines = Relaxation(*(np.array([float(Fraction(x, d)) for x in v]) for v, d in state.relax[1]))
        both = backsubstitute(net, k, np.concatenate([np.eye(6), -np.eye(6)]), [lines][: k - 1], -np.ones(5), np.ones(5), split_terms=terms)
        assert np.allclose(both, [float(v) for v in lower] + [-float(v) for v in upper], rtol=1e-9, atol=1e-9), (seed, k)


def test_same_layer_rows_of_a_sparse_step_are_the_whole_rows():
    """With `neurons`, a multiplier on layer k's own split gives the listed rows the same bounds as the whole step's."""
    rng = np.random.default_rng(7)
    layers = _layers(rng, [4, 5, 2])
    box = ([Fraction(-1)] * 4, [Fraction(1)] * 4)
    state = check._State(layers, box, {}, {}, {(1, 2): "inactive"}, mats=exact.weight_mats(layers))
    values = [str(Fraction(int(v), 8)) for v in rng.integers(0, 9, 10)]
    whole = check._bounds_of(None, state, 1, (None, None), check._beta({"beta": [{"layer": 1, "neuron": 2, "values": values}]}, state, 1, 5, "t"))
    ns = [0, 3]
    part = [values[i] for i in ns] + [values[5 + i] for i in ns]
    sparse = check._bounds_of([{i: 1} for i in ns], state, 1, (None, None),
                              check._beta({"beta": [{"layer": 1, "neuron": 2, "values": part}]}, state, 1, 2, "t"))
    assert sparse == ([whole[0][i] for i in ns], [whole[1][i] for i in ns])


@pytest.fixture(scope="module")
def tiny_prune(tmp_path_factory):
    """tiny_prune on its box at tolerance 1/100, which only branch and bound reaches: (spec, problem)."""
    from certify.engine import prepare

    tmp = tmp_path_factory.mktemp("same_layer")
    spec = shipped_copy(tmp, tolerance="1/100")
    return spec, prepare(spec, tmp / "c.cert.json")


def _bab(p, same_layer: bool, leaves: int):
    """Branch and bound on alpha leaves with alpha.SAME_LAYER set to `same_layer` (restored after)."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(alpha, "SAME_LAYER", same_layer)
        return bab.branch_and_bound(p.net, p.joint, p.box, "alpha", p.spec.property.tolerance, max_leaves=leaves, time_budget=120)


@pytest.fixture(scope="module")
def shared_tree(tiny_prune):
    """The checked tree: alpha leaves with ReLU splits on the shared layer 1 (see test_bab)."""
    from certify.engine import attained_lower, write_and_check

    spec, p = tiny_prune
    witness, lower = attained_lower(p)
    r = _bab(p, True, 24)
    path = spec.parent / "s.cert.json"
    result = write_and_check(p, "bab", r.bound, {"tree": r.tree}, witness, lower, {}, path, jobs=1)
    return spec, path, json.loads(path.read_text()), result, p


def _same_layer_steps(cert):
    stack, out = [cert["tree"]], []
    while stack:
        node = stack.pop()
        out += [s for s in node.get("steps", []) if any(e["layer"] == s["layer"] for e in s.get("beta", []))]
        stack += node.get("children", [])
    return out


def test_a_tree_with_same_layer_multipliers_is_accepted(shared_tree):
    spec, path, cert, result, _ = shared_tree
    assert result.verdict is not Verdict.REJECTED, result.reason
    steps = _same_layer_steps(cert)
    assert any(s["layer"] == 1 and s["kind"] == "linear" for s in steps), "no layer-1 linear step with its own splits' multipliers"


def _check(spec, path, cert, name):
    out = path.parent / f"{name}.cert.json"
    out.write_text(json.dumps(cert))
    return check_certificate(spec, out, jobs=1)


def test_the_multipliers_are_what_makes_the_claims_hold(shared_tree):
    """Dropping a layer's own-split multipliers from a step whose claims they tightened is rejected: the checker uses them."""
    spec, path, cert, _, _ = shared_tree
    rejected = 0
    for t in range(len(_same_layer_steps(cert))):
        tampered = copy.deepcopy(cert)
        step = _same_layer_steps(tampered)[t]
        step["beta"] = [e for e in step["beta"] if e["layer"] != step["layer"]]
        rejected += _check(spec, path, tampered, f"dropped-{t}").verdict is Verdict.REJECTED
    assert rejected


@pytest.mark.parametrize("how", ["negative", "above", "unsplit"])
def test_tampered_same_layer_multipliers_are_rejected(shared_tree, how):
    spec, path, cert, _, p = shared_tree
    tampered = copy.deepcopy(cert)
    step = _same_layer_steps(tampered)[0]
    entry = next(e for e in step["beta"] if e["layer"] == step["layer"])
    if how == "negative":
        entry["values"][0] = "-1/4"
    elif how == "above":  # a multiplier on a layer above the step's
        entry["layer"] = step["layer"] + 1
    else:
        split = {(e["layer"], e["neuron"]) for e in step["beta"]}
        entry["neuron"] = next(i for i in range(len(p.joint[step["layer"] - 1][1][0])) if (step["layer"], i) not in split)
    result = _check(spec, path, tampered, f"tampered-{how}")
    assert result.verdict is Verdict.REJECTED and "beta" in result.reason, result.reason


def test_the_rule_off_gives_no_same_layer_multipliers(tiny_prune):
    _, p = tiny_prune
    r = _bab(p, False, 8)
    assert not _same_layer_steps({"tree": json.loads(json.dumps(r.tree, default=str))})
    assert _same_layer_steps({"tree": json.loads(json.dumps(_bab(p, True, 8).tree, default=str))}), "the same run with the rule on"
