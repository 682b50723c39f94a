"""`certify export-smt`: every exported obligation is unsat under an independent solver (cvc5), and
tampering is not confirmed."""

import json
import re
import time
from fractions import Fraction

import numpy as np
import pytest

from certify import smt
from certify.cli import main
from certify.model import save_model

from .conftest import ROOT, SPECS, shipped_copy

cvc5 = pytest.importorskip("cvc5")  # the `test` extra installs it; skip cleanly where it is absent


def blocks(path):
    """{title: block text} of an exported file, in order."""
    text = path.read_text()
    parts = text.split("\n; obligation ")[1:]
    return {"obligation " + p.splitlines()[0]: "; obligation " + p for p in parts}  # keys as run_cvc5 names them


def confirmed(path, expect_count=None):
    start = time.perf_counter()
    answers = smt.run_cvc5(path)
    seconds = time.perf_counter() - start
    assert answers, "no obligation exported"
    if expect_count is not None:
        assert len(answers) == expect_count
    bad = [(t, a) for t, a, _ in answers if a != "unsat"]
    assert not bad, f"cvc5 did not confirm {len(bad)} of {len(answers)}: {bad[:3]}"
    print(f"cvc5: {len(answers)} obligations unsat in {seconds:.2f} s")
    return answers


def kinds(path):
    return {m.group(1) for m in re.finditer(r"^; obligation \d+ of \d+ \[(\w+)\]", path.read_text(), re.M)}


def check_syntax(path):
    text = path.read_text()
    body = "\n".join(line for line in text.splitlines() if not line.startswith((";", "(set-info")))
    assert "(set-logic QF_LRA)" in body and body.count("(push 1)") == body.count("(pop 1)") == body.count("(check-sat)")
    assert not re.search(r"[\s(]-\d", body), "a negative literal (negatives must be written (- ...))"
    assert not re.search(r"\d\.\d", body), "a decimal literal (rationals must be exact (/ p q))"
    n = int(re.search(r"^; (\d+) obligations", text, re.M).group(1))
    assert n == body.count("(check-sat)")
    return n


def test_shipped_certificate_is_confirmed_by_cvc5(tmp_path, capsys):
    out = tmp_path / "tiny.smt2"
    assert main(["export-smt", str(SPECS / "tiny_prune.yaml"), str(ROOT / "proofs" / "tiny_prune.cert.json"), "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    n = check_syntax(out)
    assert kinds(out) == {"interval", "linear", "relu_relaxation", "goal"}
    confirmed(out, n)
    assert main(["export-smt", str(SPECS / "tiny_prune.yaml"), str(ROOT / "proofs" / "tiny_prune.cert.json"),
                 "-o", str(out), "--cvc5"]) == 0
    assert "CONFIRMED  cvc5 answered unsat to all" in capsys.readouterr().out


def _tighter_goal(path, bound: Fraction) -> str:
    """The goal obligation with |d_i| > B replaced by |d_i| > B - 1/q (q: B's denominator)."""
    title, block = next((t, b) for t, b in blocks(path).items() if "[goal]" in t)
    lit, tighter = smt.num(bound), smt.num(bound - Fraction(1, bound.denominator))
    # the checker writes `(> d_i B)` and `(> (- d_i) B)`
    changed = re.sub(r"\(> (d\d+|\(- d\d+\)) " + re.escape(lit) + r"\)", lambda m: f"(> {m.group(1)} {tighter})", block)
    assert changed != block
    return path.read_text().replace(block, changed)


def test_tampered_obligations_are_not_confirmed(tmp_path):
    cert = ROOT / "proofs" / "tiny_prune.cert.json"
    out = tmp_path / "tiny.smt2"
    assert main(["export-smt", str(SPECS / "tiny_prune.yaml"), str(cert), "-o", str(out)]) == 0
    bound = Fraction(json.loads(cert.read_text())["claim"]["bound"])

    goal = tmp_path / "goal.smt2"  # the bound one denominator-step tighter: the output box reaches B exactly
    goal.write_text(_tighter_goal(out, bound))
    answers = dict((t, a) for t, a, _ in smt.run_cvc5(goal))
    assert [a for t, a in answers.items() if "[goal]" in t] == ["sat"]

    # the output layer's linear bounds are exact: raising the lower bound of z3_0 by 1/q is refuted
    title, block = next((t, b) for t, b in blocks(out).items() if "lower bound of z3_0, over the box" in t)
    claim = Fraction(json.loads(cert.read_text())["steps"][-1]["lower"][0])
    assert block.count(smt.num(claim)) == 1
    lin = tmp_path / "linear.smt2"
    lin.write_text(out.read_text().replace(block, block.replace(smt.num(claim), smt.num(claim + Fraction(1, claim.denominator)))))
    answers = dict((t, a) for t, a, _ in smt.run_cvc5(lin))
    assert answers[title] == "sat" and sum(a != "unsat" for a in answers.values()) == 1

    # a relaxation line moved below relu (upper intercept of a layer-1 neuron lowered) is refuted
    title, block = next((t, b) for t, b in blocks(out).items() if "[relu_relaxation]" in t)
    step = json.loads(cert.read_text())["steps"][1]
    i = next(i for i, s in enumerate(step["upper_slope"]) if Fraction(s) not in (0, 1))
    d = Fraction(step["upper_intercept"][i])
    assert block.count(smt.num(d)) == 2  # the line is written once for each piece of relu: [l, 0] and [0, u]
    relu = tmp_path / "relu.smt2"
    relu.write_text(out.read_text().replace(block, block.replace(smt.num(d), smt.num(d - Fraction(1, 10**6)))))
    answers = dict((t, a) for t, a, _ in smt.run_cvc5(relu))
    assert answers[title] == "sat"


def test_rejected_certificate_is_not_exported(tmp_path, capsys):
    cert = json.loads((ROOT / "proofs" / "tiny_prune.cert.json").read_text())
    cert["claim"]["bound"] = "1"  # below the verified output box: the checker rejects
    bad = tmp_path / "bad.cert.json"
    bad.write_text(json.dumps(cert))
    out = tmp_path / "bad.smt2"
    assert main(["export-smt", str(SPECS / "tiny_prune.yaml"), str(bad), "-o", str(out)]) == 3
    assert "REJECTED" in capsys.readouterr().out
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))

    cert = json.loads((ROOT / "proofs" / "tiny_prune.cert.json").read_text())
    cert["steps"][0]["lower"][0] = "0"  # a layer-1 bound tighter than interval arithmetic allows
    bad.write_text(json.dumps(cert))
    assert main(["export-smt", str(SPECS / "tiny_prune.yaml"), str(bad), "-o", str(out)]) == 3
    assert not out.exists()


def test_bad_input_exits_2(tmp_path, capsys):
    assert main(["export-smt", str(SPECS / "tiny_prune.yaml"), str(tmp_path / "missing.cert.json")]) == 2
    assert main(["export-smt", str(tmp_path / "missing.yaml"), str(ROOT / "proofs" / "tiny_prune.cert.json"),
                 "-o", str(tmp_path / "x.smt2")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 2 and "Traceback" not in err
    assert not (tmp_path / "x.smt2").exists()


def _tight_spec(tmp_path, tol: str):
    return shipped_copy(tmp_path, tolerance=tol, file="tight.yaml")


def test_branch_and_bound_certificate_is_confirmed_by_cvc5(tmp_path, capsys):
    """Input splits (tiny_prune at tolerance 21/20: plain CROWN gives 2.47, the exact maximum is about 1.01)."""
    spec, cert, out = _tight_spec(tmp_path, "21/20"), tmp_path / "bab.cert.json", tmp_path / "bab.smt2"
    assert main(["check", str(spec), "--method", "bab", "--out", str(cert)]) == 0
    assert "tree" in json.loads(cert.read_text())
    assert main(["export-smt", str(spec), str(cert), "-o", str(out)]) == 0
    n = check_syntax(out)
    assert {"interval", "linear", "relu_relaxation", "alpha", "goal"} <= kinds(out)
    assert sum("[goal]" in t for t in blocks(out)) >= 2  # one per proved leaf
    confirmed(out, n)


def test_inherited_bounds_and_sparse_linear_steps_are_confirmed_by_cvc5(tmp_path):
    """Input splits with CROWN leaves: the root's hidden-layer steps, and leaves' linear steps over
    the neurons the root leaves unstable (`neurons`): each claim's chain names its own neuron."""
    from certify.bounds.bab import branch_and_bound
    from certify.engine import attained_lower, prepare, write_and_check

    spec, cert, out = _tight_spec(tmp_path, "21/20"), tmp_path / "crown.cert.json", tmp_path / "crown.smt2"
    p = prepare(spec, cert)
    witness, lower = attained_lower(p)
    r = branch_and_bound(p.net, p.joint, p.box, "crown", p.spec.property.tolerance, time_budget=120)
    assert write_and_check(p, "bab", r.bound, {"tree": r.tree}, witness, lower, {}, cert, jobs=1).verdict.name == "CERTIFIED"
    sparse = re.findall(r'"neurons": \[([0-9, ]+)\]', cert.read_text())
    assert sparse
    assert main(["export-smt", str(spec), str(cert), "-o", str(out)]) == 0
    i = int(sparse[0].split(",")[-1])  # the last listed neuron of a leaf's first sparse step
    assert any(f"bound of z2_{i}" in t or f"bound of z3_{i}" in t for t in blocks(out))
    confirmed(out, check_syntax(out))


def test_relu_split_certificate_with_beta_is_confirmed_by_cvc5(tmp_path):
    """ReLU splits (24 inputs: certify branches on ReLUs, not on the box) and beta multipliers."""
    rng = np.random.default_rng(0)
    widths = [24, 8, 8, 2]
    ws = [rng.normal(0, 1 / np.sqrt(a), (b, a)) for a, b in zip(widths[:-1], widths[1:])]
    bs = [rng.normal(0, 0.3, b) for b in widths[1:]]
    sha = save_model(tmp_path / "m.npz", ws, bs)
    spec = tmp_path / "s.yaml"
    spec.write_text(f'version: 1\nmodel: {{path: m.npz, sha256: "{sha}"}}\ninput:\n  box: {{lower: 0, upper: "1/4"}}\n'
                    "explanation:\n  - prune: {layer: 1, keep: [0, 1, 2, 3, 4, 5], fill: zero}\n"
                    'property: {deviation: linf, tolerance: "68/100"}\n')  # alpha alone: 0.731; attained: 0.428
    cert, out = tmp_path / "a.cert.json", tmp_path / "a.smt2"
    assert main(["check", str(spec), "--method", "bab", "--out", str(cert)]) == 0
    text = cert.read_text()
    assert '"split": "relu"' in text and '"beta"' in text
    assert main(["export-smt", str(spec), str(cert), "-o", str(out)]) == 0
    confirmed(out, check_syntax(out))
    from certify.bounds import alpha
    if alpha.SAME_LAYER:  # multipliers on a layer's own splits: each such row has its sign obligation, confirmed above
        assert any("own splits" in t for t in blocks(out))


def test_own_split_obligation_needs_the_split_sign(tmp_path):
    """The obligation for a multiplier on a layer's own split is unsat with the split's sign and satisfiable without
    it (where no verified bounds carry the sign): the export does not confirm a row it cannot link."""
    from fractions import Fraction

    from certify.smt import _Seen, own_split_obligation

    def answer(assume):
        seen = _Seen("linear", "t", {"layer": 1}, [], (), {}, {}, {}, {}, False, [], assume)
        ob = own_split_obligation(seen, {0: 4, 2: 3}, 1, 0, 4, "t")  # 4 z_0 + 3 z_2 against 4 z_0: needs z_2 <= 0
        path = tmp_path / "o.smt2"
        path.write_text("(set-logic QF_LRA)\n" + ob.smt(1, 1))
        return [a for _, a, _ in smt.run_cvc5(path)]

    assert answer({(1, 2): "inactive"}) == ["unsat"]
    assert answer({(1, 2): "active"}) == ["sat"]
    assert answer({}) == ["sat"]


SHIPPED = sorted((ROOT / "proofs").glob("*.cert.json"))
CVC5_MAX_BYTES = 400_000  # cvc5 runs on the exports below this (the toy and tiny ones: about 1 s each); larger ones are
# measured by benchmarks/smt_export.py (digits 5 MB, verydiff_acas, verydiff_mnist: tens of seconds to minutes)


DENSE_STEPS = {"interval", "linear", "relu_relaxation", "difference"}  # the exporter's rules
SMALLEST_GRAPH = min((c for c in SHIPPED if not smt.step_kinds(c) <= DENSE_STEPS), key=lambda c: c.stat().st_size, default=None)


def _spec_of(cert):
    return SPECS / (cert.name.split(".")[0] + ".yaml")


@pytest.mark.parametrize("spec", sorted({_spec_of(c) for c in SHIPPED}), ids=lambda p: p.stem)
def test_every_shipped_certificate_exports(spec, tmp_path, capsys):
    """Every shipped certificate of this spec with dense-network steps exports (exit 0); the first
    small one per spec, and every small one with difference steps, is confirmed by cvc5. Of the graph
    models' certificates (residual ops, curves; certify/smt_graph.py) the smallest one exports here
    (each costs a full check; tests/test_smt_graph.py confirms a small graph's obligations with cvc5,
    and benchmarks/smt_export.py exports every shipped certificate)."""
    certs = [c for c in SHIPPED if _spec_of(c) == spec]
    confirmed_one = False
    for cert in certs:
        out = tmp_path / (cert.name + ".smt2")
        if not smt.step_kinds(cert) <= DENSE_STEPS:  # a graph model's steps
            if cert == SMALLEST_GRAPH:
                assert main(["export-smt", str(spec), str(cert), "-o", str(out)]) == 0, cert.name
                text = out.read_text()
                assert re.search(r"^\(set-logic QF_[LN]RA\)$", text, re.M) and text.count("(push 1)") == text.count("(check-sat)") > 0
                body = "\n".join(line for line in text.split("(set-logic", 1)[1].splitlines() if not line.startswith(";"))
                assert not re.search(r"[\s(]-\d", body) and not re.search(r"\d\.\d", body)
            continue
        assert main(["export-smt", str(spec), str(cert), "-o", str(out)]) == 0, cert.name
        n = check_syntax(out)
        differences = '"difference"' in cert.read_text()
        assert ("[difference]" in out.read_text() or "bound of z" in out.read_text()) if differences else n > 0
        if out.stat().st_size < CVC5_MAX_BYTES and (differences or not confirmed_one):
            confirmed(out, n)
            confirmed_one = True


def _subset(path, keep, out):
    """The exported file with only the blocks `keep(title, block)` selects (and every global
    definition of the others, which later blocks may name): a smaller file for cvc5."""
    text = path.read_text()
    parts = [text[: text.index("\n; obligation ") + 1]]
    for title, block in blocks(path).items():
        parts.append(block if keep(title, block) else "\n".join(l for l in block.splitlines() if l.startswith("(define-fun")) + "\n")
    out.write_text("".join(parts))
    return out


def _difference_export(tmp_path):
    cert = ROOT / "proofs" / "tiny_second_model.cert.json"
    assert '"difference"' in cert.read_text()
    out = tmp_path / "second.smt2"
    assert main(["export-smt", str(SPECS / "tiny_second_model.yaml"), str(cert), "-o", str(out)]) == 0
    return cert, out


def _drop(text: str, starts: tuple[str, ...]) -> str:
    """text without every balanced s-expression that begins with one of `starts` (a space, then "(")."""
    while (at := min((i for i in (text.find(s) for s in starts) if i >= 0), default=-1)) >= 0:
        depth, end = 0, at + 1
        for end in range(at + 1, len(text)):
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            if depth == 0:
                break
        text = text[:at] + text[end + 1:]
    return text


def test_difference_lines_are_exported_and_needed(tmp_path):
    """The difference lines the checker used are in the links' facts, and they matter: without them
    cvc5 refutes a link (the checker's forms are tighter than relu lines alone give), and a
    difference line moved by 1 is refuted in the lines' own obligation."""
    cert, out = _difference_export(tmp_path)
    text = out.read_text()
    facts = [line for line in text.splitlines() if line.startswith("(define-fun F") and "(- h" in line]
    assert facts, "no link fact mentions a difference pair h_a - h_b"
    with_pairs = {line.split()[1] for line in facts}
    links = _subset(out, lambda t, b: "link" in t and bool(with_pairs & set(re.findall(r"\bF\d+\b", b))), tmp_path / "links.smt2")
    assert confirmed(links)  # the links that use difference lines hold with them ...
    stripped = links.read_text()
    for line in facts:  # ... and without the two difference-line asserts of every pair (delta bounds kept), one fails
        stripped = stripped.replace(line, _drop(line, (" (>= (- h", " (<= (- h")))
    loose = tmp_path / "no_diff_lines.smt2"
    loose.write_text(stripped)
    answers = smt.run_cvc5(loose)
    assert any(a == "sat" for t, a, _ in answers), "no link needed the difference lines"

    title, block = next((t, b) for t, b in blocks(out).items() if "[difference]" in t and "from the verified bounds" not in t)
    step = next(s for s in json.loads(cert.read_text())["steps"] if s["kind"] == "difference" and s["pairs"])
    slope, t = Fraction(step["lower_slope"][0]), Fraction(step["lower_intercept"][0])
    line = f"(+ (* {smt.num(slope)} (- s0 t0)) {smt.num(t)})"  # pair 0's lower line, raised by 1 below
    assert block.count(line) == 1 or (block.count(line) == 2 and step["upper_slope"][0] == step["lower_slope"][0])
    moved = _subset(out, lambda t, b: t == title, tmp_path / "moved.smt2")
    moved.write_text(moved.read_text().replace(block, block.replace(line, f"(+ (* {smt.num(slope)} (- s0 t0)) {smt.num(t + 1)})", 1)))
    assert [a for _, a, _ in smt.run_cvc5(moved)] == ["sat"]


def test_step_kind_without_a_rule_is_refused(tmp_path, monkeypatch, capsys):
    """A step kind the checker accepts but the exporter has no rule for: one line, exit 2, no file."""
    from certify.checker import check as checker

    monkeypatch.setitem(checker.STEP_CHECKERS, "noop", lambda step, state, where: None)
    cert = json.loads((ROOT / "proofs" / "tiny_prune.cert.json").read_text())
    cert["steps"].insert(0, {"kind": "noop"})
    path, out = tmp_path / "noop.cert.json", tmp_path / "noop.smt2"
    path.write_text(json.dumps(cert))
    assert main(["export-smt", str(SPECS / "tiny_prune.yaml"), str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no SMT-LIB2 rule for the step kind 'noop'" in err
    assert not out.exists()
