"""`fill: free` (interval patching): the pruned neurons' values v_j range freely over R_j.

The certificate bounds sup over x in the box and v in R = prod_j R_j of |f(x) - g(x, v)|, where
R_j = [relu(l_j), relu(u_j)] comes from the checker's exact interval propagation and the joint
network reads v as extra inputs after x (certify/checker/network.py free_inputs, carried).
"""

from __future__ import annotations

import itertools
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from certify.bounds.milp import milp_max_deviation
from certify.bounds.network import box_floats
from certify.checker.check import Verdict, check_certificate
from certify.checker.exact import forward
from certify.checker.model import read_model
from certify.checker.network import build_g, exact_layers, joint_network, normalise_box
from certify.checker.numbers import rational_str
from certify.checker.spec import read_spec
from certify.cli import main
from certify.engine import prepare, run_check
from certify.model import save_model

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "models" / "tiny_mlp.npz"


def small_model(tmp: Path, scale: bool = False) -> str:
    """2 -> 4 -> 3 -> 1 with a fixed seed; optionally an input affine layer (x * 2 - 1/2)."""
    rng = np.random.default_rng(3)
    ws = [rng.normal(size=(4, 2)), rng.normal(size=(3, 4)), rng.normal(size=(1, 3))]
    bs = [rng.normal(0, 0.3, size=4), rng.normal(0, 0.3, size=3), rng.normal(0, 0.3, size=1)]
    extra = {"input_scale": np.array([2.0, 2.0]), "input_shift": np.array([-0.5, -0.5])} if scale else {}
    return save_model(tmp / "small.npz", ws, bs, **extra)


def write_spec(tmp: Path, name: str, model: str, sha: str, layer: int, keep: list[int], fill: str, tol: str = "10",
               extra: str = "") -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(f"""version: 1
model: {{path: {model}, sha256: "{sha}"}}
input:
  box: {{lower: -1, upper: 1}}
explanation:
  - prune: {{layer: {layer}, keep: {keep}, fill: {fill}}}
property:
  deviation: linf
  tolerance: {tol}{extra}
options: {{method: crown, falsifier: {{starts: 16, steps: 30}}}}
""")
    return path


def load(spec_path: Path):
    """f as float arrays: (input scale, input shift, [(W, b)])."""
    spec = read_spec(spec_path)
    f = read_model(spec.model.path, spec.model.sha256)
    scale = (None, None) if f.input_scale is None else (np.array(f.input_scale), np.array(f.input_shift))
    return (*scale, [(np.array(d.weight, float), np.array(d.bias, float)) for d in f.dense])


def g_direct(model, x: np.ndarray, v: np.ndarray, layer: int, pruned: list[int]) -> np.ndarray:
    """g(x, v) straight from the model's arrays: layer `layer`'s pruned activations replaced by v."""
    scale, shift, dense = model
    a = x if scale is None else x * scale + shift
    for k, (w, b) in enumerate(dense, start=1):
        a = w @ a + b
        if k < len(dense):
            a = np.maximum(a, 0)
        if k == layer:
            a = a.copy()
            a[pruned] = v
    return a


def f_direct(model, x: np.ndarray) -> np.ndarray:
    return g_direct(model, x, np.zeros(0), 0, [])


@pytest.mark.parametrize("scale", [False, True], ids=["plain", "input-affine"])
@pytest.mark.parametrize("layer", [1, 2])
def test_joint_network_reads_free_values_exactly(tmp_path, layer, scale):
    """joint(x, v) = f(x) - g(x, v) at random points of box x R; R contains the pruned neurons' range."""
    sha = small_model(tmp_path, scale)
    keep = [1, 3] if layer == 1 else [1]
    pruned = [j for j in range(4 if layer == 1 else 3) if j not in keep]
    sp = write_spec(tmp_path, "s", "small.npz", sha, layer, keep, "free")
    spec = read_spec(sp)
    f = read_model(spec.model.path, spec.model.sha256)
    g = build_g(spec, f, None)
    depth, r_lo, r_up = g.free
    assert depth == layer and len(r_lo) == len(pruned) and all(0 <= a <= b for a, b in zip(r_lo, r_up))
    joint, shared = joint_network(exact_layers(f), g, None)
    assert shared == layer  # the carried values do not break the shared prefix
    rng, model = np.random.default_rng(0), load(sp)
    for _ in range(40):
        x = rng.uniform(-1, 1, 2)
        v = np.array([rng.uniform(float(a), float(b)) for a, b in zip(r_lo, r_up)])
        point = [Fraction(t) for t in x] + [Fraction(t) for t in v]
        got = float(forward(joint, normalise_box(f, point, point)[0])[0])
        want = f_direct(model, x)[0] - g_direct(model, x, v, layer, pruned)[0]
        assert got == pytest.approx(want, abs=1e-9)
        # the neurons' own values at x lie in R (R contains the reachable range)
        h = _hidden(model, x, layer)
        assert all(float(a) - 1e-12 <= h[j] <= float(b) + 1e-12 for j, a, b in zip(pruned, r_lo, r_up))


def _hidden(model, x: np.ndarray, layer: int) -> np.ndarray:
    scale, shift, dense = model
    a = x if scale is None else x * scale + shift
    for w, b in dense[:layer]:
        a = np.maximum(w @ a + b, 0)
    return a


def grid_max(sp: Path, layer: int, pruned: list[int], r_lo, r_up, n: int = 21) -> float:
    """max |f(x) - g(x, v)| over a grid of box x R (a lower bound on the sup)."""
    axes = [np.linspace(-1, 1, n)] * 2 + [np.linspace(float(a), float(b), 9) for a, b in zip(r_lo, r_up)]
    best, model = 0.0, load(sp)
    for point in itertools.product(*axes):
        x, v = np.array(point[:2]), np.array(point[2:])
        best = max(best, abs(f_direct(model, x)[0] - g_direct(model, x, v, layer, pruned)[0]))
    return best


def test_free_bound_dominates_zero_and_the_exact_maximum(tmp_path):
    """free bound >= exact max over box x R (MILP, confirmed by exact replay) >= grid max, and
    >= the zero fill's exact max (0 lies in R here, so the free sup is at least the zero sup)."""
    sha = small_model(tmp_path)
    layer, keep, pruned = 2, [1], [0, 2]
    results = {}
    for fill in ("zero", "free"):
        sp = write_spec(tmp_path, fill, "small.npz", sha, layer, keep, fill)
        out = run_check(sp, tmp_path / f"{fill}.cert.json")
        assert out.verdict is Verdict.CERTIFIED, out.check.reason
        p = prepare(sp, tmp_path / f"{fill}.milp.cert.json")
        best, arg = milp_max_deviation(p.net, *box_floats(*p.box))
        exact = max(abs(d) for d in forward(p.joint, [Fraction(t) for t in arg]))
        assert abs(float(exact) - best) < 1e-6
        results[fill] = (out.check.bound, exact, p)
    bound_free, max_free, p_free = results["free"]
    bound_zero, max_zero, _ = results["zero"]
    r_lo, r_up = p_free.domain[0][2:], p_free.domain[1][2:]
    assert len(r_lo) == len(pruned) and all(a == 0 < b for a, b in zip(r_lo, r_up))  # 0 in R, R not trivial
    assert bound_free >= max_free >= max_zero
    assert max_free > max_zero  # the free values really add deviation here
    assert float(max_free) >= grid_max(tmp_path / "free.yaml", layer, pruned, r_lo, r_up) - 1e-9
    assert bound_free >= bound_zero  # holds for this example (not a theorem for relaxation bounds)
    assert bound_zero >= max_zero


@pytest.fixture
def tiny_free(tmp_path):
    """tiny_mlp (4 -> 8 -> 8 -> 3), layer 1 half pruned with fill: free; its certificate."""
    sp = write_spec(tmp_path, "tiny", str(TINY), read_model(TINY).sha256, 1, [0, 2, 4, 6], "free", tol="4")
    cert = tmp_path / "tiny.cert.json"
    out = run_check(sp, cert)
    assert out.verdict is Verdict.CERTIFIED and out.check.reason == ""
    return sp, cert, out


def test_checker_accepts_and_the_witness_is_x_then_v(tiny_free):
    sp, cert, out = tiny_free
    c = json.loads(cert.read_text())
    assert len(c["witness"]["x"]) == 4 + 4  # x (4 inputs), then v (4 pruned neurons)
    assert all(Fraction(t) >= 0 for t in c["witness"]["x"][4:])
    assert c["engine"]["joint_widths"][0] == 8
    again = check_certificate(sp, cert)
    assert again.verdict is Verdict.CERTIFIED and again.bound == out.check.bound


def _tamper(cert: Path, change) -> Path:
    c = json.loads(cert.read_text())
    change(c)
    out = cert.with_name("tampered.cert.json")
    out.write_text(json.dumps(c))
    return out


def test_tampered_certificates_are_rejected(tiny_free, monkeypatch):
    sp, cert, out = tiny_free
    spec = read_spec(sp)
    g = build_g(spec, read_model(spec.model.path, spec.model.sha256), None)
    r_up = g.free[2]

    def v_outside(c):  # a witness value above its R_j
        c["witness"]["x"][4] = rational_str(r_up[0] + 1)

    def x_only(c):  # a witness without its free values
        c["witness"]["x"] = c["witness"]["x"][:4]

    def lower_bound(c):
        c["claim"]["bound"] = rational_str(out.check.bound / 2)

    for change, why in ((v_outside, "outside"), (x_only, "witness"), (lower_bound, "")):
        r = check_certificate(sp, _tamper(cert, change))
        assert r.verdict is Verdict.REJECTED and why in r.reason, (change.__name__, r.reason)

    # a certificate whose steps were computed for a narrower R than the checker's
    import certify.engine as engine
    real = engine.with_free

    def narrower(g, lo, up):
        lo, up = real(g, lo, up)
        return lo, [u if i < 4 else (a + u) / 2 for i, (a, u) in enumerate(zip(lo, up))]

    monkeypatch.setattr(engine, "with_free", narrower)
    r = run_check(sp, cert.with_name("narrow.cert.json"), method="interval")
    assert r.verdict is Verdict.REJECTED, r.check.reason


def test_free_fill_in_the_level_example():
    """specs/toy_features_free.yaml: the zero fill is certified, the free fill violated (worst level)."""
    spec = read_spec(ROOT / "specs" / "toy_features_free.yaml")
    assert [lv.explanation[0].fill for lv in spec.levels] == ["zero", "free"]
    zero = check_certificate(spec.path, ROOT / "proofs" / "toy_features_free.zero.cert.json")
    free = check_certificate(spec.path, ROOT / "proofs" / "toy_features_free.free.cert.json")
    assert zero.verdict is Verdict.CERTIFIED and free.verdict is Verdict.VIOLATED
    assert free.bound >= free.witness_deviation > spec.property.tolerance >= zero.bound


@pytest.mark.parametrize("layer, keep, fill, extra, key, what", [
    (7, [0], "free", "", "explanation[0].prune.layer", "layer 7 does not exist"),
    (3, [0], "free", "", "explanation[0].prune.layer", "layer 3 does not exist"),  # the output layer
    (1, [0, 8], "free", "", "explanation[0].prune.keep", "[8]"),
    (1, [0], "free", "\n  semantics: float32", "property.semantics", "fill: free"),
    (1, [0], "loose", "", "explanation[0].prune.fill", "zero, mean, free"),
], ids=["missing-layer", "output-layer", "missing-neuron", "float32", "unknown-fill"])
def test_bad_free_specs_exit_2_with_one_line(tmp_path, capsys, layer, keep, fill, extra, key, what):
    sp = write_spec(tmp_path, "bad", str(TINY), read_model(TINY).sha256, layer, keep, fill, extra=extra)
    assert main(["check", str(sp), "--out", str(tmp_path / "proofs" / "x.cert.json")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert f": {key}: " in err and what in err, err
    assert not (tmp_path / "proofs").exists() or not any((tmp_path / "proofs").iterdir())


def test_free_must_be_last(tmp_path, capsys):
    sp = write_spec(tmp_path, "bad", str(TINY), read_model(TINY).sha256, 1, [0], "free")
    text = sp.read_text()
    assert "fill: free}\n" in text
    sp.write_text(text.replace("fill: free}\n", "fill: free}\n  - prune: {layer: 2, keep: [0], fill: zero}\n"))
    assert main(["check", str(sp), "--out", str(tmp_path / "x.cert.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "explanation[0].prune.fill: `fill: free` must be the last transform" in err
