"""Graph models, bounding methods (issue 16): alpha-CROWN's free slopes (its hand-derived gradient, never
looser than CROWN, checked by the unchanged checker), branch and bound over input splits (a tree the
checker verifies leaf by leaf; tampered trees REJECTED), `certify check --method bab` on a graph spec,
and a small run of the residual soundness campaign."""

import copy
import json
import sys
from fractions import Fraction

import numpy as np
import pytest

from certify.bounds import graph as gb
from certify.checker import Verdict, check_certificate
from certify.cli import main
from certify.engine_graph import bound_graph, prepare_graph, write_and_check_graph

from .conftest import ROOT
from .test_graph import random_graph

sys.path.insert(0, str(ROOT / "benchmarks"))
import soundness  # noqa: E402


def _sampled(p, n=3000, seed=0) -> float:
    lo, up = (np.array([float(v) for v in b]) for b in p.box)
    xs = np.vstack([lo + (up - lo) * np.random.default_rng(seed).uniform(size=(n, lo.size)), lo, up])
    return float(np.max(soundness._batch(gb.floats(p.joint), xs)))


def test_alpha_gradient_is_the_derivative_of_the_bound(tmp_path):
    """The gradient from the relaxation's attaining point (Alpha._bounds) against central differences."""
    p = prepare_graph(random_graph(tmp_path, 1, "gelu"), tmp_path / "a.cert.json")
    st = gb.crown_state(p.joint, p.box)
    a = gb.Alpha(p.joint, per_row=True)
    fdata = {n.name: gb.ENGINE[n.op].free.data(n, [st.bounds[s] for s in n.inputs], st.relax[n.name]) for n in a.free}
    rng = np.random.default_rng(0)
    t = {k: [np.clip(np.broadcast_to(v, (len(a.lam), len(v))) + rng.uniform(-0.2, 0.2, (len(a.lam), len(v))), 0, 1)
             for v in d["t0"]] for k, d in fdata.items()}
    b, grads = a._bounds(st, st.relax, fdata, t)
    checked = 0
    for name in grads:
        for side in (0, 1):
            g = grads[name][side]
            r, e = np.unravel_index(np.argmax(np.abs(g)), g.shape)
            if abs(g[r, e]) < 1e-6 or not 0.01 < t[name][side][r, e] < 0.99:
                continue
            h, moved = 1e-6, []
            for sign in (1, -1):
                t2 = {k: [v.copy() for v in vs] for k, vs in t.items()}
                t2[name][side][r, e] += sign * h
                moved.append(a._bounds(st, st.relax, fdata, t2)[0][r])
            fd = (moved[0] - moved[1]) / (2 * h)
            assert abs(fd - g[r, e]) <= 1e-4 * max(1.0, abs(fd)), (name, side, fd, g[r, e])
            checked += 1
    assert checked >= 3


@pytest.mark.parametrize("op", ["gelu", "tanh", "relu", "rsqrt", "exp"])
def test_alpha_is_checked_and_never_looser_than_crown(op, tmp_path):
    spec = random_graph(tmp_path, 2, op)
    p = prepare_graph(spec, tmp_path / "a.cert.json")
    crown = gb.crown_state(p.joint, p.box).bound
    bound, body, notes = bound_graph(p, "alpha", time_budget=10)
    assert float(bound) <= crown * (1 + 1e-9) + 1e-12, (op, float(bound), crown)
    assert any(s["kind"] == "relax" for s in body["steps"])
    r = write_and_check_graph(p, "alpha", bound, body, None, Fraction(0), notes)
    assert r.verdict is Verdict.CERTIFIED and r.bound == bound, r.reason
    assert _sampled(p) <= float(bound) * (1 + 1e-9) + 1e-9


@pytest.fixture(scope="module")
def tree_cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("bab")
    spec = random_graph(d, 5, "gelu")
    p = prepare_graph(spec, d / "t.cert.json")
    root = gb.crown_state(p.joint, p.box).bound
    r = gb.branch_and_bound(p.joint, p.box, target=0.0, time_budget=4.0, max_leaves=12)
    result = write_and_check_graph(p, "bab", Fraction(r.bound), {"tree": r.tree}, None, Fraction(0), {})
    return spec, p, root, r, result, json.loads((d / "t.cert.json").read_text())


def test_bab_tree_is_checked_and_tighter_than_its_root(tree_cert):
    spec, p, root, r, result, cert = tree_cert
    assert result.verdict is Verdict.CERTIFIED, result.reason
    assert r.leaves > 2 and "split" in cert["tree"] and r.bound < root
    assert _sampled(p) <= r.bound * (1 + 1e-9) + 1e-9


def _leaf(t):
    return t if "steps" in t else _leaf(t["children"][0])


TREE_MUTATIONS = {
    "split_point_outside_the_box": lambda c: c["tree"].__setitem__("at", "1000"),
    "dimension_out_of_range": lambda c: c["tree"].__setitem__("dim", 99),
    "one_child": lambda c: c["tree"].__setitem__("children", c["tree"]["children"][:1]),
    "relu_split": lambda c: c["tree"].__setitem__("split", "relu"),
    "split_with_steps": lambda c: c["tree"].__setitem__("steps", []),
    "leaf_goal_dropped": lambda c: _leaf(c["tree"]).__setitem__("steps", [s for s in _leaf(c["tree"])["steps"] if s["node"] != "d"]),
    "leaf_bound_tightened": lambda c: next(s for s in _leaf(c["tree"])["steps"] if s["node"] == "d" and s["via"] == "linear")[
        "upper"].__setitem__(0, str(Fraction(next(s for s in _leaf(c["tree"])["steps"] if s["node"] == "d" and s["via"] == "linear")
                                                 ["upper"][0]) - Fraction(1, 10**6))),
    "claim_below_the_leaves": lambda c: c["claim"].__setitem__("bound", str(Fraction(c["claim"]["bound"]) * Fraction(9, 10))),
    "tree_and_steps": lambda c: c.__setitem__("steps", []),
}


@pytest.mark.parametrize("name", sorted(TREE_MUTATIONS))
def test_tampered_trees_are_rejected(tree_cert, name, tmp_path):
    spec, _, _, _, _, cert = tree_cert
    tampered = copy.deepcopy(cert)
    TREE_MUTATIONS[name](tampered)
    assert tampered != cert
    out = tmp_path / "t.cert.json"
    out.write_text(json.dumps(tampered))
    assert check_certificate(spec, out).verdict is Verdict.REJECTED, f"{name} was accepted"


def test_cli_bab_and_alpha_on_a_graph_spec(tmp_path, capsys):
    spec = random_graph(tmp_path, 6, "sigmoid")
    for method in ("alpha", "bab"):
        out = tmp_path / f"{method}.cert.json"
        assert main(["check", str(spec), "--method", method, "--out", str(out)]) == 0
        cert = json.loads(out.read_text())
        assert cert["engine"]["method"] == method and ("tree" in cert) == (method == "bab")
        assert main(["verify", str(spec), str(out)]) == 0
    assert "no graph version" not in capsys.readouterr().out


def test_residual_campaign_small():
    """benchmarks/soundness.py --family residual: every case sound, no wrong CERTIFIED, none rejected."""
    summary, records = soundness.run(24, seed=7, methods=soundness.RESIDUAL_METHODS, family="residual", chunk=24)
    bad = [(r["case"], r["method"], r["verdict"].value, r["reason"]) for r in records
           if r["verdict"].value == "REJECTED" or (r["bound"] is not None and r["bound"] < r["exact"])]
    assert summary["unsound"] == summary["wrong_certified"] == summary["rejected"] == 0, bad[:5]
    assert summary["verdicts"]["CERTIFIED"] > 0 and summary["verdicts"]["VIOLATED"] > 0, summary


def test_float64_overflow_is_one_line_bad_input(tmp_path, capsys):
    """exp of a range beyond ~709 overflows the engine's float64 bounds: exit 2 naming the node, no certificate."""
    import hashlib

    from certify.model.graph import GraphBuilder

    b = GraphBuilder(1)
    h = b.unary("big", "exp", b.linear("wide", "x", [[1000.0], [1.0]]))
    b.save(tmp_path / "m.npz", b.linear("out", h, [[1.0, 1.0]]))
    sha = hashlib.sha256((tmp_path / "m.npz").read_bytes()).hexdigest()
    spec = tmp_path / "s.yaml"
    spec.write_text(f'version: 1\nmodel: {{path: m.npz, sha256: "{sha}"}}\ninput:\n  box: {{lower: [0], upper: [1]}}\n'
                    "explanation:\n  - ablate: {site: wide, indices: [1], fill: zero}\nproperty: {deviation: linf, tolerance: 1}\n")
    assert main(["check", str(spec), "--method", "crown", "--out", str(tmp_path / "c.cert.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'big'" in err[0] and "overflow" in err[0], err
    assert not (tmp_path / "c.cert.json").exists()
