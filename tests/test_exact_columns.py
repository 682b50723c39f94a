"""exact.backsubstitute leaves out the columns of neurons whose lines both have slope 0 (issue 19):
the same exact lower bounds as before, on random joint networks with alpha slopes, split
multipliers and difference pairs, where many neurons are inactive and rows outnumber the next
layer's inputs (where the columns go)."""

from __future__ import annotations

import math
import random
from fractions import Fraction

from flint import fmpz, fmpz_mat

from certify.checker.exact import ZERO, _add, _common_lines, _times_weights, backsubstitute, weight_mats


def _old_backsubstitute(lam: list[dict[int, int]] | int, layers: list[tuple[IntMat, IntVec]], relax: list, box: tuple[IntVec, IntVec],
                   alpha: dict[int, tuple[list[int], IntMat]] | None = None, beta: dict[int, IntMat] | None = None,
                   diff: dict | None = None, mats: list | None = None) -> list[Fraction]:
    """exact.backsubstitute before issue 19's column drop (verbatim, docstring and trace left out)."""
    mats = mats or weight_mats(layers)
    (_, den), (b, bden) = layers[-1]
    forms = None
    if isinstance(lam, int):  # s * identity: s times the last layer's weights and biases
        consts, rows = ([lam * x for x in b], bden), mats[-1].rows(lam)
    else:  # consts: the rows' constant terms (numerators, denominator)
        rows = [_times_weights(d, mats[-1]) for d in lam]
        consts = ([sum(c * b[i] for i, c in d.items()) for d in lam], bden)
        if forms is not None:
            forms.append((len(layers), [[d.get(c, 0) for c in range(len(b))] for d in lam], 1, ([0] * len(lam), 1)))
    mat = None
    for j in range(len(layers) - 1, -1, -1):  # rows stay FLINT integers (fmpz): no conversion per entry
        if forms is not None and mat is not None:
            forms.append((j + 1, rows, den, consts))
        (_, wden), (_, bden) = layers[j]
        if mat is not None:
            consts = _add(consts, [int(v) for v in (mat * mats[j].bias).entries()], den * bden)
            rows = (mat * mats[j].weight).table()
            den *= wden
        if j > 0:
            neurons, (rows_alpha, ad) = (alpha or {}).get(j, ((), (None, 1)))
            pairs, dlines = (diff or {}).get(j, ((), (((), 1),) * 4))
            lcm_s, lcm_i, (los, loi, ups, upi, dls, dli, dus, dui) = _common_lines(relax[j - 1], dlines, ad)
            new_rows, icpts, loi_r = [], [], list(loi)
            for n in neurons:  # an alpha line has intercept 0
                loi_r[n] = 0
            nz_lo, nz_up = ([i for i, t in enumerate(v) if t] for v in (loi_r, upi))  # intercepts are mostly 0
            pair_lines = list(zip(pairs, dls, dli, dus, dui))
            seconds = [b for _, b in pairs]  # a row with no coefficient on any pair's second neuron has nothing to rewrite
            for r, row in enumerate(rows):
                if rows_alpha is not None:
                    lo_r, scale = list(los), lcm_s // ad
                    for n, a in zip(neurons, rows_alpha[r]):
                        lo_r[n] = fmpz(a * scale)
                else:
                    lo_r = los
                new = [x * (a if x >= ZERO else aa) for x, a, aa in zip(row, lo_r, ups)]
                icpt = sum(row[i] * loi_r[i] for i in nz_lo if row[i] >= ZERO) + sum(row[i] * upi[i] for i in nz_up if row[i] < ZERO)
                for (a, b), sl, tl, su, tu in (pair_lines if any(row[b] for b in seconds) else ()):
                    xa, xb = row[a], row[b]
                    if xa > ZERO:  # only opposite signs are rewritten: undo the two terms' own lines
                        if xb >= ZERO:
                            continue
                        icpt -= xa * loi_r[a] + xb * upi[b]
                    elif xa < ZERO and xb > ZERO:
                        icpt -= xa * upi[a] + xb * loi_r[b]
                    else:
                        continue
                    ref, d = (a, -xb) if abs(xa) >= abs(xb) else (b, xa)
                    c = xa + xb
                    term, icpt = (c * lo_r[ref], icpt + c * loi_r[ref]) if c >= ZERO else (c * ups[ref], icpt + c * upi[ref])
                    s, icpt = (d * sl, icpt + d * tl) if d >= ZERO else (d * su, icpt + d * tu)
                    new[a], new[b] = (term + s, -s) if ref == a else (s, term - s)
                new_rows.append(new)
                icpts.append(int(icpt))
            consts = _add(consts, icpts, den * lcm_i)
            rows, den = new_rows, den * lcm_s
            if j in (beta or {}):  # split multipliers: coefficient sign*beta_r on z_j (beta-CROWN)
                (extra, bden) = beta[j]
                common = math.lcm(den, bden)
                rows = [[x * (common // den) + e * (common // bden) for x, e in zip(row, er)] for row, er in zip(rows, extra)]
                den = common
            mat = fmpz_mat(rows)
    (lo, loden), (up, upden) = box
    dd = math.lcm(loden, upden)
    lo = [fmpz(x * (dd // loden)) for x in lo]
    up = [fmpz(x * (dd // upden)) for x in up]
    (nums, cden) = _add(consts, [int(sum(x * (l if x >= 0 else u) for x, l, u in zip(row, lo, up))) for row in rows], den * dd)
    lower = [Fraction(c, cden) for c in nums]
    if forms is not None:  # what this call used and derived, by reference (nothing above changes it)
        TRACE.append({"lam": lam, "forms": forms, "relax": relax, "box": box, "alpha": alpha or {}, "diff": dict(diff or {}), "lower": lower})
    return lower



def _vec(rng, n, den, lo=-8, hi=8, zero=0.3):
    return [0 if rng.random() < zero else rng.randrange(lo, hi + 1) for _ in range(n)], den


def _case(rng):
    widths = [rng.randrange(2, 4)] + [rng.randrange(6, 12) for _ in range(rng.randrange(1, 3))] + [rng.randrange(2, 4)]
    layers = [(([[rng.randrange(-9, 10) for _ in range(a)] for _ in range(b)], 2 ** rng.randrange(0, 4)),
               ([rng.randrange(-9, 10) for _ in range(b)], 2 ** rng.randrange(0, 3))) for a, b in zip(widths[:-1], widths[1:])]
    relax = []
    for n in widths[1:-1]:  # per neuron: inactive (0, 0), active (1, 1) or unstable (0..1, u/(u-l))
        kinds = [rng.choice("iiau") for _ in range(n)]
        den = 2 ** rng.randrange(0, 5)
        ls = [0 if k == "i" else den if k == "a" else rng.randrange(0, den + 1) for k in kinds]
        us = [0 if k == "i" else den if k == "a" else rng.randrange(1, den + 1) for k in kinds]
        ui = [rng.randrange(0, 9) if k == "u" else 0 for k in kinds]
        relax.append(((ls, den), ([0] * n, 1), (us, den), (ui, 3)))
    k = len(layers)
    width = widths[-1]
    lam = rng.choice([1, -1, "sel", "mix"])
    if lam == "sel":
        lam = [{i: rng.choice([1, -1])} for i in range(width) if rng.random() < 0.8] or [{0: 1}]
    elif lam == "mix":
        lam = [{a: 1, b: -1} for a, b in zip(range(width), range(1, width))] or [{0: 1}]
    rows = len(lam) if isinstance(lam, list) else width
    alpha, beta, diff = {}, {}, {}
    for j in range(1, k):
        n = widths[j]
        if rng.random() < 0.5:
            neurons = sorted(rng.sample(range(n), rng.randrange(0, n // 2 + 1)))
            ad = 2 ** rng.randrange(0, 4)
            alpha[j] = (neurons, ([[rng.randrange(0, ad + 1) for _ in neurons] for _ in range(rows)], ad))
        if rng.random() < 0.4:
            beta[j] = ([[rng.randrange(-3, 4) if i % 3 == 0 else 0 for i in range(n)] for _ in range(rows)], 2 ** rng.randrange(0, 3))
        if rng.random() < 0.5 and n >= 4:
            ids = rng.sample(range(n), 2 * rng.randrange(1, n // 2 + 1))
            pairs = list(zip(ids[0::2], ids[1::2]))
            p = len(pairs)
            diff[j] = (pairs, (_vec(rng, p, 4, 0, 4, 0), _vec(rng, p, 5), _vec(rng, p, 4, 0, 4, 0), _vec(rng, p, 5)))
    box = ([rng.randrange(-6, 1) for _ in range(widths[0])], 2), ([rng.randrange(0, 7) for _ in range(widths[0])], 2)
    return lam, layers, relax, box, alpha, beta, diff


def test_backsubstitute_equals_the_old_code():
    rng = random.Random(1919)
    dropped = 0
    for _ in range(300):
        lam, layers, relax, box, alpha, beta, diff = _case(rng)
        new = backsubstitute(lam, layers, relax, box, alpha, beta, diff, weight_mats(layers))
        old = _old_backsubstitute(lam, layers, relax, box, alpha, beta, diff, weight_mats(layers))
        assert new == old
        dropped += any(4 * sum(not (a or b) for a, b in zip(ls, us)) >= len(ls) for (ls, _), _, (us, _), _ in relax)
    assert dropped > 100, "too few cases where columns can go"
