"""Transformers as graph models: every step an op of the existing table (checker/graph.py).

A sequence of n positions is one flattened vector per value, position-major (entry p*w + k is
feature k of position p). The model input `x` is the n one-hot token vectors concatenated (width
n*V), so a token-sequence domain (`input: {tokens: ...}`) is a product of simplices over x.

    b = TransformerBuilder(vocab=64, length=4)
    h = b.embed("embed", W_E, W_pos)                       # (n*d): W_E[tok_p] + W_pos[p]
    h = b.attention("blocks.0.attn", h, W_Q, W_K, W_V, W_O, queries=[3])   # residual added
    logits = b.unembed("unembed", h, W_U)                  # (len(queries)*V)
    b.save("model.npz", output=logits)

Attention for one head, query positions Q, causal pairs (i, j), j <= i:

    q, k      per-position `linear` (block-diagonal W_Q, W_K), gathered into pairs by the same linear;
    scores    s_ij = sum_c q_ic k_jc / sqrt(d_head): `mul` of the gathered q and k, then a `linear` sum;
    softmax   "difference" (default): a_ij = 1 / sum_l exp(s_il - s_ij), a `linear` of differences,
              `exp`, a `linear` sum and `reciprocal`: no product, so the only relaxations are the
              exp and reciprocal curves (this is tighter than the product form);
              "product": e = exp(s - shift), a_ij = e_ij * (1 / sum_l e_il), a `mul` (McCormick);
    values    the OV circuit W_V W_O as one per-position `linear` (width d), then
              out_i = sum_j a_ij vo_j: a `mul` of the broadcast pattern and the gathered vo, a `linear` sum;
    residual  the attention output added to the query positions' residual stream.

After an attention layer that keeps only some query positions, the residual stream has one block
per kept query position (`TransformerBuilder.positions` says which). The MLP and LayerNorm act per
position (block-diagonal). Weights follow TransformerLens: W_E (V, d), W_pos (n_ctx, d), W_Q, W_K,
W_V (d, d_head) per head, W_O (d_head, d), W_U (d, V), mlp W_in (d, m), W_out (m, d).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .graph import GraphBuilder


def block_diag(w: np.ndarray, copies: int) -> np.ndarray:
    """copies of the (out, in) matrix w on the diagonal."""
    out, inp = w.shape
    m = np.zeros((copies * out, copies * inp))
    for p in range(copies):
        m[p * out:(p + 1) * out, p * inp:(p + 1) * inp] = w
    return m


def select(rows: list[tuple[int, int]], width: int) -> np.ndarray:
    """A 0/1 matrix whose row r picks entry rows[r] = (block, k) of a blocked vector of block width `width`."""
    m = np.zeros((len(rows), max(b for b, _ in rows) * width + width if rows else 0))
    for r, (b, k) in enumerate(rows):
        m[r, b * width + k] = 1.0
    return m


class TransformerBuilder(GraphBuilder):
    """A GraphBuilder with transformer layers. `positions`: the positions of the residual stream's blocks."""

    def __init__(self, vocab: int, length: int):
        super().__init__(vocab * length)
        self.vocab, self.length, self.positions = vocab, length, list(range(length))

    def _pad(self, matrix: np.ndarray, width: int) -> np.ndarray:
        """Widen a selection matrix to read a value of `width` columns."""
        out = np.zeros((matrix.shape[0], width))
        out[:, :matrix.shape[1]] = matrix
        return out

    def embed(self, name: str, W_E, W_pos) -> str:
        """resid_p = W_E[token_p] + W_pos[p]: `name.tok` (W_E over the one-hot input) + `name.pos` (the
        positional embeddings, a constant: a linear node of x with zero weights), so that an explanation
        can name either."""
        W_E, W_pos = np.asarray(W_E, dtype=np.float64), np.asarray(W_pos, dtype=np.float64)
        if W_E.shape[0] != self.vocab or W_pos.shape[0] < self.length or W_pos.shape[1] != W_E.shape[1]:
            raise ValueError(f"{name}: W_E {W_E.shape} and W_pos {W_pos.shape} do not fit vocab {self.vocab}, length {self.length}")
        self.d_model = W_E.shape[1]
        self.embedding = (name, W_E, W_pos[:self.length])  # for attention_tokens (a first layer reading the one-hots)
        tok = self.linear(f"{name}.tok", "x", block_diag(W_E.T, self.length))
        pos = self.linear(f"{name}.pos", "x", np.zeros((self.length * self.d_model, self.in_dim)), W_pos[:self.length].reshape(-1))
        return self.add(name, tok, pos)

    def per_position(self, name: str, h: str, w, bias=None) -> str:
        """y_p = w h_p + bias for every block p of h (w: (out, in))."""
        w = np.asarray(w, dtype=np.float64)
        blocks = len(self.positions)
        b = None if bias is None else np.tile(np.asarray(bias, dtype=np.float64), blocks)
        return self.linear(name, h, block_diag(w, blocks), b)

    def attention(self, name: str, h: str, W_Q, W_K, W_V, W_O, *, queries=None, causal: bool = True,
                  softmax: str = "difference", b_Q=None, b_K=None, b_V=None, b_O=None, residual: bool = True,
                  qk_basis: str = "heads", W_U=None) -> str:
        """One attention head over the residual stream h (all of self.positions); returns the new
        residual stream at the query positions (`queries`, default all), or only the head's output
        if residual is False.

        qk_basis "svd" (no b_Q, b_K): q and k are written in the singular basis of W_Q W_K^T / sqrt(d_head)
        (q' = r U S, k' = r V: the same scores up to float64 rounding of the SVD, ~1e-15 relative), so
        the score's products are few large ones and many small ones: their McCormick errors are
        smaller than over the head's own basis. W_U given: the head's output is folded into the
        unembedding (products a_ij * (r_j W_V W_O W_U), one per logit) and the result is the logits
        at the query positions (a last attention layer of an attention-only model, no final LN)."""
        W_Q, W_K, W_V, W_O = (np.asarray(w, dtype=np.float64) for w in (W_Q, W_K, W_V, W_O))
        if qk_basis == "svd":
            if b_Q is not None or b_K is not None:
                raise ValueError(f"{name}: qk_basis svd has no biases")
            u, sv, vt = np.linalg.svd(W_Q @ W_K.T / np.sqrt(W_Q.shape[1]))
            rank = int(np.sum(sv > sv[0] * 1e-12)) if sv[0] > 0 else 1
            W_Q, W_K = u[:, :rank] * sv[:rank], vt[:rank].T * np.sqrt(W_Q.shape[1])  # the 1/sqrt(d_head) below cancels it
        elif qk_basis != "heads":
            raise ValueError(f"{name}: qk_basis {qk_basis!r}: use heads or svd")
        d, dh = W_Q.shape
        pos, n = self.positions, len(self.positions)
        queries = list(pos if queries is None else queries)
        qi = [pos.index(p) for p in queries]  # block indices of the query positions
        pairs = [(a, b) for a in qi for b in range(n) if not causal or pos[b] <= pos[a]]
        zero = np.zeros(dh)
        q = self.per_position(f"{name}.q", h, W_Q.T, zero if b_Q is None else b_Q)
        k = self.per_position(f"{name}.k", h, W_K.T, zero if b_K is None else b_K)
        qs = self.linear(f"{name}.q_pairs", q, self._pad(select([(a, c) for a, _ in pairs for c in range(dh)], dh), n * dh))
        ks = self.linear(f"{name}.k_pairs", k, self._pad(select([(b, c) for _, b in pairs for c in range(dh)], dh), n * dh))
        prod = self.binary(f"{name}.qk", "mul", qs, ks)
        scores = self.linear(f"{name}.scores", prod, block_diag(np.full((1, dh), 1.0 / np.sqrt(dh)), len(pairs)))
        rows = [[r for r, (a, _) in enumerate(pairs) if a == i] for i in qi]  # the pairs of each query row
        pattern = self._softmax(name, scores, rows, len(pairs), softmax)
        # OV circuit: vo_j = (W_V W_O)^T h_j + (W_O^T b_V + b_O), or folded into W_U (width V)
        ov_b = (np.zeros(d) if b_V is None else np.asarray(b_V) @ W_O) + (0 if b_O is None else np.asarray(b_O))
        ov = W_V @ W_O
        if W_U is not None:
            W_U = np.asarray(W_U, dtype=np.float64)
            ov, ov_b = ov @ W_U, ov_b @ W_U
        vo = self.per_position(f"{name}.ov", h, ov.T, None if b_V is None and b_O is None else ov_b)
        d_in, d = d, ov.shape[1]
        vsel = self.linear(f"{name}.v_pairs", vo, self._pad(select([(b, c) for _, b in pairs for c in range(d)], d), n * d))
        bcast = self.linear(f"{name}.pattern_b", pattern, select([(r, 0) for r in range(len(pairs)) for _ in range(d)], 1))
        weighted = self.binary(f"{name}.weighted", "mul", bcast, vsel)
        total = np.zeros((len(qi) * d, len(pairs) * d))
        for r, (a, _) in enumerate(pairs):
            i = qi.index(a)
            total[i * d:(i + 1) * d, r * d:(r + 1) * d] = np.eye(d)
        out = self.linear(f"{name}.out", weighted, total)
        self.positions = queries
        if not residual:
            return out
        keep = self.linear(f"{name}.resid_in", h, self._pad(select([(a, c) for a in qi for c in range(d_in)], d_in), n * d_in))
        if W_U is not None:  # the residual stream's logits at the query positions
            keep = self.per_position(f"{name}.direct", keep, W_U.T)
        return self.add(name, keep, out)

    def attention_tokens(self, name: str, h: str, W_Q, W_K, W_V, W_O, *, queries=None, causal: bool = True) -> str:
        """One attention head of a first layer (h the output of `embed`), written over the one-hot
        input itself. With r_p(t) = W_E[t] + W_pos[p] and QK = W_Q W_K^T / sqrt(d_head), the score of
        query i and key j on one-hot x is x_i^T (W_E QK W_E^T) x_j plus terms linear in x (sum_t x_{i,t} = 1):
        `name.scores_tok`, a `mul` of one-hot entries x_{i,t} x_{j,s} and a `linear` sum (the self pair
        is linear: x_{i,t} x_{i,s} = [t = s] x_{i,t}), and `name.scores_pos` (every term with W_pos, a
        `linear` of x). The output is sum_j sum_s (a_ij x_{j,s}) W_E[s] W_V W_O (`name.out_tok`, a `mul`
        of the pattern and one-hot entries) plus sum_j a_ij W_pos[j] W_V W_O (`name.out_pos`, linear in
        the pattern). Zero-ablating embed.pos, name.scores_pos and name.out_pos is exactly the model
        with W_pos = 0. It equals `attention` on every token sequence (one-hot x) and is a different
        function between them, so use it only with a token domain (`input: tokens`), where the
        relaxation sees the tokens' structure (products of one-hot entries in [0, 1], exact where a
        position has one token) instead of McCormick planes over wide q and k ranges."""
        _, W_E, W_pos = self.embedding
        W_Q, W_K, W_V, W_O = (np.asarray(w, dtype=np.float64) for w in (W_Q, W_K, W_V, W_O))
        V, n, d, dh = self.vocab, self.length, W_E.shape[1], W_Q.shape[1]
        queries = list(range(n) if queries is None else queries)
        pairs = [(i, j) for i in queries for j in range(n) if not causal or j <= i]
        qk = W_Q @ W_K.T / np.sqrt(dh)
        tt = W_E @ qk @ W_E.T  # (V, V): token-token scores
        cross = [(r, i, j) for r, (i, j) in enumerate(pairs) if i != j]
        pick = lambda rows: np.eye(self.in_dim)[rows]  # noqa: E731
        self_w, pos_w, pos_b = np.zeros((len(pairs), self.in_dim)), np.zeros((len(pairs), self.in_dim)), np.zeros(len(pairs))
        for r, (i, j) in enumerate(pairs):
            pos_w[r, j * V:(j + 1) * V] += W_pos[i] @ qk @ W_E.T  # W_pos[i] QK W_E[s]^T x_{j,s}
            pos_w[r, i * V:(i + 1) * V] += W_E @ qk @ W_pos[j]  # W_E[t] QK W_pos[j]^T x_{i,t}
            pos_b[r] = W_pos[i] @ qk @ W_pos[j]
            if i == j:
                self_w[r, i * V:(i + 1) * V] = np.diag(tt)
        scores = self.linear(f"{name}.self_scores", "x", self_w)
        if cross:
            prod = self.binary(f"{name}.qk", "mul", self.linear(f"{name}.q_onehot", "x", pick([i * V + t for _, i, _ in cross for t in range(V) for _ in range(V)])),
                               self.linear(f"{name}.k_onehot", "x", pick([j * V + s for _, _, j in cross for _ in range(V) for s in range(V)])))
            cross_w = np.zeros((len(pairs), len(cross) * V * V))
            for c, (r, _, _) in enumerate(cross):
                cross_w[r, c * V * V:(c + 1) * V * V] = tt.reshape(-1)
            scores = self.add(f"{name}.scores_tok", scores, self.linear(f"{name}.cross_scores", prod, cross_w))
        scores = self.add(f"{name}.scores", scores, self.linear(f"{name}.scores_pos", "x", pos_w, pos_b))
        rows = [[r for r, (a, _) in enumerate(pairs) if a == i] for i in queries]
        pattern = self._softmax(name, scores, rows, len(pairs), "difference")
        bcast = self.linear(f"{name}.pattern_b", pattern, select([(r, 0) for r in range(len(pairs)) for _ in range(V)], 1))
        onehot = self.linear(f"{name}.v_onehot", "x", pick([j * V + s for _, j in pairs for s in range(V)]))
        weighted = self.binary(f"{name}.weighted", "mul", bcast, onehot)
        ov = W_V @ W_O
        tok, pos = np.zeros((len(queries) * d, len(pairs) * V)), np.zeros((len(queries) * d, len(pairs)))
        for r, (i, j) in enumerate(pairs):
            q = queries.index(i)
            tok[q * d:(q + 1) * d, r * V:(r + 1) * V] = (W_E @ ov).T
            pos[q * d:(q + 1) * d, r] = W_pos[j] @ ov
        out = self.add(f"{name}.out", self.linear(f"{name}.out_tok", weighted, tok), self.linear(f"{name}.out_pos", pattern, pos))
        keep = self.linear(f"{name}.resid_in", h, self._pad(select([(i, c) for i in queries for c in range(d)], d), n * d))
        self.positions = queries
        return self.add(name, keep, out)

    def _softmax(self, name: str, scores: str, rows: list[list[int]], width: int, form: str) -> str:
        if form == "softmax":  # one `softmax` node over each query row's pairs (its relaxation knows the row sums to 1)
            ids = np.zeros(width)
            for i, row in enumerate(rows):
                ids[row] = i
            return self.softmax(f"{name}.pattern", scores, ids)
        if form == "difference":  # a_r = 1 / sum_{l in row(r)} exp(s_l - s_r)
            diffs = [(r, l) for row in rows for r in row for l in row]
            w = np.zeros((len(diffs), width))
            for t, (r, l) in enumerate(diffs):
                w[t, l] += 1.0
                w[t, r] -= 1.0
            e = self.unary(f"{name}.exp", "exp", self.linear(f"{name}.diffs", scores, w))
            sums = np.zeros((width, len(diffs)))
            for t, (r, _) in enumerate(diffs):
                sums[r, t] = 1.0
            return self.unary(f"{name}.pattern", "reciprocal", self.linear(f"{name}.denominator", e, sums))
        if form == "product":  # e = exp(s), a_r = e_r * (1 / sum_{l in row(r)} e_l)
            e = self.unary(f"{name}.exp", "exp", scores)
            sums = np.zeros((len(rows), width))
            for i, row in enumerate(rows):
                sums[i, row] = 1.0
            inv = self.unary(f"{name}.inv", "reciprocal", self.linear(f"{name}.denominator", e, sums))
            which = [next(i for i, row in enumerate(rows) if r in row) for r in range(width)]
            return self.binary(f"{name}.pattern", "mul", e, self.linear(f"{name}.inv_b", inv, select([(i, 0) for i in which], 1)))
        raise ValueError(f"softmax form {form!r}: use softmax, difference or product")

    def mlp(self, name: str, h: str, W_in, b_in, W_out, b_out, act: str = "gelu") -> str:
        """h + W_out act(W_in h + b_in) + b_out per position."""
        mid = self.unary(f"{name}.act", act, self.per_position(f"{name}.in", h, np.asarray(W_in).T, b_in))
        return self.add(name, h, self.per_position(f"{name}.out", mid, np.asarray(W_out).T, b_out))

    def layernorm_positions(self, name: str, h: str, w, b, eps: float = 1e-5) -> str:
        """LayerNorm of each position's block (the composition of GraphBuilder.layernorm, block-diagonal)."""
        d, blocks = self.d_model, len(self.positions)
        mean = block_diag(np.full((d, d), 1.0 / d), blocks)
        centred = self.linear(f"{name}.centre", h, np.eye(d * blocks) - mean)
        var = self.linear(f"{name}.var", self.unary(f"{name}.sq", "square", centred), mean)
        inv = self.unary(f"{name}.rsqrt", "rsqrt", self.affine(f"{name}.eps", var, 1.0, eps))
        return self.affine(name, self.binary(f"{name}.norm", "mul", centred, inv), np.tile(w, blocks), np.tile(b, blocks))

    def unembed(self, name: str, h: str, W_U, b_U=None) -> str:
        """logits per position block: W_U^T h_p + b_U (width len(positions) * V)."""
        W_U = np.asarray(W_U, dtype=np.float64)
        return self.per_position(name, h, W_U.T, b_U)


def attn_only(params: dict, *, vocab: int, length: int, queries=None, softmax: str = "difference",
              fold: bool = False) -> TransformerBuilder:
    """An attention-only transformer (TransformerLens names: W_E, W_pos, blocks.{l}.attn.W_Q/W_K/W_V/W_O
    of shape (n_heads, ...) and optional b_*, W_U, b_U) as a graph; the last layer's heads read only
    `queries` (default all positions). Returns the builder; its output node is `unembed`.

    fold (one layer, one head, no b_Q, b_K, b_O): the head is written with qk_basis svd and its OV
    circuit folded into W_U (`attention`), the form whose relaxation is tightest (Max-of-K V = 16:
    CROWN 151 instead of 241 over all sequences); the same function up to float64 rounding."""
    b = TransformerBuilder(vocab, length)
    if fold:
        pre = "blocks.0.attn"
        if any(k.startswith("blocks.") and not k.startswith(pre + ".") for k in params) or np.asarray(params[pre + ".W_Q"]).shape[0] != 1 \
                or any(f"{pre}.b_{c}" in params for c in "QKO"):
            raise ValueError("fold: one layer, one head, no b_Q, b_K, b_O")
        h = b.embed("embed", params["W_E"], params["W_pos"])
        b_V = np.asarray(params[pre + ".b_V"])[0] if pre + ".b_V" in params else None
        h = b.attention(f"{pre}.h0", h, *(np.asarray(params[f"{pre}.W_{c}"])[0] for c in "QKVO"), queries=queries, softmax=softmax,
                        qk_basis="svd", W_U=params["W_U"], b_V=b_V)
        b.affine("unembed", h, 1.0, np.tile(np.asarray(params.get("b_U", np.zeros(vocab)), dtype=np.float64), len(b.positions)))
        return b
    h = b.embed("embed", params["W_E"], params["W_pos"])
    layers = sorted({int(k.split(".")[1]) for k in params if k.startswith("blocks.")})
    for layer in layers:
        pre = f"blocks.{layer}.attn"
        heads = np.asarray(params[f"{pre}.W_Q"]).shape[0]
        last = layer == layers[-1]
        outs = []
        start = h
        saved = list(b.positions)
        for head in range(heads):
            b.positions = list(saved)
            bias = {f"b_{c}": (np.asarray(params[f"{pre}.b_{c}"])[head] if f"{pre}.b_{c}" in params else None) for c in "QKV"}
            outs.append(b.attention(f"{pre}.h{head}", start, *(np.asarray(params[f"{pre}.W_{c}"])[head] for c in "QKVO"),
                                    queries=queries if last else None, softmax=softmax, residual=False, **bias))
        qi = [saved.index(p) for p in b.positions]
        d = b.d_model
        keep = b.linear(f"{pre}.resid_in", start, b._pad(select([(a, c) for a in qi for c in range(d)], d), len(saved) * d))
        total = keep
        for head, o in enumerate(outs):
            total = b.add(f"{pre}.sum{head}", total, o)
        if f"{pre}.b_O" in params:
            total = b.affine(f"{pre}", total, 1.0, np.tile(np.asarray(params[f"{pre}.b_O"]), len(b.positions)))
        h = total
    b.unembed("unembed", h, params["W_U"], params.get("b_U"))
    return b


def tl_graph(params: dict, *, vocab: int, length: int, queries=None, softmax: str = "difference",
             act: str = "relu", eps: float = 1e-5) -> TransformerBuilder:
    """A transformer with MLP blocks from TransformerLens names (as attn_only, plus per layer
    blocks.{l}.mlp.W_in (d, m), b_in (m), W_out (m, d), b_out (d), and optional LayerNorms
    blocks.{l}.ln1.w/b (before the heads), blocks.{l}.ln2.w/b (before the MLP), ln_final.w/b (before W_U),
    TransformerLens's LayerNorm with `eps`, per position, as GraphBuilder's composition): each layer is
    resid + attention(ln1(resid)) (its heads summed, as attn_only), then resid + W_out act(W_in ln2(resid)
    + b_in) + b_out, node `blocks.{l}.mlp` (its parts `.in`, `.act` (the neurons: an ablate site), `.out`).
    The last layer's heads read only `queries`. Output node `unembed`. Other ln* arrays are refused."""
    layers = sorted({int(k.split(".")[1]) for k in params if k.startswith("blocks.")})
    norms = [f"blocks.{layer}.{n}" for layer in layers for n in ("ln1", "ln2")] + ["ln_final"]
    known = {f"{n}.{c}" for n in norms for c in "wb"}
    bad = sorted(k for k in params if (k.startswith("ln") or ".ln" in k) and k not in known) + \
        sorted(f"{n}.{c}" for n in norms for c in "wb" if f"{n}.w" in params or f"{n}.b" in params if f"{n}.{c}" not in params)
    if bad:
        raise ValueError(f"tl_graph: LayerNorm arrays {bad[:3]} are not read (give w and b of ln1, ln2, ln_final)")
    attn = {k: v for k, v in params.items() if ".mlp." not in k}
    b = TransformerBuilder(vocab, length)

    def norm(name: str, x: str) -> str:
        return b.layernorm_positions(name, x, params[f"{name}.w"], params[f"{name}.b"], eps) if f"{name}.w" in params else x

    h = b.embed("embed", params["W_E"], params["W_pos"])
    for layer in layers:
        pre = f"blocks.{layer}.attn"
        saved, outs = list(b.positions), []
        x = norm(f"blocks.{layer}.ln1", h)
        for head in range(np.asarray(params[f"{pre}.W_Q"]).shape[0]):
            b.positions = list(saved)
            bias = {f"b_{c}": (np.asarray(attn[f"{pre}.b_{c}"])[head] if f"{pre}.b_{c}" in attn else None) for c in "QKV"}
            outs.append(b.attention(f"{pre}.h{head}", x, *(np.asarray(attn[f"{pre}.W_{c}"])[head] for c in "QKVO"),
                                    queries=queries if layer == layers[-1] else None, softmax=softmax, residual=False, **bias))
        qi = [saved.index(p) for p in b.positions]
        total = b.linear(f"{pre}.resid_in", h, b._pad(select([(a, c) for a in qi for c in range(b.d_model)], b.d_model), len(saved) * b.d_model))
        for head, o in enumerate(outs):
            total = b.add(f"{pre}.sum{head}", total, o)
        if f"{pre}.b_O" in attn:
            total = b.affine(pre, total, 1.0, np.tile(np.asarray(attn[f"{pre}.b_O"]), len(b.positions)))
        h = total
        mlp = f"blocks.{layer}.mlp"
        if f"{mlp}.W_in" in params:
            mid = b.unary(f"{mlp}.act", act, b.per_position(f"{mlp}.in", norm(f"blocks.{layer}.ln2", h), np.asarray(params[f"{mlp}.W_in"]).T,
                                                            params[f"{mlp}.b_in"]))
            h = b.add(mlp, h, b.per_position(f"{mlp}.out", mid, np.asarray(params[f"{mlp}.W_out"]).T, params[f"{mlp}.b_out"]))
    b.unembed("unembed", norm("ln_final", h), params["W_U"], params.get("b_U"))
    return b


def read_tl(path: str | Path) -> dict:
    """The arrays of a TransformerLens-style .npz (W_E, W_pos, blocks.{l}.attn.W_Q, ... , W_U), as float64."""
    with np.load(path) as z:
        return {k: np.asarray(z[k], dtype=np.float64) for k in z.files}


def forward(params: dict, tokens: np.ndarray, act: str = "relu", eps: float = 1e-5) -> np.ndarray:
    """Direct numpy forward of a transformer (TransformerLens conventions, causal; MLP blocks with `act`
    where blocks.{l}.mlp.W_in exists; LayerNorms ln1, ln2, ln_final where their w is given):
    tokens (batch, n) -> logits (batch, n, V). The reference the graph is tested against."""
    def ln(x, name):
        if f"{name}.w" not in params:
            return x
        c = x - x.mean(-1, keepdims=True)
        return c / np.sqrt((c * c).mean(-1, keepdims=True) + eps) * params[f"{name}.w"] + params[f"{name}.b"]

    tokens = np.asarray(tokens)
    n = tokens.shape[1]
    h = params["W_E"][tokens] + params["W_pos"][:n]
    layers = sorted({int(k.split(".")[1]) for k in params if k.startswith("blocks.")})
    mask = np.tril(np.ones((n, n), dtype=bool))
    for layer in layers:
        pre = f"blocks.{layer}.attn"
        out, x = np.zeros_like(h), ln(h, f"blocks.{layer}.ln1")
        for head in range(params[f"{pre}.W_Q"].shape[0]):
            def proj(c):
                b = params.get(f"{pre}.b_{c}")
                return x @ params[f"{pre}.W_{c}"][head] + (0 if b is None else b[head])
            q, k, v = proj("Q"), proj("K"), proj("V")
            s = np.einsum("bic,bjc->bij", q, k) / np.sqrt(q.shape[-1])
            s = np.where(mask, s, -np.inf)
            a = np.exp(s - s.max(-1, keepdims=True))
            a = a / a.sum(-1, keepdims=True)
            out = out + np.einsum("bij,bjc->bic", a, v) @ params[f"{pre}.W_O"][head]
        h = h + out + params.get(f"{pre}.b_O", 0)
        mlp = f"blocks.{layer}.mlp"
        if f"{mlp}.W_in" in params:  # relu (tl_graph's default) or gelu (exact, erf)
            z = ln(h, f"blocks.{layer}.ln2") @ params[f"{mlp}.W_in"] + params[f"{mlp}.b_in"]
            mid = np.maximum(z, 0) if act == "relu" else z * (1 + np.vectorize(math.erf)(z / np.sqrt(2))) / 2
            h = h + mid @ params[f"{mlp}.W_out"] + params[f"{mlp}.b_out"]
    return ln(h, "ln_final") @ params["W_U"] + params.get("b_U", 0)


def one_hot(tokens: np.ndarray, vocab: int) -> np.ndarray:
    """(batch, n) token ids -> (batch, n*V) concatenated one-hot vectors (the graph's input x)."""
    tokens = np.asarray(tokens)
    out = np.zeros((tokens.shape[0], tokens.shape[1] * vocab))
    rows = np.arange(tokens.shape[0])[:, None]
    out[rows, np.arange(tokens.shape[1]) * vocab + tokens] = 1.0
    return out
