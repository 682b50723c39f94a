"""Soundness campaign: random networks, explanations, boxes and methods against an exact oracle.

    python benchmarks/soundness.py --cases N [--seed S] [--workers W] [--json PATH] [--methods interval,crown,alpha,lp,bab]
    python benchmarks/soundness.py --family transformer --cases 200 --first 400 --records r400.json   # one chunk
    python benchmarks/soundness.py --family transformer --merge r*.json --json soundness-transformer.json

Each case builds a random small ReLU MLP (random depth and width, with dead and always-active
neurons), a random explanation (prune with zero/constant/mean/free fill, low_rank, a perturbed second
model, merge by explicit groups or by k-means, pca, quantize), a random box (unit, zero-straddling, degenerate with fixed coordinates, a single point)
and a tolerance near the true maximum, runs one method end to end (spec file, certificate,
trusted checker), and compares with the exact oracle: MILP (HiGHS) whose maximiser is replayed in
exact arithmetic (the replayed value is a true deviation, so a certified bound below it is unsound).
The maximiser is also the certificate's witness, so VIOLATED verdicts are exercised too.

Counts: `cases`, `unsound` (bound below the exact replayed maximum; must be 0), `wrong_certified`
(CERTIFIED while an input exceeds the tolerance; must be 0), `rejected` (the checker refused the
engine's certificate: each is a bug), and `ratio_median` (method -> median bound / exact).

`--family residual` (graph models, issue 16): random residual graphs built from the operator table
(`GENERATORS`: one per op of certify.checker.graph.OPS, and LayerNorm as its composition), explained
by a random SAE spliced in at a residual value (a ReLU SAE, some features kept), a random box and
a tolerance near the attained deviation; methods interval, crown, alpha, bab on the joint graph.
There is no MILP oracle for exp or erf: `exact` is an attained lower bound instead, the best of random
samples and finite-difference gradient ascent (numpy), replayed at the exact witness with mpmath at 50
digits (`MP_OPS`, independent of the checker's arb evaluation). The same keys; `milp` holds the float
value the ascent found.

`--family transformer` (issue 17): random one-layer, one-head transformers built by
certify/model/transformer.py (vocabulary 3-8, length 2-4, at most 4,096 sequences): attn_only with a
difference, product or softmax-op pattern, its folded form (QK in its singular basis, OV folded into
W_U), attention_tokens, or attention + LayerNorm + a ReLU/GELU MLP; explained by one or two random
transforms (ablate of any value with zero, constant, mean where no curve is upstream, free where all
downstream is affine; low_rank of a linear node, pinned by `certify pin`; an SAE at a residual value),
on a token domain (`input: tokens`, per-position allowed sets sometimes); methods interval, crown,
alpha, bab (token branch and bound, 8 leaves). `exact` is the exhaustive maximum: every sequence (and
every vertex of the free values) in float64, the best three replayed by the checker's deviation_at (a
proven lower bound) and by mpmath at 50 digits (`mp`, `replay_mismatch` counts disagreements); `milp`
is the float maximum. Half the certificates carry the maximiser as witness (VIOLATED is exercised),
half carry none (the bound is then the engine's alone, so `unsound` and `wrong_certified` are live
tests). A case whose float enumeration overflows is `oracle_refused`; an exception of the product
(checker, engine, pin) is counted in `errors` with its place, and the process runs under a 3 GB
address-space limit (`--memory-gb`). `--merge R1.json R2.json ...` sums the chunks' --records.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import multiprocessing
import json
import statistics
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from certify.bounds.milp import milp_max_deviation  # noqa: E402
from certify.bounds.network import box_floats  # noqa: E402
from certify.checker import Verdict, exact  # noqa: E402
from certify.engine import bound_with, exact_witness, prepare, write_and_check  # noqa: E402
from certify.model import save_model  # noqa: E402

METHODS = ("interval", "crown", "alpha", "lp", "bab")


def random_case(rng: np.random.Generator, tmp: Path, i: int, method: str) -> Path:
    d_in, d_out = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    hidden = [int(rng.choice([2, 4, 6])) for _ in range(int(rng.integers(1, 3)))]
    widths = [d_in] + hidden + [d_out]
    ws, bs = [], []
    for a, b in zip(widths[:-1], widths[1:]):
        w, bias = rng.normal(0, 1 / np.sqrt(a), (b, a)), rng.normal(0, 0.3, b)
        if b > 1 and rng.random() < 0.3:
            w[0], bias[0] = 0.0, -abs(bias[0]) - 0.1  # dead neuron
        if b > 1 and rng.random() < 0.3:
            bias[-1] = 10.0  # always active
        ws.append(w), bs.append(bias)
    sha = save_model(tmp / f"m{i}.npz", ws, bs)
    kind = rng.choice(["prune_zero", "prune_constant", "prune_mean", "prune_free", "low_rank", "second_model",
                       "merge_groups", "merge_kmeans", "pca", "quantize"])
    if kind.startswith("prune"):
        layer = int(rng.integers(1, len(hidden) + 1))
        keep = sorted(int(j) for j in rng.choice(hidden[layer - 1], size=int(rng.integers(0, hidden[layer - 1])), replace=False))
        fill = {"prune_zero": "zero", "prune_constant": f"{{constant: {rng.choice(['0.5', '-1/3', '2'])}}}",
                "prune_mean": "{mean: {samples: 64, seed: 1}}", "prune_free": "free"}[kind]
        expl = f"  - prune: {{layer: {layer}, keep: {keep}, fill: {fill}}}"
    elif kind.startswith("merge"):
        layer = int(rng.integers(1, len(hidden) + 1))
        width = hidden[layer - 1]
        k = int(rng.integers(1, width + 1))
        if kind == "merge_kmeans":
            expl = f"  - merge: {{layer: {layer}, groups: {k}}}"
        else:
            labels = np.concatenate([np.arange(k), rng.integers(0, k, width - k)])
            rng.shuffle(labels)
            groups = [[int(j) for j in np.flatnonzero(labels == b)] for b in range(k)]
            expl = f"  - merge: {{layer: {layer}, groups: {groups}}}"
    elif kind == "pca":
        layer = int(rng.integers(1, len(hidden) + 1))
        expl = f"  - pca: {{layer: {layer}, components: {int(rng.integers(1, hidden[layer - 1] + 1))}, samples: 64, seed: 2}}"
    elif kind == "quantize":
        expl = f"  - quantize: {{layer: {int(rng.integers(1, len(ws) + 1))}, bits: {int(rng.integers(2, 9))}}}"
    elif kind == "low_rank":
        layer = int(rng.integers(1, len(ws) + 1))
        expl = f"  - low_rank: {{layer: {layer}, rank: {int(rng.integers(0, min(ws[layer - 1].shape) + 1))}}}"
    else:
        sha2 = save_model(tmp / f"g{i}.npz", [w + rng.normal(0, 0.05, w.shape) for w in ws],
                          [b + rng.normal(0, 0.05, b.shape) for b in bs])
        expl = f'  - model: {{path: g{i}.npz, sha256: "{sha2}"}}'
    box = rng.choice(["unit", "straddling", "degenerate", "point"])
    lo = {"unit": -np.ones(d_in), "straddling": rng.uniform(-0.6, -0.1, d_in),
          "degenerate": rng.uniform(-1, 0, d_in), "point": rng.uniform(-1, 1, d_in)}[box]
    up = {"unit": np.ones(d_in), "straddling": rng.uniform(0.1, 0.6, d_in),
          "degenerate": lo + np.where(rng.random(d_in) < 0.5, 0.0, 0.5), "point": lo}[box]
    fmt = lambda v: "[" + ", ".join(str(Fraction(float(x)).limit_denominator(1000)) for x in v) + "]"
    spec = tmp / f"case{i}.yaml"
    spec.write_text("\n".join([
        "version: 1", f'model: {{path: m{i}.npz, sha256: "{sha}"}}', "input:",
        f"  box: {{lower: {fmt(lo)}, upper: {fmt(np.maximum(up, lo))}}}", "explanation:", expl,
        "property: {deviation: linf, tolerance: TOL}", f"options: {{method: {method}, max_leaves: 16, timeout_s: 5}}", ""]))
    return spec


DENSE_BUDGET = 5.0  # seconds of bounding per dense case (branch and bound also stops at max_leaves 16)


def witness_free(i: int) -> bool:
    """Does case i's certificate go without a witness (dense and residual families: every other block of 4 cases)?
    With the exact or attained maximiser as witness, an accepted bound below the maximum cannot show as `unsound`
    (the graph engine writes max(bound, witness deviation); the checker rejects a bound below its witness) nor a
    wrong CERTIFIED (the witness makes it VIOLATED); without one, the bound is the engine's alone and both
    counters are live tests of the checker. Decided by i alone: the cases' random streams are unchanged."""
    return (i // 4) % 2 == 1


def run_case(rng, tmp: Path, i: int, method: str) -> dict:
    spec = random_case(rng, tmp, i, method)
    # the oracle first (on the exact joint network), then a tolerance near the true maximum
    text = spec.read_text()
    spec.write_text(text.replace("TOL", "1"))
    probe = prepare(spec, tmp / f"case{i}.probe.cert.json")
    lo, up = box_floats(*probe.box)
    value, arg = milp_max_deviation(probe.net, lo, up, time_limit=30.0)
    assert value is not None, f"case {i}: MILP did not finish"
    witness = exact_witness(arg, probe.domain)
    replay = max(abs(v) for v in exact.forward(probe.joint, witness))
    tol = Fraction(float(replay) * float(rng.choice([0.5, 0.9, 1.1, 2.0]))).limit_denominator(10**6)
    spec.write_text(text.replace("TOL", f'"{tol}"'))
    p = prepare(spec, tmp / f"case{i}.cert.json")
    bound, body, notes = bound_with(p, method, time_budget=DENSE_BUDGET)
    free = witness_free(i)
    result = write_and_check(p, method, bound, body, None if free else witness, None if free else replay, notes)
    return {"case": i, "method": method, "bound": result.bound, "exact": replay, "milp": value, "tolerance": tol,
            "verdict": result.verdict, "reason": result.reason, "witness": not free}


def summarise(records: list[dict]) -> dict:
    ok = [r for r in records if r["verdict"] is not Verdict.REJECTED and r["bound"] is not None]
    ratios = {m: statistics.median([float(r["bound"] / r["exact"]) for r in ok if r["method"] == m and r["exact"] > 0] or [float("nan")])
              for m in sorted({r["method"] for r in records})}
    return {
        "cases": len(records),
        "unsound": sum(1 for r in ok if r["bound"] < r["exact"]),
        "wrong_certified": sum(1 for r in ok if r["verdict"] is Verdict.CERTIFIED and r["exact"] > r["tolerance"]),
        "rejected": sum(1 for r in records if r["verdict"] is Verdict.REJECTED),
        "engine_refused": sum(1 for r in records if r["bound"] is None and r["verdict"] is not Verdict.REJECTED
                              and not r.get("error") and not r.get("oracle_refused")),
        "errors": sum(1 for r in records if r.get("error")),  # an exception of the product (checker, engine, pin)
        "ratio_median": ratios,
        "verdicts": {v.value: sum(1 for r in records if r["verdict"] is v) for v in Verdict},
        "suspect": sum(1 for r in ok if float(r["bound"]) < r["milp"] - 1e-6 * (1 + abs(r["milp"]))),
        **({"oracle_refused": sum(1 for r in records if r.get("oracle_refused")),  # the transformer family's extra counts
            "replay_mismatch": sum(1 for r in records if "mp" in r and abs(float(r["exact"]) - max(r["mp"], 0.0)) > 1e-9 * (1 + abs(r["mp"])))}
           if any("mp" in r or r.get("oracle_refused") for r in records) else {}),
    }


def _chunk(seed: int, start: int, stop: int, methods, jax_cache: str | None = None) -> list[dict]:
    """Cases start..stop-1; case i draws from its own generator (seed, i), so a run's cases do not
    depend on how they are split between workers. `jax_cache`: a persistent XLA compilation cache
    shared by the workers (compiling alpha-CROWN for each new shape is most of a small case's time)."""
    if jax_cache is not None:
        import jax

        jax.config.update("jax_compilation_cache_dir", jax_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        return [run_case(np.random.default_rng([seed, i]), Path(tmp), i, methods[i % len(methods)])
                for i in range(start, stop)]


def run(cases: int, seed: int = 0, methods=METHODS, progress: bool = False, workers: int = 1,
        chunk: int = 50, family: str = "dense", first: int = 0) -> tuple[dict, list[dict]]:
    spans = [(a, min(a + chunk, first + cases)) for a in range(first, first + cases, chunk)]
    work = {"dense": _chunk, "residual": _graph_chunk, "transformer": _transformer_chunk}[family]
    records: list[dict] = []

    def done(part):
        records.extend(part)
        if progress:
            print(f"{len(records)} cases: {summarise(records)}", flush=True)

    if workers <= 1:  # one process: JAX's in-memory cache already compiles each shape once
        for a, b in spans:
            done(work(seed, a, b, methods))
    else:  # spawn, not fork: JAX's runtime is not fork-safe
        with tempfile.TemporaryDirectory() as cache, ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for fut in as_completed([pool.submit(work, seed, a, b, methods, cache) for a, b in spans]):
                done(fut.result())
    records.sort(key=lambda r: r["case"])
    return summarise(records), records


# --------------------------------------------------------------------------- the residual (graph) family

RESIDUAL_METHODS = ("interval", "crown", "alpha", "bab")


def _mat(rng, out, inp, scale=1.0):
    return rng.normal(0, scale / np.sqrt(inp), (out, inp))


def _positive(b, rng, name, h, d):
    """A value > 0 on every input: c + square(h), c in {0.05, 0.5, 1}."""
    return b.affine(f"{name}.pos", b.unary(f"{name}.sq", "square", h), 1.0, float(rng.choice([0.05, 0.5, 1.0])))


GENERATORS = {  # op -> (builder, rng, name, value h of width d, d) -> a new value of width d that uses the op
    "linear": lambda b, rng, n, h, d: b.linear(n, h, _mat(rng, d, d), rng.normal(0, 0.3, d)),
    "affine": lambda b, rng, n, h, d: b.affine(n, h, rng.normal(0, 1, d), rng.normal(0, 0.3, d)),
    "add": lambda b, rng, n, h, d: b.add(n, h, b.linear(f"{n}.o", h, _mat(rng, d, d))),
    "sub": lambda b, rng, n, h, d: b.binary(n, "sub", h, b.linear(f"{n}.o", h, _mat(rng, d, d))),
    "mul": lambda b, rng, n, h, d: b.binary(n, "mul", h, b.linear(f"{n}.o", h, _mat(rng, d, d))),
    "relu": lambda b, rng, n, h, d: b.unary(n, "relu", h),
    "jumprelu": lambda b, rng, n, h, d: b.jumprelu(n, h, rng.uniform(-0.2, 0.5, d)),
    "gelu": lambda b, rng, n, h, d: b.unary(n, "gelu", b.linear(f"{n}.in", h, _mat(rng, d, d, 2.0))),
    "exp": lambda b, rng, n, h, d: b.unary(n, "exp", b.affine(f"{n}.in", h, 0.5, 0.0)),
    "erf": lambda b, rng, n, h, d: b.unary(n, "erf", h),
    "tanh": lambda b, rng, n, h, d: b.unary(n, "tanh", b.affine(f"{n}.in", h, 2.0, 0.1)),
    "sigmoid": lambda b, rng, n, h, d: b.unary(n, "sigmoid", h),
    "square": lambda b, rng, n, h, d: b.unary(n, "square", h),
    "rsqrt": lambda b, rng, n, h, d: b.unary(n, "rsqrt", _positive(b, rng, n, h, d)),
    "reciprocal": lambda b, rng, n, h, d: b.unary(n, "reciprocal", _positive(b, rng, n, h, d)),
    "sqrt": lambda b, rng, n, h, d: b.unary(n, "sqrt", _positive(b, rng, n, h, d)),
    "softmax": lambda b, rng, n, h, d: b.softmax(n, b.affine(f"{n}.in", h, float(rng.choice([1.0, 3.0, 8.0])), 0.0),
                                                 rng.integers(0, max(1, d // 2), d)),
    "layernorm": lambda b, rng, n, h, d: b.layernorm(n, h, 1 + 0.3 * rng.normal(size=d), 0.2 * rng.normal(size=d),
                                                     eps=float(rng.choice([1e-5, 1e-2]))),
}


VIA_EXPLANATION = {"free": "ablate with fill: free"}  # ops that only a transform writes into g: the case's explanation makes them


def _mp():
    import mpmath

    mpmath.mp.dps = 50
    return mpmath


def _mpq(v):
    v = Fraction(v)
    return _mp().mpf(v.numerator) / v.denominator


MP_OPS = {  # op -> (node, input value lists) -> value list, at mpmath's 50 digits (an evaluator independent of the checker's)
    "linear": lambda n, xs: [sum((_mpq(w) * v for w, v in zip(row, xs[0])), _mpq(b)) for row, b in zip(n.weight, n.bias)],
    "affine": lambda n, xs: [_mpq(a) * v + _mpq(c) for a, c, v in zip(n.scale, n.shift, xs[0])],
    "add": lambda n, xs: [a + b for a, b in zip(*xs)],
    "sub": lambda n, xs: [a - b for a, b in zip(*xs)],
    "mul": lambda n, xs: [a * b for a, b in zip(*xs)],
    "relu": lambda n, xs: [max(v, 0) for v in xs[0]],
    "jumprelu": lambda n, xs: [v if v > _mpq(t) else _mp().mpf(0) for v, t in zip(xs[0], n.threshold)],
    "gelu": lambda n, xs: [v * (1 + _mp().erf(v / _mp().sqrt(2))) / 2 for v in xs[0]],
    "exp": lambda n, xs: [_mp().exp(v) for v in xs[0]],
    "erf": lambda n, xs: [_mp().erf(v) for v in xs[0]],
    "tanh": lambda n, xs: [_mp().tanh(v) for v in xs[0]],
    "sigmoid": lambda n, xs: [1 / (1 + _mp().exp(-v)) for v in xs[0]],
    "square": lambda n, xs: [v * v for v in xs[0]],
    "rsqrt": lambda n, xs: [1 / _mp().sqrt(v) for v in xs[0]],
    "reciprocal": lambda n, xs: [1 / v for v in xs[0]],
    "sqrt": lambda n, xs: [_mp().sqrt(v) for v in xs[0]],
    "softmax": lambda n, xs: [1 / sum(_mp().exp(xs[0][m] - xs[0][j]) for m, g in enumerate(n.groups) if g == n.groups[j])
                              for j in range(len(xs[0]))],
    "free": lambda n, xs: [_mpq(v) for v in n.lower],  # a free value at the end of its range the checker's replay takes
}


def mp_deviation(joint, x) -> float:
    """max_i |d_i(x)| at the exact point x, by mpmath at 50 digits (returned as the nearest float)."""
    values = {"x": [_mpq(v) for v in x]}
    for n in joint.nodes:
        values[n.name] = MP_OPS[n.op](n, [values[s] for s in n.inputs])
    return float(max(abs(v) for v in values["d"]))


def _batch(nodes, X, out="d"):
    """The float graph on a batch of rows X (linear ops through their row-major JAX rule, run on numpy)."""
    from certify.bounds.graph import ENGINE

    values = {"x": X}
    with np.errstate(all="ignore"):
        for n in nodes:
            row = ENGINE[n.op]
            if n.op == "free":  # at the end of its range that the checker's replay takes (its lower end)
                values[n.name] = np.broadcast_to(n.lower, (len(X), len(n.lower)))
                continue
            batch_first = row.relax is None or n.op == "softmax"  # softmax's eval rule reads one column; its jeval (numpy here) a batch
            values[n.name] = np.asarray(row.jeval(n, [values[s] for s in n.inputs]) if batch_first else
                                        row.eval(n, [values[s] for s in n.inputs]))
    return np.max(np.abs(values[out]), axis=1)


def attained(joint, lo, up, rng, samples: int = 512, starts: int = 16, steps: int = 40) -> np.ndarray:
    """The best input found: random samples, corners, then finite-difference gradient ascent from the best."""
    from certify.bounds.graph import floats

    nodes = floats(joint)
    width = up - lo
    X = np.vstack([(lo + up) / 2, lo, up, lo + width * rng.uniform(size=(samples, lo.size))])
    v = _batch(nodes, X)
    x = X[np.argsort(-np.nan_to_num(v, nan=-1))[:starts]]
    best_x, best_v = x.copy(), _batch(nodes, x)
    h = np.maximum(width * 1e-6, 1e-12)
    for i in range(steps):
        grads = np.stack([(_batch(nodes, np.clip(x + h[k] * np.eye(lo.size)[k], lo, up)) -
                           _batch(nodes, np.clip(x - h[k] * np.eye(lo.size)[k], lo, up))) for k in range(lo.size)], axis=1)
        x = np.clip(x + width * (0.2 * (1 - i / steps) + 1e-3) * np.sign(grads), lo, up)
        val = _batch(nodes, x)
        better = val > best_v
        best_x[better], best_v[better] = x[better], val[better]
    return best_x[int(np.argmax(best_v))]


def random_graph_case(rng: np.random.Generator, tmp: Path, i: int, method: str) -> Path:
    """A random residual graph around the focus op GENERATORS[i mod #], a random SAE at a residual value."""
    from certify.model.graph import GraphBuilder

    from certify.checker.graph import OPS

    names = sorted(op for op in [*GENERATORS, *VIA_EXPLANATION] if op in OPS or op == "layernorm")  # ops this checker has
    d_in, d, n_out = int(rng.integers(1, 4)), int(rng.choice([2, 3, 4])), int(rng.integers(1, 3))
    b = GraphBuilder(d_in)
    h = b.linear("embed", "x", _mat(rng, d, d_in, 1.5), rng.normal(0, 0.3, d))
    focus = names[(i // len(RESIDUAL_METHODS)) % len(names)]
    blocks = [op for op in [focus] + [str(o) for o in rng.choice(names, int(rng.integers(0, 3)))] if op in GENERATORS] or ["relu"]
    site = None
    for j, op in enumerate(blocks):
        y = GENERATORS[op](b, rng, f"b{j}.{op}", h, d)
        h = b.add(f"b{j}", h, b.linear(f"b{j}.down", y, _mat(rng, d, d, 0.7)))
        site = site or (h if rng.random() < 0.7 else None)
    site = site or h
    out = b.linear("out", h, _mat(rng, n_out, d), rng.normal(0, 0.3, n_out))
    sha = save_graph(b, tmp / f"m{i}.npz", out)
    m = int(rng.integers(2, 7))
    sae = {"W_enc": rng.normal(0, 0.7, (d, m)), "b_enc": rng.normal(0, 0.2, m), "W_dec": rng.normal(0, 0.7, (m, d)),
           "b_dec": rng.normal(0, 0.1, d)}
    np.savez(tmp / f"sae{i}.npz", **sae)
    sae_sha = hashlib.sha256((tmp / f"sae{i}.npz").read_bytes()).hexdigest()
    keep = sorted(int(j) for j in rng.choice(m, int(rng.integers(1, m + 1)), replace=False))
    features = "all" if rng.random() < 0.3 else str(keep)
    expl = f'  - sae: {{site: {site}, path: sae{i}.npz, sha256: "{sae_sha}", features: {features}}}'
    kind = "free" if focus == "free" else rng.choice(["sae", "sae", "sae", "zero", "constant", "free"])
    if kind != "sae" and "free" in OPS:  # ablate some coordinates of the site (its site form came with the free op)
        idx = sorted(int(j) for j in rng.choice(d, int(rng.integers(1, d + 1)), replace=False))
        fill = {"zero": "zero", "constant": "{constant: 0.5}", "free": "free"}[kind]
        expl = f"  - ablate: {{site: {site}, indices: {idx}, fill: {fill}}}"
    box = rng.choice(["unit", "small", "degenerate", "point"])
    c = rng.uniform(-1, 1, d_in)
    r = {"unit": np.ones(d_in), "small": rng.uniform(0.01, 0.2, d_in), "degenerate": np.where(rng.random(d_in) < 0.5, 0.0, 0.3),
         "point": np.zeros(d_in)}[box]
    lo, up = (c - r, c + r) if box != "unit" else (-r, r)
    fmt = lambda v: "[" + ", ".join(str(Fraction(float(x)).limit_denominator(1000)) for x in v) + "]"  # noqa: E731
    spec = tmp / f"case{i}.yaml"
    spec.write_text("\n".join([
        "version: 1", f'model: {{path: m{i}.npz, sha256: "{sha}"}}', "input:",
        f"  box: {{lower: {fmt(lo)}, upper: {fmt(np.maximum(up, lo))}}}", "explanation:",
        expl,
        "property: {deviation: linf, tolerance: TOL}", ""]))
    return spec


def save_graph(b, path: Path, out: str) -> str:
    b.save(path, out)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_graph_case(rng, tmp: Path, i: int, method: str) -> dict:
    from certify.engine import exact_witness
    from certify.engine_graph import prepare_graph

    spec = random_graph_case(rng, tmp, i, method)
    text = spec.read_text()
    spec.write_text(text.replace("TOL", "1"))
    probe = prepare_graph(spec, tmp / f"case{i}.probe.cert.json")
    lo, up = (np.array([float(v) for v in b]) for b in probe.box)
    x = attained(probe.joint, lo, up, rng)
    witness = exact_witness(x, probe.box)
    value = mp_deviation(probe.joint, witness)  # mpmath, 50 digits
    lower = Fraction(value) * (1 - Fraction(1, 10**12))  # a float of it, a hair lower: below the true deviation
    tol = Fraction(value * float(rng.choice([0.5, 0.9, 1.1, 2.0]))).limit_denominator(10**6)
    spec.write_text(text.replace("TOL", f'"{tol}"'))
    p = prepare_graph(spec, tmp / f"case{i}.cert.json")
    return check_graph_case(p, method, None if witness_free(i) else witness, {"case": i, "method": method, "exact": lower, "milp": value,
                                                                          "tolerance": tol, "witness": not witness_free(i)})


def check_graph_case(p, method: str, witness, record: dict, budget: float = 1.0) -> dict:
    """The real pipeline on a prepared graph case: the checker's replay of the witness, `method`'s bound,
    the certificate written and checked by the trusted checker; `record` with bound, verdict, reason added.
    witness None: a certificate without one (its bound is the engine's alone, not raised to a witness's deviation)."""
    import math

    from certify.checker.graph import deviation_at
    from certify.engine_graph import bound_graph, write_and_check_graph

    replay = Fraction(0) if witness is None else deviation_at(p.joint, witness)  # the checker's arb replay: the witness's deviation
    try:
        bound, body, notes = bound_graph(p, method, time_budget=budget, lower=replay)
    except OverflowError as exc:  # float64 overflow in the engine (exp of a wide range): no certificate, counted apart
        return {**record, "bound": None, "verdict": Verdict.UNKNOWN, "reason": f"engine: {exc}"}
    except RuntimeError as exc:  # token branch and bound whose leaves all overflowed: the engine's own refusal (bounds/tokens.py)
        if not str(exc).startswith("no finite bound"):
            raise
        return {**record, "bound": None, "verdict": Verdict.UNKNOWN, "reason": f"engine: {exc}"}
    if not math.isfinite(bound):  # a token domain's CROWN pass that overflowed: no certificate either
        return {**record, "bound": None, "verdict": Verdict.UNKNOWN, "reason": "engine: no finite bound (an exp overflows)"}
    result = write_and_check_graph(p, method, bound, body, witness, replay, notes)
    return {**record, "bound": result.bound, "verdict": result.verdict, "reason": result.reason}


def _graph_chunk(seed: int, start: int, stop: int, methods, jax_cache=None, case=None) -> list[dict]:
    """Cases start..stop-1 of a graph family: `case` (default run_graph_case, the residual family)."""
    case = case or run_graph_case
    with tempfile.TemporaryDirectory() as tmp:
        return [case(np.random.default_rng([seed, i]), Path(tmp), i, methods[i % len(methods)]) for i in range(start, stop)]


# --------------------------------------------------------------------------- the transformer family (issue 17)

TRANSFORMER_METHODS = ("interval", "crown", "alpha", "bab")  # alpha on a token domain is CROWN's pass (bounds/tokens.py)
ARCHS = ("attn", "fold", "tokens", "mlp")
AFFINE_OPS = ("linear", "affine", "add", "sub")  # downstream of a free fill: |d_i| convex in the free values
NO_ABLATE = (".diffs", ".exp", ".denominator", ".centre", ".sq", ".var", ".eps", ".rsqrt", ".inv")  # feed a reciprocal or rsqrt
LOW_RANK = (".tok", ".q", ".k", ".ov", "unembed", ".in", ".out", ".out_tok")


def random_transformer(rng, V: int, n: int):
    """(builder, arch and softmax form, head name): a random one-layer, one-head transformer built by certify/model/transformer.py.
    attn: attn_only (difference or product softmax, biases sometimes); fold: attn_only's folded form (QK
    in its singular basis, OV folded into W_U); tokens: attention_tokens (the head over the one-hot input);
    mlp: attention, then a LayerNorm (sometimes) and a ReLU or GELU MLP per position."""
    from certify.checker.graph import OPS
    from certify.model.transformer import TransformerBuilder, attn_only

    d, dh = int(rng.integers(2, 5)), int(rng.integers(1, 3))
    sharp = float(rng.choice([0.5, 1.0, 3.0]))  # score scale: flat to peaked patterns
    p = {"W_E": rng.normal(0, 1, (V, d)), "W_pos": rng.normal(0, 1, (n, d)), "W_U": _mat(rng, V, d).T}
    for c in "QK":
        p[f"blocks.0.attn.W_{c}"] = rng.normal(0, sharp / np.sqrt(d), (1, d, dh))
    p["blocks.0.attn.W_V"], p["blocks.0.attn.W_O"] = rng.normal(0, 1 / np.sqrt(d), (1, d, dh)), rng.normal(0, 1 / np.sqrt(dh), (1, dh, d))
    arch = str(rng.choice(ARCHS))
    forms = ["difference", "product"] + (["softmax"] if "softmax" in OPS else [])  # the softmax op, where this checker has it
    queries = None if rng.random() < 0.5 else [n - 1]
    if arch in ("attn", "fold") and rng.random() < 0.4:
        p["blocks.0.attn.b_V"] = rng.normal(0, 0.3, (1, dh))
        if arch == "attn":
            p["blocks.0.attn.b_Q"], p["blocks.0.attn.b_O"] = rng.normal(0, 0.3, (1, dh)), rng.normal(0, 0.3, d)
    if arch in ("attn", "fold"):
        form = str(rng.choice(forms))
        return attn_only(p, vocab=V, length=n, queries=queries, softmax=form, fold=arch == "fold"), f"{arch}/{form}", "blocks.0.attn.h0"
    b = TransformerBuilder(V, n)
    h = b.embed("embed", p["W_E"], p["W_pos"])
    head = [p[f"blocks.0.attn.W_{c}"][0] for c in "QKVO"]
    form = "difference" if arch == "tokens" else str(rng.choice(forms))
    if arch == "tokens":
        h = b.attention_tokens("blocks.0.attn.h0", h, *head, queries=queries)
    else:
        h = b.attention("blocks.0.attn.h0", h, *head, queries=queries, softmax=form)
        if rng.random() < 0.5:
            h = b.layernorm_positions("ln", h, 1 + 0.3 * rng.normal(size=d), 0.2 * rng.normal(size=d), eps=float(rng.choice([1e-5, 1e-2])))
        m = int(rng.integers(2, 5))
        h = b.mlp("mlp", h, _mat(rng, m, d).T, rng.normal(0, 0.3, m), _mat(rng, d, m).T, rng.normal(0, 0.3, d),
                  act=str(rng.choice(["relu", "gelu"])))
    b.unembed("unembed", h, p["W_U"])
    return b, f"{arch}/{form}", "blocks.0.attn.h0"


def _downstream(nodes: list[dict], site: str) -> list[dict]:
    reach, out = {site}, []
    for node in nodes:
        if reach & set(node["inputs"]):
            reach.add(node["name"])
            out.append(node)
    return out


def _upstream_ops(nodes: list[dict], site: str) -> set:
    by, need, ops = {node["name"]: node for node in nodes}, [site], set()
    while need:
        node = by.get(need.pop())
        if node is not None:
            ops.add(node["op"])
            need.extend(node["inputs"])
    return ops


EXTENDED_FROM = 2000  # cases from this index on also draw two-layer tl_graph models and the attention / low_rank_circuit
# transforms (added after soundness-transformer-2000.json was run: cases 0-1999 are drawn exactly as then)


def random_tl2(rng, V: int, n: int):
    """(builder, arch and form, head name): a random two-layer transformer with MLPs (tl_graph: TransformerLens
    names, 1-2 heads per layer, LayerNorms ln1, ln2, ln_final sometimes, ReLU or GELU), one of its heads."""
    from certify.model.transformer import tl_graph

    d, dh, m, heads = int(rng.integers(2, 5)), int(rng.integers(1, 3)), int(rng.integers(2, 5)), int(rng.integers(1, 3))
    sharp = float(rng.choice([0.3, 0.5, 1.0]))  # two layers widen the ranges: milder scores than one layer's
    p = {"W_E": rng.normal(0, 1, (V, d)), "W_pos": rng.normal(0, 1, (n, d)), "W_U": _mat(rng, V, d).T}
    for layer in range(2):
        pre = f"blocks.{layer}"
        for c in "QK":
            p[f"{pre}.attn.W_{c}"] = rng.normal(0, sharp / np.sqrt(d), (heads, d, dh))
        p[f"{pre}.attn.W_V"], p[f"{pre}.attn.W_O"] = rng.normal(0, 1 / np.sqrt(d), (heads, d, dh)), rng.normal(0, 1 / np.sqrt(dh), (heads, dh, d))
        p[f"{pre}.mlp.W_in"], p[f"{pre}.mlp.b_in"] = _mat(rng, m, d).T, rng.normal(0, 0.3, m)
        p[f"{pre}.mlp.W_out"], p[f"{pre}.mlp.b_out"] = _mat(rng, d, m).T, rng.normal(0, 0.3, d)
    if rng.random() < 0.5:
        for name in ("blocks.0.ln1", "blocks.0.ln2", "blocks.1.ln1", "blocks.1.ln2", "ln_final"):
            p[f"{name}.w"], p[f"{name}.b"] = 1 + 0.3 * rng.normal(size=d), 0.2 * rng.normal(size=d)
    form = str(rng.choice(["difference", "softmax"]))
    b = tl_graph(p, vocab=V, length=n, queries=None if rng.random() < 0.5 else [n - 1], softmax=form,
                 act=str(rng.choice(["relu", "gelu"])))
    return b, f"tl2/{form}", f"blocks.{int(rng.integers(2))}.attn.h{int(rng.integers(heads))}"


def _circuit_transform(rng, b, head: str, arch: str) -> str | None:
    """attention {head, pattern: uniform | max_token} where the head's pattern is a softmax pattern (not the
    product form), or low_rank_circuit {head, circuit: qk | ov, rank} where the head has q, k, ov nodes of d x d
    circuits (not the folded or attention_tokens forms); None where neither applies."""
    kinds = (["attention"] if not arch.endswith("/product") else []) + \
        (["low_rank_circuit"] if arch.split("/")[0] in ("attn", "mlp", "tl2") else [])
    if not kinds:
        return None
    if str(rng.choice(kinds)) == "attention":
        return f"  - attention: {{head: {head}, pattern: {rng.choice(['uniform', 'max_token'])}}}"
    q = next(node for node in b.nodes if node["name"] == f"{head}.q")
    w = b.arrays[q["weight"]]
    dh = w.shape[0] // (w.shape[1] // b.d_model)  # q is per position: (positions * d_head, positions * d)
    biased = "bias" in q and np.any(b.arrays[q["bias"]] != 0) or any(  # qk: no b_Q, b_K
        np.any(b.arrays[k["bias"]] != 0) for k in b.nodes if k["name"] == f"{head}.k" and "bias" in k)
    circuit = "ov" if biased else str(rng.choice(["qk", "ov"]))
    return f"  - low_rank_circuit: {{head: {head}, circuit: {circuit}, rank: {int(rng.integers(1, dh + 1))}}}"


def random_explanation(rng, b, tmp: Path, i: int, head: str, arch: str = "") -> list[str]:
    """One or two transforms that the spec language accepts on a transformer graph: ablate (zero, constant,
    mean where no curve is upstream, free where everything downstream is affine; a few coordinates or all)
    of a random value (positional embeddings, the direct path, the head's output, q, k, scores, the pattern,
    the MLP), low_rank of a linear node (pinned later by `certify pin`), or an SAE at a residual value."""
    from certify.checker.graph import CURVE_OPS

    names = [node["name"] for node in b.nodes]
    sites = [s for s in names if not s.endswith(NO_ABLATE)]
    lines = []
    for _ in range(1 if rng.random() < 0.7 else 2):
        kind = str(rng.choice(["ablate_pos", "ablate", "ablate", "ablate", "low_rank", "sae"] + (["circuit"] * 2 if i >= EXTENDED_FROM else [])))
        if kind == "circuit":
            line = _circuit_transform(rng, b, head, arch)
            if line is not None and not any(line.split(":")[0] == other.split(":")[0] for other in lines):
                lines.append(line)
                continue
            kind = "ablate"
        if kind == "low_rank" and any("low_rank" in line for line in lines):
            kind = "ablate"  # one low_rank per case: `certify pin` cannot pin a second one on a graph yet (lead inbox, 08:22)
        if kind == "low_rank":
            nodes = [node for node in b.nodes if node["op"] == "linear" and node["name"].endswith(LOW_RANK)]
            node = nodes[int(rng.integers(len(nodes)))]
            w = b.arrays[node["weight"]]
            lines.append(f"  - low_rank: {{layer: {node['name']}, rank: {int(rng.integers(0, min(w.shape) + 1))}}}")
            continue
        if kind == "sae":
            site = str(rng.choice([s for s in ("embed", head, "blocks.0.attn.sum0", "mlp") if s in names]))
            w, m = b.dims[site], int(rng.integers(2, 7))
            np.savez(tmp / f"sae{i}_{len(lines)}.npz", W_enc=rng.normal(0, 0.7, (w, m)), b_enc=rng.normal(0, 0.2, m),
                     W_dec=rng.normal(0, 0.7, (m, w)), b_dec=rng.normal(0, 0.1, w))
            sha = hashlib.sha256((tmp / f"sae{i}_{len(lines)}.npz").read_bytes()).hexdigest()
            lines.append(f'  - sae: {{site: {site}, path: sae{i}_{len(lines)}.npz, sha256: "{sha}", features: all}}')
            continue
        site = "embed.pos" if kind == "ablate_pos" else str(rng.choice(sites))
        width = b.dims[site]
        free_ok = all(node["op"] in AFFINE_OPS for node in _downstream(b.nodes, site))
        mean_ok = not _upstream_ops(b.nodes, site) & set(CURVE_OPS) and not any("free" in line for line in lines)  # no curve, no free value before it
        fills = ["zero", "constant"] + (["mean"] if mean_ok else []) + (["free"] if free_ok else [])
        fill = str(rng.choice(fills))
        k = int(rng.integers(1, min(width, 3) + 1))
        idx = "" if fill != "free" and rng.random() < 0.5 else f", indices: {sorted(int(j) for j in rng.choice(width, k, replace=False))}"
        value = {"zero": "zero", "free": "free", "mean": "{mean: {samples: 16, seed: 3}}",
                 "constant": f"{{constant: {rng.choice(['1/2', '-1', '1/3', '2'])}}}"}[fill]
        lines.append(f"  - ablate: {{site: {site}{idx}, fill: {value}}}")
    return lines


def random_transformer_case(rng, tmp: Path, i: int, method: str) -> tuple[Path, dict]:
    """A random tiny transformer (vocabulary 3-8, length 2-4, at most 4,096 sequences), a random circuit
    explanation and a token domain (per-position allowed sets sometimes); the spec's tolerance is TOL."""
    V, n = int(rng.integers(3, 9)), int(rng.integers(2, 5))
    while V ** n > 4096:
        n -= 1
    b, arch, head = random_tl2(rng, V, n) if i >= EXTENDED_FROM and rng.random() < 0.4 else random_transformer(rng, V, n)
    sha = save_graph(b, tmp / f"m{i}.npz", "unembed")
    expl = random_explanation(rng, b, tmp, i, head, arch)
    allowed = ["all" if rng.random() < 0.6 else str(sorted(int(t) for t in rng.choice(V, int(rng.integers(1, V + 1)), replace=False)))
               for _ in range(n)]
    tokens = f"{{vocab: {V}, length: {n}" + ("}" if all(a == "all" for a in allowed) else f", allowed: [{', '.join(allowed)}]}}")
    spec = tmp / f"case{i}.yaml"
    spec.write_text("\n".join([
        "version: 1", f'model: {{path: m{i}.npz, sha256: "{sha}"}}', f"input: {{tokens: {tokens}}}", "explanation:", *expl,
        "property: {deviation: linf, tolerance: TOL}", "options: {max_leaves: 8}", ""]))
    return spec, {"arch": arch, "vocab": V, "length": n, "explanation": [line.split(", path:")[0].strip(" -") for line in expl]}


def _free_vertices(joint) -> list:
    """The joint graph with each `free` node fixed at one vertex of its box (over the coordinates its
    ablation keeps free: the others are multiplied by 0), every combination: with only affine ops
    downstream, |d_i| is convex in the free values, so the maximum over them is at one of these."""
    from dataclasses import replace

    from certify.checker.graph import make_graph

    free = [node for node in joint.nodes if node.op == "free"]
    masks = {node.name: next(m.scale for m in joint.nodes if m.inputs == (node.name,) and m.op == "affine") for node in free}
    coords = [(node.name, j) for node in free for j, s in enumerate(masks[node.name]) if s != 0]
    graphs = []
    for corner in itertools.product((0, 1), repeat=len(coords)):
        pick = dict(zip(coords, corner))
        nodes = [replace(node, lower=tuple(node.upper[j] if pick.get((node.name, j)) else node.lower[j] for j in range(len(node.lower))),
                         upper=tuple(node.upper[j] if pick.get((node.name, j)) else node.lower[j] for j in range(len(node.lower))))
                 if node.op == "free" else node for node in joint.nodes]
        graphs.append(make_graph(joint.in_dim, nodes, joint.output, "free vertex"))
    return graphs


def exhaustive_max(joint, box, replays: int = 3) -> tuple[Fraction, float, list, float, int]:
    """The exact maximum of max_i |d_i| over every sequence of the token domain (and every vertex of the free
    values): all sequences in float64 (numpy, `_batch`), then the best `replays` (sequence, vertex) pairs
    replayed exactly by the checker's evaluator (`deviation_at`, a proven lower bound: a true deviation) and
    at 50 digits by mpmath (independent of it). Returns (exact, float maximum, the exact maximiser's one-hot
    sequence, its mpmath value, sequences)."""
    from certify.bounds.graph import floats
    from certify.bounds.tokens import one_hot
    from certify.checker.graph import deviation_at

    seqs = np.array(list(itertools.product(*box.allowed)), dtype=np.int64)
    X = one_hot(seqs, box.vocab)
    graphs = _free_vertices(joint)
    try:
        values = np.stack([_batch(floats(g), X) for g in graphs])  # (vertices, sequences)
    except OverflowError as exc:  # a free range beyond float64 (the product refuses such a spec with exit 2)
        raise OracleRefused(f"the float64 oracle overflows: {exc}") from None
    if not np.all(np.isfinite(values)):
        raise OracleRefused(f"the float64 oracle is not finite on {int(np.sum(~np.isfinite(values)))} sequences")
    best = []
    for flat in np.argsort(-values, axis=None)[:replays]:
        v, s = divmod(int(flat), len(seqs))
        x = [Fraction(int(t)) for t in X[s]]
        best.append((deviation_at(graphs[v], x), mp_deviation(graphs[v], x), x))
    exact, mp, x = max(best, key=lambda t: t[0])
    return max(exact, Fraction(0)), float(values.max()), x, mp, len(seqs)  # |d| >= 0: a ball around 0 has a negative lower end


class OracleRefused(RuntimeError):
    """The float64 enumeration overflows (exp of a score beyond ~709): no exact maximum for this case."""


def run_transformer_case(rng, tmp: Path, i: int, method: str) -> dict:
    """One case; an oracle that cannot enumerate (`oracle_refused`) and any exception of the product (a
    checker or engine crash, a bad input it made itself: `error`) are recorded, not raised, so that a long
    campaign goes on and they are counted apart."""
    t0, info = time.perf_counter(), {}
    try:
        return {**_transformer_case(rng, tmp, i, method, info), "seconds": round(time.perf_counter() - t0, 2)}
    except (Exception, MemoryError) as exc:  # noqa: BLE001 (each one is counted and printed)
        kind = "oracle_refused" if isinstance(exc, OracleRefused) else "error"  # BadInput too: this generator writes only valid specs
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return {"case": i, "method": method, "bound": None, "exact": Fraction(0), "milp": 0.0, "tolerance": Fraction(0),
                "verdict": Verdict.UNKNOWN, "reason": f"{kind}: {type(exc).__name__}: {str(exc)[:300]} ({Path(where.filename).name}:{where.lineno})",
                kind: True, "seconds": round(time.perf_counter() - t0, 2), **info}


def _transformer_case(rng, tmp: Path, i: int, method: str, info: dict) -> dict:
    from certify.engine_graph import prepare_graph
    from certify.pin import pin_spec

    spec, made = random_transformer_case(rng, tmp, i, method)
    info.update(made)
    spec.write_text(spec.read_text().replace("TOL", "1"))
    pin_spec(spec)  # low_rank on a graph: its factors pinned in the spec, as a user would (`certify pin`)
    text = spec.read_text().replace("tolerance: 1}", "tolerance: TOL}")
    probe = prepare_graph(spec, tmp / f"case{i}.probe.cert.json")
    exact, value, x, mp, count = exhaustive_max(probe.joint, probe.box)
    tol = Fraction(float(exact) * float(rng.choice([0.5, 0.9, 0.999, 1.001, 1.1, 2.0, 5.0]))).limit_denominator(10**6)
    # half the certificates carry no witness: the engine writes max(bound, witness deviation) and the checker rejects a
    # bound below its witness, so with the exact maximiser as witness an accepted bound below the maximum could never
    # show as `unsound` (nor a wrong CERTIFIED: the witness makes it VIOLATED); without one, both are live tests
    witness = x if rng.random() < 0.5 else None
    spec.write_text(text.replace("TOL", f'"{tol}"'))
    p = prepare_graph(spec, tmp / f"case{i}.cert.json")
    record = {"case": i, "method": method, "exact": exact, "milp": value, "mp": mp, "tolerance": tol, "sequences": count,
              "witness": witness is not None, **info}
    return check_graph_case(p, method, witness, record, budget=TRANSFORMER_BUDGET)


TRANSFORMER_BUDGET = 60.0  # seconds of token branch and bound per case (its 8 leaves, options.max_leaves, usually end it first)


def _transformer_chunk(seed: int, start: int, stop: int, methods, jax_cache=None) -> list[dict]:
    return _graph_chunk(seed, start, stop, methods, jax_cache, case=run_transformer_case)


FAMILY_METHODS = {"dense": METHODS, "residual": RESIDUAL_METHODS, "transformer": TRANSFORMER_METHODS}

def merge_records(paths) -> tuple[dict, list[dict]]:
    """The summary of chunks written with --records (a campaign run in parts)."""
    records = []
    for path in paths:
        for r in json.loads(Path(path).read_text()):
            records.append({**r, "bound": None if r["bound"] is None else Fraction(r["bound"]), "exact": Fraction(r["exact"]),
                            "tolerance": Fraction(r["tolerance"]), "verdict": Verdict(r["verdict"])})
    records.sort(key=lambda r: r["case"])
    assert len({r["case"] for r in records}) == len(records), "a case appears in two chunks"
    return summarise(records), records


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--family", choices=("dense", "residual", "transformer"), default="dense")
    ap.add_argument("--methods", default=None, help="default: interval,crown,alpha,lp,bab (dense); interval,crown,alpha,bab (residual, transformer)")
    ap.add_argument("--first", type=int, default=0, help="the first case's index (a later chunk of a campaign)")
    ap.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--records", type=Path, help="also write every case's record (JSON) here")
    ap.add_argument("--merge", type=Path, nargs="+", help="no cases: the summary of these --records files (the chunks of a campaign)")
    ap.add_argument("--memory-gb", type=float, default=None, help="address-space limit per process (RLIMIT_AS, inherited by the "
                    "workers; default 3 for the transformer family, none otherwise): a case that blows up fails with MemoryError, "
                    "counted in `errors`, instead of taking the machine")
    args = ap.parse_args(argv)
    memory = args.memory_gb if args.memory_gb is not None else 3.0 if args.family == "transformer" else 0
    if memory > 0:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = int(memory * 2**30) if hard == resource.RLIM_INFINITY else min(int(memory * 2**30), hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    if args.merge:
        summary, records = merge_records(args.merge)
        summary["family"] = args.family
        print(json.dumps(summary, indent=1))
        if args.json:
            args.json.write_text(json.dumps(summary, indent=1))
        return 0 if summary["unsound"] == summary["wrong_certified"] == summary["rejected"] == summary["errors"] == 0 else 1
    t = time.perf_counter()
    methods = tuple(args.methods.split(",")) if args.methods else FAMILY_METHODS[args.family]
    summary, records = run(args.cases, args.seed, methods, progress=True, workers=args.workers, family=args.family,
                           chunk={"dense": 50, "residual": 20, "transformer": 10}[args.family], first=args.first)
    summary["family"] = args.family
    summary["seed"], summary["first"] = args.seed, args.first
    summary["workers"] = args.workers
    summary["seconds"] = round(time.perf_counter() - t, 1)
    print(json.dumps(summary, indent=1))
    bad = [r for r in records if r["verdict"] is Verdict.REJECTED or (r["bound"] is not None and r["bound"] < r["exact"]) or r.get("error")]
    for r in bad[:20]:
        print(f"  case {r['case']} {r['method']}: {r['verdict'].value} {r['reason']}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    if args.records:  # every case, for merging the chunks of a long campaign (merge_records)
        args.records.write_text(json.dumps([{**r, "bound": None if r["bound"] is None else str(r["bound"]), "exact": str(r["exact"]),
                                             "tolerance": str(r["tolerance"]), "verdict": r["verdict"].value} for r in records]))
    return 0 if summary["unsound"] == summary["wrong_certified"] == summary["rejected"] == summary["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
