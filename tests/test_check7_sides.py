"""The sixteenth session's checker speed-ups for MNIST-7 (issue 19) give the same exact numbers as before:

- exact.backsubstitute's pair rewrite in closed form per sign case, and columns left out wherever a quarter can go,
  against the verbatim code before issue 19's column drop (tests/test_exact_columns.py), here with nonzero lower
  intercepts (that file's cases have none) and more pairs;
- check._bounds_of bounds both sides in one back-substitution: the same lower and upper bounds as one call a side
  (with alpha slopes, and one-sided claims)."""

from __future__ import annotations

import random
from fractions import Fraction

from certify.checker import check
from certify.checker.exact import backsubstitute, weight_mats
from tests.test_exact_columns import _case, _old_backsubstitute


def _with_lower_intercepts(rng, case):
    lam, layers, relax, box, alpha, beta, diff = case
    relax = [(lo, ([rng.randrange(-5, 1) if rng.random() < 0.5 else 0 for _ in lo[0]], 2 ** rng.randrange(0, 3)), up, ui)
             for lo, _, up, ui in relax]
    for j, (pairs, lines) in list(diff.items()):  # more pairs: every neuron of the layer in one where it can
        n = len(relax[j - 1][0][0])
        if n >= 4 and rng.random() < 0.5:
            ids = rng.sample(range(n), n - n % 2)
            pairs = list(zip(ids[0::2], ids[1::2]))
            p = len(pairs)
            lines = tuple(([rng.randrange(lo, 9) for _ in range(p)], den) for lo, den in ((0, 4), (-8, 5), (0, 4), (-8, 5)))
            diff[j] = (pairs, lines)
    return lam, layers, relax, box, alpha, beta, diff


def test_backsubstitute_with_lower_intercepts_equals_the_old_code():
    rng = random.Random(1916)
    rewritten = 0
    for _ in range(300):
        lam, layers, relax, box, alpha, beta, diff = _with_lower_intercepts(rng, _case(rng))
        new = backsubstitute(lam, layers, relax, box, alpha, beta, diff, weight_mats(layers))
        old = _old_backsubstitute(lam, layers, relax, box, alpha, beta, diff, weight_mats(layers))
        assert new == old
        rewritten += bool(diff)
    assert rewritten > 100


def test_both_sides_in_one_call_equal_one_call_a_side():
    rng = random.Random(1917)
    checked = 0
    for _ in range(300):
        lam, layers, relax, box, alpha, _, diff = _with_lower_intercepts(rng, _case(rng))
        width = len(layers[-1][1][0])
        low = [{i: 1} for i in range(width) if rng.random() < 0.7]
        up = [{i: -1} for i in range(width) if rng.random() < 0.7]
        al = {j: (ns, ([[rng.randrange(0, d + 1) for _ in ns] for _ in range(len(low) + len(up))], d))
              for j, (ns, (_, d)) in alpha.items()}
        al_low = {j: (ns, (rows[:len(low)], d)) for j, (ns, (rows, d)) in al.items()}
        al_up = {j: (ns, (rows[len(low):], d)) for j, (ns, (rows, d)) in al.items()}
        mats = weight_mats(layers)
        k = len(layers)
        state = check._State(layers, tuple([Fraction(v, den) for v in nums] for nums, den in box), {}, dict(enumerate(relax, 1)), {},
                             diff=dict(diff), mats=mats)
        got = check._bounds_of(low, state, k, (al_low, al_up), upper_rows=[{i: 1} for row in up for i in row])
        qbox = tuple(check.qvec(b) for b in state.box)
        sep_low = backsubstitute(low, layers, relax, qbox, al_low, None, diff, mats) if low else []
        sep_up = [-v for v in backsubstitute(up, layers, relax, qbox, al_up, None, diff, mats)] if up else []
        assert got == (sep_low, sep_up)
        checked += bool(low and up)
    assert checked > 100
