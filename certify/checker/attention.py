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
"""

from __future__ import annotations

from fractions import Fraction

from flint import arb, ctx, fmpq, fmpq_mat

from .errors import require
from .numbers import parse_ratio

P = 96
FORM_OPS = ("linear", "affine", "add", "sub", "mul", "softmax")


def _fq(v) -> fmpq:
    v = Fraction(v)
    return fmpq(v.numerator, v.denominator)


def _union(sets) -> frozenset | None:
    """The union of the sets that are not None; None if all are."""
    sets = [d for d in sets if d is not None]
    return frozenset().union(*sets) if sets else None


class Form:
    """The ratio form of a joint graph (None from `form` where it has none), and its exact tables per (Q, a)."""

    def __init__(self, joint, vocab: int, deg: dict):
        self.joint, self.vocab, self.deg, self.cache, self.shared = joint, vocab, deg, {}, {}
        self.soft = [nd for nd in joint.nodes if nd.op == "softmax"]
        self.groups = [(nd.name, tuple(j for j, g in enumerate(nd.groups) if g == gid)) for nd in self.soft for gid in sorted(set(nd.groups))]
        self.mats, self.sparse, self.bias = {}, {}, {}
        for nd in joint.nodes:
            if nd.op == "linear":
                self.mats[nd.name] = (fmpq_mat(len(nd.weight), len(nd.weight[0]), [_fq(w) for row in nd.weight for w in row]),
                                      fmpq_mat(len(nd.weight), 1, [_fq(b) for b in (nd.bias or [0] * len(nd.weight))]),
                                      [[c for c, w in enumerate(row) if w] for row in nd.weight])
                if sum(map(len, self.mats[nd.name][2])) <= 2 * len(nd.weight):  # a selection (pairs, broadcasts): row by row
                    self.sparse[nd.name] = [[(c, _fq(row[c])) for c in cols] for row, cols in zip(nd.weight, self.mats[nd.name][2])]
                    self.bias[nd.name] = [_fq(b) for b in (nd.bias or [0] * len(nd.weight))]
            elif nd.op == "affine":
                self.sparse[nd.name] = [[(r, _fq(w))] if w else [] for r, w in enumerate(nd.scale)]
                self.bias[nd.name] = [_fq(v) for v in nd.shift]
        self.overrides = [None] + [(name, k) for name, members in self.groups for k in members]
        at_zero = self.evaluate(fmpq_mat(joint.in_dim, 1, [0] * joint.in_dim), None)  # for zero factors (of no position)
        self.dep = self._deps(at_zero)
        self.rest_deps = self.dep[joint.output]  # r_i = d_i(p = 0)
        self.coef_deps = [self._delta_deps(o, at_zero) for o in self.overrides[1:]]  # c_ik = d_i(p = e_k) - d_i(p = 0)
        reach = {o for o, ds in zip(self.overrides[1:], self.coef_deps) if any(d is not None for d in ds)}
        self.groups = [(name, ms) for name, ms in self.groups if any((name, k) in reach for k in ms)]  # the others' c are 0
        self.coef_deps = [ds for o, ds in zip(self.overrides[1:], self.coef_deps) if any(o == (name, k) for name, ms in self.groups for k in ms)]
        self.overrides = [None] + [(name, k) for name, ms in self.groups for k in ms]

    def evaluate(self, X: fmpq_mat, override, base: dict | None = None) -> dict:
        """Every node's exact value on the columns of X; softmax outputs are 0 except p_k = 1 for override (name, k).
        With `base` (the same X, no override), nodes that read no softmax are taken from it."""
        B, val = X.ncols(), {"x": X}
        ones = fmpq_mat(1, B, [1] * B)
        for nd in self.joint.nodes:
            a = [val[s] for s in nd.inputs]
            if base is not None and self.deg[nd.name] == 0:
                v = base[nd.name]
            elif nd.op == "softmax":
                v = fmpq_mat(len(nd.groups), B, [int(override == (nd.name, r)) for r in range(len(nd.groups)) for _ in range(B)])
            elif nd.op == "affine" or len(self.sparse.get(nd.name, ())):  # row by row: y_r = sum_c w_rc x_c + b_r
                e, out = a[0].entries(), []
                for row, b in zip(self.sparse[nd.name], self.bias[nd.name]):
                    if len(row) == 1 and row[0][1] == 1 and b == 0:  # a copy (selections: pairs, broadcasts)
                        out += e[row[0][0] * B:(row[0][0] + 1) * B]
                    else:
                        out += [sum((w * e[c * B + t] for c, w in row), b) for t in range(B)]
                v = fmpq_mat(len(self.sparse[nd.name]), B, out)
            elif nd.op == "linear":
                w, b, _ = self.mats[nd.name]
                v = w * a[0] + b * ones
            elif nd.op == "mul":
                e0, e1, out = a[0].entries(), a[1].entries(), []
                for r in range(a[0].nrows()):
                    u, w = e0[r * B:(r + 1) * B], e1[r * B:(r + 1) * B]
                    out += [fmpq(0)] * B if not (any(u) and any(w)) else [x * y for x, y in zip(u, w)]
                v = fmpq_mat(a[0].nrows(), B, out)
            else:
                v = a[0] + a[1] if nd.op == "add" else a[0] - a[1]
            val[nd.name] = v
        return val

    def _deps(self, val: dict) -> list:
        """The positions each element of d can read (val: the values at one input, for zero factors)."""
        V, E = self.vocab, frozenset()
        dep = {"x": [frozenset([c // V]) for c in range(self.joint.in_dim)]}
        for nd in self.joint.nodes:
            a = [dep[s] for s in nd.inputs]
            if nd.op == "softmax":
                dep[nd.name] = [E] * len(nd.groups)
            elif nd.op == "linear":
                dep[nd.name] = [E.union(*(a[0][c] for c in cols)) for cols in self.mats[nd.name][2]]
            elif nd.op == "affine":
                dep[nd.name] = [E if s == 0 else d for s, d in zip(nd.scale, a[0])]
            elif nd.op == "mul":
                zero = [[not d and val[s][r, 0] == 0 for r, d in enumerate(ds)] for s, ds in zip(nd.inputs, a)]
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
                out = [_union(a[0][c] for c in cols) for cols in self.mats[nd.name][2]]
            elif nd.op == "affine":
                out = [None if s == 0 else d for s, d in zip(nd.scale, a[0])]
            elif nd.op == "mul":
                u, v = (0, 1) if self.deg[nd.inputs[0]] else (1, 0)
                fv = dep[nd.inputs[v]]
                out = [None if d is None or (not fv[r] and val[nd.inputs[v]][r, 0] == 0) else d | fv[r] for r, d in enumerate(a[u])]
            else:
                out = [_union(pair) for pair in zip(a[0], a[1])]
            diff[nd.name] = out
        return diff[self.joint.output]

    def tables(self, q: int, a: int, where: str) -> tuple:
        """(exps[g][k], coefficients[i][g][k], rest[i]) at the query token a: each (position or None, values at
        b = 0..V-1, fmpq); exps from `_exps`. A missing second group is the constant 1 with coefficients 0."""
        if (q, a) in self.cache:
            return self.cache[q, a]
        V, out, m = self.vocab, self.joint.output, self.joint.out_dim
        X = fmpq_mat(self.joint.in_dim, V, [int(c == q * V + a if c // V == q else c % V == b) for c in range(self.joint.in_dim) for b in range(V)])
        base = self.evaluate(X, None)

        def pos(deps):
            free = deps - {q}
            require(len(free) <= 1, where, f"a table reads positions {sorted(free)} besides the query {q}: no ratio form")
            return next(iter(free), None)

        def row(mat, r):
            return [mat[r, b] for b in range(V)]

        src = {nd.name: nd.inputs[0] for nd in self.soft}
        exps = [_exps([(pos(self.score_deps[name][k]), row(base[src[name]], k)) for k in ms], where) for name, ms in self.groups]
        rest = [(pos(self.rest_deps[i]), row(base[out], i)) for i in range(m)]
        coef = [[[None] * len(ms) for _, ms in self.groups] for _ in range(m)]
        for o, (name, k) in enumerate(self.overrides[1:], start=1):
            deps = [v or frozenset() for v in self.coef_deps[o - 1]]
            if all(q not in v for v in deps) and (q, o) in self.shared:  # rows that do not read q: the same at every a
                rows = self.shared[q, o]
            else:
                d = self.evaluate(X, (name, k), base)[out] - base[out]
                rows = [row(d, i) for i in range(m)]
                self.shared[q, o] = rows
            g = next(t for t, (nm, ms) in enumerate(self.groups) if nm == name and k in ms)
            for i in range(m):
                coef[i][g][self.groups[g][1].index(k)] = (pos(deps[i]), rows[i])
        if len(exps) == 1:
            exps.append([(None, [fmpq(1)])])
            coef = [c + [[(None, [fmpq(0)])]] for c in coef]
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


def _exps(scores, where: str) -> list:
    """Per member: (position, E^ with |e^{s - s*} - E^| <= 2^-P E^ proved: P leading bits), s* the group's largest score."""
    top = max(v for _, vals in scores for v in vals)
    out = []
    with ctx.workprec(P + 64):
        for p, vals in scores:
            rounded = []
            for v in vals:
                e = arb(v - top).exp()
                m, x = (int(t) for t in e.mid().man_exp())
                cut = max(m.bit_length() - P, 0)
                k = fmpq((m + (1 << cut >> 1)) >> cut) * fmpq(2) ** (x + cut)
                require(k > 0 and abs(e - k) <= k / (1 << P), where, "an exp rounding is not proved within 2^-P of itself")
                rounded.append(k)
            out.append((p, rounded))
    return out


def _upper(products, allowed, where: str) -> fmpq:
    """An upper bound of the max over the leaf of sum_products coef * prod_factors (factor: (position or None, values))."""
    const, unary, pairs = fmpq(0), {}, {}
    for coef, factors in products:
        scalar, vecs = fmpq(coef), {}
        for p, vals in factors:
            if vals is None:  # a position marker: the product is read over that position too (constant along it)
                if p is not None and len(allowed[p]) > 1 and p not in vecs:
                    vecs[p] = [fmpq(1)] * len(allowed[p])
            elif p is None or len(allowed[p]) == 1:
                scalar *= vals[0 if p is None else allowed[p][0]]
            else:
                vecs[p] = [vals[t] for t in allowed[p]] if p not in vecs else [u * vals[t] for u, t in zip(vecs[p], allowed[p])]
        require(len(vecs) <= 2, where, f"a product reads {len(vecs)} free positions (at most 2)")
        ps = sorted(vecs)
        if not ps:
            const += scalar
        elif len(ps) == 1:
            unary.setdefault(ps[0], []).append((scalar, vecs[ps[0]]))
        else:
            pairs.setdefault(tuple(ps), []).append(([scalar * v for v in vecs[ps[0]]], vecs[ps[1]]))
    for p, terms in unary.items():  # sum_terms scalar * vec, as a (1 x n) (n x |S_p|) product
        unary[p] = (fmpq_mat(1, len(terms), [c for c, _ in terms]) * fmpq_mat(len(terms), len(allowed[p]), [v for _, vec in terms for v in vec])).entries()
    share = {p: sum(p in pq for pq in pairs) for p in unary}
    total = const + sum((max(u) for p, u in unary.items() if share[p] == 0), fmpq(0))
    for (j, k), terms in pairs.items():
        for p, other in ((j, k), (k, j)):
            if share.get(p):
                u, ones = [v / share[p] for v in unary[p]], [fmpq(1)] * len(allowed[other])
                terms.append((u, ones) if p == j else (ones, u))
        L = fmpq_mat(len(allowed[j]), len(terms), [u[r] for r in range(len(allowed[j])) for u, _ in terms])
        R = fmpq_mat(len(terms), len(allowed[k]), [v[c] for _, v in terms for c in range(len(allowed[k]))])
        total += max((L * R).entries())
    return total


def _biggest(tables, seen: dict) -> fmpq:
    """Sum over the tables of their largest |entry| (memoised per table in `seen`)."""
    for _, vals in tables:
        if id(vals) not in seen:
            seen[id(vals)] = (vals, max(abs(v) for v in vals))
    return sum((seen[id(vals)][1] for _, vals in tables), fmpq(0))


def check_ratio_leaf(fm: Form | None, leaf, box, bound: Fraction, where: str) -> int:
    """A leaf {"query": Q, "lambda": [2 m entries: "p/q" (split) or null (joint), for d_0 <= B, -d_0 <= B, d_1 ...]}
    proves |d_i| <= bound on the leaf's token box (Q's one token). Returns the number of rows checked."""
    require(fm is not None, where, "the joint graph has no softmax-ratio form (see certify/checker/attention.py)")
    m = fm.joint.out_dim
    require(isinstance(leaf, dict) and set(leaf) == {"query", "lambda"} and type(leaf["query"]) is int
            and 0 <= leaf["query"] < len(box.allowed) and len(box.allowed[leaf["query"]]) == 1
            and isinstance(leaf["lambda"], list) and len(leaf["lambda"]) == 2 * m, where,
            f"a ratio leaf is {{query: a position with one token, lambda: {2 * m} entries}}")
    lams = [None if v is None else parse_ratio(v) for v in leaf["lambda"]]
    require(all(v is not None for v, raw in zip(lams, leaf["lambda"]) if raw is not None), where, "lambda holds a value that is neither null nor 'p/q'")
    q, B = leaf["query"], _fq(bound)
    exps, coef, rest = fm.tables(q, box.allowed[q][0], where)
    allowed, seen = [list(ok) for ok in box.allowed], {}
    # a member's positions: its score's and its coefficients' in every row; each product of a term is read over all
    # the positions of its members (markers), so that a term's products fall in one bucket
    marks = [[[(p, None) for p in {e[0]} | {coef[i][g][k][0] for i in range(m)} if p is not None] for k, e in enumerate(exps[g])] for g in (0, 1)]
    for i in range(m):
        cs, r = coef[i], rest[i]
        rm = [(r[0], None)]
        big = (_biggest(cs[0], seen) + _biggest([r], seen) + abs(B), _biggest(cs[1], seen))
        for s, sigma in enumerate((1, -1)):
            what = f"row {i}: {'' if sigma > 0 else '-'}d_{i} <= bound is not proved"
            eta = fmpq(3, 1 << P)  # E_k E_l c <= E^_k E^_l (c + eta max|c|): the rounding moves the constant term
            if lams[2 * i + s] is None:  # joint: sum_{k,l} e1_k e2_l (sigma c1_k + sigma r - B + sigma c2_l) <= 0
                terms = [(e1, c1, m1, e2, c2, m2) for e1, c1, m1 in zip(exps[0], cs[0], marks[0]) for e2, c2, m2 in zip(exps[1], cs[1], marks[1])]
                prods = [(sigma, [e1, e2, c] + m1 + m2 + rm) for e1, c1, m1, e2, c2, m2 in terms for c in (c1, r, c2)]
                prods += [(-B + eta * (big[0] + big[1]), [e1, e2] + m1 + m2 + rm) for e1, _, m1, e2, _, m2 in terms]
                require(_upper(prods, allowed, where) <= 0, where, what + " (joint)")
                continue
            lam = fmpq(*lams[2 * i + s])
            for g, shift in ((0, -B - lam), (1, lam)):  # split: group 1's ratio <= lambda, group 2's <= -lambda
                pad = rm if g == 0 else []
                prods = [(sigma, [e, c] + mk + pad) for e, c, mk in zip(exps[g], cs[g], marks[g])]
                prods += [(shift + eta * (big[g] + abs(lam)), [e] + mk + pad) for e, mk in zip(exps[g], marks[g])]
                prods += [(sigma, [e, r] + mk + pad) for e, mk in zip(exps[g], marks[g])] if g == 0 else []
                require(_upper(prods, allowed, where) <= 0, where, what + f" (split, group {g + 1})")
    return 2 * m


def check_ratio_leaves(joint, leaves: list, bound: Fraction) -> int:
    """Every (leaf, its token box, where) of a token tree whose leaf is {"ratio": ...}; returns the rows checked."""
    fm = form(joint, leaves[0][1].vocab)
    return sum(check_ratio_leaf(fm, leaf, box, bound, where) for leaf, box, where in leaves)
