"""float32 semantics: the proven rounding-error bound covers real float32 runs (numpy, JAX, and a
naive sequential loop), and float32 certificates are checked and tamper-proof."""

import json
from fractions import Fraction

import jax.numpy as jnp
import numpy as np
import pytest

from certify.checker import Verdict, check_certificate
from certify.checker.exact import forward, qmat, qvec
from certify.checker.float32 import output_errors
from certify.checker.model import read_model
from certify.checker.network import exact_layers
from certify.cli import main

from .conftest import ROOT, SPECS


def float32_runs(ws, bs, x):
    """The same float32 network evaluated three ways (different summation orders)."""
    w32, b32, x32 = [w.astype(np.float32) for w in ws], [b.astype(np.float32) for b in bs], x.astype(np.float32)
    outs = []
    h = x32
    for k, (w, b) in enumerate(zip(w32, b32)):  # numpy / BLAS
        h = w @ h + b
        h = np.maximum(h, np.float32(0)) if k < len(ws) - 1 else h
    outs.append(h)
    h = jnp.asarray(x32)
    for k, (w, b) in enumerate(zip(w32, b32)):  # XLA
        h = jnp.asarray(w) @ h + jnp.asarray(b)
        h = jnp.maximum(h, 0) if k < len(ws) - 1 else h
    outs.append(np.asarray(h, dtype=np.float32))
    h = x32
    for k, (w, b) in enumerate(zip(w32, b32)):  # naive left-to-right accumulation, largest index first
        out = np.empty(w.shape[0], dtype=np.float32)
        for i in range(w.shape[0]):
            acc = np.float32(0)
            for j in reversed(range(w.shape[1])):
                acc = np.float32(acc + np.float32(w[i, j] * h[j]))
            out[i] = np.float32(acc + b[i])
        h = np.maximum(out, np.float32(0)) if k < len(ws) - 1 else out
    outs.append(h)
    return outs


@pytest.mark.parametrize("model, lo, hi", [("tiny_mlp.npz", -1.0, 1.0), ("digits_mlp.npz", 0.0, 1.0)])
def test_rounding_error_bound_covers_float32_runs(model, lo, hi):
    m = read_model(ROOT / "models" / model)
    layers = exact_layers(m)
    box = ([Fraction(lo)] * m.in_dim, [Fraction(hi)] * m.in_dim)
    bound = output_errors(layers, box)
    ws = [np.array(d.weight) for d in m.dense]
    bs = [np.array(d.bias) for d in m.dense]
    exact_net = [(qmat(w), qvec(b)) for w, b in layers]
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(10 if model.startswith("digits") else 40):
        x = rng.uniform(lo, hi, m.in_dim).astype(np.float32)
        real = forward(exact_net, [Fraction(float(v)) for v in x])
        for out in float32_runs(ws, bs, x):
            for i, (r, v) in enumerate(zip(real, out)):
                err = abs(Fraction(float(v)) - r)
                assert err <= bound[i], f"{model} output {i}: float32 error {float(err)} exceeds the bound {float(bound[i])}"
                worst = max(worst, float(err / bound[i]))
    assert worst > 0  # float32 really rounds: the comparison is not vacuous


@pytest.fixture
def float32_spec(tmp_path):
    text = (SPECS / "digits_prune.yaml").read_text().replace("  tolerance: 1\n", "  tolerance: 1\n  semantics: float32\n")
    spec = tmp_path / "digits_prune_f32.yaml"
    spec.write_text(text.replace("../models/", str(ROOT / "models") + "/"))
    return spec


def test_float32_certificate_covers_the_real_bound_plus_rounding(float32_spec, tmp_path, capsys):
    assert main(["check", str(float32_spec), "--out", str(tmp_path / "f32.cert.json"), "--json"]) == 0
    f32 = json.loads(capsys.readouterr().out)
    assert main(["check", str(SPECS / "digits_prune.yaml"), "--out", str(tmp_path / "real.cert.json"), "--json", "--no-cache"]) == 0
    real = json.loads(capsys.readouterr().out)
    assert Fraction(real["certified_upper"]) < Fraction(f32["certified_upper"]) < Fraction(real["certified_upper"]) * Fraction(101, 100)
    cert = json.loads((tmp_path / "f32.cert.json").read_text())
    assert cert["claim"]["semantics"] == "float32"
    cert["claim"]["semantics"] = "real"
    (tmp_path / "tampered.cert.json").write_text(json.dumps(cert))
    assert check_certificate(float32_spec, tmp_path / "tampered.cert.json").verdict is Verdict.REJECTED
    cert["claim"]["semantics"] = "float32"  # a real-semantics bound does not prove the float32 claim
    cert["claim"]["bound"] = real["certified_upper"]
    (tmp_path / "tampered.cert.json").write_text(json.dumps(cert))
    assert check_certificate(float32_spec, tmp_path / "tampered.cert.json").verdict is Verdict.REJECTED


def test_float32_violation_needs_a_float32_witness(tmp_path, capsys):
    from certify.checker.float32 import is_float32

    text = (SPECS / "digits_prune_tight.yaml").read_text().replace('  tolerance: "1/2"\n', '  tolerance: "1/2"\n  semantics: float32\n')
    spec = tmp_path / "tight_f32.yaml"
    spec.write_text(text.replace("../models/", str(ROOT / "models") + "/"))
    cert_path = tmp_path / "t.cert.json"
    assert main(["check", str(spec), "--out", str(cert_path), "--method", "crown", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "VIOLATED"
    cert = json.loads(cert_path.read_text())
    assert all(is_float32(Fraction(v)) for v in cert["witness"]["x"])
    # the attained lower bound under float32 semantics is the real deviation minus the rounding margin
    assert Fraction(out["attained_lower"]) < Fraction(cert["witness"]["deviation"])


def test_float32_overflow_is_refused_as_bad_input(tmp_path, capsys):
    """Values that may reach float32's largest finite number void the error analysis: exit 2, one line."""
    from certify.model import save_model

    sha = save_model(tmp_path / "huge.npz", [np.full((3, 2), 1e20), np.full((1, 3), 1e20)], [np.zeros(3), np.zeros(1)])
    (tmp_path / "huge.yaml").write_text(
        f'version: 1\nmodel: {{path: huge.npz, sha256: "{sha}"}}\ninput:\n  box: {{lower: "-1", upper: "1"}}\n'
        "explanation:\n  - prune: {layer: 1, keep: [0]}\n"
        'property: {deviation: linf, tolerance: "1", semantics: float32}\n')
    assert main(["check", str(tmp_path / "huge.yaml"), "--out", str(tmp_path / "h.cert.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "overflow" in err[0] and "property.semantics" in err[0], err
    assert not (tmp_path / "h.cert.json").exists()
