"""`certify export-smt` on graph certificates (certify/smt_graph.py): every op of the table has an
SMT row or a stated refusal; the obligations of a small graph certificate are all unsat under cvc5;
an obligation whose claim is moved past the truth is not; a curve's steps are listed as not exported."""

import re
from fractions import Fraction

import pytest

from certify import smt, smt_graph
from certify.checker.graph import OPS
from certify.cli import main

from .test_graph import random_graph

pytest.importorskip("cvc5")


def test_every_op_has_an_smt_row():
    assert set(OPS) <= set(smt_graph.RULES), f"ops without an SMT-LIB2 row: {sorted(set(OPS) - set(smt_graph.RULES))}"
    for name, rule in smt_graph.RULES.items():
        assert name in OPS, f"an SMT row for an op the checker does not have: {name}"
        linear = OPS[name].relax is None
        assert (rule.lines is None) == linear, f"{name}: a nonlinear op's verified lines or planes are facts for later obligations"
        assert linear <= (rule.relation is not None), f"{name}: an op without a relaxation needs its exact relation"
        assert (rule.relation is None) == (name in (*smt_graph.cg.CURVE_OPS, "softmax")), f"{name}: only the curves and softmax are refused (arb)"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A random residual graph with LayerNorm, a product and GELU, its CROWN certificate, its export."""
    tmp = tmp_path_factory.mktemp("smtg")
    spec = random_graph(tmp, 3, "gelu")
    cert, out = tmp / "g.cert.json", tmp / "g.smt2"
    assert main(["check", str(spec), "--method", "crown", "--out", str(cert), "--no-cache"]) in (0, 1)
    assert main(["export-smt", str(spec), str(cert), "-o", str(out)]) == 0
    return out


def test_graph_obligations_are_confirmed_by_cvc5(exported):
    text = exported.read_text()
    kinds = set(re.findall(r"; obligation \d+ of \d+ \[(\w+)\]", text))
    assert {"interval", "linear", "relax", "goal"} <= kinds, kinds
    assert "(set-logic QF_NRA)" in text  # the LayerNorm's product x * (1/sqrt(var)) is stated exactly
    refused = re.findall(r"; not exported: .*\((\w+), node ([\w.]+)\): the (\w+)", text)
    assert {node for _, node, _ in refused} >= {"op", "ln.sq", "ln.rsqrt"}, refused  # gelu, square, rsqrt: arb
    answers = smt.run_cvc5(exported)
    assert answers and all(a == "unsat" for _, a, _ in answers), [x for x in answers if x[1] != "unsat"][:3]


def _block(text: str, kind: str) -> str:
    return next(b for b in text.split("; obligation ")[1:] if f"[{kind}]" in b.split("\n", 1)[0])


@pytest.mark.parametrize("kind", ["linear", "interval", "relax"])
def test_an_obligation_past_the_truth_is_not_confirmed(exported, kind, tmp_path):
    """Loosening what an obligation asserts (a claim moved far inward; a plane moved far) makes it sat."""
    text = exported.read_text()
    block = _block(text, kind)
    last = block.rsplit("(assert ", 1)[1].split("\n", 1)[0]
    if kind == "relax":  # the lower line or plane 1000 higher: the op's true value falls below it
        changed = last.replace("(not (<= (+ ", "(not (<= (+ 1000 ", 1)
    else:  # the claim 1000 inward: "(< v c)" -> "(< v (+ 1000 c))" is met by the true value
        at = last.index("(< n") + 3
        at = last.index(" ", at) + 1
        end, depth = at, 0
        while depth or end == at or last[end - 1] not in ")0123456789":
            depth += {"(": 1, ")": -1}.get(last[end], 0)
            end += 1
            if not depth and last[end] in " )":
                break
        changed = last[:at] + f"(+ 1000 {last[at:end]})" + last[end:]
    assert changed != last
    bad = tmp_path / "bad.smt2"
    bad.write_text(text.replace(block, block.replace(last, changed), 1))
    answers = [a for t, a, _ in smt.run_cvc5(bad) if f"[{kind}]" in t]
    assert "sat" in answers, answers


def test_relation_of_each_exact_op_matches_the_checker():
    """The SMT relation of each op that has one fixes the same value as the checker's evaluation, at a point."""
    import z3
    from flint import arb, fmpq

    from certify.checker.graph import Node

    x = [Fraction(3, 8), Fraction(-5, 4)]  # dyadic: the ball evaluation is exact
    nodes = {"linear": Node("n", "linear", ("a",), ((Fraction(2), Fraction(-1, 2)), (Fraction(0), Fraction(1))), (Fraction(1, 16), Fraction(0))),
             "affine": Node("n", "affine", ("a",), scale=(Fraction(3), Fraction(-1)), shift=(Fraction(1, 2), Fraction(0))),
             "add": Node("n", "add", ("a", "b")), "sub": Node("n", "sub", ("a", "b")), "mul": Node("n", "mul", ("a", "b")),
             "relu": Node("n", "relu", ("a",)), "jumprelu": Node("n", "jumprelu", ("a",), threshold=(Fraction(1, 4), Fraction(-1)))}
    assert set(nodes) | {"free", "softmax"} | set(smt_graph.cg.CURVE_OPS) == set(OPS), "a new op needs a case here"
    for op, node in nodes.items():
        ins = [["a0", "a1"], ["b0", "b1"]][:OPS[op].arity]
        want = OPS[op].evaluate(node, [[arb(fmpq(v.numerator, v.denominator)) for v in x]] * OPS[op].arity)
        for rel, w, out in zip(smt_graph.RULES[op].relation(node, ins, ["o0", "o1"]), want, ["o0", "o1"]):
            s = z3.Solver()
            s.from_string("".join(f"(declare-const {v} Real)" for v in ["a0", "a1", "b0", "b1", out])
                          + "".join(f"(assert (= {v} {smt_graph.num(val)}))" for row in ins for v, val in zip(row, x))
                          + f"(assert {rel})")
            assert s.check() == z3.sat
            got = s.model().eval(z3.Real(out)).as_fraction()
            assert w.rad() == 0 and w == arb(fmpq(got.numerator, got.denominator)), (op, got, w)
