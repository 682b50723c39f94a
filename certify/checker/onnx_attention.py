"""Attention in ONNX graphs (TRUSTED): the ops of an exported transformer, as rows of the op table.

Called by `onnx_graph.read_onnx_graph` for each node (`Attention.step`; False: not ours). A value of
shape [r, c] is the flat row-major vector of r*c entries (the token domain's x: [n, V] one-hots).

    MatMul(value [.., k], constant [k, m])  block-diagonal `linear` (one copy of W per leading row)
    MatMul(value [m, k], value [k, p])      out_ij = sum_c X_ic Y_cj: two selection `linear`s, a `mul`
                                            and a summing `linear` (as TransformerBuilder.attention)
    Transpose(value)                        a permutation `linear`
    Gather(value, constant indices)         a selection `linear`
    Add(value, constant M), M with -inf     a causal (or any) mask: the masked entries are dropped
                                            and may be read by a Softmax only (an ordinary add of
                                            M's finite entries stays)
    Softmax(value, last axis), not last     per row, over the unmasked entries r:
                                            a_r = 1 / sum_l exp(s_l - s_r): the `softmax` op, one group
                                            per row (its back-substitution uses that a row sums to 1),
                                            scattered back with masked entries exactly 0

Soundness of the mask: softmax gives an entry of -inf weight exp(-inf) / sum = 0 exactly, when its
row has a finite entry (checked: a fully masked row is refused), and the other weights are the
softmax of the finite entries alone; so dropping them is the ONNX function itself. A finite large
negative mask (-1e9) is not -inf: it is an ordinary add of a constant, kept exactly (its entries then
get weights exp(-1e9 - ...) > 0, bounded as such). Entries known to be exactly 0 (masked weights)
are left out of products.
"""

from __future__ import annotations

import math

from .onnx import _bcast

ATTRS = {"Transpose": {"perm"}, "Gather": {"axis"}}
NEG = float("-inf")


class Attention:
    def __init__(self, emit, vals: dict, consts: dict):
        self.emit, self.vals, self.consts = emit, vals, consts
        self.masked = {}  # a masked value: name -> (node, shape, masked flat entries); read by a Softmax only
        self.zero = {}  # node -> flat entries exactly 0
        self.sums = {}  # an Add of a value and a product: name -> (the value's node, the product's name)
        self.products = {}  # a MatMul of two values: name -> (x, y, m, k, p)

    def _lin(self, name, src, rows, width, bias=None):
        """A linear node from sparse rows (lists of (column, weight)) over `src` of `width` entries."""
        w = [[0] * width for _ in rows]
        for r, row in zip(w, rows):
            for c, t in row:
                r[c] += t
        return self.emit(name, "linear", [src], weight=w, bias=bias or [0] * len(rows))

    def _product(self, out, x, y, m, k, p):
        """out = X Y for X [m, k], Y [k, p] (nodes x, y), entries known to be 0 left out."""
        zx, zy = self.zero.get(x, set()), self.zero.get(y, set())
        terms = [(i, j, c) for i in range(m) for j in range(p) for c in range(k) if i * k + c not in zx and c * p + j not in zy]
        lhs = self._lin(f"{out}.lhs", x, [[(i * k + c, 1)] for i, _, c in terms], m * k)
        rhs = self._lin(f"{out}.rhs", y, [[(c * p + j, 1)] for _, j, c in terms], k * p)
        prod = self.emit(f"{out}.mul", "mul", [lhs, rhs])
        sums = [[] for _ in range(m * p)]
        for t, (i, j, _) in enumerate(terms):
            sums[i * p + j].append((t, 1))
        return self._lin(out, prod, sums, len(terms))

    def step(self, op, a, nm, ins, out, last) -> bool:
        vals, consts = self.vals, self.consts
        if any(s in self.masked for s in ins) and op != "Softmax":
            raise ValueError(f"{nm} ({op}) reads a -inf-masked value: only a Softmax may")
        inf = [s for s in ins if s in consts and NEG in consts[s][1]]
        if inf and not (op == "Add" and len(inf) == 1 and any(s in vals for s in ins)):
            raise ValueError(f"{nm} ({op}) reads a constant with -inf: only an attention mask added to a value may hold -inf")
        if op == "Add" and inf:
            (x, sh), (cd, cv) = vals[next(s for s in ins if s in vals)], consts[inf[0]]
            c, sh = _bcast(cv, cd, sh, nm)
            shift = [0 if t == NEG else t for t in c]
            x = self.emit(out, "affine", [x], scale=[1] * len(c), shift=shift) if any(shift) else x
            self.masked[out] = (x, sh, {i for i, t in enumerate(c) if t == NEG})
            return True
        if op == "Softmax" and (not last or ins[0] in self.masked):
            x, sh, masked = self.masked[ins[0]] if ins[0] in self.masked else (*vals[ins[0]], set())
            if a.get("axis", -1) % len(sh) != len(sh) - 1 or "axis" not in a and len(sh) > 2:  # opsets < 13: default axis 1, flattened
                raise ValueError(f"{nm} (Softmax): over axis {a.get('axis', 'default')} of {list(sh)}; only an explicit last axis is supported")
            w = sh[-1]
            rows = [[r * w + c for c in range(w) if r * w + c not in masked] for r in range(math.prod(sh[:-1]))]
            if not all(rows):
                raise ValueError(f"{nm} (Softmax): a row is masked entirely (-inf everywhere: NaN)")
            kept = [f for row in rows for f in row]
            at = {f: i for i, f in enumerate(kept)}
            scores = self._lin(f"{out}.scores", x, [[(f, 1)] for f in kept], w * len(rows))  # the unmasked entries, row by row
            pattern = self.emit(f"{out}.pattern", "softmax", [scores], groups=[r for r, row in enumerate(rows) for _ in row])
            vals[out] = self._lin(out, pattern, [[(at[f], 1)] if f in at else [] for f in range(w * len(rows))], len(kept)), sh
            self.zero[out] = set(masked)
            return True
        if op == "MatMul" and len(ins) == 2 and ins[0] in vals and ins[1] in vals:
            (x, sx), (y, sy) = vals[ins[0]], vals[ins[1]]
            sx, sy = sx[-2:] if math.prod(sx[:-2]) == 1 else sx, sy[-2:] if math.prod(sy[:-2]) == 1 else sy
            if len(sx) != 2 or len(sy) != 2 or sx[1] != sy[0]:
                raise ValueError(f"{nm} (MatMul): values {list(vals[ins[0]][1])} and {list(vals[ins[1]][1])}: needs matrices [m, k] and [k, p]")
            vals[out] = self._product(out, x, y, *sx, sy[1]), (sx[0], sy[1])
            self.products[out] = (x, y, *sx, sy[1])
            return True
        if op == "Add" and len(ins) == 2 and all(t in vals for t in ins) and any(t in self.products for t in ins) \
                and vals[ins[0]][1] == vals[ins[1]][1]:  # h + X Y: kept apart so that a following MatMul by W distributes
            other, prod = (ins[1], ins[0]) if ins[0] in self.products else ins
            vals[out] = self.emit(out, "add", [vals[other][0], vals[prod][0]]), vals[prod][1]
            self.sums[out] = (vals[other][0], prod)
            return True
        if op == "MatMul" and len(ins) == 2 and ins[0] in self.sums and ins[1] in consts and len(consts[ins[1]][0]) == 2:
            (h, prod), (wd, wv), sh = self.sums[ins[0]], consts[ins[1]], vals[ins[0]][1]  # (h + X Y) W = h W + X (Y W)
            x, y, m, k, p = self.products[prod]
            if wd[0] != p:
                raise ValueError(f"{nm} (MatMul): weight {list(wd)} does not fit the value {list(sh)}")
            hw = self._lin(f"{out}.direct", h, [[(b * p + i, wv[i * wd[1] + j]) for i in range(p)] for b in range(m) for j in range(wd[1])], m * p)
            yw = self._lin(f"{out}.rhs_w", y, [[(b * p + i, wv[i * wd[1] + j]) for i in range(p)] for b in range(k) for j in range(wd[1])], k * p)
            vals[out] = self.emit(out, "add", [hw, self._product(f"{out}.head", x, yw, m, k, wd[1])]), (m, wd[1])
            return True
        if op == "MatMul" and len(ins) == 2 and ins[0] in self.products and ins[1] in consts and len(consts[ins[1]][0]) == 2:
            (x, y, m, k, p), (wd, wv) = self.products[ins[0]], consts[ins[1]]  # (X Y) W = X (Y W): W_O folded into the values
            if wd[0] != p:
                raise ValueError(f"{nm} (MatMul): weight {list(wd)} does not fit the value {[m, p]}")
            yw = self._lin(f"{out}.rhs_w", y, [[(b * p + i, wv[i * wd[1] + j]) for i in range(p)] for b in range(k) for j in range(wd[1])], k * p)
            vals[out] = self._product(out, x, yw, m, k, wd[1]), (m, wd[1])
            self.products[out] = (x, yw, m, k, wd[1])
            return True
        if op == "MatMul" and len(ins) == 2 and ins[0] in vals and ins[1] in consts and math.prod(vals[ins[0]][1][:-1]) > 1:
            (x, sh), (wd, wv) = vals[ins[0]], consts[ins[1]]
            if len(wd) != 2 or wd[0] != sh[-1]:
                raise ValueError(f"{nm} (MatMul): weight {list(wd)} does not fit the value {list(sh)}")
            (k, o), blocks = wd, math.prod(sh[:-1])
            vals[out] = self._lin(out, x, [[(b * k + i, wv[i * o + j]) for i in range(k)] for b in range(blocks) for j in range(o)], blocks * k), sh[:-1] + (o,)
            return True
        if op == "Transpose":
            x, sh = vals[ins[0]]
            perm = a.get("perm") or list(range(len(sh)))[::-1]
            if sorted(perm) != list(range(len(sh))):
                raise ValueError(f"{nm} (Transpose): perm {perm} for {list(sh)}")
            to = tuple(sh[p] for p in perm)
            strides = [math.prod(sh[d + 1:]) for d in range(len(sh))]
            src = []
            for f in range(math.prod(to)):
                idx = [f // math.prod(to[d + 1:]) % to[d] for d in range(len(to))]
                src.append([(sum(idx[d] * strides[perm[d]] for d in range(len(to))), 1)])
            vals[out] = self._lin(out, x, src, math.prod(sh)), to
            return True
        if op == "Gather":
            if ins[0] not in vals or len(ins) != 2 or ins[1] not in consts:
                raise ValueError(f"{nm} (Gather): needs a value and constant indices")
            (x, sh), (idims, iv) = vals[ins[0]], consts[ins[1]]
            ax = a.get("axis", 0) % len(sh)
            if any(not isinstance(i, int) or not -sh[ax] <= i < sh[ax] for i in iv):
                raise ValueError(f"{nm} (Gather): indices {iv[:8]} out of range for axis {ax} of {list(sh)}")
            inner, outer = math.prod(sh[ax + 1:]), math.prod(sh[:ax])
            rows = [[((o * sh[ax] + i % sh[ax]) * inner + r, 1)] for o in range(outer) for i in iv for r in range(inner)]
            vals[out] = self._lin(out, x, rows, math.prod(sh)), sh[:ax] + tuple(idims) + sh[ax + 1:]
            return True
        return False
