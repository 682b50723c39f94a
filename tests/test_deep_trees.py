"""Split trees stay shallow (MAX_DEPTH splits along a path, dense and graph branch and bound alike): past float
resolution a split moves no bound, and a deeper tree would overflow the recursion of the certificate writer (residual
campaign seed 2043, case 247: a RecursionError, no certificate) and of the checker's JSON reader, which rejects it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from certify.checker.check import Verdict

from .conftest import ROOT, shipped_copy

sys.path.insert(0, str(ROOT / "benchmarks"))
import soundness  # noqa: E402


def _depth(node) -> int:
    best, stack = 0, [(node, 0)]
    while stack:
        n, d = stack.pop()
        best = max(best, d)
        stack += [(c, d + 1) for c in n.get("children", [])]
    return best


def test_residual_case_that_split_one_input_past_float_resolution(tmp_path):
    """Campaign seed 2043, case 247 (bab): the graph tree went hundreds of splits deep within its 1 s budget and the
    certificate writer hit Python's recursion limit. Now the path stops at MAX_DEPTH and the certificate is checked."""
    from certify.bounds import graph

    record = soundness.run_graph_case(np.random.default_rng([2043, 247]), tmp_path, 247, "bab")
    assert record["method"] == "bab" and not record.get("error"), record
    assert record["verdict"] is not Verdict.REJECTED, record.get("reason")
    certs = [json.loads(p.read_text()) for p in tmp_path.glob("case247.cert.json")]
    assert certs and "tree" in certs[0] and 0 < _depth(certs[0]["tree"]) <= graph.MAX_DEPTH


def test_dense_tree_stops_at_the_depth_cap(tmp_path, monkeypatch):
    """With the cap at 3 and a tolerance no tree reaches, every path ends within 3 splits; the tree is accepted."""
    from certify.bounds import bab
    from certify.engine import attained_lower, prepare, write_and_check

    monkeypatch.setattr(bab, "MAX_DEPTH", 3)
    spec = shipped_copy(tmp_path, tolerance="1/1000")
    p = prepare(spec, tmp_path / "c.cert.json")
    witness, lower = attained_lower(p)
    r = bab.branch_and_bound(p.net, p.joint, p.box, "crown", p.spec.property.tolerance, time_budget=120, max_leaves=1000)
    assert _depth(r.tree) == 3 and r.leaves <= 2 ** 3
    result = write_and_check(p, "bab", r.bound, {"tree": r.tree}, witness, lower, {}, tmp_path / "s.cert.json", jobs=1)
    assert result.verdict is not Verdict.REJECTED, result.check.reason


def test_a_tree_too_deep_to_read_is_rejected_in_one_line(tmp_path, capsys):
    """900 nested splits (valid JSON): the checker's reader runs out of recursion and rejects the certificate, exit 3."""
    from certify.cli import main

    spec = shipped_copy(tmp_path, tolerance="1/2")
    cert = tmp_path / "c.json"
    assert main(["check", str(spec), "--method", "bab", "--out", str(cert)]) in (0, 1)
    capsys.readouterr()
    c = json.loads(cert.read_text())
    node = {"steps": []}
    for _ in range(900):
        node = {"split": "input", "dim": 0, "at": "0", "steps": [], "children": [node, {"steps": []}]}
    c["tree"] = node
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)  # the C encoder, to write the file
    try:
        (tmp_path / "deep.json").write_text(json.dumps(c))
    finally:
        sys.setrecursionlimit(limit)
    assert main(["verify", str(spec), str(tmp_path / "deep.json")]) == 3
    err = capsys.readouterr()
    text = (err.out + err.err).strip()
    assert "REJECTED" in text and "Traceback" not in text and text.count("\n") == 0, text
