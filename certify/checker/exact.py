"""Exact linear algebra on integers: a rational matrix is (integer rows, one positive denominator).

Every float is a dyadic rational, so weights and dyadic hints share a power-of-two denominator
and the products below run on integers (Python's, and FLINT's fmpz for back-substitution) instead
of millions of Fraction objects.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import cached_property
from operator import itemgetter, mul

from flint import fmpz, fmpz_mat

IntVec = tuple[list[int], int]  # (numerators, common denominator)
ZERO = fmpz(0)  # fmpz compares faster with an fmpz
IntMat = tuple[list[list[int]], int]
TRACE: list | None = None  # a list: each backsubstitute call appends the forms it derived (certify export-smt reads them)


def ratio_mat(rows: list[list[tuple[int, int]]]) -> IntMat:
    """Rows of exact numbers given as integer pairs (p, q), q > 0 -> (numerators, lcm of denominators)."""
    dens = {q for row in rows for _, q in row}
    den = math.lcm(*dens)
    scale = {q: den // q for q in dens}  # (few distinct denominators: powers of two)
    return [[p * scale[q] for p, q in row] for row in rows], den


def ratio_vec(pairs: list[tuple[int, int]]) -> IntVec:
    (nums,), den = ratio_mat([pairs])
    return nums, den


def qvec(values) -> IntVec:
    """Floats / Fractions / ints -> (numerators, lcm of denominators). Exact."""
    return ratio_vec([v.as_integer_ratio() for v in values])


def qmat(rows) -> IntMat:
    return ratio_mat([[v.as_integer_ratio() for v in row] for row in rows])


def product(a: list, b: list, n: int) -> list[list[Fraction]]:
    """The exact matrix product a @ b (a: m x k, b: k x n; floats / Fractions), on integer numerators in FLINT."""
    (an, ad), (bn, bd), m, k = qmat(a), qmat(b), len(a), len(b)
    p = fmpz_mat(m, k, [x for row in an for x in row]) * fmpz_mat(k, n, [x for row in bn for x in row])
    return [[Fraction(int(x), ad * bd) for x in row] for row in p.table()] if n else [[] for _ in range(m)]


def _add(vec: IntVec, nums: list[int], den: int) -> IntVec:
    """vec + nums / den, exactly."""
    (cs, cden), common = vec, math.lcm(vec[1], den)
    return [c * (common // cden) + x * (common // den) for c, x in zip(cs, nums)], common


class LayerMats:
    """One layer's weight numerators as FLINT matrices: `weight`, `bias` (a column), `magnitude`
    (|weight|), `b` (the bias numerators), and `rows(s)`: the rows of s * weight as fmpz lists, made once when first used."""

    def __init__(self, w: list[list[int]], b: list[int]):
        self.w, self.b, self.weight, self.bias = w, b, fmpz_mat(w), fmpz_mat([[x] for x in b])
        self._rows: dict[int, list] = {}
        self.sums: dict[tuple, list] = {}
        self._subs: dict[tuple, tuple] = {}  # _times_weights' rows with several coefficients (a difference step's pairs recur per region)

    @cached_property
    def magnitude(self) -> fmpz_mat:
        return fmpz_mat([[abs(x) for x in row] for row in self.w])

    def sub(self, keep: list[int]) -> tuple[fmpz_mat, fmpz_mat]:
        """The weights' and biases' rows `keep` as FLINT matrices, kept per `keep` (a region's back-substitutions share them)."""
        key = tuple(keep)
        if key not in self._subs:
            if len(self._subs) >= max(8, min(256, 2 ** 22 // max(1, self.weight.nrows() * self.weight.ncols()))):  # (~2^22 entries)
                self._subs.clear()
            self._subs[key] = (fmpz_mat([self.rows(1)[c] for c in keep]), fmpz_mat([[self.b[c]] for c in keep]))
        return self._subs[key]

    def rows(self, sign: int) -> list[list[fmpz]]:
        if sign not in self._rows:
            self._rows[sign] = (self.weight * sign).table()
        return self._rows[sign]


def weight_mats(layers: list[tuple[IntMat, IntVec]]) -> list[LayerMats]:
    """Each layer's FLINT matrices, built once per check."""
    return [LayerMats(w, b) for (w, _), (b, _) in layers]


_LINES: dict = {}  # id(relu lines), id(difference lines), alpha's denominator -> (the lines, the difference lines, result)


def _common_lines(relu: tuple, diff: tuple, ad: int) -> tuple:
    """The relu lines, then the difference lines (four IntVecs each), as fmpz numerators over two common
    denominators: one for the slopes (and alpha's `ad`), one for the intercepts. Made once per
    region and layer (its back-substitutions share them: the entry keeps the lines alive, so an id is
    not reused while its entry stands)."""
    key = (id(relu), id(diff), ad)
    hit = _LINES.get(key)
    if hit is None or hit[0] is not relu or hit[1] is not diff:
        lines = list(relu) + list(diff)  # (difference planes: two more IntVecs, the z_b slopes)
        scales = [0, 1] * 4 + [0] * (len(lines) - 8)  # 0: a slope, 1: an intercept
        lcm_s = math.lcm(ad, *(d for (_, d), i in zip(lines, scales) if not i))
        lcm_i = math.lcm(*(d for (_, d), i in zip(lines, scales) if i))
        if len(_LINES) > 64:
            _LINES.clear()
        _LINES[key] = hit = (relu, diff, (lcm_s, lcm_i, [[fmpz(a * ((lcm_i if i else lcm_s) // d)) for a in v]
                                                         for (v, d), i in zip(lines, scales)]))
    return hit[2]


_PLANS: dict = {}  # (id(relu lines), id(pairs), id(difference lines), alpha's denominator, narrow) -> (the lines, pairs, difference lines, plan)


def _layer_plan(relu: tuple, pairs, dlines: tuple, ad: int, neurons, extra, narrow: bool) -> tuple:
    """What backsubstitute's relaxation of one layer needs besides the rows (`_common_lines`, the kept columns and their
    places, the nonzero intercepts, the pairs' lines, the lines at the kept columns), made once per region and layer
    when no alpha slopes or multipliers enter it (their calls have their own), as `_common_lines` keeps its lines.
    `narrow`: columns may be left out (not while export-smt records the forms, which keep every column)."""
    cached = not neurons and extra is None
    key = (id(relu), id(pairs), id(dlines), ad, narrow)
    hit = _PLANS.get(key) if cached else None
    if hit is not None and hit[0] is relu and hit[1] is pairs and hit[2] is dlines:
        return hit[3]
    common = _common_lines(relu, dlines, ad)
    los, loi, ups, upi, dls, dli, dus, dui, *planes = common[2]
    # a neuron whose lines both have slope 0 (no alpha, pair or multiplier) adds nothing to the next product: where a
    # quarter of the columns can go, they are left out (the weights' rows kept, LayerMats.sub, are shared by the region's
    # back-substitutions and by other regions with the same columns)
    keep = range(len(los))
    if narrow and 4 * sum(not (a or b) for a, b in zip(los, ups)) >= len(los):
        special = {*neurons, *(i for p in pairs for i in p), *(() if extra is None else (
            i for i, col in enumerate(zip(*extra)) if any(col)))}
        keep = [i for i, (a, b) in enumerate(zip(los, ups)) if a or b or i in special] or [0]
    at = {c: t for t, c in enumerate(keep)}
    take = _picker(keep)
    loi_r = list(loi)
    for n in neurons:  # an alpha line has intercept 0
        loi_r[n] = 0
    nz_lo, nz_up = ([i for i, t in enumerate(v) if t] for v in (loi_r, upi))  # intercepts are mostly 0
    picks = [(_picker(nz), [v[i] for i in nz]) for nz, v in ((nz_lo, loi_r), (nz_up, upi))]
    seconds = [b for _, b in pairs]  # a row with no coefficient on any pair's second neuron has nothing to rewrite
    # per pair: its places among the kept columns, D's slopes, and how its rewrite changes the own lines' intercepts
    # (below: x_b*ka or -x_a*ka where x_a > 0 > x_b, x_b*kb or -x_a*kb where x_a < 0 < x_b)
    # and the planes' z_b slopes (0: a line)
    pair_lines = [(a, b, at[a], at[b], sl, su, loi_r[a] - upi[b] - tl, upi[a] - loi_r[b] - tu, rl, ru)
                  for (a, b), sl, tl, su, tu, rl, ru in zip(pairs, dls, dli, dus, dui, *(planes or ((0,) * len(pairs),) * 2))]
    plan = (common, keep, at, take, loi_r, *picks, pair_lines, seconds, take(los), take(ups),
            [at[n] for n in neurons])
    if cached:
        if len(_PLANS) > 64:
            _PLANS.clear()
        _PLANS[key] = (relu, pairs, dlines, plan)
    return plan


def _picker(index: list) -> object:
    """v -> the tuple of v's entries at `index` (itemgetter, which returns a bare entry for one index)."""
    return itemgetter(*index) if len(index) > 1 else (lambda v: tuple(v[c] for c in index))


def _times_weights(row: dict[int, int], m: LayerMats) -> list:
    """A row {neuron: coefficient} times the layer's weights: for +-e_i, the weights' row i itself; for
    others the sum, kept in `m.sums` by the row's items (shared, never changed)."""
    (i, c), *more = items = tuple(row.items())
    if more and items in m.sums:
        return m.sums[items]
    out = m.rows(c)[i] if c in (1, -1) else [c * x for x in m.rows(1)[i]]
    for i, c in more:
        out = [x + y for x, y in zip(out, m.rows(c)[i])] if c in (1, -1) else [x + c * y for x, y in zip(out, m.rows(1)[i])]
    if more:
        if len(m.sums) > 4096:
            m.sums.clear()
        m.sums[items] = out
    return out


def backsubstitute(lam: list[dict[int, int]] | int, layers: list[tuple[IntMat, IntVec]], relax: list, box: tuple[IntVec, IntVec],
                   alpha: dict[int, tuple[list[int], IntMat]] | None = None, beta: dict[int, IntMat] | None = None,
                   diff: dict | None = None, mats: list | None = None) -> list[Fraction]:
    """Lower bounds of each row of `lam` times the pre-activation of the last layer in `layers`:
    rows with a few integer coefficients {neuron: coefficient} (e_i, e_a - e_b), or an integer s = 1
    or -1: the rows s*e_i, one per neuron of that layer. Their first product, with that layer's
    weights and biases, is read off the weights' rows.

    `layers` are the dense layers 1..k (weight (out, in), bias); `relax[j]` holds the verified ReLU
    relaxation of the output of layer j+1 as four IntVecs (lower slope, lower intercept, upper
    slope, upper intercept), for j < k-1. For a row coefficient c on relu(z): c >= 0 uses the lower
    line, c < 0 the upper line, so c*relu(z) >= c*(slope*z + intercept) on the verified interval.
    `alpha[j]` (optional) = (neurons, slopes): row r gets its own lower line slopes[r][t]*z (intercept
    0) for the ReLU of neuron neurons[t] of layer j (alpha-CROWN); the other neurons keep `relax`'s
    line. At the input, each coefficient takes the box corner that minimises it. Exact: the rows are
    FLINT integers (fmpz) over one denominator, and their products with the weights (`mats`, the
    layers' `weight_mats`) are fmpz_mat products. A neuron whose two lines have slope 0 (inactive)
    contributes only its intercepts: where that drops a quarter of the columns, its column and its row
    of the weights are left out of the product.

    `diff[j]` (optional) = (pairs, four IntVecs: lines s*delta + t below and above D = relu(z_a) - relu(z_b),
    delta = z_a - z_b, one per pair (a, b) of layer j; or six: planes s*delta + r*z_b + t, the z_b slopes r of the lower
    and upper ones last, whose d*r then adds to z_b's coefficient). Where a row's coefficients x_a, x_b on a pair
    have opposite signs, x_a*h_a + x_b*h_b is rewritten exactly as c*h_ref + d*D (c = x_a + x_b; ref = a,
    d = -x_b if |x_a| >= |x_b|, else ref = b, d = x_a) and each term takes its own verified line:
    when f and g nearly agree, c is small and D is relaxed on the narrow range of delta (NeuroDiff).
    """
    mats = mats or weight_mats(layers)
    (_, den), (b, bden) = layers[-1]
    forms = [] if TRACE is not None else None  # (layer j, rows, den, consts): rows/den . z_j + consts bounds lam . z_k
    if isinstance(lam, int):  # s * identity: s times the last layer's weights and biases
        consts, rows = ([lam * x for x in b], bden), mats[-1].rows(lam)
    else:  # consts: the rows' constant terms (numerators, denominator)
        rows = [_times_weights(d, mats[-1]) for d in lam]
        consts = ([sum(c * b[i] for i, c in d.items()) for d in lam], bden)
        if forms is not None:
            forms.append((len(layers), [[d.get(c, 0) for c in range(len(b))] for d in lam], 1, ([0] * len(lam), 1)))
    mat = sub = prod = None
    for j in range(len(layers) - 1, -1, -1):  # rows stay FLINT integers (fmpz): no conversion per entry
        (_, wden), (_, bden) = layers[j]
        if mat is not None:
            weight, bias = sub or (mats[j].weight, mats[j].bias)
            if forms is not None:
                forms.append((j + 1, rows, den, consts))
            consts = _add(consts, [int(v) for v in (mat * bias).entries()], den * bden)
            prod = mat * weight
            rows = prod.table()
            den *= wden
        if j > 0:
            neurons, (rows_alpha, ad) = (alpha or {}).get(j, ((), (None, 1)))
            pairs, dlines = (diff or {}).get(j, ((), (((), 1),) * 4))
            extra, eden = (beta or {}).get(j, (None, 1))
            narrow = forms is None  # (export-smt's forms keep every column)
            (lcm_s, lcm_i, (los, loi, ups, upi, *_)), keep, at, take, loi_r, (pick_lo, t_lo), (pick_up, t_up), \
                pair_lines, seconds, los_k, ups_k, places = _layer_plan(relax[j - 1], pairs, dlines, ad, neurons, extra, narrow)
            new_rows, icpts, scale = [], [], lcm_s // ad
            for r, row in enumerate(rows):
                lo_r, lo_k = los, los_k
                if rows_alpha is not None:  # row r's own lower slopes (the full row of them only where pairs need it)
                    lo_k = list(los_k)
                    for t, a in zip(places, rows_alpha[r]):
                        lo_k[t] = a * scale
                    if pairs:
                        lo_r = list(los)
                        for n, a in zip(neurons, rows_alpha[r]):
                            lo_r[n] = a * scale
                new = [x * (a if x >= ZERO else aa) for x, a, aa in zip(take(row), lo_k, ups_k)]
                icpt = sum([x * t for x, t in zip(pick_lo(row), t_lo) if x >= ZERO]) + sum([x * t for x, t in zip(pick_up(row), t_up) if x < ZERO])
                for a, b, ta, tb, sl, su, ka, kb, rl, ru in (pair_lines if any(row[b] for b in seconds) else ()):
                    xa, xb = row[a], row[b]  # only opposite signs are rewritten: x_a*h_a + x_b*h_b = c*h_ref + d*D
                    if xa > ZERO and xb < ZERO:  # d's line of D is the lower one (d >= 0)
                        c = xa + xb
                        if c >= ZERO:  # ref a, d = -x_b: c*lo_a + d*sl on z_a, -d*sl (+ d*rl) on z_b; intercepts c*loi_a + d*tl
                            s = xb * sl
                            new[ta], new[tb] = c * lo_r[a] - s, s - xb * rl if rl else s
                            icpt += xb * ka
                        else:  # ref b, d = x_a: d*sl on z_a, c*up_b - d*sl (+ d*rl) on z_b; intercepts c*upi_b + d*tl
                            s = xa * sl
                            new[ta], new[tb] = s, c * ups[b] - s + xa * rl if rl else c * ups[b] - s
                            icpt -= xa * ka
                    elif xa < ZERO and xb > ZERO:  # d's line of D is the upper one (d <= 0)
                        c = xa + xb
                        if c <= ZERO:  # ref a, d = -x_b: c*up_a + d*su on z_a, -d*su (+ d*ru) on z_b; intercepts c*upi_a + d*tu
                            s = xb * su
                            new[ta], new[tb] = c * ups[a] - s, s - xb * ru if ru else s
                            icpt += xb * kb
                        else:  # ref b, d = x_a: d*su on z_a, c*lo_b - d*su (+ d*ru) on z_b; intercepts c*loi_b + d*tu
                            s = xa * su
                            new[ta], new[tb] = s, c * lo_r[b] - s + xa * ru if ru else c * lo_r[b] - s
                            icpt -= xa * kb
                new_rows.append(new)
                icpts.append(int(icpt))
            consts = _add(consts, icpts, den * lcm_i)
            rows, den = new_rows, den * lcm_s
            if extra is not None:  # split multipliers: coefficient sign*beta_r on z_j (beta-CROWN)
                common = math.lcm(den, eden)
                rows = [[x * (common // den) + e * (common // eden) for x, e in zip(row, take(er))] for row, er in zip(rows, extra)]
                den = common
            sub = None if len(keep) == len(los) else mats[j - 1].sub(keep)
            mat = fmpz_mat(rows)
    (lo, loden), (up, upden) = box
    dd = math.lcm(loden, upden)
    lo = [fmpz(x * (dd // loden)) for x in lo]
    up = [fmpz(x * (dd // upden)) for x in up]
    # x*l if x >= 0 else x*u is x*l + (x*(u - l) if x < 0): the first part one FLINT product (rows @ l) where the rows are one
    base = (prod * fmpz_mat([[x] for x in lo])).entries() if prod is not None else [sum(x * l for x, l in zip(row, lo)) for row in rows]
    width = [u - l for l, u in zip(lo, up)]
    (nums, cden) = _add(consts, [int(v + sum([x * w for x, w in zip(row, width) if x < ZERO])) for v, row in zip(base, rows)], den * dd)
    lower = [Fraction(c, cden) for c in nums]
    if forms is not None:  # what this call used and derived, by reference (nothing above changes it)
        TRACE.append({"lam": lam, "forms": forms, "relax": relax, "box": box, "alpha": alpha or {}, "diff": dict(diff or {}), "lower": lower})
    return lower


def interval_dense(layer: tuple[IntMat, IntVec], lower: list[Fraction], upper: list[Fraction],
                   mats: "LayerMats | None" = None) -> tuple[list[Fraction], list[Fraction]]:
    """Exact bounds of w @ a + b for a in the box [lower, upper]: w @ (l + u)/2 -/+ |w| @ (u - l)/2,
    which is sum_i w_i * (l_i if w_i >= 0 else u_i) (and the other end), on FLINT integers.
    `mats`: the layer's `LayerMats`, when the caller has it."""
    (_, wden), (b, bden) = layer
    lm = mats or weight_mats([layer])[0]
    (lo, lden), (up, uden) = qvec(lower), qvec(upper)
    dd = math.lcm(lden, uden)
    lo, up = [x * (dd // lden) for x in lo], [x * (dd // uden) for x in up]
    mid = (lm.weight * fmpz_mat([[l + u] for l, u in zip(lo, up)])).entries()
    rad = (lm.magnitude * fmpz_mat([[u - l] for l, u in zip(lo, up)])).entries()
    den = math.lcm(bden, 2 * wden * dd)  # one denominator: one Fraction (one gcd) per bound
    bs, ms = den // bden, den // (2 * wden * dd)
    return ([Fraction(x * bs + int(m - r) * ms, den) for x, m, r in zip(b, mid, rad)],
            [Fraction(x * bs + int(m + r) * ms, den) for x, m, r in zip(b, mid, rad)])


def forward(layers: list[tuple[IntMat, IntVec]], x: list[Fraction]) -> list[Fraction]:
    """Exact forward pass of dense, relu, ..., dense at the point x."""
    for j, ((w, wden), (b, bden)) in enumerate(layers):
        nums, xden = qvec(x)
        x = [Fraction(sum(map(mul, row, nums)) * bden + bias * wden * xden, wden * xden * bden) for row, bias in zip(w, b)]
        if j < len(layers) - 1:
            x = [max(v, Fraction(0)) for v in x]
    return x


def fold_fixed(layer: tuple[IntMat, IntVec], lower: list[Fraction], upper: list[Fraction]):
    """The first dense layer restricted to the box's free inputs (lower < upper): each fixed input
    x_d = c_d (lower = upper) moves into the bias, w x + b = w_free x_free + (b + w_fixed c), an
    identity on the box, so every bound computed on the folded layer over the free coordinates is
    the same exact number as on the whole layer over the whole box (an MNIST region with 15 of 784
    pixels free: products 52x narrower). Returns (layer, free indices, free lower, free upper)."""
    free = [d for d, (l, u) in enumerate(zip(lower, upper)) if l != u]
    if len(free) in (0, len(lower)):  # nothing to fold, or a single point (kept whole)
        return layer, list(range(len(lower))), list(lower), list(upper)
    (w, wden), (b, bden) = layer
    fixed = [d for d in range(len(lower)) if lower[d] == upper[d]]
    cn, cden = qvec([lower[d] for d in fixed])
    shift = (fmpz_mat([[row[d] for d in fixed] for row in w]) * fmpz_mat([[c] for c in cn])).entries()
    bias = [x * wden * cden + int(s) * bden for x, s in zip(b, shift)]
    return (([[row[d] for d in free] for row in w], wden), (bias, bden * wden * cden)), free, \
        [lower[d] for d in free], [upper[d] for d in free]
