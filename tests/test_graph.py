"""Graph models (issue 16's operator table): every op has a checker row and an engine row; CROWN over a
joint graph is sound against sampling on random residual graphs of every op; tampered graph
certificates are REJECTED; graph-specific bad input is one line, exit 2."""

import copy
import hashlib
import json
from fractions import Fraction

import numpy as np
import pytest

from certify.bounds.graph import ENGINE, crown, evaluate, floats
from certify.checker import Verdict
from certify.checker.graph import OPS, joint_graph, make_graph, Node, deviation_at
from certify.checker.model import read_model
from certify.checker.network import build_g, input_box
from certify.checker.spec import read_spec
from certify.cli import main
from certify.engine import run_check
from certify.model.graph import GraphBuilder

from .conftest import ROOT, assert_rejected, shipped_text

CURVE_INPUTS = {  # how a random graph feeds each curve a value inside its domain and a sane range
    "exp": lambda b, n, h: b.affine(f"{n}.in", h, 0.5, 0.0), "erf": None, "tanh": None, "sigmoid": None, "gelu": None,
    "square": None, "rsqrt": lambda b, n, h: b.affine(f"{n}.in", b.unary(f"{n}.sq", "square", h), 1.0, 0.5),
    "reciprocal": lambda b, n, h: b.affine(f"{n}.in", b.unary(f"{n}.sq", "square", h), 1.0, 1.0),
    "sqrt": lambda b, n, h: b.affine(f"{n}.in", b.unary(f"{n}.sq", "square", h), 1.0, 0.1),
}


def sha(p) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_every_op_has_a_checker_row_and_an_engine_row():
    assert set(OPS) == set(ENGINE), "an op with one side only: add its row to the other table"
    for name, op in OPS.items():
        assert op.arity in (1, 2) and all(callable(x) for x in (op.shape, op.evaluate, op.interval, op.back, op.prepare)), name
        row = ENGINE[name]
        assert all(callable(x) for x in (row.eval, row.jeval, row.interval, row.back)), name
        assert (op.relax is None) == (row.relax is None), f"{name}: linear on one side, nonlinear on the other"
    assert set(CURVE_INPUTS) | {"linear", "affine", "add", "sub", "mul", "relu", "jumprelu", "free", "softmax"} == set(OPS), "a new op needs a generator below"


def random_graph(tmp_path, seed: int, op: str):
    """A small residual graph around `op`: embed, LayerNorm, the op, a product, a residual add, relu, out."""
    rng = np.random.default_rng(seed)
    d = 4
    b = GraphBuilder(3)
    h = b.linear("embed", "x", rng.normal(size=(d, 3)), rng.normal(size=d) * 0.5)
    n = b.layernorm("ln", h, 1 + 0.2 * rng.normal(size=d), 0.2 * rng.normal(size=d))
    if op in CURVE_INPUTS:
        src = (CURVE_INPUTS[op] or (lambda b, name, h: h))(b, "op", n)
        y = b.unary("op", op, src)
    elif op in ("add", "sub", "mul"):
        y = b.binary("op", op, n, b.linear("other", h, rng.normal(size=(d, d)) * 0.5))
    elif op == "affine":
        y = b.affine("op", n, rng.normal(size=d), rng.normal(size=d))
    elif op == "jumprelu":
        y = b.jumprelu("op", n, np.abs(rng.normal(size=d)) * 0.5 - 0.1)
    elif op == "softmax":  # two groups of two (as an attention pattern's rows), scores scaled to a few units
        y = b.softmax("op", b.affine("op.in", n, 3.0, 0.0), [0, 0, 1, 1][:d] + [2] * (d - 4))
    elif op == "free":  # a free value in a box, added to the op's input (so that it still depends on x)
        y = b.add("op.sum", n, b.free("op", n, -np.abs(rng.normal(size=d)) * 0.3, np.abs(rng.normal(size=d)) * 0.3))
    else:
        y = b.unary("op", op, n) if op == "relu" else b.linear("op", n, rng.normal(size=(d, d)))
    r = b.add("res", h, b.linear("down", y, rng.normal(size=(d, d)) * 0.5))
    out = b.linear("out", b.unary("act", "relu", r), rng.normal(size=(2, d)))
    model = tmp_path / f"g{seed}.npz"
    b.save(model, out)
    m = 6
    sae = tmp_path / f"sae{seed}.npz"
    np.savez(sae, W_enc=rng.normal(size=(d, m)) * 0.5, b_enc=rng.normal(size=m) * 0.1, W_dec=rng.normal(size=(m, d)) * 0.5,
             b_dec=rng.normal(size=d) * 0.1)
    spec = tmp_path / f"s{seed}.yaml"
    spec.write_text(f"version: 1\nmodel: {{path: {model}, sha256: \"{sha(model)}\"}}\ninput:\n  box: {{lower: -0.3, upper: 0.3}}\n"
                    f"explanation:\n  - sae: {{site: res, path: {sae}, sha256: \"{sha(sae)}\", features: [0, 2, 3, 5]}}\n"
                    "property:\n  deviation: linf\n  tolerance: 1000\n")
    return spec


@pytest.mark.parametrize("op", sorted(OPS))
def test_crown_over_random_graphs_is_sound_and_checked(op, tmp_path):
    """For every op: the certified bound is accepted by the checker and no sampled input exceeds it."""
    for seed in range(2):
        spec_path = random_graph(tmp_path, seed, op)
        spec = read_spec(spec_path)
        f = read_model(spec.model.path, spec.model.sha256)
        joint = joint_graph(f, build_g(spec, f, None), None)
        box = input_box(spec, f)
        bound, steps = crown(joint, box)
        xs = np.random.default_rng(seed).uniform(-0.3, 0.3, size=(3000, 3))
        corners = np.array([[a, b, c] for a in (-0.3, 0.3) for b in (-0.3, 0.3) for c in (-0.3, 0.3)])
        worst = max(float(np.max(np.abs(evaluate(floats(joint), x)))) for x in np.concatenate([xs, corners]))
        assert worst <= bound * (1 + 1e-9) + 1e-9, f"{op} seed {seed}: sampled {worst} above CROWN's {bound}"
        o = run_check(spec_path, tmp_path / f"c{seed}.cert.json", "crown")
        assert o.verdict is not Verdict.REJECTED, (op, seed, o.check.reason)
        assert o.lower <= o.check.bound and Fraction(worst) <= o.check.bound * (1 + Fraction(1, 10**9))


@pytest.fixture(scope="module")
def graph_cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("graph")
    spec = random_graph(d, 7, "gelu")
    o = run_check(spec, d / "g.cert.json", "crown")
    assert o.verdict is not Verdict.REJECTED, o.check.reason
    return spec, d / "g.cert.json", json.loads((d / "g.cert.json").read_text())


def _step(c, kind, node=None, via=None):
    return next(s for s in c["steps"] if s["kind"] == kind and (node is None or s["node"] == node) and (via is None or s.get("via") == via))


def _shift(v, delta):
    return str(Fraction(v) + delta)


MUTATIONS = {
    "tighten_linear_bound": lambda c: _step(c, "bounds", "d", "linear")["upper"].__setitem__(0, _shift(
        _step(c, "bounds", "d", "linear")["upper"][0], Fraction(-1, 10**6))),
    "tighten_interval_bound": lambda c: _step(c, "bounds", "ln.centre", "interval")["lower"].__setitem__(0, _shift(
        _step(c, "bounds", "ln.centre", "interval")["lower"][0], Fraction(1, 10**6))),
    "gelu_line_raised": lambda c: _step(c, "relax", "op")["lower_intercept"].__setitem__(0, _shift(
        _step(c, "relax", "op")["lower_intercept"][0], Fraction(1, 10**4))),
    "rsqrt_line_lowered": lambda c: _step(c, "relax", "ln.rsqrt")["upper_intercept"].__setitem__(1, _shift(
        _step(c, "relax", "ln.rsqrt")["upper_intercept"][1], Fraction(-1, 10**4))),
    "mccormick_plane_raised": lambda c: _step(c, "relax", "ln.norm")["lower"][0].__setitem__(2, _shift(
        _step(c, "relax", "ln.norm")["lower"][0][2], Fraction(1, 10**4))),
    "relax_dropped": lambda c: c["steps"].remove(_step(c, "relax", "op")),
    "unknown_step": lambda c: c["steps"].insert(0, {"kind": "magic", "node": "op"}),
    "unknown_node": lambda c: _step(c, "bounds", "d", "linear").__setitem__("node", "nope"),
    "bound_below_verified": lambda c: c["claim"].__setitem__("bound", "0"),
    "witness_deviation_changed": lambda c: c["witness"].__setitem__("deviation", _shift(c["witness"]["deviation"], Fraction(1, 10**9))),
    "witness_outside": lambda c: c["witness"]["x"].__setitem__(0, "1"),
    "goal_dropped": lambda c: c.__setitem__("steps", [s for s in c["steps"] if s["node"] != "d"]),
    "via_unknown": lambda c: _step(c, "bounds", "d", "linear").__setitem__("via", "guess"),
    "relax_extra_key": lambda c: _step(c, "relax", "op").__setitem__("lower", []),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_tampered_graph_certificates_are_rejected(graph_cert, name, tmp_path):
    spec, _, cert = graph_cert
    tampered = copy.deepcopy(cert)
    MUTATIONS[name](tampered)
    assert tampered != cert
    assert_rejected(spec, tampered, tmp_path, name)


def test_graph_witness_is_a_proven_lower_bound(graph_cert):
    spec, path, cert = graph_cert
    s = read_spec(spec)
    f = read_model(s.model.path, s.model.sha256)
    joint = joint_graph(f, build_g(s, f, None), None)
    x = [Fraction(v) for v in cert["witness"]["x"]]
    dev = deviation_at(joint, x)
    assert dev == Fraction(cert["witness"]["deviation"])
    value = float(np.max(np.abs(evaluate(floats(joint), np.array([float(v) for v in x])))))
    assert abs(float(dev) - value) <= 1e-9 * max(1.0, value)


def _bad(tmp_path, capsys, text, key, *also):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    assert main(["check", str(p), "--out", str(tmp_path / "x.cert.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0] and "Traceback" not in err[0], err
    for a in also:
        assert a in err[0], err[0]
    assert not (tmp_path / "x.cert.json").exists()


def test_graph_bad_inputs_are_one_line(tmp_path, capsys):
    spec = random_graph(tmp_path, 3, "relu").read_text()
    _bad(tmp_path, capsys, spec.replace("site: res", "site: nowhere"), "explanation[0].sae.site", "nowhere", "res")
    _bad(tmp_path, capsys, spec.replace("features: [0, 2, 3, 5]", "features: [0, 9]"), "explanation[0].sae.features", "[9]")
    _bad(tmp_path, capsys, spec.replace("  tolerance: 1000", "  tolerance: 1000\n  semantics: float32"), "property.semantics",
         "graph ops", "gelu" if "gelu" in spec else "relu")
    _bad(tmp_path, capsys, spec.replace("  - sae:", "  - prune: {layer: 1, keep: [0]}\n  - sae:"), "explanation[0].prune",
         "dense/ReLU MLPs")
    mlp = shipped_text()
    sae = random_graph(tmp_path, 4, "relu").read_text().split("explanation:\n")[1].split("property:")[0]
    _bad(tmp_path, capsys, mlp.split("explanation:")[0] + "explanation:\n" + sae + "property:" + mlp.split("property:")[1],
         "explanation[0].sae", "graph models")
    jump = tmp_path / "jump.npz"
    rng = np.random.default_rng(0)
    np.savez(jump, W_enc=rng.normal(size=(4, 6)), b_enc=np.zeros(6), W_dec=rng.normal(size=(6, 4)), b_dec=np.zeros(4), log_threshold=np.ones(6))
    line = next(ln for ln in spec.splitlines() if "sae:" in ln)
    _bad(tmp_path, capsys, spec.replace(line, f"  - sae: {{site: res, path: {jump}, sha256: \"{sha(jump)}\"}}"),
         "explanation[0].sae.path", "JumpReLU")


def test_unsupported_graph_ops_are_listed_at_once(tmp_path, capsys):
    b = GraphBuilder(2)
    h = b.linear("a", "x", np.eye(2))
    b.nodes += [{"name": "s", "op": "maxpool", "inputs": [h]}, {"name": "t", "op": "conv", "inputs": ["s"]}]
    b.save(tmp_path / "m.npz", "t")
    m = tmp_path / "m.npz"
    p = tmp_path / "s.yaml"
    p.write_text(f"version: 1\nmodel: {{path: {m}, sha256: \"{sha(m)}\"}}\ninput:\n  box: {{lower: 0, upper: 1}}\n"
                 "explanation:\n  - sae: {site: a, path: x.npz, sha256: \"" + "0" * 64 + "\"}\nproperty: {deviation: linf, tolerance: 1}\n")
    (tmp_path / "x.npz").write_bytes(b"")
    assert main(["check", str(p)]) == 2
    err = capsys.readouterr().err
    assert "'maxpool'" in err and "'conv'" in err and "__graph__" in err


def test_make_graph_refuses_bad_wiring():
    with pytest.raises(ValueError):
        make_graph(2, [Node("a", "add", ("x", "b"))], "a")
    with pytest.raises(ValueError):
        make_graph(2, [Node("a", "linear", ("x",), ((Fraction(1),),), (Fraction(0),))], "a")


def test_every_op_has_a_generator_in_the_soundness_campaign():
    """benchmarks/soundness.py --family residual builds its random graphs from the op table: an op needs a
    generator there (or an explanation that writes it into g) and a 50-digit mpmath evaluator."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import soundness

    missing = sorted(op for op in OPS if op not in soundness.GENERATORS and op not in soundness.VIA_EXPLANATION)
    assert not missing, f"ops without a generator in benchmarks/soundness.py (GENERATORS): {missing}"
    assert not sorted(set(OPS) - set(soundness.MP_OPS)), "an op without an mpmath evaluator in benchmarks/soundness.py (MP_OPS)"
