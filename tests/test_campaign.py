"""The soundness campaign inside the test suite: 500 random cases against the exact MILP oracle.

Every case runs end to end (spec file, engine, certificate, trusted checker); see
benchmarks/soundness.py. Nothing unsound, no wrong CERTIFIED, no rejected certificate.
"""

import sys

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import soundness  # noqa: E402


def assert_clean(cases: int, seed: int, methods: tuple, at_least: int) -> None:
    summary, records = soundness.run(cases, seed=seed, methods=methods)
    bad = [(r["case"], r["method"], r["verdict"].value, r["reason"]) for r in records
           if r["verdict"].value == "REJECTED" or (r["bound"] is not None and r["bound"] < r["exact"])]
    assert summary["unsound"] == summary["wrong_certified"] == summary["rejected"] == 0, bad[:5]
    assert summary["verdicts"]["CERTIFIED"] > at_least and summary["verdicts"]["VIOLATED"] > at_least, summary


def test_450_cases_cheap_methods():
    assert_clean(450, 11, ("interval", "crown"), 50)


def test_50_cases_optimising_methods():
    assert_clean(50, 12, ("alpha", "bab"), 5)


def test_branch_and_bound_proves_an_exact_zero_deviation(tmp_path, monkeypatch):
    """Split leaves bound their outputs in padded floats; a leaf within the padding of the target
    is re-bounded exactly, so an explanation that equals f on the domain is CERTIFIED at tolerance
    0 (soundness campaign seed 2026, cases 2 and 120: f = g there, and the root's bound is not 0)."""
    monkeypatch.setattr(soundness, "DENSE_BUDGET", 120.0)  # the 16 leaves, not a loaded machine's clock, end the search
    for i in (2, 120):
        r = soundness.run_case(soundness.np.random.default_rng([2026, i]), tmp_path, i, "bab")
        assert r["tolerance"] == 0 and r["exact"] == 0 and r["verdict"].value == "CERTIFIED", r
