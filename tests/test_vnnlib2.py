"""VNN-LIB 2.0: the standard's own test queries parse; what certify cannot prove is refused in one line
naming the construct; two-network queries map to f and g; a VeryDiff pair as a 2.0 query gives the
same certificate as its YAML spec with the 1.0 box."""

import json
import os
import random
import re
from fractions import Fraction

import pytest

from certify.checker.check import Verdict, check_certificate
from certify.checker.errors import BadInput
from certify.checker.model import read_model
from certify.checker.network import input_box
from certify.checker.spec import read_spec
from certify.checker.vnnlib import parse_v2, read_query, read_vnnlib
from certify.engine import run_check
from certify.vnncomp import vnnlib2_text

from .conftest import ROOT, SPECS

DATA = ROOT / "tests" / "data"
STANDARD = sorted(p for p in (DATA / "vnnlib2").glob("*.vnnlib") if p.stem not in ("isomorphic_pair", "teacher_student"))
# what each of the standard's test queries asks that certify does not prove (the refusal names it)
REFUSED = {"acc": "(<= (+ (* -1.5 X[1]) X[2]) -15) constrains several inputs together", "cartpole": "(<= Y[1] Y[0]) constrains an output",
           "drones": "(or (>= Y 20.507437306839908) (<= Y -14.696421224076236)): an output property of a single network",
           "dubinsrejoin": "an output property of a single network", "initialized": "input option initialized of A",
           "intermediate_nodes": "declare-hidden N", "lunarlander": "(<= Y[3] Y[2]) constrains an output",
           "mnist": "(<= (- Y[0] Y[9]) 0) constrains an output", "multiple_networks": "the query declares 3 networks",
           "single_network": "(<= (- (* 1.5 X[1]) X[2]) -5) constrains several inputs together",
           "test_linearise": "(<= (- X[0] X[0]) 0) constrains no variable"}


def test_the_standards_test_queries_all_parse():
    assert len(STANDARD) == 11
    for path in STANDARD:
        networks, assertions = parse_v2(path.read_text(), str(path), "input.vnnlib")
        assert networks and assertions, path.name
    nets, _ = parse_v2((DATA / "vnnlib2" / "multiple_networks.vnnlib").read_text(), "m", "k")
    assert [(n.name, n.relation) for n in nets] == [("AcasXu", None), ("AcasYu", ("equal-to", "AcasXu")),
                                                   ("AcasZu", ("isomorphic-to", "AcasXu"))]


@pytest.mark.parametrize("path", STANDARD, ids=lambda p: p.stem)
def test_outside_certifys_fragment_is_one_line_naming_the_construct(path):
    with pytest.raises(BadInput) as err:
        read_query(path, "input.vnnlib")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}:") and REFUSED[path.stem] in message, message


def test_the_documents_two_network_declarations():
    """The standard's isomorphic f/g pair (float32) is read as a box and a deviation property; the
    teacher/student pair is refused for its float16 student."""
    q = read_query(DATA / "vnnlib2" / "isomorphic_pair.vnnlib", "input.vnnlib")
    assert (q.version, q.dtype, [n.name for n in q.networks]) == ("2.0", "float32", ["f", "g"])
    assert q.lower == [0] * 5 + [Fraction(-1, 2)] * 5 and q.upper == [1] * 5 + [Fraction(1, 2)] * 5
    assert (q.deviation.tolerance, q.deviation.outputs, q.deviation.strict) == (Fraction(1, 4), None, True)
    with pytest.raises(BadInput, match=r"teacher_student.vnnlib:11: input.vnnlib: element type float16 of SX"):
        read_query(DATA / "vnnlib2" / "teacher_student.vnnlib", "input.vnnlib")


def query(tmp_path, body, name="q.vnnlib"):
    head = ("(vnnlib-version <2.0>)\n(declare-network f (declare-input X Real [2]) (declare-output Y Real [2]))\n"
            "(declare-network g (isomorphic-to f) (declare-input Z Real [2]) (declare-output W Real [2]))\n")
    path = tmp_path / name
    path.write_text(head + body)
    return path


BOX = "(assert (and (<= 0 X[0]) (<= X[0] 1) (>= X[1] -1) (<= (* 2 X[1]) 1) (== Z[0] X[0]) (== X[1] Z[1])))\n"


def test_box_ties_and_deviation_forms(tmp_path):
    q = read_query(query(tmp_path, BOX + "(assert (or (> (- Y[1] W[1]) 0.5) (> (- W[1] Y[1]) 0.5)))"), "k")
    assert (q.lower, q.upper) == ([0, -1], [1, Fraction(1, 2)])
    assert (q.deviation.tolerance, q.deviation.outputs, q.deviation.strict) == (Fraction(1, 2), (1,), True)
    q = read_query(query(tmp_path, BOX + "(assert (or (>= (- Y[0] W[0]) 2) (<= (- Y[0] W[0]) -2) (<= (- W[1] Y[1]) -2) "
                                         "(>= (- W[1] Y[1]) 2)))"), "k")
    assert (q.deviation.tolerance, q.deviation.outputs, q.deviation.strict) == (2, None, False)
    assert read_vnnlib(query(tmp_path, BOX), "k") == ([0, -1], [1, Fraction(1, 2)])  # a box only: the spec's property


@pytest.mark.parametrize("body, construct", [
    ("(assert (and (<= 0 X[0]) (<= X[0] 1) (<= 0 X[1]) (<= X[1] 1) (== Z[0] X[0])))", "g's inputs Z[1] are not tied to f's"),
    (BOX + "(assert (or (> (- Y[0] W[0]) 1) (< (- Y[0] W[0]) -1) (> (- Y[1] W[1]) 2) (< (- Y[1] W[1]) -2)))", "different thresholds"),
    (BOX + "(assert (or (> (- Y[0] W[0]) 1)))", "one side only"),
    (BOX + "(assert (or (> (- Y[0] W[0]) 1) (> (- Y[0] W[0]) 5) (< (- Y[0] W[0]) -5)))", "a second time on one side"),
    (BOX + "(assert (or (> (- Y[0] W[1]) 1) (< (- Y[0] W[1]) -1)))", "is not a bound on Y[j] - W[j]"),
    (BOX + "(assert (or (> (* Y[0] W[0]) 1) (< Y[0] -1)))", "a product of two variables is not linear"),
    (BOX + "(assert (< X[0] 1))", "a strict or != bound on an input"),
    (BOX + "(assert (<= Y[0] 3))", "(<= Y[0] 3) constrains an output"),
    (BOX + "(assert (<= X[2] 3))", "X[2] does not index the shape [2]"),
    (BOX + "(assert (<= Q 3))", "Q is not declared"),
    (BOX + "(assert (<= X[0] 1e-3))", "'1e-3' is not a VNN-LIB 2.0 number"),
    (BOX + "(assert (not (<= X[0] 1)))", "'not' is not a comparison"),
])
def test_refusals_name_the_construct(tmp_path, body, construct):
    with pytest.raises(BadInput) as err:
        read_query(query(tmp_path, body), "input.vnnlib")
    assert construct in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_verydiff_pair_as_a_2_0_query_gives_the_yaml_specs_certificate(tmp_path):
    """specs/verydiff_mnist.yaml reads the 1.0 box; the same pair with the shipped 2.0 rewrite (which
    `vnnlib2_text` regenerates byte for byte) gives the same claim, steps, witness and verdict; the
    2.0 query's threshold must be the spec's tolerance."""
    v1, v2 = DATA / "verydiff" / "mnist_0_local_15.vnnlib", DATA / "verydiff" / "mnist_0_local_15.v2.vnnlib"
    box = read_query(v1, "k")
    comment = "\n".join(line[2:] for line in v2.read_text().splitlines()[1:4])
    assert vnnlib2_text(box.lower, box.upper, outputs=10, tolerance=Fraction(4), comment=comment) == v2.read_text()
    yaml_spec = SPECS / "verydiff_mnist.yaml"
    spec2 = tmp_path / "verydiff_mnist.yaml"
    spec2.write_text(yaml_spec.read_text().replace("../tests/data/verydiff/", str(DATA / "verydiff") + "/")
                     .replace("mnist_0_local_15.vnnlib", "mnist_0_local_15.v2.vnnlib"))
    a = run_check(yaml_spec, tmp_path / "a.cert.json", "crown")
    b = run_check(spec2, tmp_path / "b.cert.json", "crown")
    assert a.verdict is b.verdict is Verdict.CERTIFIED and a.check.bound == b.check.bound and a.lower == b.lower
    ca, cb = (json.loads((tmp_path / f"{n}.cert.json").read_text()) for n in "ab")
    assert ca["data_sha256"] != cb["data_sha256"] and ca["spec_sha256"] != cb["spec_sha256"]  # each binds its own files
    for key in ("format", "version", "model_sha256", "materialized", "claim", "steps", "witness"):
        assert ca.get(key) == cb.get(key), key
    assert check_certificate(spec2, tmp_path / "b.cert.json").verdict is Verdict.CERTIFIED
    assert check_certificate(yaml_spec, tmp_path / "b.cert.json").verdict is Verdict.REJECTED  # bound to its own spec
    spec2.write_text(spec2.read_text().replace("tolerance: 4", "tolerance: 5"))
    spec = read_spec(spec2)
    with pytest.raises(BadInput, match="states the deviation threshold 4, the spec's tolerance is 5"):
        input_box(spec, read_model(spec.model.path, spec.model.sha256))  # the checker and the engine both read it so


# --------------------------------------------------------------------------- against the reference parser

def _quiet(fn, *args):
    """Call the reference parser (VNNLIB-Python, C++ bindings) with its diagnostics on fd 1 and 2 silenced."""
    null, saved = os.open(os.devnull, os.O_WRONLY), (os.dup(1), os.dup(2))
    os.dup2(null, 1), os.dup2(null, 2)
    try:
        return fn(*args)
    finally:
        os.dup2(saved[0], 1), os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def reference_box(query):
    """f's input box from the reference AST: comparisons of one input element of the first network with a
    literal (its exact lexeme), under top-level conjunctions. None where a bound takes another form."""
    f = query.networks[0]
    shape = list(f.inputs[0].shape)
    lower, upper = {}, {}
    todo = [a.expr for a in query.assertions]
    while todo:
        e = todo.pop()
        kind = type(e).__name__
        if kind == "And":
            todo += list(e.args)
            continue
        if kind not in ("GreaterEqual", "LessEqual", "Equal"):
            continue
        lhs, rhs, flip = e.lhs, e.rhs, False
        if type(lhs).__name__ != "Var":
            lhs, rhs, flip = rhs, lhs, True
        if type(lhs).__name__ != "Var" or lhs.network_name != f.name or str(lhs.kind) != "SymbolKind.Input":
            continue
        if type(rhs).__name__ != "Float":
            if type(rhs).__name__ == "Var":
                continue  # a tie between f's and g's inputs
            return None
        i = 0
        for idx, dim in zip(lhs.indices, shape):
            i = i * dim + idx
        value = Fraction(rhs.lexeme)
        up = kind == "Equal" or ((kind == "LessEqual") != flip)
        lo = kind == "Equal" or not up
        if up:
            upper[i] = min(upper.get(i, value), value)
        if lo:
            lower[i] = max(lower.get(i, value), value)
    n = 1
    for d in shape:
        n *= d
    return [lower.get(i) for i in range(n)], [upper.get(i) for i in range(n)]


def test_the_reference_parser_reads_the_same_networks_and_box():
    """VNNLIB-Python (the standard's parser) on the queries certify accepts: same networks, shapes,
    isomorphism and box."""
    ref = pytest.importorskip("vnnlib")
    for path in (DATA / "vnnlib2" / "isomorphic_pair.vnnlib", DATA / "verydiff" / "mnist_0_local_15.v2.vnnlib"):
        ours, theirs = read_query(path, "k"), _quiet(ref.parse_query_file, str(path))
        assert [n.name for n in ours.networks] == [n.name for n in theirs.networks]
        for a, b in zip(ours.networks, theirs.networks):
            assert (list(a.of("input")[0].shape), list(a.of("output")[0].shape)) == (list(b.inputs[0].shape), list(b.outputs[0].shape))
        assert (ours.networks[1].relation or (None, None))[1] == (theirs.networks[1].isometric_to or None)
        assert reference_box(theirs) == (ours.lower, ours.upper)


def test_random_corruptions_are_never_accepted_where_the_reference_refuses(tmp_path):
    """400 one-token corruptions of a two-network query: certify's reader returns a query or one
    BadInput line (nothing else); whatever it accepts, the reference parser and type checker accept too,
    with the same box."""
    ref = pytest.importorskip("vnnlib")
    text = (DATA / "vnnlib2" / "isomorphic_pair.vnnlib").read_text()
    tokens = re.findall(r"\s+|;[^\n]*|<\d+\.\d+>|[()\[\],]|[^\s()\[\],;]+", text)
    spots = [i for i, t in enumerate(tokens) if not t.isspace() and not t.startswith(";")]
    rng, accepted = random.Random(0), 0
    swaps = ["0", "1.5", "-2.0", "(", ")", "A", "C[0,0]", "X", ">", "<=", "==", "and", "or", "[", "]", ",", "Real",
             "float16", "isomorphic-to", "equal-to", "2"]
    for trial in range(400):
        t, i = list(tokens), rng.choice(spots)
        kind = rng.randrange(5)
        if kind == 0:
            t[i] = ""
        elif kind == 1:
            t[i] = f"{t[i]} {t[i]}"
        elif kind == 2:
            t[i] = rng.choice(swaps)
        elif kind == 3:
            j = rng.choice(spots)
            t[i], t[j] = t[j], t[i]
        else:
            t[i] = t[i].replace("0", "1") if "0" in t[i] else t[i] + "1"
        corrupt = "".join(t)
        path = tmp_path / f"c{trial}.vnnlib"
        path.write_text(corrupt)
        try:
            ours = read_query(path, "k")
        except BadInput as exc:
            assert "\n" not in str(exc), (trial, str(exc))
            continue
        accepted += 1
        theirs = _quiet(ref.parse_query_string, corrupt)  # raises if the reference refuses
        assert reference_box(theirs) in (None, (ours.lower, ours.upper)), trial
    assert accepted >= 5  # the corruptions that stay valid (a changed bound, a swapped number) are read


def test_a_2_0_query_is_checked_against_the_spec_and_f(tmp_path):
    """The standard's isomorphic float32 pair read as a spec's input: float32 networks need
    `semantics: float32`; the query's threshold and outputs must be the spec's; f's outputs must match."""
    import numpy as np

    from certify.api import write_spec

    rng = np.random.default_rng(0)
    layers = lambda out: [(rng.normal(size=(6, 10)), rng.normal(size=6)), (rng.normal(size=(out, 6)), rng.normal(size=out))]  # noqa: E731
    query = DATA / "vnnlib2" / "isomorphic_pair.vnnlib"

    def box(tolerance="1/4", semantics="float32", out=2, outputs=None):
        prop = {"deviation": "linf", "tolerance": tolerance, "semantics": semantics, **({"outputs": outputs} if outputs else {})}
        spec = read_spec(write_spec({"model": layers(out), "input": {"vnnlib": str(query)},
                                     "explanation": [{"model": layers(out)}], "property": prop}, tmp_path))
        return input_box(spec, read_model(spec.model.path, spec.model.sha256))

    lo, up = box()
    assert lo == [0] * 5 + [Fraction(-1, 2)] * 5 and up == [1] * 5 + [Fraction(1, 2)] * 5
    for kwargs, message in [({"semantics": "real"}, "declares float32 networks; set `semantics: float32`"),
                            ({"tolerance": "1/5"}, "states the deviation threshold 1/4, the spec's tolerance is 1/5"),
                            ({"outputs": [1]}, "bounds outputs all, the spec [1]"),
                            ({"out": 3}, "network f declares 2 outputs but the model gives 3")]:
        with pytest.raises(BadInput, match=re.escape(message)):
            box(**kwargs)
