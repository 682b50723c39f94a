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
from collections.abc import Sequence
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


SLACK = Fraction(1, 25)  # a claimed bound at most this far above the attained deviation (`ratio_claim`)


def ratio_claim(tolerance, lower, slack: Fraction = SLACK) -> Fraction | None:
    """A bound for ratio leaves to claim in advance where the tolerance is at least the attained deviation (lower > 0):
    the smaller of the tolerance and (1 + slack) lower (6 significant digits); else None (the exact bound). Not the
    default (bound_tokens(slack=None)): at V = 64 a 4 % claim saves ~15 % of bound + check (374 joint rows of 512, no
    bisection) and 0.1 % saves ~3 %, against a looser bound in every report."""
    if not 0 < lower <= tolerance:
        return None
    return max(Fraction(lower), min(Fraction(tolerance), Fraction(format(float((1 + slack) * Fraction(lower)), ".6g"))))


def bound_tokens(joint, box, method: str, tolerance, lower, time_budget: float, max_leaves: int, slack: Fraction | None = None,
                 form=None):
    """One method on a token domain, as engine_graph.bound_graph: (bound, certificate body, notes).
    interval, crown, alpha: one pass (alpha-CROWN's free slopes are not optimised over token domains
    yet: CROWN); bab: branch and bound over tokens until every leaf is within the tolerance (or within
    1% of the attained deviation when that exceeds it) or the budget is spent; softmax-ratio leaves
    where the graph has that form: the exact bound (with `slack`: `ratio_claim` first). An exp overflowing
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
    claim = None if slack is None else ratio_claim(tolerance, lower, slack)
    ratio = ratio_tree(joint, FloatTokens(box.vocab, box.allowed), float(lower), time_budget, claim, form)
    if ratio is not None:  # softmax-ratio leaves: exact over each query token's leaf, or the claim (checker/attention.py)
        b, tree, leaves, notes = ratio
        return b, {"token_tree": tree}, {"bab": notes}
    b, tree, leaves = token_bab(bound_of, FloatTokens(box.vocab, box.allowed), target, max_leaves=max_leaves, seconds=time_budget)
    if not math.isfinite(b):
        raise RuntimeError("no finite bound on the token domain within the budget (an exp overflows): raise options.timeout_s")
    return Fraction(b), {"token_tree": tree}, {"bab": {"leaves": leaves, "seconds": round(time.perf_counter() - start, 3), "over": "tokens"}}


# ----------------------------------------------------------------------------- softmax-ratio leaves

def _query(fm, n: int) -> int | None:
    """A position q such that every score, coefficient and rest of the ratio form reads at most one position besides q
    (preferred: one that the rests read alone, then the later)."""
    sets = [fm.score_deps[name][k] for name, ms in fm.groups for k in ms] + list(fm.rest_deps) + [d for ds in fm.coef_deps for d in ds if d is not None]
    ok = [q for q in range(n) if all(len(d - {q}) <= 1 for d in sets)]
    return max(ok, key=lambda q: (all(d <= {q} for d in fm.rest_deps), q), default=None)


class FloatForm:
    """The engine's float64 side of a checker Form (checker/attention.py, whose exact tables `_float_tables` mirrors): the
    linear and affine weights as numpy arrays, and the caches of `_float_tables` across query tokens. Kept here, not on
    the checker's Form."""

    def __init__(self, fm):
        seen = {}  # (f and g share most weight and bias objects: each converted once)

        def fl(vals):  # as float(v) (exact where v is a float already), without numbers.Rational's path; rows: a matrix
            if id(vals) not in seen:
                if vals and all(hasattr(r, "floats") for r in vals):  # rows read from a float array (checker/graph.py FloatRow)
                    arr = np.array([r.floats for r in vals])
                elif vals and isinstance(vals[0], Sequence):
                    arr = np.array([[v if type(v) is float else v.numerator / v.denominator for v in r] for r in vals])
                else:
                    arr = np.array([v if type(v) is float else v.numerator / v.denominator for v in vals])
                seen[id(vals)] = (vals, arr)  # (vals kept: its id stays its own)
            return seen[id(vals)][1]
        self.fm = fm
        self.weights = {nd.name: (fl(nd.weight).reshape(len(nd.weight), -1), fl(nd.bias) if nd.bias else np.zeros(len(nd.weight)))
                        if nd.op == "linear" else (fl(nd.scale), fl(nd.shift))
                        for nd in fm.joint.nodes if nd.op in ("linear", "affine")}
        self.prev = {}  # q: the last base evaluation at q
        self.rows_q = {}  # (q, linear node): its rows that read q, their weights and biases
        self.every = {}  # q: (scores, output) at every query token at once (`_every_token`)
        self.shared = {}  # (q, override): (each row's position, the coefficient rows), where they do not read q


def _every_token(ff: FloatForm, q: int) -> dict:
    """The evaluation without override (p = 0) on the batches "a at q, b elsewhere" of every token a at once: {node: (d, a, b)
    array} for the scores and the output. A value is kept as (u, w) with value[:, a, b] = u[:, b] + w[:, a] (the input is
    one: the tokens elsewhere plus the token at q) while each op keeps that form (linear, affine, add, sub, softmax); a
    product makes it a full (d, V, V) array (at V = 64 only the attention scores' qk: the other products meet a softmax)."""
    fm, V, n = ff.fm, ff.fm.vocab, ff.fm.joint.in_dim // ff.fm.vocab
    u, w = np.zeros((fm.joint.in_dim, V)), np.zeros((fm.joint.in_dim, V))
    for j in range(n):
        (w if j == q else u)[j * V + np.arange(V), np.arange(V)] = 1.0
    val = {"x": (u, w)}

    def full(v):
        return v if not isinstance(v, tuple) else v[0][:, None, :] + v[1][:, :, None]
    for nd in fm.joint.nodes:
        x = [val[s] for s in nd.inputs]
        if nd.op == "softmax":
            v = (np.zeros((len(nd.groups), V)), np.zeros((len(nd.groups), V)))
        elif nd.op in ("linear", "affine"):
            W, b = ff.weights[nd.name]
            mat = (lambda y: W @ y) if nd.op == "linear" else (lambda y: W[:, None] * y)
            v = (mat(x[0][0]) + b[:, None], mat(x[0][1])) if isinstance(x[0], tuple) else \
                (np.tensordot(W, x[0], axes=1) if nd.op == "linear" else W[:, None, None] * x[0]) + b[:, None, None]
        elif nd.op in ("add", "sub") and all(isinstance(y, tuple) for y in x):
            f = np.add if nd.op == "add" else np.subtract
            v = (f(x[0][0], x[1][0]), f(x[0][1], x[1][1]))
        elif nd.op == "mul" and any(isinstance(y, tuple) and not y[0].any() and not y[1].any() for y in x):  # a factor 0 (p = 0)
            v = (np.zeros(((x[0][0] if isinstance(x[0], tuple) else x[0]).shape[0], V)),) * 2
        else:
            v = {"mul": np.multiply, "add": np.add, "sub": np.subtract}[nd.op](full(x[0]), full(x[1]))
        val[nd.name] = v
    return {name: full(val[name]) for name in {nd.inputs[0] for nd in fm.soft} | {fm.joint.output}}


def _float_tables(ff: FloatForm, q: int, a: int):
    """Form.tables (checker/attention.py) in float64: the same batch ("a at q, b elsewhere") and overrides, numpy. The
    scores and the output at p = 0 are read off `_every_token` (every a at once); the evaluation at this a itself only
    where an override needs it."""
    fm = ff.fm
    if q not in ff.every:
        ff.every[q] = _every_token(ff, q)
    every = ff.every[q]
    V, n = fm.vocab, fm.joint.in_dim // fm.vocab
    X = np.zeros((fm.joint.in_dim, V))
    for j in range(n):
        X[j * V + np.arange(V), np.arange(V)] = 1.0
    X[q * V:(q + 1) * V] = 0.0
    X[q * V + a] = 1.0

    prev = ff.prev.get(q)

    def run(override, base=None, X=X, prev=prev):
        val = {"x": X}
        for nd in fm.joint.nodes:
            x = [val[s] for s in nd.inputs]
            if base is not None and fm.deg[nd.name] == 0:
                v = base[nd.name]
            elif nd.op == "linear" and prev is not None and override is None:  # only the rows that read q differ from prev
                if (q, nd.name) not in ff.rows_q:
                    rq = np.array([r for r, d in enumerate(fm.dep[nd.name]) if q in d], dtype=int)
                    ff.rows_q[q, nd.name] = (rq, ff.weights[nd.name][0][rq], ff.weights[nd.name][1][rq, None])
                rq, w, b = ff.rows_q[q, nd.name]
                v = prev[nd.name].copy()
                v[rq] = w @ x[0] + b
            elif nd.op == "softmax":
                v = np.zeros((len(nd.groups), V))
                if override is not None and override[0] == nd.name:
                    v[override[1]] = 1.0
            elif nd.op == "linear":
                w, b = ff.weights[nd.name]
                v = w @ x[0] + b[:, None]
            elif nd.op == "affine":
                w, b = ff.weights[nd.name]
                v = w[:, None] * x[0] + b[:, None]
            else:
                v = {"mul": np.multiply, "add": np.add, "sub": np.subtract}[nd.op](x[0], x[1])
            val[nd.name] = v
        return val

    out, at = fm.joint.output, {}

    def base_at():  # the evaluation at this a (for an override's softmax-free nodes), made once where needed
        if not at:
            at.update(run(None))
            ff.prev[q] = at
        return at

    def pos(deps):
        free = deps - {q}
        return next(iter(free), None) if len(free) <= 1 else -1

    src = {nd.name: nd.inputs[0] for nd in fm.soft}
    exps = []
    for name, ms in fm.groups:
        s = every[src[name]][list(ms), a]
        exps.append([(pos(fm.score_deps[name][k]), np.exp(s[r] - s.max())) for r, k in enumerate(ms)])
    m = fm.joint.out_dim
    rest = [(pos(fm.rest_deps[i]), every[out][i, a]) for i in range(m)]
    coef = [[None] * len(ms) for _, ms in fm.groups]  # per member: (each row's position, its rows (m, V))
    for o, (name, k) in enumerate(fm.overrides[1:], start=1):
        deps = [d or frozenset() for d in fm.coef_deps[o - 1]]
        if all(d <= {q} for d in deps):  # every row reads q at most: once per q, token a at q in column a (as the checker's thin batch)
            if (q, o, None) not in ff.shared:
                T = np.zeros((fm.joint.in_dim, V))
                T[q * V + np.arange(V), np.arange(V)] = 1.0
                thin = run(None, None, T, None)
                ff.shared[q, o, None] = ([None] * len(deps), run((name, k), thin, T, None)[out] - thin[out])
            rows = ff.shared[q, o, None][1][:, a]
            ff.shared[q, o] = (ff.shared[q, o, None][0], np.broadcast_to(rows[:, None], (len(rows), V)))
        elif any(q in d for d in deps) or (q, o) not in ff.shared:  # rows that do not read q: the same at every a
            base = base_at()
            ff.shared[q, o] = ([pos(d) for d in deps], run((name, k), base)[out] - base[out])
        g = next(t for t, (nm, ms) in enumerate(fm.groups) if nm == name and k in ms)
        coef[g][fm.groups[g][1].index(k)] = ff.shared[q, o]
    return exps, coef, rest


def _ratio_arrays(ff: FloatForm, q: int, a: int, allowed):
    """Float arrays of the tables at query token a (`_float_tables`, as checker.attention.Form.tables) on the leaf's sets, where
    each member's exp and coefficients read the same position and the rest none besides q (else None):
    per group, per member: (position or None (fixed), E (t,), C (t, m)); rest R (m,)."""
    exps, coef, rest = _float_tables(ff, q, a)
    m = len(rest)
    if any(p is not None and (p < 0 or len(allowed[p]) > 1) for p, _ in rest):
        return None
    R = np.array([float(vals[0 if p is None else allowed[p][0]]) for p, vals in rest])
    groups = []
    for g, members in enumerate(exps):
        out = []
        for k, (p, e) in enumerate(members):
            ps = {v for v in [p] + coef[g][k][0] if v is not None}
            if len(ps) > 1 or -1 in ps:
                return None
            p = next(iter(ps), None)
            toks = [0] if p is None else list(allowed[p])  # (a table that reads no free position is the same in every column)
            E, C = e[toks], coef[g][k][1][:, toks].T
            out.append((p if p is not None and len(allowed[p]) > 1 else None, E, C))
        groups.append(out)
    return groups, R


def _by_position(members):
    """Members grouped by position: {position or None: [(E, C), ...]}."""
    out = {}
    for p, E, C in members:
        out.setdefault(p, []).append((E, C))
    return out


def _ratio_max(members, sign: float) -> np.ndarray:
    """max over the leaf of sum_k E_k sign C_k / sum_k E_k, per output (Dinkelbach: exact over the product of sets)."""
    m = members[0][2].shape[1]
    pos = [(sum(E[:, None] * sign * C for E, C in ms), sum(E for E, _ in ms)) for ms in _by_position(members).values()]  # per position: sum E c, sum E
    cols = np.arange(m)
    lam = sum(E[0] * sign * C[0] for _, E, C in members) / sum(E[0] for _, E, _ in members)
    with np.errstate(divide="ignore", invalid="ignore"):  # a second start: each position's own best coefficient (exps > 0 only)
        ks = [np.where(S[:, None] > 0, A / S[:, None], -np.inf).argmax(0) for A, S in pos]
        den = sum(S[k] for (_, S), k in zip(pos, ks))
        lam = np.maximum(lam, np.where(den > 0, sum(A[k, cols] for (A, _), k in zip(pos, ks)) / den, -np.inf))
    for _ in range(500):  # Dinkelbach: each step moves to the ratio of the choice maximising sum E (c - lam); stops when none is better
        num, den = np.zeros(m), np.zeros(m)
        for A, S in pos:
            k = (A - S[:, None] * lam).argmax(0)
            num += A[k, cols]
            den += S[k]
        new = num / den
        if np.all(new <= lam + 1e-14 * (1 + np.abs(lam))):
            return np.maximum(new, lam)
        lam = np.maximum(new, lam)
    raise RuntimeError("Dinkelbach did not converge in 500 steps")


def _split_h(members, sign: float, add: np.ndarray) -> np.ndarray:
    """max over the leaf of sum_k E_k (sign C_k + add) per output column (add: one entry a column): <= 0 iff the group's
    ratio is <= -add."""
    return sum(sum(E[:, None] * (sign * C + add) for E, C in ms).max(0) for ms in _by_position(members).values())


def _joint_relaxed(g1, g2, sign: float, r: np.ndarray, mu: np.ndarray, parts: bool = False):
    """The checker's relaxation (attention._upper) of max sum_{k,l} E_k E_l (sign c_k + sign r - mu + sign c_l), per
    output (columns of C, entries of r and mu): terms bucketed by the free positions they read, unary shared among pairs.
    A pair's matrix, per output, is a sum of outer products (rows: its first position's tokens), formed by one batched
    matrix product of its factors. parts: (the value, [each pair's max, ...] in the checker's order of pairs), per output."""
    const, unary, pairs = 0.0, {}, {}
    for p1, E1, C1 in g1:
        for p2, E2, C2 in g2:
            a = E1[:, None] * (sign * C1 + sign * r - mu)  # (t1, m)
            if p1 is not None and p1 == p2:
                unary[p1] = unary.get(p1, 0) + a * E2[:, None] + E1[:, None] * E2[:, None] * sign * C2
            elif p1 is not None and p2 is not None:  # a (x) E2 + E1 (x) E2 sign C2, per output
                u, v = [a, np.broadcast_to(E1[:, None], a.shape)], [np.broadcast_to(E2[:, None], C2.shape), E2[:, None] * sign * C2]
                key, (u, v) = ((p1, p2), (u, v)) if p1 < p2 else ((p2, p1), (v, u))
                pairs.setdefault(key, ([], []))
                pairs[key][0].extend(u)
                pairs[key][1].extend(v)
            elif p1 is not None or p2 is not None:
                p = p1 if p1 is not None else p2
                v = (a * E2[0] + E1[:, None] * E2[0] * sign * C2[0]) if p1 is not None else (a[0] * E2[:, None] + E1[0] * E2[:, None] * sign * C2)
                unary[p] = unary.get(p, 0) + v
            else:
                const = const + a[0] * E2[0] + E1[0] * E2[0] * sign * C2[0]
    share = {p: sum(p in k for k in pairs) for p in unary}
    total, each = const + sum(u.max(0) for p, u in unary.items() if share[p] == 0), []
    for (j, k), (u, v) in sorted(pairs.items()):
        if share.get(j):
            u, v = u + [unary[j] / share[j]], v + [np.ones_like(v[0])]
        if share.get(k):
            u, v = u + [np.ones_like(u[0])], v + [unary[k] / share[k]]
        mat = np.matmul(np.stack(u, axis=-1).transpose(1, 0, 2), np.stack(v, axis=-1).transpose(1, 2, 0))  # (m, tj, tk)
        each.append(mat.reshape(len(mat), -1).max(1))
        total = total + each[-1]
    return (total + np.zeros_like(mu), each) if parts else total + np.zeros_like(mu)


def _ratio_text(v) -> str:
    """A float's exact value as the certificate's 'p/q' text (str(Fraction(float(v))), without making the Fraction)."""
    n, d = float(v).as_integer_ratio()
    return f"{n}/{d}" if d != 1 else str(n)


def _caps(lam: list, s: int, rows, value, each) -> None:
    """Joint rows' caps (checker/attention.py `_capped`) into lam: per row (of rows, sign s) whose relaxed value at the
    bound is < 0, each pair's max plus an equal share of half that slack (the other half for float noise); a cap the
    checker cannot confirm only costs it the pair's exact max."""
    for n, i in enumerate(rows):
        if each and value[n] < 0:
            give = -value[n] / (2 * len(each))
            lam[2 * int(i) + s] = [_ratio_text(top[n] + give) for top in each]


def ratio_tree(joint, box, lower: float = 0.0, seconds: float = 600.0, claim: Fraction | None = None, form=None):
    """`_ratio_tree` with one BLAS thread: its products are small (64 columns), and more OpenBLAS threads only spin on a
    shared machine (V = 64 tables: 0.6 s a query token with 2 threads at load 3, 6 ms with 1)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        return _ratio_tree(joint, box, lower, seconds, claim, form)


def _claimed(ff: FloatForm, q: int, box, claim: Fraction):
    """Leaves proving every row at the bound `claim` given in advance, or None where a row fails there in float64. A row
    within it by the checker's hull (each group's ratio a convex combination of its coefficients: no exp) gets no work;
    the others a split hint (lambda halfway, from Dinkelbach on those rows only) where it holds, else the joint check
    (null), tested once at the claim (no bisection). Margins keep float noise on the checker's side of each test."""
    B = float(claim)
    pad = 1e-9 * (1.0 + abs(B))  # (the checker's eta and E rounding are ~1e-28 relative; float noise ~1e-13)
    kids, joint = [], 0
    for a in box.allowed[q]:
        arr = _ratio_arrays(ff, q, a, box.allowed[:q] + ((a,),) + box.allowed[q + 1:])
        if arr is None:
            return None
        groups, R = arr
        if len(groups) == 1:
            groups.append([(None, np.ones(1), np.zeros((1, len(R))))])
        lam = [None] * (2 * len(R))
        for s, sign in enumerate((1.0, -1.0)):
            hull = sign * R + sum(np.max([(sign * C).max(0) for _, _, C in grp], axis=0) for grp in groups)
            idx = np.flatnonzero(hull > B - pad)
            if not len(idx):
                continue
            g1, g2 = ([(p, E, C[:, idx]) for p, E, C in grp] for grp in groups)
            r = sign * R[idx]
            M1, M2 = _ratio_max(g1, sign), _ratio_max(g2, sign)
            v = ((r + M1 - B) - M2) / 2  # each group's slack shared equally
            split = (_split_h(g1, sign, r - B + pad - v) <= 0) & (_split_h(g2, sign, v + pad) <= 0)  # (ratios <= B - pad - r + v, -v - pad)
            for n in np.flatnonzero(split):
                lam[2 * int(idx[n]) + s] = _ratio_text(v[n])
            if not split.all():
                rest = np.flatnonzero(~split)
                h1, h2 = ([(p, E, C[:, rest]) for p, E, C in grp] for grp in (g1, g2))
                if np.any(_joint_relaxed(h1, h2, sign, R[idx[rest]], np.full(len(rest), B - pad)) > 0):  # (r: unsigned there)
                    return None
                joint += len(rest)
                _caps(lam, s, idx[rest], *_joint_relaxed(h1, h2, sign, R[idx[rest]], np.full(len(rest), B), parts=True))
        kids.append({"ratio": {"query": q, "lambda": lam}})
    return kids, joint


def _ratio_tree(joint, box, lower: float = 0.0, seconds: float = 600.0, claim: Fraction | None = None, fm=None):
    """Softmax-ratio leaves (certify/checker/attention.py) where the joint graph has that form: the query position
    split into single tokens, each leaf bounding every row exactly over the other positions' sets (a split bound:
    each softmax group's ratio maximised alone by Dinkelbach, or a joint one, a bisection on the pair-bucketed sum of
    both groups). With `claim`: first the leaves proving that bound (`_claimed`), the exact bound where they fail.
    Returns (bound, tree, leaves, notes) or None where the form does not apply (then CROWN bab). fm: the joint graph's form
    if the caller made it (engine_graph.ratio_form, shared with its witness replay), else made here."""
    from ..checker.attention import form

    t0 = time.perf_counter()
    fm = fm if fm is not None and fm.joint is joint else form(joint, box.vocab)
    q = None if fm is None else _query(fm, len(box.allowed))
    if q is None:
        return None
    ff = FloatForm(fm)
    got = None if claim is None else _claimed(ff, q, box, claim)
    if got is not None:
        return claim, *_ratio_result(q, box, got[0], got[1], t0, "claimed")
    rows = {}
    for a in box.allowed[q]:
        allowed = box.allowed[:q] + ((a,),) + box.allowed[q + 1:]
        arr = _ratio_arrays(ff, q, a, allowed)
        if arr is None:
            return None
        groups, R = arr
        if len(groups) == 1:
            groups.append([(None, np.ones(1), np.zeros((1, len(R))))])
        both = [_ratio_max([(p, E, np.hstack([C, -C])) for p, E, C in grp], 1.0) for grp in groups]  # (both signs at once)
        for s, sign in enumerate((1.0, -1.0)):
            M1, M2 = (v[s * len(R):(s + 1) * len(R)] for v in both)
            rows[a, s] = (groups, sign * R, M1, M2, sign * R + M1 + M2)
        if time.perf_counter() - t0 > seconds:
            return None
    best, done = float(lower), {}  # done[a, s]: (B, rows, their joint values at B and pairs' maxima), for the hints below
    for a, s in sorted(rows, key=lambda k: -rows[k][4].max()):  # rows whose split bound exceeds the best so far get a joint one
        groups, r, _, _, total = rows[a, s]
        sign, B = 1.0 if s == 0 else -1.0, _above(best)
        idx = np.flatnonzero(total > best)
        if not len(idx):
            break
        g1, g2 = ([(p, E, C[:, idx]) for p, E, C in grp] for grp in groups)
        done[a, s] = (B, idx, *_joint_relaxed(g1, g2, sign, r[idx] * sign, np.full(len(idx), B), parts=True))
        idx = idx[done[a, s][2] > 0]  # the others hold at the bound the best gives
        if not len(idx):
            continue
        g1, g2 = ([(p, E, C[:, idx]) for p, E, C in grp] for grp in groups)
        lo, hi = np.full(len(idx), best), total[idx].astype(float)
        ok = _joint_relaxed(g1, g2, sign, r[idx] * sign, hi) <= 0  # (float noise at the split bound itself: the split stays)
        for _ in range(60):  # bisection on every such row of this (a, sign) at once
            mid = (lo + hi) / 2
            below = _joint_relaxed(g1, g2, sign, r[idx] * sign, mid) <= 0
            lo, hi = np.where(below, lo, mid), np.where(below, mid, hi)
            if np.all(hi - lo <= 1e-10 * (1 + np.abs(hi))):
                break
        best = max(best, float(np.where(ok, hi, total[idx]).max()))
    while True:  # hints at the bound: split where it holds (its own float check), else joint
        bound = Fraction(_above(best))
        B, kids, worse = float(bound), [], best
        for a in box.allowed[q]:
            lam = [None] * (2 * len(rows[a, 0][4]))
            for s in (0, 1):
                groups, r, M1, M2, total = rows[a, s]
                sign = 1.0 if s == 0 else -1.0
                v = ((r + M1 - B) - M2) / 2  # each group's slack shared equally
                split = (total < B) & (_split_h(groups[0], sign, r - B - v) <= 0) & (_split_h(groups[1], sign, v) <= 0)
                for i in np.flatnonzero(split):
                    lam[2 * i + s] = _ratio_text(v[i])
                idx = np.flatnonzero(~split)
                old = done.get((a, s), (None, ()))
                if len(idx) and old[0] == B and np.isin(idx, old[1]).all():  # (values per row: those found above at this bound)
                    at = np.searchsorted(old[1], idx)
                    value, each = old[2][at], [top[at] for top in old[3]]
                elif len(idx):
                    g1, g2 = ([(p, E, C[:, idx]) for p, E, C in grp] for grp in groups)
                    value, each = _joint_relaxed(g1, g2, sign, r[idx] * sign, np.full(len(idx), B), parts=True)
                if len(idx):
                    worse = max([worse] + [float(total[i]) for i in idx[value > 0]])
                    _caps(lam, s, idx, value, each)
            kids.append({"ratio": {"query": q, "lambda": lam}})
        if worse <= best:
            break
        best = worse
    joint = sum(v is None or type(v) is list for k in kids for v in k["ratio"]["lambda"])
    return bound, *_ratio_result(q, box, kids, joint, t0, "exact" if claim is None else "exact (the claim failed)")


def _above(best: float) -> float:
    """The bound the leaves prove for a best joint value: a part in 1e9 above it (float noise stays inside)."""
    return best * (1 + 1e-9) + 1e-9


def _ratio_result(q: int, box, kids: list, joint: int, t0: float, bound: str) -> tuple:
    """(tree, leaves, notes) of the leaves, one per query token; joint: the rows left to the joint check."""
    tree = kids[0] if len(kids) == 1 else {"position": q, "parts": [[a] for a in box.allowed[q]], "children": kids}
    notes = {"leaves": len(kids), "joint_rows": joint,
             "seconds": round(time.perf_counter() - t0, 3), "over": "tokens", "leaf": "ratio", "bound": bound}
    return tree, len(kids), notes
