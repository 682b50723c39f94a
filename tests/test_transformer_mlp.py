"""Two-layer transformers with MLPs (issue 17): the TransformerLens reader's graph equals a direct
numpy forward; the shipped modular-addition model computes (a + b) mod 13; the explanations on heads
(`attention`: a fixed pattern; `low_rank_circuit`: a low-rank QK or OV circuit) rebuild exactly the g
that an independent numpy forward with the replaced pattern or weights computes; the shipped specs'
checked bounds are >= the exact maximum over all 169 inputs, which the falsifier attains; bad
parameters are one line, exit 2."""

import hashlib
import json
from fractions import Fraction

import numpy as np
import pytest

from certify.checker.model import read_model
from certify.checker.network import build_g
from certify.checker.spec import read_spec
from certify.cli import main
from certify.model.graph import evaluate
from certify.model.graph import evaluate_graph as run
from certify.model.transformer import forward, one_hot, read_tl, tl_graph

from .conftest import ROOT, shipped_text

P = 13
INPUTS = np.array([(a, b, P) for a in range(P) for b in range(P)])


def params(rng, V, n, d, dh, m, heads=2, layers=2, biases=False):
    p = {"W_E": rng.normal(size=(V, d)), "W_pos": rng.normal(size=(n, d)), "W_U": rng.normal(size=(d, V - 1))}
    for layer in range(layers):
        pre, mlp = f"blocks.{layer}.attn", f"blocks.{layer}.mlp"
        for c in "QKV":
            p[f"{pre}.W_{c}"] = rng.normal(size=(heads, d, dh)) / np.sqrt(d)
        p[f"{pre}.W_O"] = rng.normal(size=(heads, dh, d)) / np.sqrt(dh)
        p[f"{mlp}.W_in"], p[f"{mlp}.b_in"] = rng.normal(size=(d, m)) / np.sqrt(d), rng.normal(size=m)
        p[f"{mlp}.W_out"], p[f"{mlp}.b_out"] = rng.normal(size=(m, d)) / np.sqrt(m), rng.normal(size=d)
        if biases:
            p[f"{pre}.b_Q"], p[f"{pre}.b_V"], p[f"{pre}.b_O"] = rng.normal(size=(heads, dh)), rng.normal(size=(heads, dh)), rng.normal(size=d)
    return p


def reference(p, tokens, pattern=None):
    """An independent forward at the last position (einsum over heads; ReLU MLPs where present); `pattern`:
    {(layer, head): rows} replaces that head's attention pattern (row i: the weights of query i on keys 0..i),
    or {(layer, head): fn}, fn(tokens) -> (batch, n, n) patterns."""
    n = tokens.shape[1]
    h = p["W_E"][tokens] + p["W_pos"][:n]
    for layer in sorted({int(k.split(".")[1]) for k in p if k.startswith("blocks.")}):
        pre, mlp = f"blocks.{layer}.attn", f"blocks.{layer}.mlp"
        q, k, v = (np.einsum("bpd,hdc->bhpc", h, p[f"{pre}.W_{c}"]) for c in "QKV")
        s = np.einsum("bhic,bhjc->bhij", q, k) / np.sqrt(q.shape[-1]) + np.where(np.tril(np.ones((n, n))) > 0, 0, -np.inf)
        a = np.exp(s - s.max(-1, keepdims=True))
        a = a / a.sum(-1, keepdims=True)
        for (lay, head), rows in (pattern or {}).items():
            if lay == layer:
                a[:, head] = rows(tokens) if callable(rows) else np.array([list(r) + [0] * (n - len(r)) for r in rows], dtype=float)
        h = h + np.einsum("bhij,bhjc,hcd->bid", a, v, p[f"{pre}.W_O"])
        if f"{mlp}.W_in" in p:
            h = h + np.maximum(h @ p[f"{mlp}.W_in"] + p[f"{mlp}.b_in"], 0) @ p[f"{mlp}.W_out"] + p[f"{mlp}.b_out"]
    return h[:, -1] @ p["W_U"]


@pytest.mark.parametrize("biases", [False, True])
def test_tl_graph_with_mlps_equals_numpy_forwards(tmp_path, biases):
    rng = np.random.default_rng(4)
    p = params(rng, 6, 4, 5, 3, 7, biases=biases)
    tl_graph(p, vocab=6, length=4, queries=[3]).save(tmp_path / "t.npz", output="unembed")
    tokens = rng.integers(0, 6, size=(50, 4))
    got = evaluate(tmp_path / "t.npz", one_hot(tokens, 6))
    want = forward(p, tokens)[:, -1]
    assert np.abs(got - want).max() < 1e-10 * max(1.0, np.abs(want).max())
    if not biases:
        assert np.abs(reference(p, tokens) - want).max() < 1e-10 * max(1.0, np.abs(want).max())
    with pytest.raises(ValueError, match="LayerNorm"):
        tl_graph({**p, "ln_final.w": np.ones(5)}, vocab=6, length=4)  # w without b
    with pytest.raises(ValueError, match="LayerNorm"):
        tl_graph({**p, "blocks.0.ln3.w": np.ones(5), "blocks.0.ln3.b": np.ones(5)}, vocab=6, length=4)


def test_tl_graph_with_layernorms_equals_numpy_forward(tmp_path):
    """TransformerLens's ln1 (before the heads), ln2 (before the MLP) and ln_final, as per-position LayerNorm compositions."""
    rng = np.random.default_rng(9)
    p = params(rng, 6, 4, 5, 3, 7, biases=True)
    for name in ("blocks.0.ln1", "blocks.0.ln2", "blocks.1.ln1", "blocks.1.ln2", "ln_final"):
        p[f"{name}.w"], p[f"{name}.b"] = 1 + 0.3 * rng.normal(size=5), 0.3 * rng.normal(size=5)
    tl_graph(p, vocab=6, length=4, queries=[3], softmax="softmax").save(tmp_path / "t.npz", output="unembed")
    tokens = rng.integers(0, 6, size=(50, 4))
    want = forward(p, tokens)[:, -1]
    assert np.abs(evaluate(tmp_path / "t.npz", one_hot(tokens, 6)) - want).max() < 1e-10 * max(1.0, np.abs(want).max())
    plain = {k: v for k, v in p.items() if ".ln" not in k and not k.startswith("ln")}
    assert np.abs(forward(plain, tokens)[:, -1] - want).max() > 1e-2  # the norms matter


def test_shipped_modular_addition_model():
    """The shipped graph is the shipped TransformerLens weights' function, and it adds mod 13 on 167 of the 169 inputs."""
    w = read_tl(ROOT / "models" / "modadd_tl.npz")
    want = forward(w, INPUTS)[:, -1]
    got = evaluate(ROOT / "models" / "modadd.npz", one_hot(INPUTS, P + 1))
    assert np.abs(got - want).max() < 1e-9
    right = int((want.argmax(-1) == (INPUTS[:, 0] + INPUTS[:, 1]) % P).sum())
    assert right == 167, right


def _spec(tmp_path, transform, model=ROOT / "models" / "modadd.npz", tol="1000"):
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    allowed = list(range(P))
    path = tmp_path / "s.yaml"
    path.write_text(f"version: 1\nmodel: {{path: {model}, sha256: {digest}}}\n"
                    f"input: {{tokens: {{vocab: {P + 1}, length: 3, allowed: [{allowed}, {allowed}, [{P}]]}}}}\n"
                    f"explanation:\n  - {transform}\nproperty: {{deviation: linf, tolerance: {tol}}}\noptions: {{method: crown}}\n")
    return path


def g_of(spec_path):
    spec = read_spec(spec_path)
    return build_g(spec, read_model(spec.model.path, spec.model.sha256), None)


@pytest.mark.parametrize("head, pattern", [((0, 1), "uniform"), ((1, 0), "uniform"), ((0, 0), [[1], ["1/4", "3/4"], [0, "1/2", "1/2"]]),
                                           ((1, 1), [["1/8", "5/8", "1/4"]])])
@pytest.mark.parametrize("form", ["softmax", "difference"])
def test_attention_pattern_is_the_fixed_pattern(tmp_path, head, pattern, form):
    """g with a head's pattern fixed equals the numpy forward whose softmax output is replaced by the pattern,
    on the shipped graph (softmax nodes) and on the same weights written in the difference form."""
    layer, h = head
    text = pattern if pattern == "uniform" else "[" + ", ".join("[" + ", ".join(str(v) for v in r) + "]" for r in pattern) + "]"
    model = ROOT / "models" / "modadd.npz"
    if form == "difference":
        model = tmp_path / "diff.npz"
        tl_graph(read_tl(ROOT / "models" / "modadd_tl.npz"), vocab=P + 1, length=3, queries=[2], softmax=form).save(model, output="unembed")
    g = g_of(_spec(tmp_path, f"attention: {{head: blocks.{layer}.attn.h{h}, pattern: {text}}}", model=model))
    assert any(n.op == ("softmax" if form == "softmax" else "reciprocal") for n in g.nodes)
    rows = [[Fraction(1, i + 1)] * (i + 1) for i in range(3)] if pattern == "uniform" else [[Fraction(v) for v in r] for r in pattern]
    if layer == 1 and pattern == "uniform":
        rows = rows[2:]  # the last layer's heads read the last query only
    rows = ([[1], [0, 1]] if layer == 1 else []) + rows  # (earlier queries of the last layer are not computed)
    w = read_tl(ROOT / "models" / "modadd_tl.npz")
    want = reference(w, INPUTS, {head: rows})
    assert np.abs(run(g, one_hot(INPUTS, P + 1)) - want).max() < 1e-9
    assert np.abs(forward(w, INPUTS)[:, -1] - want).max() > 1e-3  # the explanation changes the model


def last_max(tokens):
    """Causal patterns with all weight on the last key holding the largest token among keys 0..i."""
    b, n = tokens.shape
    out = np.zeros((b, n, n))
    for i in range(n):
        keys = tokens[:, :i + 1]
        j = i - np.argmax(keys[:, ::-1] == keys.max(-1, keepdims=True), axis=-1)  # the last position of the maximum
        out[np.arange(b), i, j] = 1.0
    return out


def test_max_token_pattern_on_max_of_k(tmp_path):
    """Max-of-K (V = 16): g with "the head attends to the largest token" equals the numpy forward with that pattern,
    on every one of the 16^4 sequences (ties included); the shipped spec's bound is >= the exact maximum, attained;
    a domain of boxes is refused (max_token reads tokens)."""
    w = read_tl(ROOT / "models" / "maxofk_v16_tl.npz")
    model = ROOT / "models" / "maxofk_v16.npz"
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    spec = tmp_path / "s.yaml"
    spec.write_text(f"version: 1\nmodel: {{path: {model}, sha256: {digest}}}\ninput: {{tokens: {{vocab: 16, length: 4}}}}\n"
                    "explanation:\n  - attention: {head: blocks.0.attn.h0, pattern: max_token}\nproperty: {deviation: linf, tolerance: 1}\n")
    tokens = np.array(np.meshgrid(*[np.arange(16)] * 4, indexing="ij")).reshape(4, -1).T
    want = reference(w, tokens, {(0, 0): last_max})
    g = g_of(spec)
    got = np.concatenate([run(g, one_hot(tokens[s:s + 8192], 16)) for s in range(0, len(tokens), 8192)])
    assert np.abs(got - want).max() < 1e-9
    exact = np.abs(forward(w, tokens)[:, -1] - want).max()
    assert exact > 1  # the explanation changes the model
    cert = json.loads((ROOT / "proofs" / "max_of_k_max_token.cert.json").read_text())  # the shipped spec's
    assert float(Fraction(cert["claim"]["bound"])) >= exact
    assert abs(float(Fraction(cert["witness"]["deviation"])) - exact) <= 1e-9 * exact
    bad = spec.read_text().replace("tokens: {vocab: 16, length: 4}", "box: {lower: 0, upper: 1}")
    spec.write_text(bad)
    with pytest.raises(Exception, match="max_token reads the tokens"):
        g_of(spec)


def test_low_rank_circuits_are_the_factored_heads(tmp_path):
    """QK: g's scores are h_i^T U V h_j (the model with W_Q' = U, W_K' = V^T); OV: g's OV circuit is (U V)^T."""
    w = read_tl(ROOT / "models" / "modadd_tl.npz")
    d, dh = w["blocks.0.attn.W_Q"].shape[1:]
    for circuit, layer, head, rank in (("qk", 0, 0, 3), ("ov", 1, 1, 2), ("qk", 1, 0, dh)):
        tmp = tmp_path / f"{circuit}{layer}"
        tmp.mkdir()
        spec = _spec(tmp, f"low_rank_circuit: {{head: blocks.{layer}.attn.h{head}, circuit: {circuit}, rank: {rank}}}")
        assert main(["pin", str(spec)]) == 0
        arrays = np.load(next(tmp.glob("pinned/*.npz")))
        u, v = arrays["U"], arrays["V"]
        p = {k: x.copy() for k, x in w.items()}
        pre = f"blocks.{layer}.attn"
        if circuit == "qk":
            assert u.shape == (d, rank) and v.shape == (rank, d)
            p[f"{pre}.W_Q"][head], p[f"{pre}.W_K"][head] = np.pad(u, ((0, 0), (0, dh - rank))), np.pad(v.T, ((0, 0), (0, dh - rank)))
        else:
            p[f"{pre}.W_V"][head], p[f"{pre}.W_O"][head] = np.pad(v.T, ((0, 0), (0, dh - rank))), np.pad(u.T, ((0, dh - rank), (0, 0)))
        want = forward(p, INPUTS)[:, -1]
        assert np.abs(run(g_of(spec), one_hot(INPUTS, P + 1)) - want).max() < 1e-9, circuit
        change = np.abs(forward(w, INPUTS)[:, -1] - want).max()
        assert (change < 1e-9) if rank == dh else (change > 1e-4), (circuit, rank, change)  # full rank: the model itself


def test_two_factored_circuits_pin_and_rebuild(tmp_path):
    """Two float transforms on one graph: `certify pin` materialises the second on g built from the first's arrays
    (it used to refuse its own unpinned first transform); g is the model with both circuits factored."""
    spec = _spec(tmp_path, "low_rank_circuit: {head: blocks.0.attn.h0, circuit: qk, rank: 3}\n"
                 "  - low_rank_circuit: {head: blocks.0.attn.h0, circuit: ov, rank: 5}")
    assert main(["pin", str(spec)]) == 0
    files = sorted(tmp_path.glob("pinned/*.npz"))
    (qk, ov) = (np.load(f) for f in files)
    w = read_tl(ROOT / "models" / "modadd_tl.npz")
    p = {k: x.copy() for k, x in w.items()}
    dh = p["blocks.0.attn.W_Q"].shape[-1]
    p["blocks.0.attn.W_Q"][0], p["blocks.0.attn.W_K"][0] = np.pad(qk["U"], ((0, 0), (0, dh - 3))), np.pad(qk["V"].T, ((0, 0), (0, dh - 3)))
    p["blocks.0.attn.W_V"][0], p["blocks.0.attn.W_O"][0] = np.pad(ov["V"].T, ((0, 0), (0, dh - 5))), np.pad(ov["U"].T, ((0, dh - 5), (0, 0)))
    assert np.abs(run(g_of(spec), one_hot(INPUTS, P + 1)) - forward(p, INPUTS)[:, -1]).max() < 1e-9


BAD = {
    "pattern_rows": ("attention: {head: blocks.1.attn.h0, pattern: [[1/2, 1/2]]}", "explanation[0].attention.pattern"),
    "pattern_sum": ("attention: {head: blocks.0.attn.h0, pattern: [[1], [1/2, 1/4], [0, 1/2, 1/2]]}", "explanation[0].attention.pattern[1]"),
    "pattern_word": ("attention: {head: blocks.0.attn.h0, pattern: max}", "explanation[0].attention.pattern"),
    "not_a_head": ("attention: {head: blocks.0.mlp, pattern: uniform}", "explanation[0].attention.head"),
    "rank": ("low_rank_circuit: {head: blocks.0.attn.h0, circuit: qk, rank: 13, arrays: {path: x.npz, sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855}}",
             "explanation[0].low_rank_circuit.rank"),
    "unpinned": ("low_rank_circuit: {head: blocks.0.attn.h0, circuit: ov, rank: 2}", "explanation[0].low_rank_circuit.arrays"),
    "circuit": ("low_rank_circuit: {head: blocks.0.attn.h0, circuit: vo, rank: 2}", "explanation[0].low_rank_circuit.circuit"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_head_explanations_are_one_line(tmp_path, capsys, name):
    transform, key = BAD[name]
    (tmp_path / "x.npz").write_bytes(b"")
    assert main(["check", str(_spec(tmp_path, transform)), "--out", str(tmp_path / "c.cert.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err, err


def _pruned(w, neurons):
    p = {k: x.copy() for k, x in w.items()}
    p["blocks.1.mlp.W_out"][list(neurons)] = 0.0  # the last layer's MLP acts at the last position only
    return p


def test_shipped_specs_bound_the_exact_maximum():
    """Over all 169 inputs (numpy, independent of the graph): the shipped certificates' bounds are >= the exact
    maximum deviation, and their checked witnesses attain it."""
    w = read_tl(ROOT / "models" / "modadd_tl.npz")
    f = forward(w, INPUTS)[:, -1]
    uniform = {(0, 1): [[Fraction(1, i + 1)] * (i + 1) for i in range(3)]}
    pruned = forward(_pruned(w, [11, 14, 18, 7, 30, 29, 12, 10]), INPUTS)[:, -1]
    cases = {"modadd_prune_mlp": (pruned, 1e-9), "modadd_attention": (reference(w, INPUTS, uniform), 1e-9),
             "modadd_onnx": (pruned, 1e-5)}  # the ONNX file's 1/sqrt(d_head) is a float32 number
    for stem, (g, rel) in cases.items():
        exact = np.abs(f - g).max()
        cert = json.loads((ROOT / "proofs" / f"{stem}.cert.json").read_text())
        assert float(Fraction(cert["claim"]["bound"])) >= exact * (1 - rel)
        assert abs(float(Fraction(cert["witness"]["deviation"])) - exact) <= rel * exact, stem


def test_onnx_export_reads_into_the_same_function():
    """models/modadd.onnx (torch.onnx.export) read by the trusted ONNX readers computes the TransformerLens forward."""
    path = ROOT / "models" / "modadd.onnx"
    g = read_model(path, hashlib.sha256(path.read_bytes()).hexdigest())
    ops = {n.op for n in g.nodes}
    assert {"mul", "relu"} <= ops and ("softmax" in ops or {"exp", "reciprocal"} <= ops)
    want = forward(read_tl(ROOT / "models" / "modadd_tl.npz"), INPUTS)[:, -1]
    assert np.abs(run(g, one_hot(INPUTS, P + 1)) - want).max() < 1e-4 * np.abs(want).max()


def test_a_certificate_for_another_pattern_is_rejected(tmp_path):
    """The checker rebuilds g from the spec: the shipped uniform-pattern certificate, relabelled for a spec whose
    last row is [0.34, 0.33, 0.33], is REJECTED (its steps bound another g)."""
    from certify.checker import Verdict, check_certificate

    text = shipped_text("modadd_attention")
    spec = tmp_path / "other.yaml"
    spec.write_text(text.replace("pattern: uniform", "pattern: [[1], [1/2, 1/2], [0.34, 0.33, 0.33]]"))
    cert = json.loads((ROOT / "proofs" / "modadd_attention.cert.json").read_text())
    cert["spec_sha256"] = hashlib.sha256(spec.read_bytes()).hexdigest()
    (tmp_path / "c.cert.json").write_text(json.dumps(cert))
    assert check_certificate(spec, tmp_path / "c.cert.json").verdict is Verdict.REJECTED
    spec.write_text(text)  # the same relabelling for the spec it was made for: accepted
    cert["spec_sha256"] = hashlib.sha256(spec.read_bytes()).hexdigest()
    (tmp_path / "c.cert.json").write_text(json.dumps(cert))
    assert check_certificate(spec, tmp_path / "c.cert.json").verdict is Verdict.VIOLATED
