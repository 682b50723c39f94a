"""Soundness campaign: random networks, explanations, boxes and methods against an exact oracle.

    python benchmarks/soundness.py --cases N [--seed S] [--workers W] [--json PATH] [--methods interval,crown,alpha,lp,bab]

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
"""

from __future__ import annotations

import argparse
import multiprocessing
import json
import statistics
import sys
import tempfile
import time
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
    bound, body, notes = bound_with(p, method, time_budget=5.0)
    result = write_and_check(p, method, bound, body, witness, replay, notes)
    return {"case": i, "method": method, "bound": result.bound, "exact": replay, "milp": value, "tolerance": tol,
            "verdict": result.verdict, "reason": result.reason}


def summarise(records: list[dict]) -> dict:
    ok = [r for r in records if r["verdict"] is not Verdict.REJECTED]
    ratios = {m: statistics.median([float(r["bound"] / r["exact"]) for r in ok if r["method"] == m and r["exact"] > 0] or [float("nan")])
              for m in sorted({r["method"] for r in records})}
    return {
        "cases": len(records),
        "unsound": sum(1 for r in ok if r["bound"] < r["exact"]),
        "wrong_certified": sum(1 for r in ok if r["verdict"] is Verdict.CERTIFIED and r["exact"] > r["tolerance"]),
        "rejected": sum(1 for r in records if r["verdict"] is Verdict.REJECTED),
        "ratio_median": ratios,
        "verdicts": {v.value: sum(1 for r in records if r["verdict"] is v) for v in Verdict},
        "suspect": sum(1 for r in ok if float(r["bound"]) < r["milp"] - 1e-6 * (1 + abs(r["milp"]))),
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
        chunk: int = 50) -> tuple[dict, list[dict]]:
    spans = [(a, min(a + chunk, cases)) for a in range(0, cases, chunk)]
    records: list[dict] = []

    def done(part):
        records.extend(part)
        if progress:
            print(f"{len(records)} cases: {summarise(records)}", flush=True)

    if workers <= 1:  # one process: JAX's in-memory cache already compiles each shape once
        for a, b in spans:
            done(_chunk(seed, a, b, methods))
    else:  # spawn, not fork: JAX's runtime is not fork-safe
        with tempfile.TemporaryDirectory() as cache, ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for fut in as_completed([pool.submit(_chunk, seed, a, b, methods, cache) for a, b in spans]):
                done(fut.result())
    records.sort(key=lambda r: r["case"])
    return summarise(records), records


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    t = time.perf_counter()
    summary, records = run(args.cases, args.seed, tuple(args.methods.split(",")), progress=True, workers=args.workers)
    summary["workers"] = args.workers
    summary["seconds"] = round(time.perf_counter() - t, 1)
    print(json.dumps(summary, indent=1))
    bad = [r for r in records if r["verdict"] is Verdict.REJECTED or (r["bound"] is not None and r["bound"] < r["exact"])]
    for r in bad[:20]:
        print(f"  case {r['case']} {r['method']}: {r['verdict'].value} {r['reason']}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0 if summary["unsound"] == summary["wrong_certified"] == summary["rejected"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
