"""benchmarks/soundness.py --family transformer (issue 17): random tiny transformers, circuit explanations and
token domains, every certificate through the trusted checker, against the exhaustive exact maximum.

A few cases end to end (nothing unsound, no wrong CERTIFIED, none rejected, the oracle's float maximum, the
checker's exact replay and mpmath's agree); the oracle against an independent numpy forward of the
transformer; and the campaign's counters catch a broken bound: rejected by the real checker, counted as
unsound and wrongly CERTIFIED when the checker's goal check is switched off."""

import itertools
import sys
from fractions import Fraction

import numpy as np
import pytest

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import soundness  # noqa: E402

SEED, FIRST, CASES = 0, 0, 5  # attn, mlp (softmax op), tokens, fold (softmax op), fold: CERTIFIED, VIOLATED and UNKNOWN


@pytest.fixture(scope="module")
def campaign():
    return soundness.run(CASES, seed=SEED, methods=soundness.TRANSFORMER_METHODS, family="transformer", chunk=CASES, first=FIRST)


def test_transformer_family_end_to_end(campaign):
    summary, records = campaign
    assert summary["cases"] == CASES
    assert summary["unsound"] == summary["wrong_certified"] == summary["rejected"] == summary["errors"] == 0, records
    assert summary["oracle_refused"] == summary["replay_mismatch"] == summary["suspect"] == 0
    assert {r["verdict"].value for r in records} >= {"CERTIFIED", "VIOLATED"}
    assert {r["witness"] for r in records} == {True, False}  # certificates with and without a witness
    for r in records:
        assert r["bound"] is not None and r["bound"] >= r["exact"] >= 0
        assert abs(float(r["exact"]) - r["milp"]) <= 1e-9 * (1 + r["milp"])  # the float enumeration found the exact maximiser
        assert r["sequences"] >= 1 and 3 <= r["vocab"] <= 8 and 2 <= r["length"] <= 4


def _probe(tmp_path, seed, V, n, d, dh, tokens, explanation):
    """A random attention-only transformer (last position read), its spec with `explanation` on `tokens`, and
    the prepared joint graph: (parameters, prepared problem)."""
    from certify.engine_graph import prepare_graph
    from certify.model.transformer import attn_only

    rng = np.random.default_rng(seed)
    p = {"W_E": rng.normal(size=(V, d)), "W_pos": rng.normal(size=(n, d)), "W_U": rng.normal(size=(d, V))}
    for c in "QKV":
        p[f"blocks.0.attn.W_{c}"] = rng.normal(size=(1, d, dh))
    p["blocks.0.attn.W_O"] = rng.normal(size=(1, dh, d))
    sha = soundness.save_graph(attn_only(p, vocab=V, length=n, queries=[n - 1]), tmp_path / "m.npz", "unembed")
    spec = tmp_path / "s.yaml"
    spec.write_text(f'version: 1\nmodel: {{path: m.npz, sha256: "{sha}"}}\ninput: {{tokens: {tokens}}}\n'
                    f"explanation:\n  - {explanation}\nproperty: {{deviation: linf, tolerance: 1}}\n")
    return p, prepare_graph(spec, tmp_path / "s.cert.json")


def test_the_oracle_is_the_maximum_over_every_sequence(tmp_path):
    """exhaustive_max on the joint graph of a zero-ablated W_pos equals max |f - g| from the direct numpy forward
    (certify.model.transformer.forward, no graph) over every allowed sequence."""
    from certify.model.transformer import forward

    V, n, allowed = 4, 3, [[0, 2, 3], [1, 2], [0, 1, 2, 3]]
    p, probe = _probe(tmp_path, 4, V, n, 3, 2, f"{{vocab: {V}, length: {n}, allowed: {allowed}}}", "ablate: {site: embed.pos, fill: zero}")
    exact, value, x, mp, count = soundness.exhaustive_max(probe.joint, probe.box)
    seqs = np.array(list(itertools.product(*allowed)))
    direct = np.abs(forward(p, seqs)[:, -1] - forward({**p, "W_pos": 0 * p["W_pos"]}, seqs)[:, -1]).max(axis=1)
    assert count == len(seqs) == 24
    assert abs(value - direct.max()) <= 1e-9 * direct.max() and abs(float(exact) - direct.max()) <= 1e-9 * direct.max()
    assert abs(mp - float(exact)) <= 1e-12 * mp
    best = [int(np.argmax(x[q * V:(q + 1) * V])) for q in range(n)]
    assert direct[[tuple(s) for s in seqs.tolist()].index(tuple(best))] == direct.max()


def test_free_values_are_enumerated_at_their_vertices(tmp_path):
    """A free fill downstream of which all is affine: the maximum over the free box is at a vertex, and the oracle
    takes every vertex (not only the lower end that the checker's witness replay uses)."""
    from certify.bounds.tokens import one_hot
    from certify.checker.graph import deviation_at

    V, n = 3, 2
    _, probe = _probe(tmp_path, 9, V, n, 2, 1, f"{{vocab: {V}, length: {n}}}",
                      "ablate: {site: blocks.0.attn.h0.out, indices: [0, 1], fill: free}")
    assert len(soundness._free_vertices(probe.joint)) == 4
    exact, *_ = soundness.exhaustive_max(probe.joint, probe.box)
    seqs = np.array(list(itertools.product(range(V), repeat=n)))
    lower_end = max(deviation_at(probe.joint, [Fraction(int(v)) for v in row]) for row in one_hot(seqs, V))
    assert exact > lower_end > 0  # the lower end is not the worst vertex here


def _broken(monkeypatch):
    """The engine claims bound 0 with its real steps."""
    from certify import engine_graph

    real = engine_graph.bound_graph
    monkeypatch.setattr(engine_graph, "bound_graph", lambda p, m, **kw: (Fraction(0), *real(p, m, **kw)[1:]))


def test_a_broken_bound_is_rejected_by_the_checker(monkeypatch):
    _broken(monkeypatch)
    summary, records = soundness.run(2, seed=SEED, methods=soundness.TRANSFORMER_METHODS, family="transformer", chunk=2, first=FIRST)
    assert summary["rejected"] == 2 and summary["unsound"] == summary["wrong_certified"] == 0, records


def test_a_broken_checker_shows_as_unsound(monkeypatch):
    """With the checker's goal check switched off, the bound 0 is accepted: the campaign must count it."""
    from certify.checker import graph

    _broken(monkeypatch)
    monkeypatch.setattr(graph, "goal_reached", lambda bounds, bound, where: None)
    summary, records = soundness.run(2, seed=SEED, methods=soundness.TRANSFORMER_METHODS, family="transformer", chunk=2, first=FIRST)
    assert summary["unsound"] == 2 and summary["wrong_certified"] == 1, records  # case 1's tolerance is below its maximum


def test_an_input_range_leaving_a_curves_domain_is_refused_by_the_engine(tmp_path):
    """Found by this campaign (seed 0, case 12: product-form softmax, scores down to -370): exp ~1e-162, the padded
    sum's interval crossed 0 and the engine wrote a reciprocal interval that the checker rejected (exit 3). Now
    the engine refuses such a range (no certificate); on a box, a reciprocal of a range straddling 0 likewise."""
    from certify.bounds.graph import crown_state
    from certify.checker import Verdict
    from certify.checker.graph import read_graph
    from certify.model.graph import GraphBuilder

    r = soundness.run_transformer_case(np.random.default_rng([0, 12]), tmp_path, 12, "interval")
    assert r["verdict"] is not Verdict.REJECTED and r["bound"] is None and r["reason"].startswith("engine:"), r
    for fn in ("reciprocal", "rsqrt", "sqrt"):  # y = fn(x + 1)
        b = GraphBuilder(1)
        b.unary("y", fn, b.linear("a", "x", [[1.0]], [1.0]))
        b.save(tmp_path / f"{fn}.npz", "y")
        graph = read_graph(tmp_path / f"{fn}.npz")
        with pytest.raises(OverflowError, match=fn):  # x + 1 in [-1, 1]
            crown_state(graph, ([Fraction(-2)], [Fraction(0)]), "interval")
        assert 0 < crown_state(graph, ([Fraction(0)], [Fraction(1)]), "crown").bound < 2  # x + 1 in [1, 2]: bounded


def test_witness_free_residual_cases_make_a_broken_checker_visible(monkeypatch):
    """The residual family's witness-free block (cases 4-7): a bound 0 that a broken checker accepts is counted
    unsound (with the attained maximiser as witness, the engine would have raised the bound to it)."""
    from certify.checker import graph

    assert [soundness.witness_free(i) for i in range(9)] == [False] * 4 + [True] * 4 + [False]
    _broken(monkeypatch)
    monkeypatch.setattr(graph, "goal_reached", lambda bounds, bound, where: None)
    summary, records = soundness.run(4, seed=7, methods=soundness.RESIDUAL_METHODS, family="residual", chunk=4, first=4)
    assert summary["unsound"] == sum(r["exact"] > 0 for r in records) > 0, records


def test_a_free_range_beyond_float64_is_refused_in_one_line(tmp_path, capsys):
    """Campaign seed 2041, case 206: `fill: free` on an attention output whose interval bound exceeds float64. The
    engine's float copy of the graph cannot hold it: exit 2 with one line (it was exit 4, an OverflowError), and the
    campaign's oracle refuses the case instead of counting an error."""
    from certify.cli import main
    from certify.pin import pin_spec

    spec, _ = soundness.random_transformer_case(np.random.default_rng([2041, 206]), tmp_path, 206, "alpha")
    spec.write_text(spec.read_text().replace("TOL", "1"))
    pin_spec(spec)
    assert "fill: free" in spec.read_text()
    assert main(["check", str(spec), "--method", "alpha"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "float64 overflows on this domain" in err and "Traceback" not in err, err
    record = soundness.run_transformer_case(np.random.default_rng([2041, 206]), tmp_path / "c", 206, "alpha")
    assert record.get("oracle_refused") and not record.get("error"), record


def test_cancelling_logits_are_padded_enough():
    """Campaign seed 2041, case 169 (a low-rank MLP output): f's and g's logits near 1e10 cancel to 1e-6 in d. The engine
    padded its back-substituted bound of d relative to 1e-6, under its float rounding, and the checker REJECTED the
    certificate (fail closed); padded relative to d's interval bounds, it is accepted."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        record = soundness.run_transformer_case(np.random.default_rng([2041, 169]), Path(tmp), 169, "crown")
    assert record["verdict"].value != "REJECTED" and not record.get("error"), record.get("reason")
    assert record["bound"] is not None and record["bound"] >= record["exact"]
