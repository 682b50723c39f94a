"""The corruption campaign (benchmarks/corruption.py) in small: tampered copies of genuine certificates
are rejected or still prove something true, never a false bound, and never crash the checker; and the
campaign does catch a checker that skips a proof obligation."""

import sys
from fractions import Fraction

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import corruption  # noqa: E402

from certify.checker import check  # noqa: E402


def assert_clean(summary: dict) -> None:
    assert summary["unsound"] == summary["wrong_certified"] == summary["crashed"] == summary["bad_input"] == 0, summary
    assert summary["rejected"] > summary["mutants"] // 2, summary  # most single changes break the proof
    assert summary["cases_without_certificate"] == 0, summary


def test_tampered_dense_certificates_never_prove_a_false_bound():
    summary, _ = corruption.run("dense", cases=8, mutants=15, seed=31)
    assert_clean(summary)
    assert {"steps", "claim"} <= set(summary["by_section"]), summary["by_section"]


def test_tampered_transformer_certificates_never_prove_a_false_bound():
    summary, _ = corruption.run("transformer", cases=4, mutants=12, seed=32, methods=("crown", "bab"))
    assert_clean(summary)


def zero_claim(doc, rng):
    """The claimed bound set to 0."""
    corruption._set(doc, ("claim", "bound"), "0")
    return doc


def test_a_checker_that_skips_the_goal_is_caught(monkeypatch):
    """Witness-free cases (4..7) with a positive deviation: a claimed bound of 0 is rejected by the checker;
    with its z3 goal check replaced by `True`, the same certificates are accepted, and the campaign
    counts them as unsound (and the CERTIFIED ones as wrong) instead of passing them."""
    monkeypatch.setattr(corruption, "MUTATIONS", {"zero_claim": zero_claim})
    honest = [r for i in range(4, 8) for r in corruption.tamper_case("dense", 33, i, "crown", 1)]
    changed = [r for r in honest if r["outcome"] != "unchanged"]  # a case whose bound is 0 already is unchanged
    assert changed and all(r["outcome"] == "rejected" for r in changed), honest
    monkeypatch.setattr(check, "goal_holds", lambda *args, **kwargs: True)
    sabotaged = [r for i in range(4, 8) for r in corruption.tamper_case("dense", 33, i, "crown", 1)]
    positive = [r for r in sabotaged if r["outcome"] == "accepted" and Fraction(r["exact"]) > 0]
    assert positive and all("unsound" in r["bad"] for r in positive), sabotaged
    summary = corruption.summarise(sabotaged)
    assert summary["unsound"] == len(positive) and summary["rejected"] == 0, summary


def test_a_graph_step_naming_a_list_or_an_object_for_its_node_is_rejected(tmp_path):
    """Found by the corruption campaign (residual family, seed 2071: 11 of 4,904 mutants): a graph step whose
    `node` was a list or an object made the checker raise TypeError (unhashable) instead of rejecting it."""
    import json

    from certify.checker import Verdict, check_certificate

    rec, spec, cert = corruption.genuine("residual", 2071, 9, "crown", tmp_path)
    doc = json.loads(cert.read_text())
    for value in ([], {}, ["x"], None, 3):
        bad = json.loads(json.dumps(doc))
        bad["steps"][0]["node"] = value
        path = tmp_path / "bad.cert.json"
        path.write_text(json.dumps(bad))
        result = check_certificate(spec, path, 1)
        assert result.verdict is Verdict.REJECTED and "names a node" in result.reason, (value, result.reason)


def test_graph_steps_that_are_not_a_list_are_rejected(tmp_path):
    """Found by the corruption campaign (residual family, seed 2074, case 96): `steps: null` in a graph certificate
    made the checker raise TypeError (its length was taken before the steps were checked to be a list)."""
    import json

    from certify.checker import Verdict, check_certificate

    rec, spec, cert = corruption.genuine("residual", 2074, 96, "interval", tmp_path)
    doc = json.loads(cert.read_text())
    for value in (None, 3, "steps", {}):
        path = tmp_path / "bad.cert.json"
        path.write_text(json.dumps({**doc, "steps": value}))
        result = check_certificate(spec, path, 1)
        assert result.verdict is Verdict.REJECTED and "steps must be a list" in result.reason, (value, result.reason)
