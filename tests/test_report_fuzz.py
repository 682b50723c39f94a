"""The report fuzz campaign (benchmarks/report_fuzz.py) in small: tampered shipped certificates give
a report whose verdict is the checker's, and never a crash; the campaign catches a report that says
CERTIFIED whatever the checker says."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import report_fuzz  # noqa: E402


def test_small_campaign_has_no_defects() -> None:
    result = report_fuzz.campaign(cases=12, seed=21, progress=None)
    assert result["defects"] == [], result["defects"][0]
    assert sum(result["exit_pairs"].values()) == 12
    assert result["exit_pairs"].get("report 3 / verify 3", 0) >= 4  # most single changes are rejected


def test_campaign_catches_a_report_that_disagrees(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sabotage: the report's overall verdict is always CERTIFIED. Every rejected copy must then be a defect."""
    import importlib

    from certify.status import Status

    report = importlib.import_module("certify.report")  # (the package exports a `report` function of the same name)

    monkeypatch.setattr(report, "overall", lambda entries: Status.CERTIFIED)
    result = report_fuzz.campaign(cases=6, seed=22, progress=None)
    rejected = sum(c for k, c in result["exit_pairs"].items() if k.endswith("verify 3"))
    assert rejected >= 1
    assert sum("report exit 0 but verify exit 3" in p for d in result["defects"] for p in d["problems"]) == rejected
