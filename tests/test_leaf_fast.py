"""A cheaper branch-and-bound leaf with the same floats (issue 19, eighteenth session): `driver.difference_planes_fast`
chooses both sides' planes in one `_lower_planes` call (the upper side as a plane below -D), takes the candidates'
intercepts point by point, and reads only the line candidates' slopes; `linear._apply_difference_np` returns at once
where no pair has coefficients of opposite signs. Here each against the computation it replaced, bit for bit."""

from __future__ import annotations

import numpy as np

from certify.bounds import driver
from certify.bounds.linear import Difference, Relaxation, _apply_difference_np


def _lower_planes_reference(za, zb, D, inside, line_s):
    """`driver._lower_planes` as the seventeenth session wrote it (the intercepts' minimum over a (n, 57, 8) array), with
    256dd90's margin."""
    n = za.shape[0]
    delta = za - zb
    w = inside[:, :12].sum(axis=1, keepdims=True)
    cd = np.where(inside[:, :12], delta[:, :12], 0.0).sum(axis=1, keepdims=True) / np.maximum(w, 1)
    cb = np.where(inside[:, :12], zb[:, :12], 0.0).sum(axis=1, keepdims=True) / np.maximum(w, 1)
    rows, order = np.arange(n)[:, None], np.argsort(~inside, axis=1, kind="stable")[:, :8]
    pd, pb, pD, ok = delta[rows, order], zb[rows, order], D[rows, order], inside[rows, order]
    pd, pb, pD = (np.where(ok, v, v[:, :1]) for v in (pd, pb, pD))
    i, j, k = driver._TRIPLES.T
    u = [v[:, j] - v[:, i] for v in (pd, pb, pD)]
    v = [x[:, k] - x[:, i] for x in (pd, pb, pD)]
    nd, nb, nD = u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]
    good = np.abs(nD) > 1e-9 * (np.abs(u[0] * v[1]) + np.abs(u[1] * v[0]) + 1e-300)
    nD = np.where(good, nD, 1.0)
    s = np.where(good, -nd / nD, 0.0)
    r = np.where(good, -nb / nD, 0.0)
    good &= (np.abs(s) <= 4) & (np.abs(r) <= 4)
    s = np.concatenate([np.where(good, s, line_s[:, None]), line_s[:, None]], axis=1)
    r = np.concatenate([np.where(good, r, 0.0), np.zeros((n, 1))], axis=1)
    s, r = driver._slope_grid(s), driver._slope_grid(r)
    big = np.where(ok, 0.0, np.inf)
    t = (pD[:, None, :] - s[..., None] * pd[:, None, :] - r[..., None] * pb[:, None, :] + big[:, None, :]).min(axis=2)
    best = np.argmax(s * cd + r * cb + t, axis=1)
    s, r = s[rows[:, 0], best], r[rows[:, 0], best]
    terms = D - s[:, None] * delta - r[:, None] * zb
    err = 2.0 ** -48 * (np.abs(D) + np.abs(s[:, None] * delta) + np.abs(r[:, None] * zb)
                        + (1 + np.abs(s[:, None]) + np.abs(r[:, None])) * (np.abs(za) + np.abs(zb)))
    t = np.min(np.where(inside, terms, np.inf), axis=1)
    e = np.max(np.where(inside, err, 0.0), axis=1)
    t = np.where(np.isfinite(t), t, 0.0)
    return s, r, driver._down(t, e), (cd[:, 0], cb[:, 0])


def _planes_reference(dlo, dup, lo, up, a, b):
    """Both sides by two calls, each side's points on their own (the seventeenth session's `difference_planes_fast`)."""
    lines = driver.difference_lines_fast(dlo, dup, lo, up, a, b)
    la, ua, lb, ub = lo[a], up[a], lo[b], up[b]
    n = len(a)
    za, zb, inside = driver._cell_points(la, ua, lb, ub, dlo, dup, np.ones(n, dtype=bool))
    sl, rl, tl, mid = _lower_planes_reference(za, zb, np.maximum(za, 0) - np.maximum(zb, 0), inside, lines.lower_slope)
    za, zb, inside = driver._cell_points(la, ua, lb, ub, dlo, dup, np.zeros(n, dtype=bool))
    su, ru, tu, _ = _lower_planes_reference(za, zb, np.maximum(zb, 0) - np.maximum(za, 0), inside, -lines.upper_slope)
    return Relaxation(sl, tl, -su, -tu), rl, -ru, mid


def _random_pairs(rng, n: int, grid: bool):
    lo = rng.uniform(-3, 1, 2 * n)
    up = lo + rng.uniform(0, 3, 2 * n)
    if grid:  # ends on a coarse grid: ties, stable neurons, point intervals, P touching 0
        lo, up = np.round(lo * 4) / 4, np.round(up * 4) / 4
    a, b = np.arange(n), np.arange(n, 2 * n)
    ends = np.sort(rng.uniform(lo[a] - up[b], up[a] - lo[b], (2, n)), axis=0)
    if grid:
        ends = np.round(ends * 4) / 4
    return driver._pad(ends[0], ends[1]), lo, up, a, b


def test_planes_in_one_call_are_the_two_calls_bit_for_bit():
    rng = np.random.default_rng(1818)
    for trial in range(40):
        (dlo, dup), lo, up, a, b = _random_pairs(rng, int(rng.integers(1, 60)), grid=trial % 2 == 1)
        slopes = driver._difference_slopes(dlo, dup, lo, up, a, b)[4:]
        got = driver.difference_planes_fast(dlo, dup, lo, up, a, b, slopes)
        want = _planes_reference(dlo, dup, lo, up, a, b)
        for x, y in zip((*vars(got[0]).values(), got[1], got[2], *got[3]), (*vars(want[0]).values(), want[1], want[2], *want[3])):
            assert np.array_equal(x, y), trial


def test_line_slopes_are_the_lines_slopes():
    rng = np.random.default_rng(1819)
    (dlo, dup), lo, up, a, b = _random_pairs(rng, 80, grid=True)
    lines = driver.difference_lines_fast(dlo, dup, lo, up, a, b)
    sl, su = driver._difference_slopes(dlo, dup, lo, up, a, b)[4:]
    assert np.array_equal(sl, lines.lower_slope) and np.array_equal(su, lines.upper_slope)


def _apply_reference(h, lam, const, r, d):
    """`linear._apply_difference_np` as the seventeenth session wrote it (no early return)."""
    a, b = d.a, d.b
    xa, xb = h[:, a], h[:, b]
    opp = xa * xb < 0
    ref_a = np.abs(xa) >= np.abs(xb)
    c, dd = xa + xb, np.where(ref_a, -xb, xa)
    pick = lambda v: np.where(ref_a, v[..., a], v[..., b])  # noqa: E731
    cpos, dpos = c >= 0, dd >= 0
    c_slope = c * np.where(cpos, pick(r.lower_slope), pick(r.upper_slope))
    c_int = c * np.where(cpos, pick(r.lower_intercept), pick(r.upper_intercept))
    ds = dd * np.where(dpos, d.lines.lower_slope, d.lines.upper_slope)
    dt = dd * np.where(dpos, d.lines.lower_intercept, d.lines.upper_intercept)
    std_int = sum(x * np.where(x >= 0, r.lower_intercept[..., i], r.upper_intercept[..., i]) for x, i in ((xa, a), (xb, b)))
    new_a = np.where(ref_a, c_slope, 0.0) + ds
    new_b = np.where(ref_a, 0.0, c_slope) - ds + dd * np.where(dpos, d.lower_b, d.upper_b)
    lam[:, a], lam[:, b] = np.where(opp, new_a, lam[:, a]), np.where(opp, new_b, lam[:, b])
    return lam, const + np.where(opp, c_int + dt - std_int, 0.0).sum(axis=1)


def test_pair_rewrite_skips_rows_without_opposite_signs_only():
    """Rows whose pair coefficients never have opposite signs (a neuron's own rows) are left as they are; a block that
    has one such pair anywhere is rewritten as before (the reference's floats, and the same as the rows one by one)."""
    rng = np.random.default_rng(1820)
    width, n = 12, 5
    a, b = np.arange(n), n + np.arange(n)
    r = Relaxation(*(rng.uniform(-1, 1, width) for _ in range(4)))
    d = Difference(a, b, Relaxation(*(rng.uniform(-1, 1, n) for _ in range(4))), rng.uniform(-1, 1, n), rng.uniform(-1, 1, n))
    same = np.abs(rng.normal(size=(6, width))) * np.where(rng.random((6, width)) < 0.5, 1, -1)
    same[:, b] = np.abs(same[:, b]) * np.sign(same[:, a])  # pair coefficients of one sign (or one of them 0)
    same[0, b[:2]] = 0.0
    lam, const = rng.normal(size=(6, width)), rng.normal(size=6)
    got_lam, got_const = _apply_difference_np(same, lam.copy(), const.copy(), r, d)
    assert np.array_equal(got_lam, lam) and np.array_equal(got_const, const)
    mixed = np.concatenate([same, rng.normal(size=(4, width))])
    mixed[-1, a[0]], mixed[-1, b[0]] = 1.0, -0.5  # one opposite pair at least
    lam, const = rng.normal(size=(10, width)), rng.normal(size=10)
    block_lam, block_const = _apply_difference_np(mixed, lam.copy(), const.copy(), r, d)
    want_lam, want_const = _apply_reference(mixed, lam.copy(), const.copy(), r, d)
    assert np.array_equal(block_lam, want_lam) and np.array_equal(block_const, want_const)
    assert not np.array_equal(block_lam[-1], lam[-1])  # the opposite pair's row was rewritten
    for i in range(10):
        row_lam, row_const = _apply_difference_np(mixed[i:i + 1], lam[i:i + 1].copy(), const[i:i + 1].copy(), r, d)
        assert np.array_equal(row_lam[0], block_lam[i]) and row_const[0] == block_const[i]
