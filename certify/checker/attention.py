"""Softmax-ratio leaves of a token tree (TRUSTED): attention read at one query position, bounded without
relaxing the softmax (docs/soundness.md, "Softmax-ratio leaves").

Form. Where every op of the joint graph is linear, affine, add, sub, mul or softmax, no softmax reads
another, no product multiplies two softmax-dependent values and there are at most two softmax groups,
d_i = r_i + sum_groups (sum_k e^{s_k} c_ik) / (sum_k e^{s_k}) at every input: d is affine in the softmax
outputs p, c_ik = d_i(p = e_k) - d_i(p = 0), r_i = d_i(p = 0). A dependency pass over the nonzero weights
(a product with an input-free zero factor is zero) gives the positions each s_k, c_ik, r_i can read. With the
query position Q fixed to the token a and each of them reading at most one other position, all are read off
one exact evaluation at the V sequences "a at Q, b at every other position" (b = 0..V-1).

Check, per output i and sign sigma (the second group, if missing, is the constant 1 with c = 0):
sigma d_i <= B  iff  sum_{k in 1, l in 2} e^{s_k + s_l} (sigma c_ik + sigma r_i - B + sigma c_il) <= 0   (joint: lambda null)
and it holds if  sum_k e^{s_k} (sigma c_ik + sigma r_i - B - lambda) <= 0 and sum_l e^{s_l} (sigma c_il + lambda) <= 0.
Each sum is a sum of products of per-position tables; its max over the leaf's token sets is bounded by the
sum over the products grouped by the free positions they read (at most 2): a constant, a vector per
position, an exact max over each pair's matrix (each position's vector shared equally among its pairs).
exp: E = e^{s - s*} (s* the group's largest score at a) is an arb ball rounded to E^ with P leading bits, proved
|E - E^| <= 2^-P E^; then E_k E_l c <= E^_k E^_l (c + 3 2^-P max|c|), so the constant term is moved by that much.
Before that, two cheaper sufficient checks (each fails over to the next): the hull (each group's ratio is a convex
combination of its c_ik, so sigma d_i <= max sigma r_i + sum_groups max_k max sigma c_ik over the tokens: no exp at all),
and for a joint row its value with X and W rounded up (`_joint_value` with bits; the exact one only where that fails).
"""

from __future__ import annotations

import math
from fractions import Fraction
from itertools import chain, compress

from flint import arb, ctx, fmpq, fmpz, fmpz_mat, fmpz_poly

from .errors import require
from .model import gc_paused
from .numbers import parse_ratio

P = 96
ZERO, ONE = fmpz(0), fmpz(1)
FORM_OPS = ("linear", "affine", "add", "sub", "mul", "softmax")


def _union(sets) -> frozenset | None:
    """The union of the sets that are not None; None if all are."""
    sets = [d for d in sets if d is not None]
    return frozenset().union(*sets) if sets else None


class Form:
    """The ratio form of a joint graph (None from `form` where it has none), and its exact tables per (Q, a). Values are
    integers over one denominator: a node's value is (rows of numerators, one per column, denominator > 0)."""

    def __init__(self, joint, vocab: int, deg: dict):
        self.joint, self.vocab, self.deg, self.cache, self.shared, self.last, self.subs, self.seen = joint, vocab, deg, {}, {}, {}, {}, {}
        self.rowsets, self.at, self.scaled, self.xs, self.thin = {}, {}, {}, {}, {}
        self.soft = [nd for nd in joint.nodes if nd.op == "softmax"]
        self.node = {nd.name: nd for nd in joint.nodes}
        self.groups = [(nd.name, tuple(j for j, g in enumerate(nd.groups) if g == gid)) for nd in self.soft for gid in sorted(set(nd.groups))]
        self.lin = {}  # linear, affine: (dense fmpz_mat or None (<= 2 weights a row), rows [(column, numerator)], denominator, bias numerators, its denominator)
        same = {}  # (the same weight and bias objects: read once; f and g share most)
        for nd in joint.nodes:
            key = (nd.op, id(nd.weight if nd.op == "linear" else nd.scale), id(nd.bias if nd.op == "linear" else nd.shift)) if nd.op in ("linear", "affine") else None
            if key in same:
                self.lin[nd.name] = same[key]
            elif key is not None:
                w, wd = _ints(list(chain.from_iterable(getattr(row, "floats", row) for row in nd.weight)) if nd.op == "linear" else nd.scale)
                n = len(nd.weight[0]) if nd.op == "linear" else 1
                rows = [[(c, w[r * n + c]) for c in compress(range(n), w[r * n:r * n + n])] for r in range(len(w) // n)] if n > 1 else [[(r, v)] if v else [] for r, v in enumerate(w)]
                dense = fmpz_mat(len(rows), n, w) if nd.op == "linear" and sum(map(len, rows)) > 2 * len(rows) else None
                b, bd = _ints(nd.shift if nd.op == "affine" else nd.bias or [0] * len(rows))
                self.lin[nd.name] = same[key] = (dense, rows if dense else [[(c, fmpz(v)) for c, v in row] for row in rows], wd, [fmpz(v) for v in b], bd)
        self.overrides = [None] + [(name, k) for name, members in self.groups for k in members]
        at_zero = self.evaluate([[ZERO] for _ in range(joint.in_dim)], None)  # for zero factors (of no position)
        self.dep = self._deps(at_zero)
        self.rest_deps = self.dep[joint.output]  # r_i = d_i(p = 0)
        self.coef_deps = [self._delta_deps(o, at_zero) for o in self.overrides[1:]]  # c_ik = d_i(p = e_k) - d_i(p = 0)
        reach = {o for o, ds in zip(self.overrides[1:], self.coef_deps) if any(d is not None for d in ds)}
        self.groups = [(name, ms) for name, ms in self.groups if any((name, k) in reach for k in ms)]  # the others' c are 0
        self.coef_deps = [ds for o, ds in zip(self.overrides[1:], self.coef_deps) if any(o == (name, k) for name, ms in self.groups for k in ms)]
        self.overrides = [None] + [(name, k) for name, ms in self.groups for k in ms]

    def evaluate(self, X: list, override, base: dict | None = None, prev: tuple | None = None, narrow: tuple | None = None) -> dict:
        """Every node's exact value on the columns of X (rows of integers); softmax outputs are 0 except p_k = 1 for override
        (name, k). With `base` (the same X, no override), nodes that read no softmax are taken from it. With prev = (q, an
        evaluation with no override at inputs that differ from X at position q only), so are the rows that cannot read q
        (self.dep: no override, p = 0, as in the dependency pass; denominators depend on the graph only); with narrow = (an
        evaluation, a column of it that holds at q what X holds at q in every column), rows that read q alone are that
        column's, repeated."""
        require(prev is None or override is None, "ratio", "rows are reused only without an override")
        B, val = len(X[0]), {"x": (X, 1)}
        for nd in self.joint.nodes:
            if base is not None and self.deg[nd.name] == 0:
                val[nd.name] = base[nd.name]
                continue
            (e, D), todo, alone = val[nd.inputs[0]], None, ()
            if prev is not None:  # the rows that read q (and another position, with narrow), those that read q alone
                key = (nd.name, prev[0], narrow is not None)
                if key not in self.rowsets:
                    q = prev[0]
                    self.rowsets[key] = ([r for r, d in enumerate(self.dep[nd.name]) if q in d and (narrow is None or d - {q})],
                                         [r for r, d in enumerate(self.dep[nd.name]) if d == {q}] if narrow is not None and nd.op != "softmax" else [])
                todo, alone = self.rowsets[key]
            if nd.op == "softmax":
                rows, den, todo = [[ONE if override == (nd.name, r) else ZERO] * B for r in range(len(nd.groups))], 1, None
            elif nd.op in ("linear", "affine"):
                dense, sparse, wd, b, bd = self.lin[nd.name]
                den = math.lcm(wd * D, bd)
                s, t = fmpz(den // (wd * D)), fmpz(den // bd)
                idx = range(len(sparse)) if todo is None else todo
                if dense is not None and idx:  # y = W x + b: one integer matrix product, the rows to compute by the columns they read
                    if (nd.name, tuple(idx)) not in self.subs:  # (all rows: the matrix itself, on every column)
                        cols, table = sorted({c for r in idx for c, _ in sparse[r]}), todo is not None and dense.table()
                        self.subs[nd.name, tuple(idx)] = (fmpz_mat([[table[r][c] for c in cols] for r in idx]), cols) if table else (dense, range(dense.ncols()))
                    sub, cols = self.subs[nd.name, tuple(idx)]
                    prod = narrow is not None and todo and self._fused(nd, prev[0], idx, cols, val, narrow)
                    prod = prod or (sub * fmpz_mat([e[c] for c in cols]) if cols else fmpz_mat(len(idx), B))
                    prod = prod * s if s != 1 else prod  # (no bias: no matrix of it)
                    rows = (prod + fmpz_mat([[t * b[r]] for r in idx]) * fmpz_mat([[1] * B]) if any(b[r] for r in idx) else prod).tolist()
                else:  # row by row: a copy where the row is one weight 1 and no bias (selections: pairs, broadcasts)
                    rows = [e[sparse[r][0][0]] if len(sparse[r]) == 1 and s * sparse[r][0][1] == 1 and not b[r]
                            else [s * sum((w * e[c][col] for c, w in sparse[r]), ZERO) + t * b[r] for col in range(B)] for r in idx]
            elif nd.op == "mul":
                f, F = val[nd.inputs[1]]
                den = D * F
                rows = [None] * len(todo) if narrow is not None and todo and self._unread(nd, prev[0]) else \
                    [[x * y for x, y in zip(e[r], f[r])] if any(e[r]) and any(f[r]) else [ZERO] * B for r in (range(len(e)) if todo is None else todo)]
            else:
                f, F = val[nd.inputs[1]]
                den, sign = math.lcm(D, F), 1 if nd.op == "add" else -1
                s, t = fmpz(den // D), fmpz(sign * (den // F))
                idx = range(len(e)) if todo is None else todo
                rows = ([[x + y for x, y in zip(e[r], f[r])] for r in idx] if s == 1 and t == 1 else [[x - y for x, y in zip(e[r], f[r])] for r in idx]
                        if s == 1 and t == -1 else [[s * x + t * y for x, y in zip(e[r], f[r])] for r in idx])
            if todo is not None:  # the rows that do not read q: as in prev; those that read q alone: as in narrow
                full = list(prev[1][nd.name][0])
                one, col = narrow[0][nd.name][0], narrow[1]
                for r in alone:
                    full[r] = [one[r][col]] * B
                for r, v in zip(todo, rows):
                    full[r] = v
                rows = full
            val[nd.name] = (rows, den)
        return val

    def _which(self, m, c: int, q: int):
        """For row c of the product m: the factor (0 or 1) that reads q alone where the other does not read q, else None."""
        dep = [self.dep[name][c] for name in m.inputs]
        return next((w for w in (0, 1) if dep[w] == {q} and q not in dep[1 - w]), None)

    def _fused(self, nd, q: int, idx, cols, val: dict, narrow: tuple):
        """W[idx, cols] (u v), nd a linear of a product m, where every column c of m has a factor u_c that reads q alone (the
        same in every column of X: from narrow) and one, v_c, that does not read q: (W diag(u)) V, one small product, V (the
        v rows, the same at every token at q) kept; None where a column has no such factors."""
        key = ("fused", nd.name, q, tuple(idx))
        if key not in self.subs:
            m, plan = self.node.get(nd.inputs[0]), None
            if m is not None and m.op == "mul" and cols:
                which = [self._which(m, c, q) for c in cols]
                if None not in which:
                    plan = (m, which, self.subs[nd.name, tuple(idx)][0].table(), fmpz_mat([val[m.inputs[1 - w]][0][c] for c, w in zip(cols, which)]))
            self.subs[key] = plan
        if self.subs[key] is None:
            return None
        m, which, table, V = self.subs[key]
        u = [narrow[0][m.inputs[w]][0][c][narrow[1]] for c, w in zip(cols, which)]
        return fmpz_mat([[w * x for w, x in zip(row, u)] for row in table]) * V

    def _unread(self, m, q: int) -> bool:
        """The product m's rows that read q and another position need not be formed (`evaluate` with narrow): m is not the
        output, and every reader of m is a linear of m alone with a matrix whose rows that read q and another position
        read only columns of m that `_fused` takes (so it forms them; no other row can read such a row of m)."""
        key = ("unread", m.name, q)
        if key not in self.subs:
            users = [nd for nd in self.joint.nodes if m.name in nd.inputs]
            self.subs[key] = m.name != self.joint.output and bool(users) and all(
                nd.op == "linear" and list(nd.inputs) == [m.name] and self.lin[nd.name][0] is not None and
                all(self._which(m, c, q) is not None for r, d in enumerate(self.dep[nd.name]) if q in d and d - {q} for c, _ in self.lin[nd.name][1][r])
                for nd in users)
        return self.subs[key]

    def _deps(self, val: dict) -> list:
        """The positions each element of d can read (val: the values at one input, for zero factors)."""
        V, E = self.vocab, frozenset()
        dep = {"x": [frozenset([c // V]) for c in range(self.joint.in_dim)]}
        for nd in self.joint.nodes:
            a = [dep[s] for s in nd.inputs]
            if nd.op == "softmax":
                dep[nd.name] = [E] * len(nd.groups)
            elif nd.op == "linear":
                dep[nd.name] = [E.union(*(a[0][c] for c, _ in row)) for row in self.lin[nd.name][1]]
            elif nd.op == "affine":
                dep[nd.name] = [E if s == 0 else d for s, d in zip(nd.scale, a[0])]
            elif nd.op == "mul":
                zero = [[not d and val[s][0][r][0] == 0 for r, d in enumerate(ds)] for s, ds in zip(nd.inputs, a)]
                dep[nd.name] = [E if z0 or z1 else d0 | d1 for d0, d1, z0, z1 in zip(a[0], a[1], *zero)]
            else:
                dep[nd.name] = [d0 | d1 for d0, d1 in zip(a[0], a[1])]
        self.score_deps = {nd.name: dep[nd.inputs[0]] for nd in self.soft}  # member k's own score s_k
        return dep

    def _delta_deps(self, override, val: dict) -> list:
        """Per element of d: None where d(p = e_k) - d(p = 0) is 0 at every input, else the positions it can read. The
        difference passes linear, affine, add and sub as they are, and a product with a softmax-free factor v as
        difference * v (deg <= 1)."""
        dep, diff = self.dep, {}
        for nd in self.joint.nodes:
            a = [diff.get(s) for s in nd.inputs]
            if self.deg[nd.name] == 0:
                out = [None] * len(dep[nd.name])
            elif nd.op == "softmax":
                out = [frozenset() if override == (nd.name, j) else None for j in range(len(nd.groups))]
            elif nd.op == "linear":
                out = [_union(a[0][c] for c, _ in row) for row in self.lin[nd.name][1]]
            elif nd.op == "affine":
                out = [None if s == 0 else d for s, d in zip(nd.scale, a[0])]
            elif nd.op == "mul":
                u, v = (0, 1) if self.deg[nd.inputs[0]] else (1, 0)
                fv = dep[nd.inputs[v]]
                out = [None if d is None or (not fv[r] and val[nd.inputs[v]][0][r][0] == 0) else d | fv[r] for r, d in enumerate(a[u])]
            else:
                out = [_union(pair) for pair in zip(a[0], a[1])]
            diff[nd.name] = out
        return diff[self.joint.output]

    def tables(self, q: int, a: int, where: str) -> tuple:
        """(exps[g][k], coefficients[i][g][k], rest[i]) at the query token a: each (position or None, numerators at
        b = 0..V-1, denominator); exps from `_exps` (one denominator a group), coefficients and rests over one denominator.
        A missing second group is the constant 1 with coefficients 0."""
        if (q, a) in self.cache:
            return self.cache[q, a]
        V, out, m = self.vocab, self.joint.output, self.joint.out_dim
        if q not in self.xs:  # the batch with nothing at q (the same at every a); every token at q, 0 elsewhere (X's first column at each a)
            self.xs[q] = [[ZERO] * V if c // V == q else [ONE if c % V == b else ZERO for b in range(V)] for c in range(self.joint.in_dim)]
            T = [[ONE if c - q * V == t else ZERO for t in range(V)] if c // V == q else [ONE if c % V == 0 else ZERO] * V for c in range(self.joint.in_dim)]
            self.thin[q] = (T, self.evaluate(T, None))
        X = list(self.xs[q])
        X[q * V + a] = [ONE] * V
        (T, thin), last = self.thin[q], self.last.get(q)  # last: the previous token's evaluation at q
        base = self.evaluate(X, None, prev=last and (q, last), narrow=last and (thin, a))
        self.last[q] = base

        def pos(deps):
            free = deps - {q}
            require(len(free) <= 1, where, f"a table reads positions {sorted(free)} besides the query {q}: no ratio form")
            return next(iter(free), None)

        src = {nd.name: nd.inputs[0] for nd in self.soft}
        exps = []
        for name, ms in self.groups:
            s, D = base[src[name]]
            exps.append(_exps([(pos(self.score_deps[name][k]), s[k]) for k in ms], D, where))
        r, den = base[out]
        coef = [[[None] * len(ms) for _, ms in self.groups] for _ in range(m)]
        for o, (name, k) in enumerate(self.overrides[1:], start=1):
            deps = [v or frozenset() for v in self.coef_deps[o - 1]]
            if all(not v - {q} for v in deps):  # every row reads q alone: one column (the same at every b), every token's at once
                if (q, o, None) not in self.shared:
                    d, D = self.evaluate(T, (name, k), thin)[out]
                    L, (r1, _) = math.lcm(den, D), thin[out]
                    s, t = fmpz(L // D), fmpz(L // den)
                    self.shared[q, o, None] = ([[s * x - t * y for x, y in zip(u, v)] for u, v in zip(d, r1)], L)
                rows, L = self.shared[q, o, None]
                self.shared[q, o] = ([[row[a]] for row in rows], L)
            elif any(q in v for v in deps) or (q, o) not in self.shared:  # rows that do not read q: the same at every a
                d, D = self.evaluate(X, (name, k), base)[out]
                L = math.lcm(den, D)
                s, t = fmpz(L // D), fmpz(L // den)
                self.shared[q, o] = ([[s * x - t * y for x, y in zip(u, v)] for u, v in zip(d, r)], L)
            rows, L = self.shared[q, o]
            g = next(t for t, (nm, ms) in enumerate(self.groups) if nm == name and k in ms)
            if (q, o) not in self.at:
                self.at[q, o] = [pos(d) for d in deps]
            for i, p in enumerate(self.at[q, o]):
                coef[i][g][self.groups[g][1].index(k)] = (p, rows[i], L)
        L = math.lcm(den, *(c[2] for row in coef for grp in row for c in grp))  # one denominator for coefficients and rests

        def over(v, d):  # numerators over L (memoised: a shared row stays one list at every a)
            if d == L:
                return v
            if (id(v), L) not in self.scaled:
                self.scaled[id(v), L] = (v, [fmpz(L // d) * x for x in v])
            return self.scaled[id(v), L][1]
        coef = [[[(p, over(v, d), L) for p, v, d in grp] for grp in row] for row in coef]
        rest = [(pos(self.rest_deps[i]), r[i] if den == L else [fmpz(L // den) * x for x in r[i]], L) for i in range(m)]
        if len(exps) == 1:
            exps.append([(None, [1], 1)])
            coef = [c + [[(None, [0], L)]] for c in coef]
        self.cache[q, a] = (exps, coef, rest)
        return self.cache[q, a]


def form(joint, vocab: int) -> Form | None:
    """The joint graph's ratio form, or None (an op outside FORM_OPS, a softmax reading a softmax, a product of
    two softmax-dependent values, no softmax, or not 1 or 2 groups whose outputs reach d)."""
    deg = {"x": 0}
    for nd in joint.nodes:
        if nd.op not in FORM_OPS or (nd.op == "softmax" and deg[nd.inputs[0]]):
            return None
        deg[nd.name] = 1 if nd.op == "softmax" else (sum if nd.op == "mul" else max)(deg[s] for s in nd.inputs)
        if deg[nd.name] > 1:
            return None
    if not any(nd.op == "softmax" for nd in joint.nodes):
        return None
    fm = Form(joint, vocab, deg)
    return fm if 1 <= len(fm.groups) <= 2 else None


def replay(joint, x: list, fm: Form | None = None) -> list | None:
    """d at the input x as arb balls (the caller's precision), or None where the joint graph has no ratio form or x
    is not integer (then graph.evaluate). From `Form.evaluate` at x (one column, exact integers): the scores s, the rest
    r = d(p = 0) and, per softmax member k, d(p = e_k) - r = c_k; then d = r + sum_groups (sum_k e^{s_k - s*} c_k) /
    (sum_k e^{s_k - s*}), with one exp ball per member (docs/soundness.md, R7). fm: this joint graph's form, made by the
    caller (a check's ratio leaves, the engine's set-up), else made here for the vocabulary read off a one-hot x (in_dim /
    its ones); the values do not depend on the vocabulary (it sets only which positions a table reads)."""
    if len(x) != joint.in_dim or any(Fraction(v).denominator != 1 for v in x):
        return None
    if fm is None or fm.joint is not joint:
        ones = sum(v != 0 for v in x)
        fm = form(joint, joint.in_dim // ones if ones and joint.in_dim % ones == 0 else joint.in_dim)
    if fm is None:
        return None
    X = [[fmpz(int(v))] for v in x]
    base = fm.evaluate(X, None)
    r, D = base[joint.output]
    d = [arb(fmpq(int(v[0]), D)) for v in r]
    for nd in fm.soft:
        s, S = base[nd.inputs[0]]
        for gid in sorted(set(nd.groups)):
            ms = [k for k, g in enumerate(nd.groups) if g == gid]
            top = max(s[k][0] for k in ms)
            es = [(arb(fmpq(int(s[k][0] - top), S))).exp() for k in ms]
            num = [arb(0)] * len(d)
            for k, e in zip(ms, es):
                c, C = fm.evaluate(X, (nd.name, k), base)[joint.output]
                num = [u + e * fmpq(int(v[0] * D - w[0] * C), C * D) for u, v, w in zip(num, c, r)]
            d = [u + v / sum(es) for u, v in zip(d, num)]
    return d


def _ints(vals) -> tuple[list[int], int]:
    """Rationals (Fraction, int) as (numerators, d): over one common denominator d > 0."""
    pairs, w = [(n, vals[n].as_integer_ratio()) for n in compress(range(len(vals)), vals)], [0] * len(vals)  # (zeros, most of a selection: skipped)
    d = math.lcm(1, *{q for _, (_, q) in pairs})
    for n, (p, q) in pairs:
        w[n] = p * (d // q)
    return w, d


def _exps(scores, D, where: str) -> list:
    """Per member (scores: (position, numerators over D)): (position, E^ numerators, their denominator, one for the group),
    |e^{s - s*} - E^| <= 2^-P E^ proved (P leading bits), s* the group's largest score; E^ = m 2^x, m odd."""
    top, out, memo = max(v for _, vals in scores for v in vals), [], {}
    with ctx.workprec(P + 64):
        for p, vals in scores:
            rounded = []
            for v in vals:
                if v not in memo:  # (a score that reads no free position repeats along the columns)
                    e = (arb(v - top) / D).exp()
                    m, x, rm, rx = map(int, (*e.mid().man_exp(), *e.rad().man_exp()))
                    cut = max(m.bit_length() - P, 0)
                    m, x = (m + (1 << cut >> 1)) >> cut, x + cut
                    k = min(rx, x - P, x - 1)  # |e - m 2^x| <= rad + |mid - m 2^x| (half a unit where cut): in units 2^k
                    require(m > 0 and (rm << (rx - k)) + (cut and 1 << (x - 1 - k)) <= m << (x - P - k), where, "an exp rounding is not proved within 2^-P of itself")
                    zeros = (m & -m).bit_length() - 1
                    m, x = m >> zeros, x + zeros
                    memo[v] = (m, x)
                rounded.append(memo[v])
            out.append((p, rounded))
    low = min(0, *(x for _, vals in out for _, x in vals))
    return [(p, [fmpz(m << (x - low)) for m, x in vals], 1 << -low) for p, vals in out]


def _max_of(terms) -> Fraction:
    """max over t of sum_terms c * prod_vectors [t] (terms: (Fraction c, [one or two integer vectors]); two: an outer
    product, rows along the first), as one integer matrix product."""
    den = math.lcm(*(c.denominator for c, _ in terms))
    L = fmpz_mat([[c.numerator * (den // c.denominator) * x for x in vs[0]] for c, vs in terms]).transpose()
    return Fraction(int(max((L * fmpz_mat([vs[1] if len(vs) > 1 else [1] for _, vs in terms])).entries())), den)


def _upper(products, allowed, where: str) -> Fraction:
    """An upper bound of the max over the leaf of sum_products coef * prod_factors (factor: (position or None, numerators,
    denominator); numerators None: a position marker, the product is read over that position too (constant along it))."""
    const, unary, pairs = Fraction(0), {}, {}
    for coef, factors in products:
        scalar, vecs = Fraction(coef), {}
        for p, vals, den in factors:
            if vals is None:
                if p is not None and len(allowed[p]) > 1 and p not in vecs:
                    vecs[p] = [1] * len(allowed[p])
            elif p is None or len(allowed[p]) == 1:
                scalar *= Fraction(int(vals[0 if p is None else allowed[p][0]]), den)
            else:
                scalar /= den
                vecs[p] = [vals[t] for t in allowed[p]] if p not in vecs else [u * vals[t] for u, t in zip(vecs[p], allowed[p])]
        require(len(vecs) <= 2, where, f"a product reads {len(vecs)} free positions (at most 2)")
        ps = sorted(vecs)
        if not ps:
            const += scalar
        else:
            (unary.setdefault(ps[0], []) if len(ps) == 1 else pairs.setdefault(tuple(ps), [])).append((scalar, [vecs[t] for t in ps]))
    share = {p: sum(p in pq for pq in pairs) for p in unary}
    total = const + sum((_max_of(terms) for p, terms in unary.items() if share[p] == 0), Fraction(0))
    for (j, k), terms in pairs.items():  # each position's own terms shared equally among its pairs
        terms = terms + [(c / share[j], [u, [1] * len(allowed[k])]) for c, (u,) in unary.get(j, [])]
        terms += [(c / share[k], [[1] * len(allowed[j]), u]) for c, (u,) in unary.get(k, [])]
        total += _max_of(terms)
    return total


def _split_sums(members, marks, allowed) -> dict | None:
    """A split row's products bucketed once for every row: members [(exp table, [its coefficient table in row i])], each
    read over at most one free position (else None): ({position or None: (sum_k E_k along it, [sum_k E_k c_ik along it])},
    the same with the positions side by side: 1 x n integer matrices, and where each position's part ends)."""
    sums = {}
    for (e, cs), mk in zip(members, marks):
        free = {p for p, _, _ in mk if len(allowed[p]) > 1}
        if len(free) > 1:
            return None
        p = next(iter(free), None)
        ev = _along(e, p, allowed)
        rows, old = [[x * y for x, y in zip(ev, _along(c, p, allowed))] for c in cs], sums.get(p)
        sums[p] = (ev, rows) if old is None else ([x + y for x, y in zip(old[0], ev)], [[x + y for x, y in zip(u, v)] for u, v in zip(old[1], rows)])
    ends = [sum(len(v[0]) for v in list(sums.values())[:n + 1]) for n in range(len(sums))]
    side = (fmpz_mat([[x for ev, _ in sums.values() for x in ev]]), [fmpz_mat([[x for _, rows in sums.values() for x in rows[i]]]) for i in range(len(members[0][1]))])
    return sums, side, ends


def _along(table, p, allowed) -> list:
    """A table's numerators along free position p's tokens (p None: one value); it reads p or no free position."""
    q, vals, _ = table
    return [vals[t] for t in allowed[p]] if q is not None and q == p else [vals[0 if q is None else allowed[q][0]]] * (1 if p is None else len(allowed[p]))


def _split_value(sums, i: int, sigma: int, add: Fraction, dens: tuple) -> Fraction:
    """max over the leaf of sum_k E_k (sigma c_ik + add) from `_split_sums` (dens: E's and c's denominators), as `_upper`
    computes it: the sum over positions of each position's exact maximum."""
    (ev, rows), ends, g = sums[1], sums[2], add * dens[1]
    v = (rows[i] * (sigma * g.denominator) + ev * g.numerator).entries()
    top = sum(max(v[start:end]) for start, end in zip([0] + ends, ends))
    return Fraction(int(top), dens[0] * dens[1] * g.denominator)


def _joint_value(sums, i: int, sigma: int, gamma: Fraction, dens, allowed, bits: int | None = None, caps: list | None = None,
                 memo: dict | None = None) -> Fraction:
    """max over the leaf of sum_{k,l} E1_k E2_l (sigma c1_ik + gamma + sigma c2_il) from both groups' `_split_sums`, as
    `_upper` buckets it: by the two members' free positions. Per position p, X = sigma A1 + gamma e1, Z = e1, Y = e2,
    W = sigma A2 (A: sum_k E_k c_ik, e: sum_k E_k); a pair {p, p'} (p in one group, p' in the other) is the rank-4 matrix
    X_p (x) Y_p' + Z_p (x) W_p' + its mirror, and each position's own terms (p = p', or a fixed partner) are shared
    equally among its pairs. Integers over (E1's, c's, E2's denominators) d1 dc^2 d2 gd. With `bits`: an upper bound of
    it, X and W rounded up to multiples of 2^-bits / d1 and 2^-bits / d2 (Y, Z >= 0 exact, so every entry only grows;
    an E's numerator is >= 2^(P-1), so each entry moves by a part in about 2^(P + bits) of its own size, plus
    2^-bits E1 E2 from gamma), integers over d1 d2 2^bits: about half the digits. With `caps` (one per pair, in the pairs'
    order): a pair whose every entry is <= its cap counts as the cap (`_capped`: no entry made into an object), else
    as its max."""
    (d1, dc), (d2, _) = dens
    if bits is None:
        gn, gd = gamma.numerator, gamma.denominator
        c1, c2, c3, c4, c5, den = fmpz(sigma * gd), fmpz(gn * dc), fmpz(dc * gd), fmpz(dc), fmpz(sigma), d1 * dc * dc * d2 * gd
    else:
        c1, c2, c3, c4, c5, den = fmpz(sigma << bits), fmpz(math.ceil(gamma * (1 << bits))), ONE, ONE, fmpz(sigma << bits), d1 * d2 << bits
    vec, dc = {}, fmpz(1 if bits is None else dc)
    sums = [sums[0][0], sums[1][0]]
    for p in set(sums[0]) | set(sums[1]):
        zero = [ZERO] * (1 if p is None else len(allowed[p]))
        e1, a1 = (sums[0][p][0], sums[0][p][1][i]) if p in sums[0] else (zero, zero)
        e2, a2 = (sums[1][p][0], sums[1][p][1][i]) if p in sums[1] else (zero, zero)
        vec[p] = ([-(-c1 * x // dc) + c2 * y for x, y in zip(a1, e1)], e1 if c3 == 1 else [c3 * y for y in e1], e2 if c4 == 1 else [c4 * y for y in e2],
                  [-(-c5 * x // dc) for x in a2])
    X0, Z0, Y0, W0 = (v[0] for v in vec.pop(None, ([ZERO],) * 4))
    own = {p: [x * (y + Y0) + z * (w + W0) + y * X0 + w * Z0 for x, z, y, w in zip(*v)] for p, v in vec.items()}
    ps = sorted(vec)
    pairs = [(j, k) for n, j in enumerate(ps) for k in ps[n + 1:] if (j in sums[0] and k in sums[1]) or (k in sums[0] and j in sums[1])]
    share = {p: sum(p in pq for pq in pairs) for p in ps}
    L = math.lcm(1, *(v for v in share.values() if v))
    total = (X0 * Y0 + Z0 * W0) * L + sum(max(u) * L for p, u in own.items() if not share[p])
    require(caps is None or len(caps) == len(pairs), "ratio", f"a joint row's caps are {len(pairs)} 'p/q' (one per pair of positions)")
    for n, (j, k) in enumerate(pairs):
        (X, Z, Y, W), (X2, Z2, Y2, W2) = vec[j], vec[k]
        a, b, scales = [X, Z, Y, W, own[j], [ONE] * len(X)], [Y2, W2, X2, Z2, [ONE] * len(X2), own[k]], [L] * 4 + [L // share[j], L // share[k]]
        cap = None if caps is None else fmpz(math.floor(caps[n] * L * den))  # (an integer entry is <= c iff <= floor(c))
        total += cap if cap is not None and _capped(a, b, scales, cap, memo) else \
            max((fmpz_mat(a).transpose() * (fmpz_mat([[c if r == q else 0 for q in range(6)] for r, c in enumerate(scales)]) * fmpz_mat(b))).entries())
    return Fraction(int(total), L * den)


def _capped(a: list, b: list, scales: list, cap, memo: dict | None = None, cut: int = 6) -> bool:
    """Every entry of M = a^T diag(scales) b (a, b: 6 integer rows of n1, n2) is <= cap, by packed
    rows: with mag >= every |entry - cap| (the sum over r of scales_r max|a_r| max|b_r|, plus |cap|) and w bits a field,
    2^(w-2) > mag, row t of M is the integer sum_u M[t, u] 2^(w u) (one integer matrix product with the packed rows of b;
    a's last row is all ones, so (2^(w-1) - 1 - cap) in every field is added through b's last packed row): its base-2^w
    digits are M[t, u] - cap + 2^(w-1) - 1, each in [0, 2^w), whose top bit is set iff M[t, u] > cap. w: a multiple of 32, so
    that a row of b shared by many calls (a leaf's exp sums) is packed once (`memo`: per row object and w; holds the row).
    With `cut`, first on the rows cut to multiples of 2^s_r (floor: a = 2^s a' + e, 0 <= e < 2^s; rows of ones kept), s_r
    such that each term's error is about |cap| 2^-cut: c a b - c 2^(s + t) a' b' = c (e b + 2^s a' f), at most
    c (2^s max|b| + (max|a| + 2^s) 2^t) (f: b's rest, 0 where t = 0); M <= cap holds if the cut entries, in units of the
    least 2^(s + t), are <= floor((cap - the errors' sum) / that unit). Where that fails, the rows themselves decide."""
    memo = {} if memo is None else memo
    for row in a + b:
        if ("mag", id(row)) not in memo:
            memo["mag", id(row)] = (row, max(map(abs, row)), all(v == 1 for v in row))
    ma, mb = ([memo["mag", id(v)][1:] for v in rows] for rows in (a, b))
    if cut:
        e = abs(int(cap)) >> cut
        sa = [0 if one else max((e // (c * y + 1)).bit_length() - 1, 0) for c, (_, one), (y, _) in zip(scales, ma, mb)]
        sb = [0 if one else max((e // (c * x + 1)).bit_length() - 1, 0) for c, (x, _), (_, one) in zip(scales, ma, mb)]
        err = sum(c * ((y << s if s else 0) + ((x + (1 << s)) << t if t else 0)) for c, (x, _), (y, _), s, t in zip(scales, ma, mb, sa, sb))
        S = min(s + t for s, t in zip(sa, sb))
        for row, s, (x, one) in zip(a + b, sa + sb, ma + mb):
            if s and ("cut", id(row), s) not in memo:
                memo["cut", id(row), s] = cut_row = (row, [v >> s for v in row])
                memo["mag", id(cut_row[1])] = (cut_row[1], (x >> s) + 1, False)  # (>= max |floor(v / 2^s)|)
        a2, b2 = ([memo["cut", id(v), s][1] if s else v for v, s in zip(rows, ss)] for rows, ss in ((a, sa), (b, sb)))
        if S and _capped(a2, b2, [c << (s + t - S) for c, s, t in zip(scales, sa, sb)], fmpz((int(cap) - int(err)) >> S), memo, 0):
            return True
    mag = sum(c * x * y for c, (x, _), (y, _) in zip(scales, ma, mb)) + abs(cap)
    w = (int(mag).bit_length() + 33) // 32 * 32
    if ("ones", len(b[0]), w) not in memo:
        memo["ones", len(b[0]), w] = (None, fmpz_poly([ONE] * len(b[0]))(ONE << w))
    ones = memo["ones", len(b[0]), w][1]
    for row, (_, one) in zip(b, mb):
        if not one and ("packed", id(row), w) not in memo:
            memo["packed", id(row), w] = (row, fmpz_poly(row)(ONE << w))
    packed = [c * (ones if one else memo["packed", id(row), w][1]) for c, row, (_, one) in zip(scales, b, mb)]
    packed[-1] += ((ONE << (w - 1)) - 1 - cap) * ones
    seen = ZERO
    for n in (fmpz_mat(a).transpose() * fmpz_mat([[v] for v in packed])).entries():
        seen |= n
    return not seen & (ones << (w - 1))


def _biggest(tables, seen: dict) -> Fraction:
    """Sum over the tables of their largest |entry| (memoised per table in `seen`)."""
    for _, vals, den in tables:
        if id(vals) not in seen:
            seen[id(vals)] = (vals, Fraction(int(max(map(abs, vals))), den))
    return sum((seen[id(vals)][1] for _, vals, _ in tables), Fraction(0))


def check_ratio_leaf(fm: Form | None, leaf, box, bound: Fraction, where: str) -> int:
    """A leaf {"query": Q, "lambda": [2 m entries: "p/q" (split) or null (joint), for d_0 <= B, -d_0 <= B, d_1 ...]}
    proves |d_i| <= bound on the leaf's token box (Q's one token). Returns the number of rows checked."""
    require(fm is not None, where, "the joint graph has no softmax-ratio form (see certify/checker/attention.py)")
    m = fm.joint.out_dim
    require(isinstance(leaf, dict) and set(leaf) == {"query", "lambda"} and type(leaf["query"]) is int
            and 0 <= leaf["query"] < len(box.allowed) and len(box.allowed[leaf["query"]]) == 1
            and isinstance(leaf["lambda"], list) and len(leaf["lambda"]) == 2 * m, where,
            f"a ratio leaf is {{query: a position with one token, lambda: {2 * m} entries}}")
    lams = [[parse_ratio(x) for x in v] if type(v) is list else None if v is None else parse_ratio(v) for v in leaf["lambda"]]  # list: caps
    require(all(v is not None and (type(v) is not list or None not in v) for v, raw in zip(lams, leaf["lambda"]) if raw is not None), where,
            "lambda holds a value that is neither null, 'p/q' nor a list of 'p/q' (a joint row's caps)")
    q, B = leaf["query"], Fraction(bound)
    exps, coef, rest = fm.tables(q, box.allowed[q][0], where)
    allowed, seen = [list(ok) for ok in box.allowed], fm.seen
    # a member's positions: its score's and its coefficients' in every row; each product of a term is read over all
    # the positions of its members (markers), so that a term's products fall in one bucket
    marks = [[[(p, None, 1) for p in {e[0]} | {coef[i][g][k][0] for i in range(m)} if p is not None] for k, e in enumerate(exps[g])] for g in (0, 1)]
    # the hull: each group's ratio is a convex combination of its members' coefficients, so sigma d_i <= max sigma r_i +
    # sum_groups max_k max sigma c_ik over their positions' tokens; rows within B by it need no exp (and no sums below)
    L, ends = coef[0][0][0][2], {}
    for t in [r for r in rest] + [c for row in coef for grp in row for c in grp]:
        key = ("hull", id(t[1]), None if t[0] is None else box.allowed[t[0]])  # (a tuple: TokenBox)
        if key not in seen:
            v = _along(t, t[0], allowed)
            seen[key] = (t[1], int(max(v)), int(min(v)))
        ends[id(t)] = seen[key][1:]
    hull = [[sigma * ends[id(rest[i])][s] + sum(max(sigma * ends[id(c)][s] for c in grp) for grp in coef[i]) for s, sigma in enumerate((1, -1))] for i in range(m)]
    BL = math.floor(B * L)  # (h <= B L iff h <= BL for an integer h)
    need = [i for i in range(m) if not HULL or any(h > BL for h in hull[i])]  # the rows that need more (index: at[i])
    at = {i: n for n, i in enumerate(need)}
    # split rows of a group whose members each read at most one free position (and, group 1, a rest of no free position):
    # bucketed once for those rows (`_split_sums`), each row's value as `_upper`'s on its products
    fast = [None if not FAST or not need or (g == 0 and any(len(allowed[p]) > 1 for p, _, _ in rest if p is not None)) else
            _split_sums([(e, [coef[i][g][k] for i in need]) for k, e in enumerate(exps[g])], marks[g], allowed) for g in (0, 1)]
    dens = [(exps[g][0][2], coef[0][g][0][2]) for g in (0, 1)]

    def rv(r):  # a rest's value (it reads no free position where fast[0] is used)
        return Fraction(int(r[1][0 if r[0] is None else allowed[r[0]][0]]), r[2])
    for i in range(m):
        if HULL and TRACE is not None:
            TRACE.extend((i, s, 3, Fraction(h, L) - B) for s, h in enumerate(hull[i]))
        if i not in at:
            continue
        cs, r = coef[i], rest[i]
        rm = [(r[0], None, 1)]
        big = (_biggest(cs[0], seen) + _biggest([r], seen) + abs(B), _biggest(cs[1], seen))
        for s, sigma in enumerate((1, -1)):
            what = f"row {i}: {'' if sigma > 0 else '-'}d_{i} <= bound is not proved"
            if HULL and hull[i][s] <= BL:
                continue
            eta = Fraction(3, 1 << P)  # E_k E_l c <= E^_k E^_l (c + eta max|c|): the rounding moves the constant term
            if lams[2 * i + s] is None or type(lams[2 * i + s]) is list:  # joint: sum_{k,l} e1_k e2_l (sigma c1_k + sigma r - B + sigma c2_l) <= 0
                if fast[0] is not None and fast[1] is not None:
                    gamma = sigma * rv(r) - B + eta * (big[0] + big[1])
                    caps = None if lams[2 * i + s] is None else [Fraction(*c) for c in lams[2 * i + s]]
                    if ROUND and _trace(_joint_value(fast, at[i], sigma, gamma, dens, allowed, 64, caps, seen), i, s, 4) <= 0:
                        continue  # the rounded bound holds (else the exact one decides)
                    value = _joint_value(fast, at[i], sigma, gamma, dens, allowed)
                else:
                    terms = [(e1, c1, m1, e2, c2, m2) for e1, c1, m1 in zip(exps[0], cs[0], marks[0]) for e2, c2, m2 in zip(exps[1], cs[1], marks[1])]
                    prods = [(sigma, [e1, e2, c] + m1 + m2 + rm) for e1, c1, m1, e2, c2, m2 in terms for c in (c1, r, c2)]
                    prods += [(-B + eta * (big[0] + big[1]), [e1, e2] + m1 + m2 + rm) for e1, _, m1, e2, _, m2 in terms]
                    value = _upper(prods, allowed, where)
                require(_trace(value, i, s, 2) <= 0, where, what + " (joint)")
                continue
            lam = Fraction(*lams[2 * i + s])
            for g, shift in ((0, -B - lam), (1, lam)):  # split: group 1's ratio <= lambda, group 2's <= -lambda
                add = shift + eta * (big[g] + abs(lam))
                if fast[g] is not None:
                    value = _split_value(fast[g], at[i], sigma, add + (sigma * rv(r) if g == 0 else 0), dens[g])
                else:
                    pad = rm if g == 0 else []
                    prods = [(sigma, [e, c] + mk + pad) for e, c, mk in zip(exps[g], cs[g], marks[g])]
                    prods += [(add, [e] + mk + pad) for e, mk in zip(exps[g], marks[g])]
                    prods += [(sigma, [e, r] + mk + pad) for e, mk in zip(exps[g], marks[g])] if g == 0 else []
                    value = _upper(prods, allowed, where)
                require(_trace(value, i, s, g) <= 0, where, what + f" (split, group {g + 1})")
    return 2 * m


FAST = True  # tests: False checks every split row by `_upper` (the differential test compares the values)
HULL = True  # tests: False checks every row by its hint (the hull's rows: TRACE group 3)
ROUND = True  # tests: False checks joint rows exactly only (the rounded bound first otherwise: TRACE group 4)
TRACE: list | None = None  # tests: a list collects (row, sign, group or 2 (joint), value) of every row checked


def _trace(value: Fraction, i: int, s: int, g: int) -> Fraction:
    if TRACE is not None:
        TRACE.append((i, s, g, value))
    return value


def check_ratio_leaves(joint, leaves: list, bound: Fraction, forms: dict | None = None) -> int:
    """Every (leaf, its token box, where) of a token tree whose leaf is {"ratio": ...}; returns the rows checked. The form
    is made here (no other caller's tables); `forms` (the caller's, for its witness replay) gets it as "ratio"."""
    with gc_paused():  # (the tables hold many lists, and no cycles: collections cost about a tenth of the check here)
        fm = form(joint, leaves[0][1].vocab)
        count = sum(check_ratio_leaf(fm, leaf, box, bound, where) for leaf, box, where in leaves)
        if forms is not None and fm is not None:
            fm.cache, fm.shared, fm.last, fm.scaled, fm.seen, fm.thin = {}, {}, {}, {}, {}, {}  # (kept for the replay: no tables)
            forms["ratio"] = fm
        return count
