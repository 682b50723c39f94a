"""Token-sequence domains in the engine (UNTRUSTED): concretisation, falsifier, exhaustive oracle,
and branch and bound over tokens.

x is n concatenated one-hot vectors (width n*V); position p's one-hot ranges over its allowed tokens
(`certify.checker.graph.TokenBox`, whose back-substitution this mirrors in float64). The checker
re-derives every bound; this module only proposes.

- `FloatTokens`: the box of x plus `lowest(c)`, the exact minimum of c @ x over the domain, per row.
- `falsify_tokens`: random sequences, then greedy coordinate ascent (one position at a time, every
  allowed token), in JAX batches; the best sequence found (a lower bound, replayed exactly).
- `exhaustive`: max over all sequences of max_i |d_i| (the oracle for tests and benchmarks).
- `token_bab`: splits a position's allowed set in two until each leaf's CROWN bound is at most the
  target or the budget is spent; leaves are certificate subtrees the checker re-verifies.
"""

from __future__ import annotations

import itertools
import time
from fractions import Fraction

import numpy as np


class FloatTokens(tuple):
    """(lower, upper) float arrays of x, plus the token structure."""

    def __new__(cls, vocab: int, allowed):
        allowed = tuple(tuple(int(t) for t in ok) for ok in allowed)
        up = np.zeros(vocab * len(allowed))
        for p, ok in enumerate(allowed):
            up[[p * vocab + t for t in ok]] = 1.0
        box = super().__new__(cls, (np.zeros_like(up), up))
        box.vocab, box.allowed = vocab, allowed
        box.index = [np.array([p * vocab + t for t in ok]) for p, ok in enumerate(allowed)]
        return box

    def lowest(self, c: np.ndarray) -> np.ndarray:
        return sum(c[:, idx].min(axis=1) for idx in self.index)

    def size(self) -> int:
        return int(np.prod([len(ok) for ok in self.allowed], dtype=object))


def as_float(box):
    """The engine's float box for a checker box: FloatTokens for a TokenBox, else None."""
    allowed = getattr(box, "allowed", None)
    return None if allowed is None else FloatTokens(box.vocab, allowed)


def one_hot(tokens: np.ndarray, vocab: int) -> np.ndarray:
    tokens = np.asarray(tokens)
    out = np.zeros((tokens.shape[0], tokens.shape[1] * vocab))
    out[np.arange(tokens.shape[0])[:, None], np.arange(tokens.shape[1]) * vocab + tokens] = 1.0
    return out


def _objective(graph):
    """A batch function: token ids (batch, n) -> max_i |d_i| per sequence (float64; one-hot made in
    numpy, the graph jitted, the reduction in numpy: a jitted jnp.max(jnp.abs(d), axis=-1) returned
    -inf rows, depending on the batch size, on JAX 0.10.2 (CPU) for these graphs)."""
    import jax
    import jax.numpy as jnp

    from .graph import ENGINE, floats

    nodes, out = floats(graph), graph.output

    @jax.jit
    def fn(x):
        values = {"x": x}
        for n in nodes:
            values[n.name] = ENGINE[n.op].jeval(n, [values[s] for s in n.inputs])
        return values[out]

    def batch(tokens, vocab):
        values = np.abs(np.asarray(fn(jnp.asarray(one_hot(tokens, vocab))))).max(axis=1)
        if not np.all(values >= 0):  # not finite, or the reduction misbehaved (see above): refuse, never guess
            raise RuntimeError(f"the JAX evaluation of the joint graph gave {values[~(values >= 0)][:3]} (NaN, inf or -inf)")
        return values

    return batch


def exhaustive(graph, box, batch: int = 1 << 13) -> tuple[float, np.ndarray, float]:
    """(max over every sequence of the domain of max_i |d_i|, its tokens, seconds): JAX, float32."""
    t0 = time.perf_counter()
    fn = _objective(graph)
    allowed = [np.array(ok) for ok in box.allowed]
    sizes = [len(ok) for ok in allowed]
    total = int(np.prod(sizes))
    best, arg = -np.inf, None
    for start in range(0, total, batch):
        idx = np.arange(start, min(start + batch, total))
        digits, rest = [], idx
        for s in reversed(sizes):
            digits.append(rest % s)
            rest = rest // s
        tokens = np.stack([ok[d] for ok, d in zip(allowed, reversed(digits))], axis=1).astype(np.int32)
        values = np.asarray(fn(tokens, box.vocab))
        k = int(values.argmax())
        if values[k] > best:
            best, arg = float(values[k]), tokens[k]
    return best, arg, time.perf_counter() - t0


def falsify_tokens(graph, box, *, starts: int = 256, rounds: int = 4, seed: int = 0) -> np.ndarray:
    """The best token sequence found by random starts and greedy coordinate ascent (per position, try
    every allowed token, keep the best); returned as token ids."""
    fn = _objective(graph)
    rng = np.random.default_rng(seed)
    allowed = [np.array(ok) for ok in box.allowed]
    n = len(allowed)
    tokens = np.stack([rng.choice(ok, size=starts) for ok in allowed], axis=1).astype(np.int32)
    values = np.asarray(fn(tokens, box.vocab))
    keep = np.argsort(-values)[:max(4, starts // 16)]
    tokens, values = tokens[keep], values[keep]
    for _ in range(rounds):
        changed = False
        for p in range(n):
            cand = np.repeat(tokens, len(allowed[p]), axis=0)
            cand[:, p] = np.tile(allowed[p], len(tokens))
            v = np.asarray(fn(cand, box.vocab)).reshape(len(tokens), len(allowed[p]))
            best = v.argmax(1)
            better = v[np.arange(len(tokens)), best] > values
            changed |= bool(better.any())
            tokens[better, p] = allowed[p][best[better]]
            values = np.maximum(values, v[np.arange(len(tokens)), best])
        if not changed:
            break
    return tokens[int(values.argmax())]


def split_allowed(box, position: int, parts: int = 2):
    """`parts` children of a token box: position's allowed set cut into that many runs (in the order given)."""
    ok = box.allowed[position]
    cuts = [len(ok) * i // parts for i in range(parts + 1)]
    return [FloatTokens(box.vocab, box.allowed[:position] + (ok[a:b],) + box.allowed[position + 1:]) for a, b in zip(cuts, cuts[1:]) if b > a]


def token_bab(bound_fn, box, target: float, *, max_leaves: int = 4096, seconds: float = 60.0, choose=None, strong: bool = False,
              parts: int = 2):
    """Branch and bound over token sets. bound_fn(FloatTokens) -> (bound, steps). Splits the leaf
    with the largest bound at the position `choose(box)` (default: the position with the most
    allowed tokens, the later on ties) into `parts` runs, until every leaf is <= target, or the budget is spent.
    strong: every position with more than one token is split on trial and the one whose worst child is best
    is kept (strong branching: a bound per candidate child, but fewer leaves for the checker to re-verify).
    Returns (bound, tree, leaves): tree nodes are {"position", "parts", "children"} or leaves {"steps"}."""
    choose = choose or (lambda b: max(range(len(b.allowed)), key=lambda p: (len(b.allowed[p]), p)))  # ties: the later position
    t0 = time.perf_counter()
    root = {"box": box}
    root["bound"], root["steps"] = bound_fn(box)
    leaves = [root]
    counter = itertools.count()

    def children(leaf, p):
        return [dict(zip(("bound", "steps"), bound_fn(c)), box=c, id=next(counter)) for c in split_allowed(leaf["box"], p, parts)]

    while len(leaves) < max_leaves and time.perf_counter() - t0 < seconds:
        leaves.sort(key=lambda leaf: -leaf["bound"])
        worst = leaves[0]
        if worst["bound"] <= target or max(len(ok) for ok in worst["box"].allowed) == 1:
            break
        if strong:
            trials = [(p, children(worst, p)) for p in range(len(worst["box"].allowed)) if len(worst["box"].allowed[p]) > 1]
            p, kids = min(trials, key=lambda t: (max(k["bound"] for k in t[1]), sum(k["bound"] for k in t[1])))
        else:
            p = choose(worst["box"])
            kids = children(worst, p)
        worst.update(position=p, parts=[list(k["box"].allowed[p]) for k in kids], children=kids)
        leaves = leaves[1:] + kids

    def best(node):
        """(bound, subtree): a node keeps its own steps where they beat its children's (CROWN on a
        smaller set is usually, not always, tighter)."""
        if "children" not in node:
            return node["bound"], {"steps": node["steps"]}
        kids = [best(k) for k in node["children"]]
        worst_kid = max(b for b, _ in kids)
        if node["bound"] <= worst_kid:
            return node["bound"], {"steps": node["steps"]}
        return worst_kid, {"position": node["position"], "parts": node["parts"], "children": [t for _, t in kids]}

    bound, tree = best(root)
    return bound, tree, len(leaves)


def bound_tokens(joint, box, method: str, tolerance, lower, time_budget: float, max_leaves: int):
    """One method on a token domain, as engine_graph.bound_graph: (bound, certificate body, notes).
    interval, crown, alpha: one pass (alpha-CROWN's free slopes are not optimised over token domains
    yet: CROWN); bab: branch and bound over tokens until every leaf is within the tolerance (or within
    1% of the attained deviation when that exceeds it) or the budget is spent. An exp overflowing
    on a wide score range gives an infinite bound (nothing to write): bab splits such a set."""
    import math

    from .graph import crown_state

    def bound_of(b, m="crown"):
        try:
            st = crown_state(joint, b, m)
            return st.bound, st.steps
        except OverflowError:
            return math.inf, None

    if method != "bab":
        b, steps = bound_of(box, "interval" if method == "interval" else "crown")
        return (math.inf, None, {}) if not math.isfinite(b) else (Fraction(b), {"steps": steps}, {})
    target = float(tolerance) if lower <= tolerance else float(lower) * 1.01
    start = time.perf_counter()
    b, tree, leaves = token_bab(bound_of, FloatTokens(box.vocab, box.allowed), target, max_leaves=max_leaves, seconds=time_budget)
    if not math.isfinite(b):
        raise RuntimeError("no finite bound on the token domain within the budget (an exp overflows): raise options.timeout_s")
    return Fraction(b), {"token_tree": tree}, {"bab": {"leaves": leaves, "seconds": round(time.perf_counter() - start, 3), "over": "tokens"}}
