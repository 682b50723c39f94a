"""ONNX residual graphs (certify/checker/onnx_graph.py): the shipped torch exports of models/resmlp.npz
(models/export_resmlp_onnx.py) read into the same graph, bad files refused in one line, the fused and
decomposed LayerNorm forms read into one graph."""

from __future__ import annotations

import hashlib
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from certify.checker.graph import Graph, evaluate as exact_evaluate, read_graph
from certify.checker.model import read_model
from certify.cli import main

from .conftest import ROOT, shipped_text

MODELS = ROOT / "models"
FILES = {"opset20": MODELS / "resmlp.onnx", "opset17": MODELS / "resmlp_opset17.onnx", "opset14": MODELS / "resmlp_opset14.onnx"}
onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read(path: Path) -> Graph:
    g = read_model(path, sha(path))
    assert isinstance(g, Graph)
    return g


def f32(v) -> Fraction:
    return Fraction(float(np.float32(float(v))))


def params(g: Graph) -> list:
    """The graph without names: each node's op, its inputs by position, and its exact parameters."""
    pos = {"x": -1, **{n.name: i for i, n in enumerate(g.nodes)}}
    return [(n.op, tuple(pos[s] for s in n.inputs), n.weight, n.bias, n.scale, n.shift) for n in g.nodes]


def digits(k: int = 20) -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().data[:k] / 16.0


# ----------------------------------------------------------------------------- the readers agree


@pytest.mark.parametrize("form", list(FILES))
def test_onnx_graph_holds_the_npz_weights_and_computes_its_logits(form):
    g, ref = read(FILES[form]), read_graph(MODELS / "resmlp.npz")
    assert g.in_dim == 64 and g.out_dim == 10 and g.output == "logits" and "/block1/Add_output_0" in g.dims
    mine = {n.name: n for n in ref.nodes}
    names = ["embed", "block1.up", "block1.down", "block2.up", "block2.down", "logits"]
    gemms = [n for n in g.nodes if n.name.endswith("Gemm_output_0") or n.name == "logits"]
    assert len(gemms) == len(names) and all(n.op == "linear" for n in gemms)
    for n, name in zip(gemms, names):  # the same exact weights: resmlp.npz's float64 numbers rounded to float32
        assert n.weight == tuple(tuple(map(f32, r)) for r in mine[name].weight) and n.bias == tuple(map(f32, mine[name].bias))
    scales = [n for n in g.nodes if n.op == "affine" and len(n.scale) == 32 and any(v != 1 for v in n.scale)]
    assert [(n.scale, n.shift) for n in scales] == [(tuple(map(f32, mine[k].scale)), tuple(map(f32, mine[k].shift)))
                                                    for k in ("block1.ln", "block2.ln", "ln_f")]
    from certify.model.graph import evaluate

    x = digits()
    want = evaluate(MODELS / "resmlp.npz", x)
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(FILES[form]), providers=["CPUExecutionProvider"])
    theirs = np.concatenate([sess.run(None, {"x": row[None].astype(np.float32)})[0] for row in x])
    for row, w, t in zip(x[:5], want, theirs):  # the checker's own evaluation (arb balls) of the ONNX graph
        ours = np.array([float(v.mid()) for v in exact_evaluate(g, [Fraction(float(v)) for v in row], prec=64)["logits"]])
        np.testing.assert_allclose(ours, w, atol=1e-4)  # float32 weights against float64 ones
        np.testing.assert_allclose(ours, t, atol=1e-4)  # against onnxruntime's float32 run


def test_fused_and_decomposed_layernorm_read_into_one_graph():
    """LayerNormalization (opset 17) and torch's decomposed export (ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt,
    Div, Mul, Add) give the same nodes with the same exact numbers, so the same bounds."""
    fused, decomposed = read(FILES["opset17"]), read(FILES["opset14"])
    assert params(fused) == params(decomposed)
    ops = [n.op for n in fused.nodes]
    assert ops.count("rsqrt") == 3 and "sqrt" not in ops and "reciprocal" not in ops  # Div by Sqrt: one rsqrt
    var = [n for n in fused.nodes if n.op == "rsqrt"]
    assert all(fused.dims[n.name] == 1 for n in var)  # the variance is one scalar, relaxed once
    gelu = read(FILES["opset20"])
    assert [n.op for n in gelu.nodes].count("gelu") == 2 and "erf" not in [n.op for n in gelu.nodes]


def test_bounds_of_the_three_forms(tmp_path):
    """Equal graphs give equal bounds; the Gelu node is relaxed as one curve, tighter than the exported
    x * (1 + erf(x / sqrt 2)) / 2, whose product is relaxed by McCormick planes."""
    from certify.bounds.graph import crown
    from certify.checker.graph import joint_graph
    from certify.checker.network import build_g
    from certify.engine import load

    bounds = {}
    for form in FILES:
        spec = spec_for(FILES[form], tmp_path / f"{form}.yaml")
        s, _, _, f, box = load(spec, None, None, False)
        bounds[form] = crown(joint_graph(f, build_g(s, f, None), None), box)[0]
    assert bounds["opset17"] == bounds["opset14"]
    assert bounds["opset20"] < bounds["opset17"]


def spec_for(model: Path, path: Path, site: str = "/block1/Add_output_0") -> Path:
    text = shipped_text("resmlp_onnx")
    text = text.replace(f"{MODELS}/resmlp.onnx", str(model)).replace(sha(FILES["opset20"]), sha(model))
    path.write_text(text.replace("site: /block1/Add_output_0", f"site: {site}"))
    return path


def test_cli_certifies_the_decomposed_export(tmp_path, capsys):
    spec = spec_for(FILES["opset14"], tmp_path / "decomposed.yaml")
    assert main(["check", str(spec), "--out", str(tmp_path / "d.cert.json"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["verdict"] == "CERTIFIED" and Fraction(result["attained_lower"]) <= Fraction(result["certified_upper"])
    assert main(["verify", str(spec), str(tmp_path / "d.cert.json")]) == 0


def test_a_site_names_an_onnx_value(tmp_path, capsys):
    spec = spec_for(FILES["opset20"], tmp_path / "s.yaml", site="block1")
    assert main(["check", str(spec), "--out", str(tmp_path / "s.cert.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no value named 'block1'" in err and "/embed/Gemm_output_0" in err


# ----------------------------------------------------------------------------- bad files: exit 2, one line


def mutated(tmp_path: Path, change) -> Path:
    m = onnx.load(str(FILES["opset14"]))
    change(m)
    path = tmp_path / "bad.onnx"
    path.write_bytes(m.SerializeToString())
    return path


def one_line(path: Path, tmp_path: Path, capsys, *words) -> str:
    spec = spec_for(path, tmp_path / "bad.yaml")
    assert main(["check", str(spec), "--out", str(tmp_path / "proofs" / "x.cert.json")]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], f"{w!r} not in {lines[0]!r}"
    assert not (tmp_path / "proofs").exists()
    return lines[0]


def initializer(m, name_part):
    return next(t for t in m.graph.initializer if name_part in t.name)


def _nan(m):
    t = initializer(m, "block2.up.weight")
    a = numpy_helper.to_array(t).copy()
    a[3, 5] = np.nan
    t.CopyFrom(numpy_helper.from_array(a, t.name))


def _float16(m):
    t = initializer(m, "block1.down.bias")
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))


def _shape(m):
    t = initializer(m, "block1.down.weight")
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t)[:, :63].copy(), t.name))


def _unsupported(m):
    nodes = list(m.graph.node)
    erf = next(i for i, n in enumerate(nodes) if n.op_type == "Erf")
    nodes[erf] = helper.make_node("Sin", list(nodes[erf].input), list(nodes[erf].output), name="my_sin")
    gemm = next(i for i, n in enumerate(nodes) if n.op_type == "Gemm")
    nodes[gemm] = helper.make_node("Gemm", list(nodes[gemm].input), list(nodes[gemm].output), name="tgemm", transA=1)
    nodes.insert(3, helper.make_node("Gelu", [nodes[2].output[0]], ["unused"], name="tanh_gelu", approximate="tanh"))
    del m.graph.node[:]
    m.graph.node.extend(nodes)


def _dangling(m):
    add = next(n for n in m.graph.node if n.op_type == "Add" and n.name == "/block1/Add")
    add.input[0] = "nowhere"


def _pow3(m):
    pw = next(n for n in m.graph.node if n.op_type == "Pow")
    c = next(t for t in m.graph.initializer if t.name == pw.input[1]) if any(t.name == pw.input[1] for t in m.graph.initializer) else None
    if c is None:  # torch writes the exponent as a Constant node
        node = next(n for n in m.graph.node if pw.input[1] in n.output)
        node.attribute[0].t.CopyFrom(numpy_helper.from_array(np.array(3.0, dtype=np.float32)))
    else:
        c.CopyFrom(numpy_helper.from_array(np.array(3.0, dtype=np.float32), c.name))


@pytest.mark.parametrize("change, words", [
    (_nan, ["non-finite"]),
    (_float16, ["data type 10", "float, double or int64"]),
    (_shape, ["does not fit the value [1, 64]", "/block1/down/Gemm"]),
    (_unsupported, ["unsupported nodes: tgemm (Gemm with transA), tanh_gelu (Gelu with approximate), my_sin (Sin); export"]),
    (_dangling, ["/block1/Add (Add) reads undefined values ['nowhere']"]),
    (_pow3, ["(Pow): the exponent must be a constant 2"]),
], ids=["nan", "float16", "shape", "unsupported", "dangling", "pow3"])
def test_bad_onnx_graphs_exit_2_in_one_line(change, words, tmp_path, capsys):
    one_line(mutated(tmp_path, change), tmp_path, capsys, "bad.onnx", *words)


def test_truncated_onnx_graph(tmp_path, capsys):
    path = tmp_path / "bad.onnx"
    path.write_bytes(FILES["opset20"].read_bytes()[:30000])
    one_line(path, tmp_path, capsys, "bad.onnx", "not a readable ONNX model")


def test_broadcast_and_division_by_values(tmp_path):
    """Div by a value -> mul by its reciprocal; a width-1 value meeting a wider one is broadcast; Sub/Div
    with the constant first; agree with onnxruntime."""
    from onnx import TensorProto

    w = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["X", "W"], ["h"]), helper.make_node("Sigmoid", ["h"], ["s"]),
             helper.make_node("ReduceMean", ["s"], ["m"], axes=[-1], keepdims=1), helper.make_node("Div", ["h", "m"], ["q"]),
             helper.make_node("Sub", ["two", "q"], ["r"]), helper.make_node("Tanh", ["r"], ["t"]), helper.make_node("Div", ["two", "s"], ["u"]),
             helper.make_node("Mul", ["t", "u"], ["Y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 3])],
                              [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array([2.0], np.float32), "two")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "m.onnx"
    path.write_bytes(m.SerializeToString())
    g = read(path)
    assert [n.op for n in g.nodes] == ["linear", "sigmoid", "linear", "reciprocal", "linear", "mul", "affine", "tanh", "reciprocal",
                                       "affine", "mul"]
    ort = pytest.importorskip("onnxruntime")
    x = np.random.default_rng(1).uniform(-1, 1, (4, 4)).astype(np.float32)
    theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
    for row, t in zip(x, theirs):
        ours = [float(v.mid()) for v in exact_evaluate(g, [Fraction(float(v)) for v in row], prec=64)["Y"]]
        np.testing.assert_allclose(ours, t, rtol=1e-5, atol=1e-5)
