"""ONNX transformers (certify/checker/onnx_attention.py): the shipped torch exports of the Max-of-K
models (models/export_maxofk_onnx.py) read exactly into a graph that computes the TransformerLens
forward, certified on a token domain, and bad attention graphs refused in one line."""

from __future__ import annotations

import hashlib
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from certify.checker.graph import Graph, evaluate
from certify.checker.model import read_model
from certify.cli import main
from certify.model.transformer import forward, read_tl

from .conftest import ROOT, SPECS

MODELS = ROOT / "models"
SMALL, LARGE = MODELS / "maxofk_v16.onnx", MODELS / "maxofk.onnx"
onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def logits(g: Graph, tokens, vocab: int) -> np.ndarray:
    x = [Fraction(int(t == v)) for t in tokens for v in range(vocab)]
    return np.array([float(b.mid()) for b in evaluate(g, x, prec=128)[g.output]])


@pytest.mark.parametrize("path, tl, k", [(SMALL, "maxofk_v16_tl.npz", 6), (LARGE, "maxofk_tl.npz", 1)], ids=["v16", "v64"])
def test_onnx_transformer_graph_computes_the_transformerlens_forward(path, tl, k):
    """The ONNX constants are the TL weights (float32 numbers) and the scale 1/sqrt(16) or float32(1/sqrt(32)):
    the exact graph agrees with the float64 numpy forward to float64 rounding (V=16) or the scale's float32
    rounding (V=64), and with onnxruntime's float32 run."""
    g = read_model(path, sha(path))
    assert isinstance(g, Graph) and {n.op for n in g.nodes} >= {"mul", "softmax", "linear"}
    p = read_tl(MODELS / tl)
    V, n = p["W_E"].shape[0], p["W_pos"].shape[0]
    assert g.in_dim == n * V and g.out_dim == V
    tokens = np.random.default_rng(7).integers(0, V, size=(k, n))
    ours = np.stack([logits(g, t, V) for t in tokens])
    np.testing.assert_allclose(ours, forward(p, tokens)[:, -1], atol=1e-9 if V == 16 else 1e-4)
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    theirs = np.stack([sess.run(None, {"x": np.eye(V, dtype=np.float32)[t]})[0] for t in tokens])
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_masked_weights_are_exactly_zero_and_left_out():
    """The -inf causal mask: only the 10 causal pairs of the 4x4 scores reach the softmax (one group per query
    row: 1 + 2 + 3 + 4 entries), and A @ V multiplies 10 pattern entries."""
    g = read_model(SMALL, sha(SMALL))
    dims = {nd.name: g.dims[nd.name] for nd in g.nodes}
    pattern = next(nd for nd in g.nodes if nd.op == "softmax")
    assert dims[pattern.name] == 10 and [int(v) for v in pattern.groups] == [0, 1, 1, 2, 2, 2, 3, 3, 3, 3]


def test_cli_certifies_the_onnx_transformer_with_a_token_witness(tmp_path, capsys):
    out = tmp_path / "onnx.cert.json"
    assert main(["check", str(SPECS / "max_of_k_onnx.yaml"), "--out", str(out), "--json", "--no-cache"]) == 0
    res = json.loads(capsys.readouterr().out)
    res = res[0] if isinstance(res, list) else res
    assert res["verdict"] == "CERTIFIED"
    cert = json.loads(out.read_text())
    text = json.dumps(cert)
    assert "/Softmax_output_0.pattern" in text  # the ONNX graph's own nodes were bounded
    step = next(s for s in cert["steps"] if s["kind"] == "relax" and s["node"] == "/Softmax_output_0.pattern")
    step["lower_intercept"][0] = str(Fraction(step["lower_intercept"][0]) + Fraction(1, 1000))  # a line above 1/D
    forged = tmp_path / "forged.cert.json"
    forged.write_text(json.dumps(cert))
    assert main(["verify", str(SPECS / "max_of_k_onnx.yaml"), str(forged)]) == 3
    x = next(v for k, v in _walk(cert) if k == "x" and isinstance(v, list) and len(v) == 64)
    blocks = [[Fraction(t) for t in x[p * 16:(p + 1) * 16]] for p in range(4)]
    assert all(sorted(b) == [0] * 15 + [1] for b in blocks)  # a token sequence


def _walk(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k, v
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


# ----------------------------------------------------------------------------- bad files: exit 2, one line


def _node(m, op):
    return next(n for n in m.graph.node if n.op_type == op)


def _producer(m, name):
    return next(n for n in m.graph.node if name in n.output)


def _log_softmax(m):
    sm = _node(m, "Softmax")
    sm.op_type, sm.name = "LogSoftmax", "my_logsoftmax"


def _where_mask(m):  # a mask computed from the input: Where(x-derived condition, s, -1e9)
    add = next(n for n in m.graph.node if n.op_type == "Add" and n.output[0] == _node(m, "Softmax").input[0])
    nodes = list(m.graph.node)
    i = nodes.index(add)
    nodes[i] = helper.make_node("Where", ["/MatMul_5_output_0", add.input[0], "/MatMul_5_output_0"], list(add.output), name="my_where")
    del m.graph.node[:]
    m.graph.node.extend(nodes)


def _relu_after_mask(m):
    sm = _node(m, "Softmax")
    relu = helper.make_node("Relu", [sm.input[0]], ["masked_relu"], name="my_relu")
    sm.input[0] = "masked_relu"
    nodes = list(m.graph.node)
    nodes.insert(nodes.index(sm), relu)
    del m.graph.node[:]
    m.graph.node.extend(nodes)


def _inf_weight(m):
    c = _producer(m, _node(m, "Gather").input[0])  # the unembedding MatMul
    w = _producer(m, c.input[1])
    a = numpy_helper.to_array(w.attribute[0].t).copy()
    a[0, 0] = -np.inf
    w.attribute[0].t.CopyFrom(numpy_helper.from_array(a))


def _full_mask(m):
    add = next(n for n in m.graph.node if n.op_type == "Add" and n.output[0] == _node(m, "Softmax").input[0])
    c = _producer(m, add.input[1])
    a = numpy_helper.to_array(c.attribute[0].t).copy()
    a[2, :] = -np.inf
    c.attribute[0].t.CopyFrom(numpy_helper.from_array(a))


def _softmax_axis0(m):  # over the keys' axis: not a row-wise softmax
    sm = _node(m, "Softmax")
    del sm.attribute[:]
    sm.attribute.append(helper.make_attribute("axis", 0))


@pytest.mark.parametrize("change, words", [
    (_softmax_axis0, ["(Softmax): over axis 0 of [4, 4]; only an explicit last axis"]),
    (_log_softmax, ["unsupported nodes: my_logsoftmax (LogSoftmax"]),
    (_where_mask, ["unsupported nodes: my_where (Where)"]),
    (_relu_after_mask, ["my_relu (Relu) reads a -inf-masked value"]),
    (_inf_weight, ["(MatMul) reads a constant with -inf"]),
    (_full_mask, ["(Softmax): a row is masked entirely"]),
], ids=["softmax_axis0", "logsoftmax", "where", "relu_after_mask", "inf_weight", "full_mask"])
def test_bad_attention_graphs_exit_2_in_one_line(change, words, tmp_path, capsys):
    m = onnx.load(str(SMALL))
    change(m)
    path = tmp_path / "bad.onnx"
    path.write_bytes(m.SerializeToString())
    text = (SPECS / "max_of_k_onnx.yaml").read_text().replace("../models/maxofk_v16.onnx", str(path)).replace(sha(SMALL), sha(path))
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    assert main(["check", str(spec), "--out", str(tmp_path / "proofs" / "x.cert.json")]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert "bad.onnx" in lines[0]
    for w in words:
        assert w in lines[0], f"{w!r} not in {lines[0]!r}"
    assert not (tmp_path / "proofs").exists()


def test_a_synthetic_attention_graph_agrees_with_onnxruntime(tmp_path):
    """Ops beyond the torch export's: a mask with finite entries besides -inf (kept as an add), a 3-D
    Transpose, Gather of two indices on axis 1, a MatMul by a constant after them; continuous inputs."""
    from onnx import TensorProto

    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(3)
    c = lambda name, a: numpy_helper.from_array(np.asarray(a, dtype=np.float32), name)  # noqa: E731
    mask = rng.normal(size=(3, 3)).astype(np.float32)
    mask[np.triu_indices(3, 1)] = -np.inf
    inits = [c("W1", rng.normal(size=(4, 5))), c("W2", rng.normal(size=(4, 5))), c("M", mask), c("W3", rng.normal(size=(2, 2))),
             numpy_helper.from_array(np.array([3, 1, 5], dtype=np.int64), "s3"), numpy_helper.from_array(np.array([5, 3], dtype=np.int64), "s2"),
             numpy_helper.from_array(np.array([0, 2], dtype=np.int64), "idx")]
    N = helper.make_node
    nodes = [N("MatMul", ["x", "W1"], ["a"]), N("MatMul", ["x", "W2"], ["b"]), N("Transpose", ["b"], ["bt"], perm=[1, 0]),
             N("MatMul", ["a", "bt"], ["s"]), N("Add", ["s", "M"], ["sm"]), N("Softmax", ["sm"], ["p"], axis=-1),
             N("MatMul", ["p", "b"], ["o"]), N("Reshape", ["o", "s3"], ["o3"]), N("Transpose", ["o3"], ["ot"], perm=[1, 2, 0]),
             N("Reshape", ["ot", "s2"], ["o2"]), N("Gather", ["o2", "idx"], ["g"], axis=1), N("MatMul", ["g", "W3"], ["y"])]
    graph = helper.make_graph(nodes, "attn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 2])], inits)
    path = tmp_path / "attn.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    g = read_model(path, sha(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for _ in range(5):
        x = rng.normal(size=(3, 4)).astype(np.float32)
        ours = np.array([float(b.mid()) for b in evaluate(g, [Fraction(float(v)) for v in x.reshape(-1)])[g.output]])
        np.testing.assert_allclose(ours, sess.run(None, {"x": x})[0].reshape(-1), rtol=1e-4, atol=1e-4)
