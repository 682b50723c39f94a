"""The `replace` transform: g's dense layers k..m replaced by a user-given sub-network.

Exact semantics (the checker's joint network equals f - g computed directly, g one layer deeper or
shallower than f, or with no hidden layer at all), the shipped example through `certify check` and
`certify verify`, a tampered sub-model, and impossible parameters (exit 2, one line on stderr).
"""

from __future__ import annotations

import hashlib
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from certify.checker import exact
from certify.checker.model import read_model
from certify.checker.network import build_g, exact_layers, joint_network
from certify.checker.spec import read_spec
from certify.cli import main
from certify.flow import level_dof
from certify.model import save_model

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "tiny_mlp.npz"  # 4 -> 8 -> 8 -> 3
SPEC = ROOT / "specs" / "tiny_replace.yaml"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sub_model(path: Path, widths, seed=0, **affine) -> str:
    rng = np.random.default_rng(seed)
    ws = [rng.normal(0, 1 / np.sqrt(a), (b, a)) for a, b in zip(widths[:-1], widths[1:])]
    save_model(path, ws, [rng.normal(0, 0.1, b) for b in widths[1:]], **affine)
    return sha(path)


def write_spec(tmp: Path, replace_line: str, before: str = "", outputs: str = "") -> Path:
    shutil.copy(MODEL, tmp / "tiny_mlp.npz")
    spec = tmp / "spec.yaml"
    spec.write_text(f"""version: 1
model: {{path: tiny_mlp.npz, sha256: "{sha(MODEL)}"}}
input:
  box: {{lower: -1, upper: 1}}
explanation:
{before}  - {replace_line}
property:
  deviation: linf
  tolerance: 3
{outputs}""")
    return spec


def replace_line(layers, sub: Path, digest: str) -> str:
    return f'replace: {{layers: [{layers[0]}, {layers[1]}], model: {{path: {sub.name}, sha256: "{digest}"}}}}'


def direct(layers, x):
    """dense, relu, ..., dense at x, exactly (independent of the checker's code)."""
    for j, (w, b) in enumerate(layers):
        x = [sum((a * v for a, v in zip(row, x)), Fraction(0)) + c for row, c in zip(w, b)]
        if j < len(layers) - 1:
            x = [max(v, Fraction(0)) for v in x]
    return x


@pytest.mark.parametrize("layers, widths, outputs", [
    ((2, 2), (8, 3, 8), None),     # one layer by two narrower layers: g one deeper than f
    ((1, 2), (4, 8), None),        # two layers by one: g one shallower
    ((3, 3), (8, 5, 2, 3), (0, 2)),  # the output layer by three layers, selected outputs
    ((1, 3), (4, 3), None),        # the whole network by one dense layer: g has no hidden layer
    ((1, 1), (4, 2, 2, 8), None),  # the first layer by three
])
def test_joint_network_is_f_minus_g_exactly(tmp_path, layers, widths, outputs):
    sub = tmp_path / "sub.npz"
    digest = sub_model(sub, widths, seed=sum(widths))
    out = "" if outputs is None else f"  outputs: [{', '.join(map(str, outputs))}]\n"
    spec = read_spec(write_spec(tmp_path, replace_line(layers, sub, digest), outputs=out))
    f = read_model(MODEL)
    fl, sl = exact_layers(f), exact_layers(read_model(sub))
    g = build_g(spec, f, None)
    k, m = layers
    assert g == fl[:k - 1] + sl + fl[m:]
    joint, _ = joint_network(fl, g, spec.property.outputs)
    rng = np.random.default_rng(1)
    for _ in range(20):
        x = [Fraction(float(v)) for v in rng.uniform(-1, 1, 4)]
        want = [a - b for a, b in zip(direct(fl, x), direct(g, x))]
        assert exact.forward(joint, x) == [want[i] for i in (outputs or range(3))]
    assert level_dof(spec.explanation, f) == (sum(widths[1:-1]), sum(f.widths[k:m]))


def test_shipped_example_checks_and_verifies(tmp_path, capsys):
    cert = tmp_path / "tiny_replace.cert.json"
    assert main(["check", str(SPEC), "--out", str(cert)]) == 0
    assert main(["verify", str(SPEC), str(cert)]) == 0
    assert main(["verify", str(SPEC), str(ROOT / "proofs" / "tiny_replace.cert.json")]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("CERTIFIED")


def test_tampered_sub_model_is_bad_input(tmp_path, capsys):
    for sub_dir in ("specs", "models", "proofs"):
        (tmp_path / sub_dir).mkdir()
    spec, cert = tmp_path / "specs" / SPEC.name, tmp_path / "proofs" / "tiny_replace.cert.json"
    sub = tmp_path / "models" / "tiny_replace_sub.npz"
    shutil.copy(SPEC, spec)
    shutil.copy(MODEL, tmp_path / "models" / MODEL.name)
    shutil.copy(ROOT / "models" / sub.name, sub)
    shutil.copy(ROOT / "proofs" / cert.name, cert)
    assert main(["verify", str(spec), str(cert)]) == 0
    capsys.readouterr()
    dense = read_model(sub).dense
    weights = [np.array(d.weight) for d in dense]
    weights[0][0, 0] += 1e-3  # changed sub-model: its sha256 no longer matches the spec's
    save_model(sub, weights, [np.array(d.bias) for d in dense])
    assert main(["verify", str(spec), str(cert)]) == 2
    assert main(["check", str(spec), "--out", str(tmp_path / "x.cert.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("explanation[0].replace.model.sha256" in line for line in err), err


def bad(tmp_path, capsys, text_spec: Path, key: str):
    out = tmp_path / "out"
    out.mkdir()
    assert main(["check", str(text_spec), "--out", str(out / "x.cert.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and key in err[0], err
    assert "Traceback" not in err[0] and not list(out.iterdir())
    return err[0]


@pytest.mark.parametrize("layers, widths, affine, key, what", [
    ((3, 2), (8, 3, 8), False, "replace.layers", "first layer 3 > last layer 2"),
    ((2, 4), (8, 3, 8), False, "replace.layers", "layer 4 does not exist"),
    ((1, 1), (8, 3, 8), False, "replace.model", "maps 8 -> 8"),   # layer 1 maps 4 -> 8
    ((2, 3), (8, 3, 8), False, "replace.model", "maps 8 -> 8"),   # layers 2..3 map 8 -> 3
    ((2, 2), (8, 3, 8), True, "replace.model", "input affine layer"),
    ((0, 2), (8, 3, 8), False, "replace.layers[0]", "below 1"),
])
def test_impossible_parameters(tmp_path, capsys, layers, widths, affine, key, what):
    sub = tmp_path / "sub.npz"
    extra = {"input_scale": np.ones(widths[0]), "input_shift": np.zeros(widths[0])} if affine else {}
    digest = sub_model(sub, widths, **extra)
    err = bad(tmp_path, capsys, write_spec(tmp_path, replace_line(layers, sub, digest)), key)
    assert what in err, err


def test_replace_must_be_last(tmp_path, capsys):
    sub = tmp_path / "sub.npz"
    digest = sub_model(sub, (8, 3, 8))
    spec = write_spec(tmp_path, "prune: {layer: 1, keep: [0, 1]}", before=f"  - {replace_line((2, 2), sub, digest)}\n")
    err = bad(tmp_path, capsys, spec, "explanation[0].replace")
    assert "must be the last transform" in err


def test_layers_must_be_a_pair(tmp_path, capsys):
    sub = tmp_path / "sub.npz"
    digest = sub_model(sub, (8, 3, 8))
    spec = write_spec(tmp_path, f'replace: {{layers: [2], model: {{path: sub.npz, sha256: "{digest}"}}}}')
    assert "expected [k, m]" in bad(tmp_path, capsys, spec, "replace.layers")
