"""ONNX models and VNN-LIB regions in: the stdlib ONNX reader agrees with onnxruntime, folds
affine maps exactly, rejects what it cannot read with one line (exit 2); the VNN-LIB reader
gives the exact box and rejects anything that is not a box on the inputs.

The onnxruntime comparisons evaluate certify's IR in float64 on random inputs: relative tolerance
1e-9 for double models, 1e-5 for float32 ones (onnxruntime computes in float32). They skip when
onnx / onnxruntime are not installed; everything else runs without them.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from certify.checker.errors import BadInput
from certify.checker.model import read_model
from certify.checker.vnnlib import read_vnnlib
from certify.cli import main

from .conftest import ROOT, SPECS

DATA = ROOT / "tests" / "data" / "verydiff"
TINY = ROOT / "models" / "tiny_mlp.npz"  # 4 inputs
VERYDIFF = ["mnist_relu_3_100.onnx", "mnist_relu_3_100_pruned5.onnx", "2_80-1.onnx", "2_80-1-0.1.onnx"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ir_forward(model, x: np.ndarray) -> np.ndarray:
    """certify's IR in float64 (Fraction entries rounded), batch x: (n, in)."""
    for i, d in enumerate(model.dense):
        x = x @ np.array([[float(v) for v in row] for row in d.weight]).T + np.array([float(v) for v in d.bias])
        x = np.maximum(x, 0) if i < len(model.dense) - 1 else x
    if model.notes:  # the dropped Softmax, to compare with onnxruntime
        x = np.exp(x - x.max(axis=1, keepdims=True))
        x = x / x.sum(axis=1, keepdims=True)
    return x


def agree_with_onnxruntime(path: Path, rtol: float, samples: int = 20) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = read_model(path, sha256(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    dtype = np.float64 if inp.type == "tensor(double)" else np.float32
    rng = np.random.default_rng(0)
    xs = rng.uniform(-1, 1, size=(samples, model.in_dim)).astype(dtype)
    want = np.stack([session.run(None, {inp.name: x.reshape(shape)})[0].ravel() for x in xs]).astype(np.float64)
    got = ir_forward(model, xs.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max(), err_msg=str(path))


# ----------------------------------------------------------------------------- VeryDiff models


@pytest.mark.parametrize("name", VERYDIFF)
def test_verydiff_model_agrees_with_onnxruntime(name):
    agree_with_onnxruntime(DATA / name, rtol=1e-5)


def test_verydiff_models_read_without_onnx():
    f = read_model(DATA / "mnist_relu_3_100.onnx")
    assert f.widths == (784, 100, 100, 10, 10) and f.notes == ()
    assert all(type(v) is float for d in f.dense for row in d.weight for v in row)  # no fold needed: floats kept
    acas = read_model(DATA / "2_80-1.onnx")
    assert acas.widths == (16, 40, 40, 5)
    assert len(acas.notes) == 1 and "Softmax" in acas.notes[0] and "pre-softmax logits" in acas.notes[0]


def test_checker_reads_onnx_and_vnnlib_with_numpy_and_onnx_blocked():
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('jax', 'jaxlib', 'numpy', 'scipy', 'torch', 'onnx', 'onnxruntime', 'google'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
from certify.checker import check_certificate, Verdict
r = check_certificate({str(SPECS / 'verydiff_mnist.yaml')!r}, {str(ROOT / 'proofs' / 'verydiff_mnist.cert.json')!r})
assert r.verdict is Verdict.CERTIFIED, r
print('ok', sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'onnx', 'google')))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "ok []"


# ----------------------------------------------------------------------------- small built models


def build(tmp: Path, name: str, nodes, inits, in_shape, out_shape, dtype="double", raw=True) -> Path:
    """An ONNX model from onnx.helper: nodes, {name: array} initializers, one input X, one output Y."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    elem = TensorProto.DOUBLE if dtype == "double" else TensorProto.FLOAT
    np_type = np.float64 if dtype == "double" else np.float32

    def tensor(k, v):
        v = np.asarray(v)
        v = v if v.dtype == np.int64 else v.astype(np_type)
        if raw:
            return numpy_helper.from_array(v, k)
        kind = TensorProto.INT64 if v.dtype == np.int64 else elem
        return helper.make_tensor(k, kind, v.shape, v.ravel().tolist())  # typed fields (float_data, ...)

    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("X", elem, in_shape)],
                              [helper.make_tensor_value_info("Y", elem, out_shape)],
                              [tensor(k, v) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    path = tmp / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def N(op, ins, out, name=None, **attrs):
    from onnx import helper

    return helper.make_node(op, ins, [out], name=name or out, **attrs)


R = np.random.default_rng(1)


def gemm_softmax(tmp):
    """Gemm with transB, alpha and beta; Gemm without transB and a (1, n) bias; Softmax at the end."""
    return build(tmp, "gemm", [N("Gemm", ["X", "W1", "b1"], "h", alpha=0.5, beta=2.0, transB=1), N("Relu", ["h"], "r"),
                               N("Gemm", ["r", "W2", "b2"], "z", alpha=1.5), N("Softmax", ["z"], "Y", axis=1)],
                 {"W1": R.normal(size=(6, 4)), "b1": R.normal(size=6), "W2": R.normal(size=(6, 3)), "b2": R.normal(size=(1, 3))},
                 ["N", 4], ["N", 3])


MEAN, STD = np.array([0.1307, -0.25, 0.5]), np.array([0.3081, 3.0, 0.7])


def normalised_matmul(tmp):
    """Sub/Div normalisation of an image, Flatten, MatMul+Add, Mul, Relu, Div, Reshape, Identity, MatMul+Add."""
    return build(tmp, "norm", [N("Sub", ["X", "mean"], "s"), N("Div", ["s", "std"], "d"), N("Flatten", ["d"], "f", axis=1),
                               N("MatMul", ["f", "W1"], "m1"), N("Add", ["m1", "b1"], "a1"), N("Mul", ["a1", "k"], "k1"),
                               N("Relu", ["k1"], "r"), N("Div", ["r", "three"], "r3"), N("Reshape", ["r3", "shape"], "rs"),
                               N("Identity", ["rs"], "i"), N("MatMul", ["i", "W2"], "m2"), N("Add", ["m2", "b2"], "Y")],
                 {"mean": MEAN.reshape(1, 1, 1, 3), "std": STD, "W1": R.normal(size=(6, 5)), "b1": R.normal(size=5),
                  "k": R.normal(size=5), "three": np.array(3.0), "shape": np.array([1, -1], dtype=np.int64),
                  "W2": R.normal(size=(5, 2)), "b2": R.normal(size=2)},
                 [1, 1, 2, 3], [1, 2])


def left_matmul_float32(tmp):
    """The MNIST export's style: MatMul(W, x) on a 1-d x, float32 in typed fields (float_data, not raw_data)."""
    return build(tmp, "left", [N("MatMul", ["W1", "X"], "m1"), N("Add", ["m1", "b1"], "h"), N("Relu", ["h"], "r"),
                               N("MatMul", ["W2", "r"], "m2"), N("Add", ["b2", "m2"], "Y")],
                 {"W1": R.normal(size=(5, 4)), "b1": R.normal(size=5), "W2": R.normal(size=(3, 5)), "b2": R.normal(size=3)},
                 [4], [3], dtype="float", raw=False)


def relu_ends(tmp):
    """ReLU first, twice in a row and last; reversed Sub/Add/Mul operands; consecutive MatMuls; a Constant shape."""
    from onnx import helper, numpy_helper

    shape = helper.make_node("Constant", [], ["shape"], name="shape", value=numpy_helper.from_array(np.array([1, 3], dtype=np.int64)))
    return build(tmp, "ends", [shape, N("Relu", ["X"], "r0"), N("Sub", ["c", "r0"], "s"), N("Mul", ["k", "s"], "m"),
                               N("MatMul", ["m", "W1"], "h1"), N("MatMul", ["h1", "W2"], "h2"), N("Add", ["b", "h2"], "h"),
                               N("Relu", ["h"], "r1"), N("Relu", ["r1"], "r2"), N("Reshape", ["r2", "shape"], "rs"),
                               N("Gemm", ["rs", "W3"], "z", transB=1), N("Relu", ["z"], "Y")],
                 {"c": R.normal(size=3), "k": R.normal(size=(1, 3)), "W1": R.normal(size=(3, 4)), "W2": R.normal(size=(4, 3)),
                  "b": R.normal(size=3), "W3": R.normal(size=(2, 3))},
                 [1, 3], [1, 2])


@pytest.mark.parametrize("make", [gemm_softmax, normalised_matmul, relu_ends], ids=lambda f: f.__name__)
def test_built_double_model_agrees_with_onnxruntime(make, tmp_path):
    agree_with_onnxruntime(make(tmp_path), rtol=1e-9, samples=50)


def test_built_float32_typed_fields_agree_with_onnxruntime(tmp_path):
    agree_with_onnxruntime(left_matmul_float32(tmp_path), rtol=1e-5, samples=50)


def test_ir_shapes_of_built_models(tmp_path):
    assert read_model(gemm_softmax(tmp_path)).widths == (4, 6, 3)
    assert read_model(normalised_matmul(tmp_path)).widths == (6, 5, 2)
    assert read_model(left_matmul_float32(tmp_path)).widths == (4, 5, 3)
    ends = read_model(relu_ends(tmp_path))
    assert ends.widths == (3, 3, 3, 3, 2, 2)  # identity layers for the leading ReLU, the double ReLU and the last ReLU
    assert ends.dense[0].weight == ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def test_folds_are_exact(tmp_path):
    """(x - mean) / std then x @ W1 + b1, times k: every IR entry is the exact rational, not a rounding."""
    from onnx import numpy_helper, load

    path = normalised_matmul(tmp_path)
    init = {t.name: numpy_helper.to_array(t) for t in load(str(path)).graph.initializer}
    w1, b1, k, w2, b2 = (init[n] for n in ("W1", "b1", "k", "W2", "b2"))
    mean, std = np.tile(init["mean"].ravel(), 2), np.tile(init["std"].ravel(), 2)  # the flattened 1x1x2x3 image
    first, second = read_model(path).dense
    q = Fraction
    for i in range(5):
        row = [q(w1[j, i]) / q(std[j]) * q(k[i]) for j in range(6)]
        assert list(map(q, first.weight[i])) == row
        assert q(first.bias[i]) == (q(b1[i]) - sum(q(w1[j, i]) * q(mean[j]) / q(std[j]) for j in range(6))) * q(k[i])
    assert any(type(v) is Fraction for row in first.weight for v in row)  # 1/0.3081 is no float: kept exact
    assert [list(map(q, r)) for r in second.weight] == [[q(w2[j, i]) / 3 for j in range(5)] for i in range(2)]
    assert list(map(q, second.bias)) == [q(v) for v in b2]
    assert all(type(v) is float for v in second.bias)  # nothing to fold: floats kept


# ----------------------------------------------------------------------------- bad ONNX input: exit 2, one line


def spec_for(tmp: Path, model: Path, input_text: str = "box: {lower: -1, upper: 1}", second: Path | None = None) -> Path:
    second = second or model
    text = (f'version: 1\nmodel: {{path: {model.name}, sha256: "{sha256(model)}"}}\ninput:\n  {input_text}\n'
            f'explanation:\n  - model: {{path: {second.name}, sha256: "{sha256(second)}"}}\n'
            "property:\n  deviation: linf\n  tolerance: 1\n")
    (tmp / "spec.yaml").write_text(text)
    return tmp / "spec.yaml"


def exit_2_one_line(spec: Path, capsys, *names: str) -> str:
    rc = main(["check", str(spec), "--out", str(spec.parent / "proofs" / "x.cert.json")])
    out, err = capsys.readouterr()
    assert rc == 2, err
    assert out == "" and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for name in names:
        assert name in lines[0], f"{name!r} not in {lines[0]!r}"
    assert not (spec.parent / "proofs").exists()
    return lines[0]


def test_unsupported_ops_are_listed_in_one_line(tmp_path, capsys):
    from onnx import helper

    nodes = [N("Conv", ["X", "K"], "c", name="conv1"), N("Sin", ["c"], "s", name="act"), N("Gemm", ["s", "W"], "g", transA=1),
             helper.make_node("Clip6", ["g"], ["h"], name="custom", domain="my.ops"), N("Softmax", ["h"], "sm"), N("Relu", ["sm"], "Y")]
    path = build(tmp_path, "conv", nodes, {"K": R.normal(size=(1, 1, 1, 1)), "W": R.normal(size=(4, 4))}, [1, 4], [1, 4])
    line = exit_2_one_line(spec_for(tmp_path, path), capsys, "conv.onnx", "unsupported nodes",
                           "conv1 (Conv)", "act (Sin)", "g (Gemm with transA)", "custom (my.ops.Clip6)")
    assert "(Relu" not in line and "(Softmax" not in line  # an inner Softmax is read (checker/onnx_attention.py)


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b[: len(b) // 2], "not a readable ONNX model"),
    (lambda b: bytes(range(256)) * 8, "not a readable ONNX model"),
])
def test_malformed_onnx_bytes(mutate, message, tmp_path, capsys):
    path = tmp_path / "bad.onnx"
    path.write_bytes(mutate((DATA / "2_80-1.onnx").read_bytes()))
    exit_2_one_line(spec_for(tmp_path, path), capsys, "bad.onnx", message)


def test_branching_graph_is_read_as_a_graph(tmp_path, capsys):
    from certify.checker.graph import Graph

    path = build(tmp_path, "branch", [N("Relu", ["X"], "r"), N("Add", ["X", "r"], "Y")], {}, [1, 4], [1, 4])
    g = read_model(path, sha256(path))  # a residual graph: checker/onnx_graph.py (tests/test_onnx_graph.py)
    assert isinstance(g, Graph) and [(n.op, n.inputs) for n in g.nodes] == [("relu", ("x",)), ("add", ("x", "r"))]
    path = build(tmp_path, "dangling", [N("Relu", ["X"], "r"), N("Add", ["Z", "r"], "Y")], {}, [1, 4], [1, 4])
    exit_2_one_line(spec_for(tmp_path, path), capsys, "dangling.onnx", "reads undefined values ['Z']")


def test_nonfinite_weight_is_rejected(tmp_path, capsys):
    path = build(tmp_path, "nan", [N("Gemm", ["X", "W"], "Y")], {"W": np.array([[1.0, np.nan], [0.0, 1.0]])}, [1, 2], [1, 2])
    exit_2_one_line(spec_for(tmp_path, path, "box: {lower: -1, upper: 1}"), capsys, "nan.onnx", "non-finite")


# ----------------------------------------------------------------------------- VNN-LIB

VNNLIB = """; a region
(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const X_2 Real)
(declare-const X_3 Real)
(declare-const Y_0 Real)
(assert (<= X_0 0.1))
(assert (>= X_0 -0.1))
(assert (<= 1e-3 X_1))   ; 1/1000
(assert (>= 2.5E+1 X_1))
(assert (and (>= X_2 (- 0.5)) (<= X_2 0.5) (<= X_2 0.25)))
(assert (<= -0.0 X_3))
(assert (<= X_3 1))
(assert (or (<= Y_0 0.5) (>= Y_0 1.5)))  ; the output property: ignored
"""


def test_vnnlib_box_is_exact(tmp_path):
    (tmp_path / "r.vnnlib").write_text(VNNLIB)
    lo, up = read_vnnlib(tmp_path / "r.vnnlib", "input.vnnlib")
    assert lo == [Fraction(-1, 10), Fraction(1, 1000), Fraction(-1, 2), 0]
    assert up == [Fraction(1, 10), 25, Fraction(1, 4), 1]
    assert all(type(v) is Fraction for v in lo + up)


def test_verydiff_vnnlib_regions():
    lo, up = read_vnnlib(DATA / "sigma_0.1.vnnlib", "input.vnnlib")
    assert lo == [Fraction(-1, 10)] * 16 and up == [Fraction(1, 10)] * 16
    lo, up = read_vnnlib(DATA / "mnist_0_local_15.vnnlib", "input.vnnlib")
    free = [i for i in range(784) if lo[i] != up[i]]
    assert len(lo) == 784 and len(free) == 15 and all((lo[i], up[i]) == (0, 1) for i in free)


def tiny_spec(tmp: Path, region: str, clip: str = "") -> Path:
    import shutil

    shutil.copy(TINY, tmp / "tiny.npz")
    (tmp / "r.vnnlib").write_text(region)
    return spec_for(tmp, tmp / "tiny.npz", "vnnlib: r.vnnlib" + clip)


def test_vnnlib_spec_input_with_clip(tmp_path):
    from certify.checker.network import input_box
    from certify.checker.spec import read_spec

    spec = read_spec(tiny_spec(tmp_path, VNNLIB, "\n  clip: [0, 1]"))
    lo, up = input_box(spec, read_model(spec.model.path))
    assert lo == [0, Fraction(1, 1000), 0, 0] and up == [Fraction(1, 10), 1, Fraction(1, 4), 1]


@pytest.mark.parametrize("assertion, text", [
    ("(assert (or (<= X_0 0.1) (>= X_0 0.2)))", "(or"),
    ("(assert (<= (+ X_0 X_1) 1))", "+ X_0 X_1"),
    ("(assert (<= X_0 X_1))", "X_0 X_1"),
    ("(assert (< X_0 1))", "< X_0 1"),
    ("(assert (<= X_0 Y_0))", "X_0 Y_0"),
    ("(assert (<= X_9 1))", "X_9"),
])
def test_vnnlib_non_box_is_rejected(assertion, text, tmp_path, capsys):
    line = exit_2_one_line(tiny_spec(tmp_path, VNNLIB + assertion + "\n"), capsys, "r.vnnlib:", "input.vnnlib",
                           "certify reads box constraints on inputs only")
    assert text.split()[0] in line


def test_vnnlib_missing_bound_is_rejected(tmp_path, capsys):
    exit_2_one_line(tiny_spec(tmp_path, VNNLIB.replace("(assert (<= X_3 1))", "")), capsys, "r.vnnlib", "X_3")


def test_vnnlib_unbalanced_is_rejected(tmp_path, capsys):
    exit_2_one_line(tiny_spec(tmp_path, VNNLIB + "(assert (<= X_0 1)"), capsys, "r.vnnlib", "not a readable VNN-LIB")


def test_vnnlib_dimension_mismatch_is_rejected(tmp_path, capsys):
    import shutil

    shutil.copy(DATA / "sigma_0.1.vnnlib", tmp_path / "sigma.vnnlib")
    shutil.copy(TINY, tmp_path / "tiny.npz")
    exit_2_one_line(spec_for(tmp_path, tmp_path / "tiny.npz", "vnnlib: sigma.vnnlib"), capsys,
                    "spec.yaml:", "input.vnnlib", "declares 16 inputs but the model takes 4")


def test_vnnlib_and_box_together_are_rejected(tmp_path, capsys):
    spec = tiny_spec(tmp_path, VNNLIB, "\n  box: {lower: 0, upper: 1}")
    exit_2_one_line(spec, capsys, "spec.yaml:", "exactly one of box, linf_ball, vnnlib or tokens")


def test_folded_model_runs_end_to_end(tmp_path, capsys):
    """Fraction entries (1/0.3081 is no float) go through the engine and the checker: the bound is accepted."""
    import json

    f = normalised_matmul(tmp_path)
    (tmp_path / "g").mkdir()
    g = normalised_matmul(tmp_path / "g")  # the same graph with the next random weights
    (tmp_path / "g_norm.onnx").write_bytes(g.read_bytes())
    spec = spec_for(tmp_path, f, "box: {lower: 0, upper: 1}", second=tmp_path / "g_norm.onnx")
    rc = main(["check", str(spec), "--out", str(tmp_path / "x.cert.json"), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert rc in (0, 1) and result["verdict"] in ("CERTIFIED", "VIOLATED", "UNKNOWN"), result
    assert result["checker"]["reason"] is None
    assert Fraction(result["attained_lower"]) <= Fraction(result["certified_upper"])
