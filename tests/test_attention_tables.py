"""The engine's float tables with the scores and rests of every query token evaluated at once
(certify/bounds/tokens.py::_every_token, read by `_float_tables`): at every query token a they equal the checker's
exact tables (certify/checker/attention.py Form.tables) to float precision, on tiny random transformers (folded and
not), on the PyTorch export and on the shipped V = 64 model; the comparison fails when the batch's token axes are
swapped (so it reads the tables it claims to)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from certify.bounds import tokens
from certify.checker import attention
from certify.engine_graph import prepare_graph

ROOT = Path(__file__).resolve().parent.parent


def _floats(num, den) -> np.ndarray:
    den = int(den)
    return np.array([int(v) / den for v in num])  # (int / int: correctly rounded, whatever their sizes)


def _mismatches(joint, V: int, q: int) -> list:
    """(a, what) wherever the engine's float tables at query token a differ from the checker's exact ones."""
    fm = attention.form(joint, V)
    ff = tokens.FloatForm(fm)
    bad = []
    for a in range(V):
        exps, coef, rest = tokens._float_tables(ff, q, a)
        E, C, R = fm.tables(q, a, "t")

        def close(got, want, what):
            got = np.broadcast_to(got, want.shape) if np.ndim(got) else np.full(want.shape, got)
            if not np.allclose(got, want, rtol=1e-9, atol=1e-9 * (1 + np.abs(want).max())):
                bad.append((a, what))
        for i, ((p, v), (p2, num, den)) in enumerate(zip(rest, R)):
            close(v if p2 is not None else v[:1], _floats(num, den), f"rest {i}")
        for g, (members, exact) in enumerate(zip(exps, E)):
            for k, ((p, e), (p2, num, den)) in enumerate(zip(members, exact)):
                close(e if p2 is not None else e[:1], _floats(num, den), f"exp {g} {k}")
        for g in range(len(exps)):
            for k in range(len(exps[g])):
                rows = coef[g][k][1]
                for i in range(len(rest)):
                    p2, num, den = C[i][g][k]
                    close(rows[i] if p2 is not None else rows[i][:1], _floats(num, den), f"coefficient {i} {g} {k}")
    return bad


def _swapped(monkeypatch):
    real = tokens._every_token
    monkeypatch.setattr(tokens, "_every_token", lambda ff, q: {k: v.swapaxes(1, 2) for k, v in real(ff, q).items()})


@pytest.mark.parametrize("seed, V, n, d, dh, fold", [(0, 4, 3, 6, 4, True), (1, 3, 4, 4, 3, True), (2, 5, 3, 5, 5, False), (3, 4, 4, 4, 4, False)])
def test_every_token_tables_equal_the_checkers_exact_tables(tmp_path, monkeypatch, seed, V, n, d, dh, fold):
    from tests.test_token_ratio import _joint, _params

    joint = _joint(tmp_path, _params(np.random.default_rng(seed), V, n, d, dh), V, n, fold=fold)
    assert _mismatches(joint, V, n - 1) == []
    _swapped(monkeypatch)
    assert _mismatches(joint, V, n - 1)


def test_every_token_tables_on_the_pytorch_export_and_the_v64_model(tmp_path, monkeypatch):
    onnx = prepare_graph(ROOT / "specs" / "max_of_k_onnx.yaml", tmp_path / "o.json", None, False).joint
    v64 = prepare_graph(ROOT / "specs" / "max_of_k_circuit.yaml", tmp_path / "v.json", None, False).joint
    assert _mismatches(onnx, 16, 3) == [] and _mismatches(v64, 64, 3) == []
    _swapped(monkeypatch)
    assert _mismatches(onnx, 16, 3)
