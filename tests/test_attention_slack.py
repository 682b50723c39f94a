"""Softmax-ratio leaves that claim a bound given in advance (certify/bounds/tokens.py::ratio_claim, `_claimed`): the
rule that picks it, the checker accepting the claimed leaves where the claim is true, the engine refusing (and falling
back to the exact bound) where it is not, and the checker rejecting the claimed leaves at any bound below the maximum."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from certify.bounds.tokens import SLACK, FloatTokens, ratio_claim, ratio_tree
from certify.checker.errors import Rejected
from certify.checker.graph import TokenBox, check_token_tree

from .test_token_ratio import _joint, _params, _values


def test_the_claim_is_the_tolerance_or_four_percent_above_the_attained_deviation():
    lower = Fraction(50968188912635, 10**12)
    assert ratio_claim(Fraction(1000), lower) == Fraction("53.0069")  # 1.04 lower, 6 digits (rounded: >= lower still)
    assert ratio_claim(Fraction(52), lower) == 52  # the tolerance where it is below 1.04 lower
    assert ratio_claim(lower, lower) == lower
    assert ratio_claim(Fraction(50), lower) is None  # the tolerance below the attained deviation: the exact bound
    assert ratio_claim(Fraction(1), Fraction(0)) is None
    for tol in (Fraction(1, 3), Fraction(7, 2), Fraction(10**6)):
        for low in (Fraction(1, 7), Fraction(3), Fraction(1, 10**9)):
            c = ratio_claim(tol, low)
            assert c is None if low > tol else low <= c <= min(tol, (1 + SLACK) * low * (1 + Fraction(1, 10**5)))


@pytest.mark.parametrize("seed, V, n, d, dh", [(0, 4, 3, 6, 4), (1, 3, 4, 4, 3), (3, 5, 3, 4, 4)])
def test_claimed_leaves_verify_where_true_and_fall_back_or_reject_where_false(tmp_path, seed, V, n, d, dh):
    p = _params(np.random.default_rng(seed), V, n, d, dh)
    joint = _joint(tmp_path, p, V, n)
    _, values = _values(p, V, n)
    top = Fraction(float(values.max()))
    allowed = (tuple(range(V)),) * n
    claim = (1 + SLACK) * top
    bound, tree, _, notes = ratio_tree(joint, FloatTokens(V, allowed), float(top), claim=claim)
    assert bound == claim and notes["bound"] == "claimed"
    check_token_tree(joint, TokenBox(V, allowed), tree, bound, "tree")
    with pytest.raises(Rejected, match="not proved"):  # the same leaves at a bound below the maximum: a false claim
        check_token_tree(joint, TokenBox(V, allowed), tree, top * (1 - Fraction(1, 10**4)), "tree")
    low = top * Fraction(98, 100)  # a claim below the maximum: the engine finds a row that fails, then the exact bound
    bound, tree, _, notes = ratio_tree(joint, FloatTokens(V, allowed), float(top), claim=low)
    assert notes["bound"] == "exact (the claim failed)" and float(bound) >= values.max() - 1e-12
    check_token_tree(joint, TokenBox(V, allowed), tree, bound, "tree")


def test_capped_matches_every_entry_against_its_cap():
    """attention._capped (packed rows, no entry made into an object) against the entries themselves, on random integer
    rows with signs, unequal lengths, scales, magnitudes from 1 to 2^300 and caps at, just below and around the max; also with
    one memo across every call (rows of b met again: their packed copies reused, at whatever field width the call needs)."""
    import random

    from flint import fmpz, fmpz_mat

    from certify.checker.attention import _capped

    rng, memo, shared = random.Random(7), {}, {}
    for trial in range(60):
        n1, n2, bits = rng.randint(1, 9), rng.randint(1, 9), rng.choice([1, 3, 40, 300])
        a = [[fmpz(rng.randint(-2 ** bits, 2 ** bits)) for _ in range(n1)] for _ in range(5)] + [[fmpz(1)] * n1]
        b = [[fmpz(rng.randint(-2 ** bits, 2 ** bits)) for _ in range(n2)] for _ in range(6)]
        if (n2, bits) in shared and trial % 3:  # a row object seen before (the memo's packed copy reused), others new
            b[0] = shared[n2, bits]
        shared[n2, bits] = b[0]
        if trial % 2:  # as in the joint rows: a row of ones (packed once)
            b[4] = [fmpz(1)] * n2
        scales = [fmpz(rng.randint(1, 6)) for _ in range(6)]
        M = [[sum(int(c) * int(a[r][t]) * int(b[r][u]) for r, c in enumerate(scales)) for u in range(n2)] for t in range(n1)]
        top = max(max(row) for row in M)
        for cap in (top, top - 1, top + 1, top - rng.randint(0, 2 ** bits), -abs(top) - 5, abs(top) * 3 + 1):
            want = all(v <= cap for row in M for v in row)
            assert _capped(a, b, scales, fmpz(cap)) == want == _capped(a, b, scales, fmpz(cap), memo), (trial, cap)


def test_joint_caps_are_hints_only(tmp_path):
    """A claimed tree's joint rows carry caps (one per pair of positions). Caps too low only fall back to the exact
    maximum (still accepted where the claim is true); a wrong count or a non-number rejects; no caps accept a false claim."""
    import copy

    V, n = 4, 4
    p = _params(np.random.default_rng(1), V, n, 6, 4)
    joint = _joint(tmp_path, p, V, n)
    _, values = _values(p, V, n)
    top = Fraction(float(values.max()))
    allowed = (tuple(range(V)),) * n
    bound, tree, _, _ = ratio_tree(joint, FloatTokens(V, allowed), float(top), claim=(1 + SLACK) * top)
    capped = [(c, j) for c, kid in enumerate(tree["children"]) for j, v in enumerate(kid["ratio"]["lambda"]) if type(v) is list]
    assert capped, "no joint row with caps in this case"
    check_token_tree(joint, TokenBox(V, allowed), tree, bound, "tree")
    low = copy.deepcopy(tree)
    for c, j in capped:
        low["children"][c]["ratio"]["lambda"][j] = ["-1000000"] * len(tree["children"][c]["ratio"]["lambda"][j])
    check_token_tree(joint, TokenBox(V, allowed), low, bound, "tree")
    with pytest.raises(Rejected, match="not proved"):
        check_token_tree(joint, TokenBox(V, allowed), low, top * (1 - Fraction(1, 10**4)), "tree")
    for bad, match in ((lambda caps: caps + ["1"], "caps are"), (lambda caps: caps[:-1] + ["x"], "neither null")):
        t = copy.deepcopy(tree)
        c, j = capped[0]
        t["children"][c]["ratio"]["lambda"][j] = bad(t["children"][c]["ratio"]["lambda"][j])
        with pytest.raises(Rejected, match=match):
            check_token_tree(joint, TokenBox(V, allowed), t, bound, "tree")
