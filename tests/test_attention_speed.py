"""The ratio-leaf checker's cheaper tiers (certify/checker/attention.py) against brute force: each may only speed a
check up, never accept an entry above its cap."""

import random

import numpy as np
import pytest
from flint import fmpz

from certify.checker import attention


def _case(rng, n1, n2, bits, cancel):
    """6 rows each side as the joint rows build them (a's last row all ones, b's fifth too, sometimes); with `cancel`,
    two terms nearly cancel in every entry (X Y against Z W), so the entries are far smaller than their terms."""
    a = [[fmpz(rng.randint(-2 ** bits, 2 ** bits)) for _ in range(n1)] for _ in range(5)] + [[fmpz(1)] * n1]
    b = [[fmpz(rng.randint(-2 ** bits, 2 ** bits)) for _ in range(n2)] for _ in range(6)]
    if cancel:
        a[1] = [x + rng.randint(-3, 3) for x in a[0]]
        b[1] = [-y + rng.randint(-3, 3) for y in b[0]]
    if rng.random() < 0.5:
        b[4] = [fmpz(1)] * n2
    scales = [fmpz(rng.randint(1, 6)) for _ in range(6)]
    M = [[sum(int(c) * int(a[r][t]) * int(b[r][u]) for r, c in enumerate(scales)) for u in range(n2)] for t in range(n1)]
    return a, b, scales, M


def test_capped_cut_rows_never_pass_an_entry_above_its_cap(monkeypatch):
    """`_capped` first tries the rows cut to multiples of 2^s (s from |cap| 2^-cut). At every cut, with magnitudes up
    to 2^400, entries that cancel, and caps at, one below, one above and far around the maximum, its answer is the brute
    force one; and the cut rows decide (the inner call, cut 0, returns True) wherever the cap is far above the maximum,
    so the tier is not dead code."""
    rng, memo, inner = random.Random(17), {}, []
    real = attention._capped

    def spy(a, b, scales, cap, memo=None, cut=6):
        out = real(a, b, scales, cap, memo, cut)
        if cut == 0:
            inner.append(out)
        return out

    monkeypatch.setattr(attention, "_capped", spy)
    decided = 0
    for trial in range(80):
        n1, n2, bits = rng.randint(1, 9), rng.randint(1, 9), rng.choice([2, 40, 120, 400])
        a, b, scales, M = _case(rng, n1, n2, bits, cancel=trial % 3 == 0)
        top = max(max(row) for row in M)
        span = max(abs(v) for row in M for v in row) + 1
        for cap in (top, top - 1, top + 1, top - rng.randint(0, span), -abs(top) - 5, abs(top) * 3 + 1, top + span * 40):
            want = all(v <= cap for row in M for v in row)
            for cut in (1, 2, 6, 12):
                inner.clear()
                assert real(a, b, scales, fmpz(cap), None, cut) == want, (trial, cap, cut)
                assert real(a, b, scales, fmpz(cap), memo, cut) == want, (trial, cap, cut)
                decided += any(inner)
                assert want or not any(inner), (trial, cap, cut)
    assert decided > 100, decided


def test_capped_cut_rows_at_the_boundary():
    """Caps one below the maximum of large entries: the cut rows' error bound (not the rounding) must refuse them;
    a cap at the maximum is accepted (by the cut rows or, where they are too coarse, by the rows themselves)."""
    rng = random.Random(3)
    for trial in range(40):
        a, b, scales, M = _case(rng, 8, 8, 300, cancel=trial % 2 == 0)
        top = max(max(row) for row in M)
        for cut in (0, 1, 3, 6, 20):
            assert not attention._capped(a, b, scales, fmpz(top - 1), None, cut)
            assert attention._capped(a, b, scales, fmpz(top), None, cut)


@pytest.mark.parametrize("seed, V, n, d, dh, fold", [(0, 4, 3, 6, 4, True), (1, 3, 4, 4, 3, True), (2, 5, 3, 5, 5, False), (3, 4, 4, 4, 4, False)])
def test_tables_with_products_not_formed_equal_the_plain_tables(tmp_path, seed, V, n, d, dh, fold):
    """Form.tables, query token after query token, with the score products fused into the linear that reads them
    (`_fused`, `_unread`: the product's rows that read q not formed) and without: the same exact tables; and the fused
    path is taken where the graph allows it (the folded graphs' q.k products)."""
    from tests.test_token_ratio import _joint, _params

    p = _params(np.random.default_rng(seed), V, n, d, dh)
    joint = _joint(tmp_path, p, V, n, fold=fold)
    q = n - 1
    fused = attention.form(joint, V)
    taken = []
    real = attention.Form._fused

    def spy(self, *args):
        out = real(self, *args)
        taken.append(out is not None)
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(attention.Form, "_fused", spy)
        got = [fused.tables(q, a, "t") for a in range(V)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(attention.Form, "_fused", lambda self, *args: None)
        mp.setattr(attention.Form, "_unread", lambda self, m, q: False)
        plain = attention.form(joint, V)
        want = [plain.tables(q, a, "t") for a in range(V)]
    assert got == want
    if fold:
        assert any(taken) and any(k[0] == "unread" and v for k, v in fused.subs.items())


def test_onnx_tables_with_products_not_formed_equal_the_plain_tables(tmp_path):
    """As above on the PyTorch export (specs/max_of_k_onnx.yaml, V = 16): its q.k products have the query's factor on
    either side (both of `_fused`'s cases; those of the other query rows feed no table, so every node's value at every
    token is compared too, but the products not formed)."""
    from pathlib import Path

    from certify.engine_graph import prepare_graph

    joint = prepare_graph(Path(__file__).resolve().parent.parent / "specs" / "max_of_k_onnx.yaml", tmp_path / "c.json", None, False).joint

    def run(fm):
        out = []
        for a in range(16):
            out.append((fm.tables(3, a, "t"), fm.last[3]))
        return out
    fused = attention.form(joint, 16)
    got = run(fused)
    sides = {w for k, v in fused.subs.items() if k[0] == "fused" and v is not None for w in v[1]}
    unread = {k[1] for k, v in fused.subs.items() if k[0] == "unread" and v}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(attention.Form, "_fused", lambda self, *args: None)
        mp.setattr(attention.Form, "_unread", lambda self, m, q: False)
        want = run(attention.form(joint, 16))
    assert [t for t, _ in got] == [t for t, _ in want] and sides == {0, 1} and len(unread) == 2
    for (_, v1), (_, v2) in zip(got, want):
        assert {k: v for k, v in v1.items() if k not in unread} == {k: v for k, v in v2.items() if k not in unread}
