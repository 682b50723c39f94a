"""`certify vnncomp` on the shipped VeryDiff pairs: the result file in the runner's format, `unsat`
only with an accepted certificate, `sat` with a counterexample that onnxruntime confirms, and no
answer for a network certify reads only in part."""

import json
from fractions import Fraction

import numpy as np
import pytest

from certify.checker.check import Verdict, check_certificate
from certify.checker.vnnlib import read_query
from certify.cli import main
from certify.vnncomp import vnnlib2_text

from .conftest import ROOT

DATA = ROOT / "tests" / "data" / "verydiff"
F, G = DATA / "mnist_relu_3_100.onnx", DATA / "mnist_relu_3_100_pruned5.onnx"


def run(f, x):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(f))
    shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape]
    return session.run(None, {session.get_inputs()[0].name: np.asarray(x, np.float32).reshape(shape)})[0].ravel()


def test_mnist_pair_with_the_2_0_query_is_unsat_and_verifiable(tmp_path, capsys):
    result = tmp_path / "out" / "mnist.result"
    rc = main(["vnncomp", str(F), str(G), str(DATA / "mnist_0_local_15.v2.vnnlib"), "--timeout", "120", "--result", str(result)])
    assert rc == 0 and result.read_text() == "unsat\n"
    assert capsys.readouterr().out.startswith(f"unsat  ({result})")
    spec, cert = result.with_name("mnist.result.spec.yaml"), result.with_name("mnist.result.cert.json")
    r = check_certificate(spec, cert)  # the answer is re-checkable from the files beside it
    assert r.verdict is Verdict.CERTIFIED and r.tolerance == 4 and r.bound <= 4


def test_sat_counterexamples_in_both_formats_are_confirmed_by_onnxruntime(tmp_path):
    """Threshold 1 (the pair attains 1.03): a 2.0 query gets the standard's assignment format (X, Y of f,
    then XG, YG of g); the 1.0 box with --tolerance 1 the competition's ((X_i v) ... (Y_j v))."""
    box = read_query(DATA / "mnist_0_local_15.vnnlib", "k")
    query = tmp_path / "t1.vnnlib"
    query.write_text(vnnlib2_text(box.lower, box.upper, outputs=10, tolerance=Fraction(1)))
    result = tmp_path / "v2.result"
    assert main(["vnncomp", str(F), str(G), str(query), "--timeout", "120", "--result", str(result), "--method", "crown"]) == 1
    lines = result.read_text().splitlines()
    heads = [(i, line) for i, line in enumerate(lines) if not line[0].isdigit() and not line.startswith("-")]
    assert [h for _, h in heads] == ["sat", "X Real [1,784]", "Y Real [1,10]", "XG Real [1,784]", "YG Real [1,10]"]
    x, y, xg, yg = (np.array([float(v) for v in lines[i + 1:j]]) for (i, _), (j, _) in zip(heads[1:], heads[2:] + [(len(lines), "")]))
    assert np.array_equal(x, xg) and np.all((x >= np.array(box.lower, float) - 1e-12) & (x <= np.array(box.upper, float) + 1e-12))
    assert np.allclose(y, run(F, x), atol=1e-4) and np.allclose(yg, run(G, x), atol=1e-4)
    assert np.max(np.abs(run(F, x) - run(G, x))) > 1
    result1 = tmp_path / "v1.result"
    assert main(["vnncomp", str(F), str(G), str(DATA / "mnist_0_local_15.vnnlib"), "--timeout", "120", "--result",
                 str(result1), "--tolerance", "1", "--method", "crown"]) == 1
    lines = result1.read_text().splitlines()
    assert lines[0] == "sat" and lines[1].startswith("((X_0 ") and lines[-1].endswith("))") and len(lines) == 1 + 784 + 10
    pairs = dict(line.strip(" ()").split() for line in lines[1:])
    x1 = np.array([float(pairs[f"X_{i}"]) for i in range(784)])
    assert np.allclose([float(pairs[f"Y_{j}"]) for j in range(10)], run(F, x1), atol=1e-4)
    cert = json.loads(result1.with_name("v1.result.cert.json").read_text())
    assert Fraction(cert["witness"]["deviation"]) > 1  # the checker's exact replay exceeds the threshold


def test_no_answer_for_softmax_networks_a_missing_threshold_or_one_network(tmp_path, capsys):
    """The 2_80 pair ends in Softmax, which certify drops (it bounds the logits): no VNN-COMP answer."""
    result = tmp_path / "r.result"
    f, g = DATA / "2_80-1.onnx", DATA / "2_80-1-0.1.onnx"
    assert main(["vnncomp", str(f), str(g), str(DATA / "sigma_0.1.vnnlib"), "--timeout", "10", "--result", str(result),
                 "--tolerance", "5"]) == 2
    assert "Softmax" in capsys.readouterr().err and result.read_text() == "unknown\n"
    assert main(["vnncomp", str(F), str(G), str(DATA / "mnist_0_local_15.vnnlib"), "--timeout", "10", "--result", str(result)]) == 2
    assert "states no deviation threshold" in capsys.readouterr().err and result.read_text() == "unknown\n"
    assert main(["vnncomp", str(F), str(DATA / "mnist_0_local_15.vnnlib"), "--timeout", "10", "--result", str(result),
                 "--tolerance", "5"]) == 2
    assert "between two networks" in capsys.readouterr().err and result.read_text() == "unknown\n"
