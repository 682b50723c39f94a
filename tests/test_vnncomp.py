"""`certify vnncomp` on the shipped VeryDiff pairs: the result file in the runner's format, `unsat`
only with an accepted certificate, `sat` with a counterexample that onnxruntime confirms."""

import json
from fractions import Fraction

import numpy as np
import pytest

from certify.checker.check import Verdict, check_certificate
from certify.cli import main

from .conftest import ROOT

DATA = ROOT / "tests" / "data" / "verydiff"


def test_mnist_pair_with_the_2_0_query_is_unsat_and_verifiable(tmp_path, capsys):
    result = tmp_path / "out" / "mnist.result"
    rc = main(["vnncomp", str(DATA / "mnist_relu_3_100.onnx"), str(DATA / "mnist_relu_3_100_pruned5.onnx"),
               str(DATA / "mnist_0_local_15.v2.vnnlib"), "--timeout", "120", "--result", str(result)])
    assert rc == 0 and result.read_text() == "unsat\n"
    assert capsys.readouterr().out.startswith(f"unsat  ({result})")
    spec, cert = result.with_name("mnist.result.spec.yaml"), result.with_name("mnist.result.cert.json")
    r = check_certificate(spec, cert)  # the answer is re-checkable from the files beside it
    assert r.verdict is Verdict.CERTIFIED and r.tolerance == 4 and r.bound <= 4


def test_2_80_pair_with_a_1_0_box_is_sat_and_onnxruntime_confirms_the_counterexample(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    result = tmp_path / "acas.result"
    f, g = DATA / "2_80-1.onnx", DATA / "2_80-1-0.1.onnx"
    assert main(["vnncomp", str(f), str(g), str(DATA / "sigma_0.1.vnnlib"), "--timeout", "120", "--result", str(result),
                 "--tolerance", "5", "--method", "crown"]) == 1
    lines = result.read_text().splitlines()
    assert lines[0] == "sat" and lines[1].startswith("((X_0 ") and lines[-1].endswith("))")
    pairs = dict(line.strip(" ()").split() for line in lines[1:])
    x = np.array([float(pairs[f"X_{i}"]) for i in range(16)])
    y = np.array([float(pairs[f"Y_{j}"]) for j in range(5)])
    assert np.all(np.abs(x) <= 0.1 + 1e-12)
    run = lambda path: ort.InferenceSession(str(path)).run(None, {ort.InferenceSession(str(path)).get_inputs()[0].name:  # noqa: E731
                                                                   x.astype(np.float32).reshape(1, 16)})[0].ravel()
    soft = np.exp(y - y.max()) / np.exp(y - y.max()).sum()  # the ONNX files end in Softmax; certify compares logits
    assert np.allclose(soft, run(f), atol=1e-5)
    cert = json.loads(result.with_name("acas.result.cert.json").read_text())
    assert Fraction(cert["witness"]["deviation"]) > 5  # the checker's exact replay exceeds the threshold


def test_a_1_0_box_without_tolerance_or_one_network_is_bad_input(tmp_path, capsys):
    result = tmp_path / "r.result"
    assert main(["vnncomp", str(DATA / "2_80-1.onnx"), str(DATA / "2_80-1-0.1.onnx"), str(DATA / "sigma_0.1.vnnlib"),
                 "--timeout", "10", "--result", str(result)]) == 2
    assert "states no deviation threshold" in capsys.readouterr().err and result.read_text() == "unknown\n"
    assert main(["vnncomp", str(DATA / "2_80-1.onnx"), str(DATA / "sigma_0.1.vnnlib"), "--timeout", "10",
                 "--result", str(result), "--tolerance", "5"]) == 2
    assert "between two networks" in capsys.readouterr().err and result.read_text() == "unknown\n"
