"""The soundness campaign inside the test suite: 500 random cases against the exact MILP oracle.

Every case runs end to end (spec file, engine, certificate, trusted checker); see
benchmarks/soundness.py. Nothing unsound, no wrong CERTIFIED, no rejected certificate.
"""

import sys

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import soundness  # noqa: E402


def test_500_cases_cheap_methods():
    summary, records = soundness.run(450, seed=11, methods=("interval", "crown"))
    bad = [(r["case"], r["method"], r["verdict"].value, r["reason"]) for r in records
           if r["verdict"].value == "REJECTED" or (r["bound"] is not None and r["bound"] < r["exact"])]
    assert summary["unsound"] == summary["wrong_certified"] == summary["rejected"] == 0, bad[:5]
    assert summary["verdicts"]["CERTIFIED"] > 50 and summary["verdicts"]["VIOLATED"] > 50, summary


def test_50_cases_optimising_methods():
    summary, records = soundness.run(50, seed=12, methods=("alpha", "bab"))
    bad = [(r["case"], r["method"], r["verdict"].value, r["reason"]) for r in records
           if r["verdict"].value == "REJECTED" or (r["bound"] is not None and r["bound"] < r["exact"])]
    assert summary["unsound"] == summary["wrong_certified"] == summary["rejected"] == 0, bad[:5]
    assert summary["verdicts"]["CERTIFIED"] > 5 and summary["verdicts"]["VIOLATED"] > 5, summary
