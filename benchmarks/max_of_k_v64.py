"""Max-of-K at V = 64, K = 4 (issue 17's timing target): the exhaustive exact maximum of the deviation
against certify's checked bounds and their time.

    python benchmarks/max_of_k_v64.py [--json PATH] [--methods crown,bab,bab-claim] [--bab-seconds S] [--fraction F]
                                      [--repeat N] [--no-certify] [--jobs J] [--generic-fraction F]

Target (issue 17): "At V = 64, K = 4 (16.7 million sequences), bounding plus checking takes under a
tenth of the exhaustive enumeration's time"; and the certified bound within 1.05x of the exact maximum.

The deviation is the one specs/max_of_k_circuit.yaml certifies: max_i |f_i - g_i| over the last
position's 64 logits, f the one-layer attention-only transformer of models/maxofk_tl.npz, g the same
with W_pos zero-ablated, over all 64^4 token sequences.

Enumeration (`enumerate_deviation`, numpy, float64, one process): the model is one head reading the
last position, so every sequence's logits come from per-position tables, computed once (the
embeddings reused): the query-key score table S[j][a, b] (query token a at the last position, key
token b at position j), the OV-unembed table VO[j][b] (row b: the value of token b at position j
through W_V W_O W_U) and the residual-unembed table R[a], for f and for g. The last `outer` positions
are looped over in Python; the first ones are a broadcast batch (V^(n-outer) sequences at a time:
memory stays near 100 MB). Per batch: the scores gathered, a float64 softmax, the pattern-weighted
sum of the VO rows, f - g, |.| and the max over logits. The `top` largest sequences are kept.

Exact replay: those `top` sequences are evaluated by the checker's forward pass
(certify.checker.graph.evaluate on the spec's joint graph, arb balls at 256 bits: exact rationals
except the exp, proven to ~1e-70), so `exact_max` is the replayed value of the best sequence (a
proven enclosure [lower, upper] of the true value at that sequence) and `float_vs_replay` is the
largest float64 error seen on them. The maximum is established when the float64 gap between the best
and the `top`-th value is far above that error (reported: `gap_to_top`).

certify: `run_check` on the same spec per method (crown; bab: branch and bound over tokens aiming at
1.05x the exact maximum, its tolerance set there, for --bab-seconds; on this graph bab writes
softmax-ratio leaves, one per last token, `leaf: ratio`, see certify/checker/attention.py, proving the exact bound;
bab-claim: the same leaves claiming the smaller of the tolerance and 1.04x the attained deviation, `bound_rule:
claimed`, certify/bounds/tokens.py::ratio_claim), its bound, the engine's
seconds, the checker's seconds (wall) and the process CPU seconds (this process and its children),
and ratio = bound / exact max, time_ratio = (bound + check seconds) / enumeration seconds (also with the
falsifier and set-up: time_ratio_with_falsify; in CPU seconds, this process and its children:
cpu_ratio (bound and check phases, timed by wrapping engine_graph's bound_graph and write_and_check_graph)
and cpu_ratio_with_falsify (everything)). --repeat N
runs N rounds of (enumeration, crown) and reports the medians (bab runs once).

Second reference (`generic_oracle`): the package's own oracle (certify.bounds.tokens: the spec's joint
graph jitted in JAX on one-hot batches, as benchmarks/transformers.py uses at V = 16), timed on a
fixed random --generic-fraction of the sequences and extrapolated (it would take ~10 minutes in full
here); its values on 2,000 of them are compared with the tables' (`tables_vs_jax_max_abs_diff`).

--onnx: also CROWN on benchmarks/max_of_k_onnx_v64.yaml (the same weights as PyTorch exports them),
after replaying the maximiser on that spec's joint graph (`certify_onnx`), and bab there (`certify_onnx_bab`:
ratio leaves) when bab is among the methods.

--fraction F < 1 enumerates a fixed random fraction of the `outer` loop's iterations and
extrapolates the time (the JSON says so; exact_max is then only the best of that fraction).
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import resource
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SPEC = "specs/max_of_k_circuit.yaml"
WEIGHTS = "models/maxofk_tl.npz"
ONNX_SPEC = "benchmarks/max_of_k_onnx_v64.yaml"  # the same weights exported from PyTorch (models/maxofk.onnx)


def _cpu() -> float:
    """CPU seconds of this process and its reaped children (user + system)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


# ----------------------------------------------------------------------------- enumeration


def tables(p: dict, W_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(S, VO, R) of a one-layer, one-head, attention-only transformer (TransformerLens weights p, no
    biases) read at the last position, with positional embeddings W_pos (n, d):
    S[j, a, b] = ((W_E[a] + W_pos[n-1]) W_Q) . ((W_E[b] + W_pos[j]) W_K) / sqrt(d_head),
    VO[j, b] = (W_E[b] + W_pos[j]) W_V W_O W_U, R[a] = (W_E[a] + W_pos[n-1]) W_U."""
    W_E, W_U = p["W_E"], p["W_U"]
    W_Q, W_K, W_V, W_O = (p[f"blocks.0.attn.W_{c}"][0] for c in "QKVO")
    n = W_pos.shape[0]
    h = W_E[None, :, :] + W_pos[:, None, :]  # (n, V, d): token b at position j
    q = h[n - 1] @ W_Q / np.sqrt(W_Q.shape[1])  # (V, d_head)
    S = np.einsum("ac,jbc->jab", q, h @ W_K)
    VO = h @ (W_V @ W_O @ W_U)
    R = h[n - 1] @ W_U
    return S, VO, R


def _softmax_weights(S: np.ndarray, a: int, suffix: tuple, m: int, V: int) -> np.ndarray:
    """The pattern of query token a over the n positions, for every prefix (t_0..t_{m-1}) in a (V,)*m
    grid and the fixed suffix tokens: shape (n, V, ..., V)."""
    n = S.shape[0]
    grid = (V,) * m
    s = np.empty((n, *grid))
    for j in range(n):
        if j < m:
            shape = [1] * m
            shape[j] = V
            s[j] = S[j, a].reshape(shape)
        else:
            s[j] = S[j, a, suffix[j - m]]
    s -= s.max(axis=0)
    np.exp(s, out=s)
    s /= s.sum(axis=0)
    return s


def _logits(w: np.ndarray, VO: np.ndarray, R: np.ndarray, a: int, suffix: tuple, m: int, V: int) -> np.ndarray:
    """sum_j w_j VO[j, t_j] + R[a] on the prefix grid: shape (V,)*m + (V_out,)."""
    n = VO.shape[0]
    out = R[a] + sum(w[j, ..., None] * VO[j, suffix[j - m]] for j in range(m, n))  # the fixed positions
    for j in range(m):
        shape = [1] * m + [VO.shape[2]]
        shape[j] = V
        out = out + w[j, ..., None] * VO[j].reshape(shape)
    return out


def enumerate_deviation(p: dict, *, outer: int = 2, top: int = 16, fraction: float = 1.0, seed: int = 0) -> dict:
    """max over every token sequence of max_i |f_i - g_i| (g: W_pos = 0), float64: {best: [(value,
    tokens), ...] (the `top` largest, descending), sequences, seconds, cpu_seconds, iterations, done}.
    The last `outer` positions are a Python loop (a fixed random `fraction` of its iterations when < 1)."""
    t0, c0 = time.perf_counter(), _cpu()
    V, n = p["W_E"].shape[0], p["W_pos"].shape[0]
    Sf, VOf, Rf = tables(p, p["W_pos"])
    Sg, VOg, Rg = tables(p, np.zeros_like(p["W_pos"]))
    m = n - outer
    suffixes = [tuple(int(v) for v in np.unravel_index(i, (V,) * outer)) for i in range(V ** outer)]
    if fraction < 1.0:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(suffixes), size=max(1, round(fraction * len(suffixes))), replace=False))
        suffixes = [suffixes[i] for i in keep]
    heap: list[tuple[float, tuple]] = []  # a min-heap of the `top` largest (value, tokens)
    for suffix in suffixes:
        a = suffix[-1]  # the query token (last position)
        d = _logits(_softmax_weights(Sf, a, suffix, m, V), VOf, Rf, a, suffix, m, V)
        d -= _logits(_softmax_weights(Sg, a, suffix, m, V), VOg, Rg, a, suffix, m, V)
        value = np.abs(d).max(axis=-1).ravel()
        k = min(top, value.size)
        for i in np.argpartition(-value, k - 1)[:k]:
            v = float(value[i])
            if len(heap) < top or v > heap[0][0]:
                item = (v, tuple(int(t) for t in np.unravel_index(int(i), (V,) * m)) + suffix)
                (heapq.heappush if len(heap) < top else heapq.heapreplace)(heap, item)
    return {"best": sorted(heap, reverse=True), "sequences": len(suffixes) * V ** m, "seconds": time.perf_counter() - t0,
            "cpu_seconds": _cpu() - c0, "iterations": len(suffixes), "done": len(suffixes) == V ** outer}


def brute_force(p: dict) -> tuple[float, tuple]:
    """max over every sequence of max_i |f_i - g_i| by the reference forward pass
    (certify.model.transformer.forward) on all V^n sequences at once: small V and n only."""
    import itertools

    from certify.model.transformer import forward

    V, n = p["W_E"].shape[0], p["W_pos"].shape[0]
    tokens = np.array(list(itertools.product(range(V), repeat=n)))
    d = forward(p, tokens)[:, -1] - forward({**p, "W_pos": np.zeros_like(p["W_pos"])}, tokens)[:, -1]
    value = np.abs(d).max(axis=1)
    i = int(value.argmax())
    return float(value[i]), tuple(int(t) for t in tokens[i])


def replay(joint, tokens: tuple, vocab: int) -> tuple[Fraction, Fraction]:
    """The checker's forward pass (arb balls, 256 bits) at a token sequence: a proven enclosure
    [lower, upper] of max_i |d_i|, as exact rationals."""
    from certify.checker import curves
    from certify.checker.graph import evaluate
    from flint import ctx

    x = [Fraction(0)] * (len(tokens) * vocab)
    for j, t in enumerate(tokens):
        x[j * vocab + t] = Fraction(1)
    with ctx.workprec(256):
        d = [abs(v) for v in evaluate(joint, x)["d"]]
        return max(curves.exact(v.lower(), -1) for v in d), max(curves.exact(v.upper(), 1) for v in d)


def exact_maximum(spec: Path, p: dict, **kw) -> dict:
    """The enumeration, then its `top` sequences replayed by the checker on the spec's joint graph."""
    from certify.engine_graph import prepare_graph

    r = enumerate_deviation(p, **kw)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        joint = prepare_graph(spec, Path(tmp) / "c.json", None, False).joint
    vocab = p["W_E"].shape[0]
    replayed = [(v, t, *replay(joint, t, vocab)) for v, t in r["best"]]
    best = max(replayed, key=lambda e: e[2])
    err = max(abs(float(lo) - v) for v, _, lo, _ in replayed)
    return {"exact_max": float(best[2]), "exact_max_lower": f"{best[2].numerator}/{best[2].denominator}",
            "exact_max_upper": f"{best[3].numerator}/{best[3].denominator}", "exact_tokens": list(best[1]),
            "float_max": r["best"][0][0], "float_vs_replay": err, "gap_to_top": r["best"][0][0] - r["best"][-1][0],
            "top": [{"tokens": list(t), "float": v, "replay": float(lo)} for v, t, lo, _ in replayed],
            "enumeration_seconds": r["seconds"], "enumeration_cpu_seconds": r["cpu_seconds"], "sequences": r["sequences"],
            "complete": r["done"], "iterations": r["iterations"], "replay_seconds": time.perf_counter() - t0}


def values_at(p: dict, tokens: np.ndarray) -> np.ndarray:
    """max_i |f_i - g_i| at the given sequences (batch, n) from the same tables (for cross-checks)."""
    Sf, VOf, Rf = tables(p, p["W_pos"])
    Sg, VOg, Rg = tables(p, np.zeros_like(p["W_pos"]))
    out = np.empty(len(tokens))
    for i, t in enumerate(np.asarray(tokens)):
        t = tuple(int(v) for v in t)  # every position fixed: an empty prefix grid
        d = _logits(_softmax_weights(Sf, t[-1], t, 0, 0), VOf, Rf, t[-1], t, 0, 0)
        d = d - _logits(_softmax_weights(Sg, t[-1], t, 0, 0), VOg, Rg, t[-1], t, 0, 0)
        out[i] = np.abs(d).max()
    return out


def generic_oracle(spec: Path, p: dict, fraction: float, seed: int = 0, batch: int = 1 << 13) -> dict:
    """The package's own exhaustive oracle (certify.bounds.tokens: the spec's joint graph jitted in JAX,
    one-hot batches of `batch`) timed on a fixed random `fraction` of the sequences and extrapolated;
    its values there compared with the table enumeration's (`values_at`)."""
    from certify.bounds.tokens import _objective
    from certify.engine_graph import prepare_graph

    with tempfile.TemporaryDirectory() as tmp:
        joint = prepare_graph(spec, Path(tmp) / "c.json", None, False).joint
    V, n = p["W_E"].shape[0], p["W_pos"].shape[0]
    fn = _objective(joint)
    fn(np.zeros((batch, n), dtype=np.int32), V)  # compile outside the timing (counted separately)
    rng = np.random.default_rng(seed)
    count = max(batch, int(round(fraction * V ** n / batch)) * batch)
    tokens = rng.integers(0, V, size=(count, n)).astype(np.int32)
    t0, c0 = time.perf_counter(), _cpu()
    values = np.concatenate([np.asarray(fn(tokens[i:i + batch], V)) for i in range(0, count, batch)])
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    check = rng.choice(count, size=min(count, 2000), replace=False)
    return {"sampled_sequences": count, "seconds_sample": round(wall, 3), "cpu_seconds_sample": round(cpu, 3),
            "seconds_extrapolated": round(wall * V ** n / count, 1), "cpu_seconds_extrapolated": round(cpu * V ** n / count, 1),
            "sample_max": float(values.max()),
            "tables_vs_jax_max_abs_diff": float(np.abs(values[check] - values_at(p, tokens[check])).max())}


# ----------------------------------------------------------------------------- certify


def run_certify(spec: Path, method: str, tmp: Path, seconds: float, jobs: int, tolerance: float | None = None,
                slack: Fraction | None = None) -> dict:
    """certify's checked bound on the spec (a copy with another tolerance when given), its seconds. slack: ratio leaves
    claim the smaller of the tolerance and (1 + slack) x the attained deviation (certify.bounds.tokens.ratio_claim)
    instead of proving the exact bound (the default)."""
    from certify import engine_graph as eg
    from certify.bounds import tokens
    from certify.engine import run_check

    path = spec
    if tolerance is not None:  # bab aims at the tolerance: a copy of the spec with the model path made absolute
        text = spec.read_text()
        line = next(v for v in text.splitlines() if v.startswith("model:"))
        rel = line.split("path: ")[1].split(",")[0]
        text = text.replace(line, line.replace(rel, str((spec.parent / rel).resolve())))
        text = text.replace("tolerance: 1000", f'tolerance: "{Fraction(tolerance).limit_denominator(10 ** 6)}"')
        path = tmp / f"{method}.yaml"
        path.write_text(text)
    cert = tmp / f"{method}.cert.json"
    cpu_of: dict[str, float] = {}

    def timed(name, fn):  # the CPU seconds (this process and reaped children) of one phase of run_check
        def call(*a, **k):
            c = _cpu()
            try:
                return fn(*a, **k)
            finally:
                cpu_of[name] = cpu_of.get(name, 0.0) + _cpu() - c
        return call

    saved = {k: getattr(eg, k) for k in ("bound_graph", "write_and_check_graph")}
    eg.bound_graph, eg.write_and_check_graph = timed("bound", saved["bound_graph"]), timed("check", saved["write_and_check_graph"])
    saved_tokens = tokens.bound_tokens
    if slack is not None:
        tokens.bound_tokens = lambda *a, **k: saved_tokens(*a, **k, slack=slack)
    try:
        t0, c0 = time.perf_counter(), _cpu()
        o = run_check(path, cert, method, timeout=seconds, jobs=jobs)
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
    finally:
        eg.bound_graph, eg.write_and_check_graph = saved["bound_graph"], saved["write_and_check_graph"]
        tokens.bound_tokens = saved_tokens
    body = json.loads(cert.read_text())
    e = {"bound": float(o.check.bound) if o.check.bound is not None else None, "verdict": o.check.verdict.value,
         "seconds": round(o.seconds["bound"], 3), "check_seconds": round(o.seconds["check"], 3),
         "falsify_seconds": round(o.seconds["falsify"], 3), "total_seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
         "bound_cpu_seconds": round(cpu_of.get("bound", 0.0), 3), "check_cpu_seconds": round(cpu_of.get("check", 0.0), 3),
         "lower": float(o.lower) if o.lower is not None else None}
    if "bab" in body.get("engine", {}):
        e["leaves"] = body["engine"]["bab"]["leaves"]
        for key in ("leaf", "joint_rows", "bound"):  # softmax-ratio leaves (certify/checker/attention.py): the leaf kind, rows
            if key in body["engine"]["bab"]:  # checked jointly, and whether the bound is the claimed one or the exact one
                e["bound_rule" if key == "bound" else key] = body["engine"]["bab"][key]
    return e


def main() -> None:
    from certify.model.transformer import read_tl

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--methods", default="crown,bab", help="crown, bab (ratio leaves: the exact bound), bab-claim (ratio "
                    "leaves claiming min(tolerance, 1.04x the attained deviation): bounds/tokens.py ratio_claim)")
    ap.add_argument("--bab-seconds", type=float, default=60.0)
    ap.add_argument("--fraction", type=float, default=1.0, help="enumerate this fixed random fraction and extrapolate the time")
    ap.add_argument("--outer", type=int, default=2, help="positions looped over in Python (the rest is one numpy batch)")
    ap.add_argument("--top", type=int, default=16)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-certify", action="store_true")
    ap.add_argument("--onnx", action="store_true", help=f"also CROWN on {ONNX_SPEC} (the PyTorch export), its maximiser replayed")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of enumeration and crown (medians reported; bab once)")
    ap.add_argument("--generic-fraction", type=float, default=1 / 64,
                    help="time the package's JAX graph oracle on this random fraction of the sequences (0: skip)")
    args = ap.parse_args()
    spec = ROOT / SPEC
    p = read_tl(ROOT / WEIGHTS)
    row = {"instance": "maxofk_v64_pos", "spec": SPEC, "weights": WEIGHTS, "vocab": int(p["W_E"].shape[0]),
           "length": int(p["W_pos"].shape[0]), "load_average_before": [round(v, 2) for v in os.getloadavg()],
           "uptime_before": os.popen("uptime").read().strip(),
           "meta": {"python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine(), "jobs": args.jobs,
                    "outer": args.outer, "fraction": args.fraction, "bab_seconds": args.bab_seconds, "repeat": args.repeat,
                    "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}}
    e = exact_maximum(spec, p, outer=args.outer, top=args.top, fraction=args.fraction)
    scale = 1.0 if e["complete"] else row["vocab"] ** row["length"] / e["sequences"]
    row.update({k: e[k] for k in ("exact_max", "exact_max_lower", "exact_max_upper", "exact_tokens", "float_max", "float_vs_replay",
                                  "gap_to_top", "sequences", "complete", "replay_seconds")})
    row["enumeration_seconds"] = round(e["enumeration_seconds"] * scale, 3)
    row["enumeration_cpu_seconds"] = round(e["enumeration_cpu_seconds"] * scale, 3)
    if not e["complete"]:
        row["note"] = (f"only {e['sequences']:,} of {row['vocab'] ** row['length']:,} sequences enumerated (fraction {args.fraction}); "
                       f"seconds extrapolated x{scale:.2f}; exact_max is the best of that fraction only (a lower bound)")
    row["top"] = e["top"]
    print(f"{row['instance']}: {row['sequences']:,} sequences enumerated in {e['enumeration_seconds']:.1f} s "
          f"({e['enumeration_cpu_seconds']:.1f} CPU s){'' if e['complete'] else ' (a fraction; extrapolated ' + str(row['enumeration_seconds']) + ' s)'}")
    print(f"  exact max {row['exact_max']:.6f} at {row['exact_tokens']} (replayed; float64 error {row['float_vs_replay']:.1e}, "
          f"gap to the {args.top}th {row['gap_to_top']:.2e})")
    if args.generic_fraction > 0:
        row["generic_oracle"] = generic_oracle(spec, p, args.generic_fraction)
        g = row["generic_oracle"]
        print(f"  the package's JAX graph oracle: {g['sampled_sequences']:,} random sequences in {g['seconds_sample']:.1f} s "
              f"({g['cpu_seconds_sample']:.1f} CPU s): all {row['vocab'] ** row['length']:,} extrapolated {g['seconds_extrapolated']:.0f} s "
              f"({g['cpu_seconds_extrapolated']:.0f} CPU s); tables vs JAX on 2,000 of them: {g['tables_vs_jax_max_abs_diff']:.1e}")

    def save(final: bool) -> None:
        """Medians so far into row (printed when final); the JSON rewritten (a stopped run keeps what it measured)."""
        row["enumeration_runs"] = enum_runs  # [wall, CPU] seconds per round; the reported ones are the medians
        row["enumeration_seconds"] = float(np.median([w for w, _ in enum_runs]))
        row["enumeration_cpu_seconds"] = float(np.median([c for _, c in enum_runs]))
        for method, rs in runs.items():
            c = dict(sorted(rs, key=lambda v: v["seconds"] + v["check_seconds"])[len(rs) // 2])  # the median round
            if len(rs) > 1:
                c["runs"] = [{k: v[k] for k in ("seconds", "check_seconds", "falsify_seconds", "total_seconds",
                                                "bound_cpu_seconds", "check_cpu_seconds", "cpu_seconds")} for v in rs]
            c["ratio"] = round(c["bound"] / row["exact_max"], 4) if c["bound"] else None
            c["time_ratio"] = round((c["seconds"] + c["check_seconds"]) / row["enumeration_seconds"], 4)
            c["time_ratio_with_falsify"] = round(c["total_seconds"] / row["enumeration_seconds"], 4)
            c["cpu_ratio"] = round((c["bound_cpu_seconds"] + c["check_cpu_seconds"]) / row["enumeration_cpu_seconds"], 4)
            c["cpu_ratio_with_falsify"] = round(c["cpu_seconds"] / row["enumeration_cpu_seconds"], 4)
            if "generic_oracle" in row:
                c["time_ratio_generic_oracle"] = round((c["seconds"] + c["check_seconds"]) / row["generic_oracle"]["seconds_extrapolated"], 4)
            row["certify"][method] = c
            if final:
                print(f"  {method:6s} (median of {len(rs)}): {c['ratio']:.3f}x exact; bound + check {c['seconds'] + c['check_seconds']:.2f} s = "
                      f"{c['time_ratio']:.3f} of the enumeration's {row['enumeration_seconds']:.1f} s (everything, falsifier included: "
                      f"{c['time_ratio_with_falsify']:.3f}); CPU: bound + check {c['cpu_ratio']:.3f} of the enumeration's, everything "
                      f"{c['cpu_ratio_with_falsify']:.3f}")
        row["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
        if args.json:
            args.json.write_text(json.dumps(row, indent=1))

    row["certify"] = {}
    enum_runs = [[round(e["enumeration_seconds"] * scale, 3), round(e["enumeration_cpu_seconds"] * scale, 3)]]
    methods = [] if args.no_certify else [m for m in args.methods.split(",") if m]
    runs: dict[str, list] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeat):  # rounds: (enumeration,) crown, ...; bab in the first round only
            if rep > 0:
                r = enumerate_deviation(p, outer=args.outer, top=args.top, fraction=args.fraction)
                enum_runs.append([round(r["seconds"] * scale, 3), round(r["cpu_seconds"] * scale, 3)])
                print(f"  enumeration again: {r['seconds']:.1f} s ({r['cpu_seconds']:.1f} CPU s)")
            for method in methods:
                bab = method.startswith("bab")
                if bab and rep > 0:
                    continue
                tol = 1.05 * row["exact_max"] if bab else None
                c = run_certify(spec, "bab" if bab else method, Path(tmp), args.bab_seconds if bab else 600.0, args.jobs, tol,
                                Fraction(1, 25) if method == "bab-claim" else None)
                runs[method].append(c)
                print(f"  {method:6s} bound {c['bound']:.4f} ({c['bound'] / row['exact_max']:.3f}x exact, {c['verdict']}): bound "
                      f"{c['seconds']:.1f} s + check {c['check_seconds']:.1f} s (with the falsifier and set-up {c['total_seconds']:.1f} s; "
                      f"CPU {c['bound_cpu_seconds']:.1f} + {c['check_cpu_seconds']:.1f}, all {c['cpu_seconds']:.1f} s){'  leaves ' + str(c['leaves']) if 'leaves' in c else ''}")
            save(final=False)
        if args.onnx:  # the same function as PyTorch exports it: its joint graph replays the maximiser, then CROWN on it
            from certify.engine_graph import prepare_graph

            onnx = ROOT / ONNX_SPEC
            lo, hi = replay(prepare_graph(onnx, Path(tmp) / "onnx.json", None, False).joint, tuple(row["exact_tokens"]), row["vocab"])
            c = run_certify(onnx, "crown", Path(tmp), 600.0, args.jobs)
            c.update(spec=ONNX_SPEC, exact_max_replayed=float(lo), exact_max_replayed_width=float(hi - lo))
            row["certify_onnx"] = c
            print(f"  ONNX ({ONNX_SPEC}): maximiser replayed {float(lo):.6f}; crown bound {c['bound']:.4f} ({c['bound'] / float(lo):.3f}x), "
                  f"bound {c['seconds']:.1f} s + check {c['check_seconds']:.1f} s (CPU {c['bound_cpu_seconds']:.1f} + {c['check_cpu_seconds']:.1f})")
            if "bab" in methods:  # the export has the softmax-ratio form too (its unread query rows dropped): bab on it
                c = run_certify(onnx, "bab", Path(tmp), args.bab_seconds, args.jobs, 1.05 * float(lo))
                c.update(spec=ONNX_SPEC, ratio=round(c["bound"] / float(lo), 6))
                row["certify_onnx_bab"] = c
                print(f"  ONNX bab bound {c['bound']:.6f} ({c['ratio']:.6f}x, {c['verdict']}, leaf {c.get('leaf')}): bound {c['seconds']:.1f} s + "
                      f"check {c['check_seconds']:.1f} s (CPU {c['bound_cpu_seconds']:.1f} + {c['check_cpu_seconds']:.1f})")
        save(final=True)
    row["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    row["uptime_after"] = os.popen("uptime").read().strip()
    print(f"  load average before {row['load_average_before']}, after {row['load_average_after']}")
    if args.json:
        args.json.write_text(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
