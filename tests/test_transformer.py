"""Transformers on the graph path (issue 17): the flattened attention graph equals a direct numpy
forward; on token-sequence domains CROWN's and token branch and bound's checked bounds are >= the
exhaustive maximum; forged token trees, concretisations and witnesses are REJECTED (exit 3); bad
token specs are one line, exit 2."""

import copy
import hashlib
import itertools
import json
from fractions import Fraction

import numpy as np
import pytest

from certify.bounds.graph import crown
from certify.bounds.tokens import FloatTokens, exhaustive, token_bab
from certify.checker import Verdict, check_certificate
from certify.checker.errors import Rejected
from certify.checker.graph import Node, TokenBox, check_graph_steps, check_token_tree, joint_graph, make_graph, read_graph
from certify.cli import main
from certify.model.transformer import attn_only, forward, one_hot
from certify.model.graph import evaluate

from .conftest import ROOT, assert_rejected


def params(rng, V, n, d, dh, heads=1, layers=1, biases=False, scale=1.0):
    p = {"W_E": rng.normal(size=(V, d)) * scale, "W_pos": rng.normal(size=(n, d)) * scale, "W_U": rng.normal(size=(d, V))}
    for layer in range(layers):
        pre = f"blocks.{layer}.attn"
        for c in "QKV":
            p[f"{pre}.W_{c}"] = rng.normal(size=(heads, d, dh)) / np.sqrt(d)
        p[f"{pre}.W_O"] = rng.normal(size=(heads, dh, d)) / np.sqrt(dh)
        if biases:
            p[f"{pre}.b_Q"], p[f"{pre}.b_V"], p[f"{pre}.b_O"] = rng.normal(size=(heads, dh)), rng.normal(size=(heads, dh)), rng.normal(size=d)
    return p


@pytest.mark.parametrize("softmax", ["softmax", "difference", "product"])
@pytest.mark.parametrize("queries", [None, "last"])
def test_attention_graph_equals_numpy_forward(tmp_path, softmax, queries):
    rng = np.random.default_rng(1)
    V, n = 6, 4
    p = params(rng, V, n, 5, 3, heads=2, layers=2, biases=True)
    qs = None if queries is None else [n - 1]
    path = tmp_path / "t.npz"
    attn_only(p, vocab=V, length=n, queries=qs, softmax=softmax).save(path, output="unembed")
    tokens = rng.integers(0, V, size=(40, n))
    got = evaluate(path, one_hot(tokens, V)).reshape(40, -1, V)
    want = forward(p, tokens)[:, qs or slice(None)]
    assert np.abs(got - want).max() < 1e-10 * max(1.0, np.abs(want).max())


def renamed(graph, prefix):
    """The graph with every node renamed (so it joins another as g)."""
    ren = {n.name: prefix + n.name for n in graph.nodes}
    nodes = [Node(ren[n.name], n.op, tuple(ren.get(s, s) for s in n.inputs), n.weight, n.bias, n.scale, n.shift, groups=n.groups)
             for n in graph.nodes]
    return make_graph(graph.in_dim, nodes, ren[graph.output])


def pair(tmp_path, seed, V, n, softmax="difference"):
    """f and a perturbed g (random attention-only transformers, last position), their joint graph, and both parameter sets."""
    rng = np.random.default_rng(seed)
    pf = params(rng, V, n, 3, 2, scale=0.7)
    pg = {k: v + 0.1 * rng.normal(size=v.shape) for k, v in pf.items()}
    graphs = []
    for name, p in (("f", pf), ("g", pg)):
        attn_only(p, vocab=V, length=n, queries=[n - 1], softmax=softmax).save(tmp_path / f"{name}{seed}.npz", output="unembed")
        graphs.append(read_graph(tmp_path / f"{name}{seed}.npz"))
    return joint_graph(graphs[0], renamed(graphs[1], "g."), None), pf, pg


def exact_max(pf, pg, allowed):
    seqs = np.array(list(itertools.product(*allowed)))
    return float(np.abs(forward(pf, seqs)[:, -1] - forward(pg, seqs)[:, -1]).max())


@pytest.mark.parametrize("softmax", ["difference", "softmax"])
def test_token_bounds_contain_the_exhaustive_maximum(tmp_path, softmax):
    """CROWN with exact token concretisation, checked exactly, on random small transformers and random allowed sets
    (the pattern as exp, sum and reciprocal nodes, or as one softmax node whose back-substitution uses its rows' sum)."""
    rng = np.random.default_rng(0)
    for seed in range(24):
        V, n = int(rng.integers(2, 5)), int(rng.integers(2, 4))
        joint, pf, pg = pair(tmp_path, seed, V, n, softmax)
        allowed = tuple(tuple(sorted(rng.choice(V, size=int(rng.integers(1, V + 1)), replace=False).tolist())) for _ in range(n))
        box = TokenBox(V, allowed)
        bound, steps = crown(joint, box)
        lo, up = check_graph_steps(joint, box, steps, "steps")["d"]
        verified = max(max(-v for v in lo), max(up))
        exact = exact_max(pf, pg, allowed)
        assert float(verified) >= exact - 1e-9, (seed, float(verified), exact)
        assert bound >= float(verified) * (1 - 1e-9)


def test_token_branch_and_bound_is_checked_and_tightens(tmp_path):
    joint, pf, pg = pair(tmp_path, 99, 4, 3)
    allowed = ((0, 1, 2, 3),) * 3
    root, _ = crown(joint, TokenBox(4, allowed))
    bound, tree, leaves = token_bab(lambda b: crown(joint, b), FloatTokens(4, allowed), 0.0, max_leaves=64, seconds=60)
    exact = exact_max(pf, pg, allowed)
    assert 2 <= leaves <= 64 and exact - 1e-9 <= bound <= root
    # target 0: it stops when the worst leaf is one sequence, where CROWN is exact up to its outward padding
    assert leaves == 64 or bound <= exact * (1 + 1e-6) + 1e-6
    assert check_token_tree(joint, TokenBox(4, allowed), tree, Fraction(bound) * (1 + Fraction(1, 10**6)), "tree") > 0
    forged = copy.deepcopy(tree)
    forged["parts"][1] = forged["parts"][1][:-1]  # one token left uncovered
    with pytest.raises(Rejected, match="partition"):
        check_token_tree(joint, TokenBox(4, allowed), forged, Fraction(bound) * 2, "tree")
    with pytest.raises(Rejected):  # a bound below the tree's verified leaves
        check_token_tree(joint, TokenBox(4, allowed), tree, Fraction(exact) / 2, "tree")


def test_token_concretisation_is_exact_per_position():
    """lowest() is the minimum of c @ x over the product of simplices, i.e. over every allowed sequence."""
    from flint import fmpz_mat

    rng = np.random.default_rng(3)
    V, allowed = 3, ((0, 2), (1,), (0, 1, 2))
    c = rng.integers(-9, 9, size=(5, 9))
    got, den = TokenBox(V, allowed).lowest(fmpz_mat(c.tolist()), 1)
    brute = [min(int(c[r] @ one_hot(np.array([s]), V)[0]) for s in itertools.product(*allowed)) for r in range(5)]
    assert got == brute and den == 1
    assert list(FloatTokens(V, allowed).lowest(c.astype(float))) == brute


def test_exhaustive_oracle_matches_numpy(tmp_path):
    joint, pf, pg = pair(tmp_path, 7, 3, 3)
    allowed = ((0, 1, 2), (1, 2), (0, 2))
    value, tokens, _ = exhaustive(joint, FloatTokens(3, allowed), batch=5)
    assert abs(value - exact_max(pf, pg, allowed)) <= 1e-4 * max(1.0, value)
    assert all(t in ok for t, ok in zip(tokens, allowed))


def _spec(tmp_path, model, tokens="{vocab: 4, length: 3}", site="embed.pos", tol="1000", extra=""):
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    p = tmp_path / "s.yaml"
    p.write_text(f"version: 1\nmodel: {{path: {model.resolve()}, sha256: {digest}}}\ninput: {{tokens: {tokens}}}\n"
                 f"explanation:\n  - ablate: {{site: {site}, fill: zero}}\nproperty: {{deviation: linf, tolerance: {tol}}}\n{extra}")
    return p


@pytest.fixture(scope="module")
def token_cert(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tok")
    p = params(np.random.default_rng(5), 4, 3, 3, 2, scale=0.7)
    attn_only(p, vocab=4, length=3, queries=[2]).save(tmp / "m.npz", output="unembed")
    spec = _spec(tmp, tmp / "m.npz", tol="0", extra="options: {timeout_s: 600, max_leaves: 16}\n")  # tolerance 0: bab splits
    out = tmp / "m.cert.json"
    assert main(["check", str(spec), "--out", str(out), "--method", "bab"]) == 1  # VIOLATED, by a checked witness
    cert = json.loads(out.read_text())
    assert len(cert["token_tree"]["children"]) == 2
    return spec, out, cert


def test_token_check_end_to_end_and_witness_is_a_sequence(token_cert, tmp_path):
    spec, out, cert = token_cert
    r = check_certificate(spec, out)
    assert r.verdict is Verdict.VIOLATED and r.witness_deviation is not None and 0 < r.witness_deviation <= r.bound
    x = [Fraction(v) for v in cert["witness"]["x"]]
    assert all(sorted(x[p * 4:(p + 1) * 4]) == [0, 0, 0, 1] for p in range(3))
    ok = _spec(tmp_path, spec.parent / "m.npz", tol=str(float(r.bound) * 2))  # a tolerance above the bound: CERTIFIED
    assert main(["check", str(ok), "--out", str(tmp_path / "ok.cert.json")]) == 0


TOKEN_MUTATIONS = {
    "witness_not_one_hot": lambda c: c["witness"]["x"].__setitem__(0, "1/2"),
    "witness_two_tokens": lambda c: c["witness"]["x"].__setitem__(c["witness"]["x"].index("0"), "1"),
    "witness_outside_allowed": None,  # made below from the spec's allowed set
    "tree_part_dropped": lambda c: c["token_tree"]["parts"][0].pop(),
    "tree_leaf_dropped": lambda c: c["token_tree"]["children"].pop(),
    "tree_and_steps": lambda c: c.__setitem__("steps", []),
    "concretisation_forged": lambda c: _forge_goal(c),
}


def _leaf_steps(c):
    node = c.get("token_tree", c)
    while "steps" not in node:
        node = node["children"][0]
    return node["steps"]


def _forge_goal(c):
    step = next(s for s in _leaf_steps(c) if s["node"] == "d" and s["via"] == "linear")
    step["upper"] = [str(Fraction(v) - Fraction(1, 10**6)) for v in step["upper"]]
    step["lower"] = [str(Fraction(v) + Fraction(1, 10**6)) for v in step["lower"]]


@pytest.mark.parametrize("name", sorted(TOKEN_MUTATIONS))
def test_tampered_token_certificates_are_rejected(token_cert, tmp_path, name):
    spec, out, cert = token_cert
    tampered = copy.deepcopy(cert)
    if name == "witness_outside_allowed":
        spec = _spec(tmp_path, spec.parent / "m.npz", tokens="{vocab: 4, length: 3, allowed: [all, all, [0, 1, 2, 3]]}",
                     extra="options: {timeout_s: 600, max_leaves: 16}\n")
        text = spec.read_text().replace("[0, 1, 2, 3]]", "[0, 1]]")  # the same tree, but the last position now allows 0, 1
        spec.write_text(text)
        tampered["spec_sha256"] = hashlib.sha256(text.encode()).hexdigest()
        x = tampered["witness"]["x"]
        x[8:12] = ["0", "0", "0", "1"]  # token 3 at the last position: outside
    else:
        TOKEN_MUTATIONS[name](tampered)
    assert tampered != cert
    assert_rejected(spec, tampered, tmp_path, name)


def _bad(tmp_path, capsys, spec, key, *also):
    assert main(["check", str(spec), "--out", str(tmp_path / "x.cert.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0] and "Traceback" not in err[0], err
    for a in also:
        assert a in err[0], err[0]
    assert not (tmp_path / "x.cert.json").exists()


def test_bad_token_specs_are_one_line(tmp_path, capsys):
    p = params(np.random.default_rng(5), 4, 3, 3, 2)
    attn_only(p, vocab=4, length=3, queries=[2]).save(tmp_path / "m.npz", output="unembed")
    m = tmp_path / "m.npz"
    _bad(tmp_path, capsys, _spec(tmp_path, m, "{vocab: 5, length: 3}"), "input.tokens", "5 tokens")
    _bad(tmp_path, capsys, _spec(tmp_path, m, "{vocab: 4, length: 3, allowed: [all, [4], all]}"), "input.tokens.allowed[1]", "[4]")
    _bad(tmp_path, capsys, _spec(tmp_path, m, "{vocab: 4, length: 3, allowed: [all, all]}"), "input.tokens.allowed", "2 positions")
    _bad(tmp_path, capsys, _spec(tmp_path, m, "{vocab: 4, length: 3, allowed: [all, [], all]}"), "input.tokens.allowed[1]", "no tokens")
    _bad(tmp_path, capsys, _spec(tmp_path, m, "{vocab: 4, length: 3, allowed: [all, some, all]}"), "input.tokens.allowed[1]")
    _bad(tmp_path, capsys, _spec(tmp_path, m, "{vocab: 4, length: 3}, clip: [0, 1]"), "input.clip")
    _bad(tmp_path, capsys, _spec(tmp_path, m, "{vocab: 4}"), "input.tokens.length")
    _bad(tmp_path, capsys, _spec(tmp_path, m, site="nowhere"), "explanation[0].ablate.site", "nowhere")
    mlp = ROOT / "models" / "tiny_mlp.npz"
    (tmp_path / "tiny.npz").write_bytes(mlp.read_bytes())
    _bad(tmp_path, capsys, _spec(tmp_path, tmp_path / "tiny.npz", "{vocab: 2, length: 2}"), "input.tokens", "not a graph model")


def test_shipped_maxofk_reader_builds_the_shipped_graph(tmp_path):
    """models/maxofk.npz is attn_only(models/maxofk_tl.npz) at the last position: the same nodes and the same
    function. The fold goes through an SVD and float64 matrix products, whose last bits depend on the machine's
    LAPACK/BLAS kernels (1.5e-13 apart between two x86 machines), so weights are compared to 1e-11 of their
    scale, not bit for bit; the logits of both files on the same sequences agree to 1e-9."""
    from certify.model.transformer import read_tl

    p = read_tl(ROOT / "models" / "maxofk_tl.npz")
    attn_only(p, vocab=64, length=4, queries=[3], fold=True, softmax="softmax").save(tmp_path / "m.npz", output="unembed")
    built, shipped = read_graph(tmp_path / "m.npz").nodes, read_graph(ROOT / "models" / "maxofk.npz").nodes
    assert [(n.name, n.op, n.inputs, n.groups) for n in built] == [(n.name, n.op, n.inputs, n.groups) for n in shipped]
    for a, b in zip(built, shipped):
        for key in ("weight", "bias", "scale", "shift", "threshold", "lower", "upper"):
            x, y = getattr(a, key), getattr(b, key)
            assert (x is None) == (y is None), (a.name, key)
            if x is not None:
                x, y = np.array([[float(v) for v in r] for r in x] if key == "weight" else [float(v) for v in x]), \
                    np.array([[float(v) for v in r] for r in y] if key == "weight" else [float(v) for v in y])
                assert x.shape == y.shape and np.abs(x - y).max() <= 1e-11 * max(1.0, np.abs(y).max()), (a.name, key)
    tokens = np.random.default_rng(0).integers(0, 64, size=(200, 4))
    assert np.abs(evaluate(tmp_path / "m.npz", one_hot(tokens, 64)) - evaluate(ROOT / "models" / "maxofk.npz", one_hot(tokens, 64))).max() < 1e-9
    logits = evaluate(ROOT / "models" / "maxofk.npz", one_hot(tokens, 64))
    assert np.abs(logits - forward(p, tokens)[:, -1]).max() < 1e-9
    assert (logits.argmax(1) == tokens.max(1)).mean() > 0.99


def test_token_form_attention_equals_forward_and_its_position_ablation_is_wpos_zero(tmp_path):
    """attention_tokens (scores as products of one-hot entries) computes the same logits on every
    sequence, and zero-ablating its three positional nodes is exactly the model with W_pos = 0."""
    from certify.model.transformer import TransformerBuilder

    rng = np.random.default_rng(4)
    V, n = 4, 3
    p = params(rng, V, n, 3, 2)
    b = TransformerBuilder(V, n)
    h = b.embed("embed", p["W_E"], p["W_pos"])
    h = b.attention_tokens("a", h, *(p[f"blocks.0.attn.W_{c}"][0] for c in "QKVO"), queries=[n - 1])
    b.unembed("unembed", h, p["W_U"])
    b.save(tmp_path / "t.npz", output="unembed")
    seqs = np.array(list(itertools.product(range(V), repeat=n)))
    assert np.abs(evaluate(tmp_path / "t.npz", one_hot(seqs, V)) - forward(p, seqs)[:, -1]).max() < 1e-10
    spec = _spec(tmp_path, tmp_path / "t.npz", "{vocab: 4, length: 3}")
    text = spec.read_text().replace("  - ablate: {site: embed.pos, fill: zero}\n", "".join(
        f"  - ablate: {{site: {s}, fill: zero}}\n" for s in ("embed.pos", "a.scores_pos", "a.out_pos")))
    spec.write_text(text)
    from certify.checker.network import build_g
    from certify.checker.spec import read_spec

    s = read_spec(spec)
    f = read_graph(tmp_path / "t.npz")
    g = build_g(s, f, None)
    from certify.checker.graph import evaluate as exact_eval

    for seq in seqs[::5]:
        x = [Fraction(int(v)) for v in one_hot(seq[None], V)[0]]
        got = [float(v.mid()) for v in exact_eval(g, x)[g.output]]
        want = forward({**p, "W_pos": np.zeros_like(p["W_pos"])}, seq[None])[0, -1]
        assert np.abs(np.array(got) - want).max() < 1e-9


def test_folded_attention_equals_forward_and_is_tighter(tmp_path):
    """attn_only(fold=True) (QK in its singular basis, OV folded into W_U) computes the same logits, and
    its checked CROWN bound over all sequences is no looser here than the head-basis graph's."""
    rng = np.random.default_rng(8)
    V, n = 4, 3
    p = params(rng, V, n, 4, 3)
    p["blocks.0.attn.b_V"], p["b_U"] = rng.normal(size=(1, 3)), rng.normal(size=V)
    seqs = np.array(list(itertools.product(range(V), repeat=n)))
    bounds = []
    for fold in (False, True):
        attn_only(p, vocab=V, length=n, queries=[n - 1], fold=fold).save(tmp_path / f"{fold}.npz", output="unembed")
        got = evaluate(tmp_path / f"{fold}.npz", one_hot(seqs, V))
        assert np.abs(got - forward(p, seqs)[:, -1]).max() < 1e-10
        f = read_graph(tmp_path / f"{fold}.npz")
        g = renamed(f, "g.")  # g = f: d = 0, so the bound measures the relaxation's slack only
        joint = joint_graph(f, g, None)
        box = TokenBox(V, ((0, 1, 2, 3),) * n)
        _, steps = crown(joint, box)
        lo, up = check_graph_steps(joint, box, steps, "steps")["d"]
        bounds.append(max(max(-v for v in lo), max(up)))
    assert bounds[1] <= bounds[0], bounds
