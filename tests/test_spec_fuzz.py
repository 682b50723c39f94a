"""The spec fuzz campaign (benchmarks/spec_fuzz.py) in small: random single changes to shipped specs
of each family end in a result or in exit 2 with one line, and the campaign catches a reader that
crashes instead of refusing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import spec_fuzz  # noqa: E402

SPECS = ["tiny_prune", "resmlp_sae_jumprelu", "max_of_k_small", "modadd_onnx", "toy_tiers"]


def test_small_campaign_has_no_defects() -> None:
    result = spec_fuzz.campaign(SPECS, cases=30, seed=11, method="interval", progress=None)
    assert result["defects"] == [], result["defects"][0]
    assert sum(result["outcomes"].values()) == 30
    assert result["outcomes"].get("bad_input", 0) >= 15  # most single changes break a spec
    assert result["unnamed"] == 0, result["unnamed_examples"]


def test_campaign_catches_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sabotage: the first reader `certify check` calls on a spec raises a TypeError (a crash, not a
    refusal); every case must then come out as a defect (exit 4), whatever its change."""
    import certify.cli as cli

    def fragile(*args, **kwargs):
        raise TypeError("'NoneType' object is not subscriptable")

    monkeypatch.setattr(cli, "_level_results", fragile)
    result = spec_fuzz.campaign(SPECS[:2], cases=4, seed=3, method="interval", progress=None)
    assert len(result["defects"]) == 4
    assert all(any("exit 4" in p for p in d["problems"]) for d in result["defects"])


def test_verify_campaign_has_no_defects() -> None:
    """The trusted checker's own spec path: each changed spec against the shipped certificate is
    refused (exit 2, one line) or the certificate rejected (exit 3); never a crash."""
    result = spec_fuzz.campaign(SPECS[:4], cases=40, seed=12, method="interval", progress=None, command="verify")
    assert result["defects"] == [], result["defects"][0]
    assert result["outcomes"].get("bad_input", 0) >= 10 and result["outcomes"].get("rejected", 0) >= 1


def test_flow_campaign_has_no_defects() -> None:
    """`certify flow --fresh` on changed levels specs (4 cases, all bad input: a valid one bounds every level,
    ~17 s): one line with no certificate written
    (before the fix in flow.run_flow, a bad last level left the finer levels' certificates behind)."""
    result = spec_fuzz.campaign(["toy_tiers", "toy_clusters"], cases=4, seed=13, method="interval", progress=None,
                                command="flow")
    assert result["defects"] == [], result["defects"][0]
