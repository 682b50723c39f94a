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
