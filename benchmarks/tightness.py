"""How close is certify's certified bound to the deviation an input really attains?

    python benchmarks/tightness.py [--quick] [--json PATH] [--no-lirpa]

Builds random ReLU MLPs (fixed seeds; widths 16-256, 2-3 hidden layers) and two explanations:
`prune50` (keep the half of each hidden layer with the largest product of incoming and outgoing
weight norms, zero the rest) and `svd50` (every weight matrix at rank ceil(min(in, out)/2)). Input
regions: L-inf balls whose radius makes about 10 % and 50 % of the first hidden layer's ReLUs
unstable under interval bounds, and the box [-1, 1]^d for the smallest models.

Per instance, in one run: the exact maximum of |f - g|_inf (MILP with HiGHS; null when it does not
finish in its budget), the attained lower bound (falsifier, replayed exactly), certify's bound and
time per method (interval, CROWN, alpha-CROWN, the triangle LP through its dual (`lp`), branch and
bound), each from a certificate the checker accepted, and auto_LiRPA's IBP, CROWN and alpha-CROWN
bounds and times on one torch module computing f(x) - g(x) (optional: `make bench-deps`; skipped
with a note when it is absent).
Prints a table of ratios to exact (or to the attained lower bound) and writes JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from certify.bounds.linear import interval_dense, interval_relu  # noqa: E402
from certify.bounds.milp import milp_max_deviation  # noqa: E402
from certify.bounds.network import box_floats  # noqa: E402
from certify.checker import Verdict, exact  # noqa: E402
from certify.crosscheck import METHODS as LIRPA_METHODS, lirpa_bounds  # noqa: E402  (auto_LiRPA on f - g)
from certify.engine import attained_lower, bound_with, prepare, write_and_check  # noqa: E402
from certify.model import save_model  # noqa: E402

METHODS = ("interval", "crown", "alpha", "lp", "bab")


def random_mlp(seed: int, widths: list[int]):
    rng = np.random.default_rng(seed)
    ws = [rng.normal(0, 1 / math.sqrt(a), (b, a)) for a, b in zip(widths[:-1], widths[1:])]
    bs = [rng.normal(0, 0.1, b) for b in widths[1:]]
    return ws, bs


def prune50(ws) -> list[str]:
    out = []
    for k in range(1, len(ws)):
        score = np.linalg.norm(ws[k - 1], axis=1) * np.linalg.norm(ws[k], axis=0)
        keep = sorted(int(i) for i in np.argsort(-score)[: len(score) // 2])
        out.append(f"  - prune: {{layer: {k}, keep: {keep}, fill: zero}}")
    return out


def svd50(ws) -> list[str]:
    return [f"  - low_rank: {{layer: {k}, rank: {math.ceil(min(w.shape) / 2)}}}" for k, w in enumerate(ws, start=1)]


def unstable_fraction(ws, bs, center, radius) -> float:
    lo, up = interval_dense(ws[0], bs[0], center - radius, center + radius)
    lo, up = np.asarray(lo), np.asarray(up)
    return float(np.mean((lo < 0) & (up > 0)))


def radius_for(ws, bs, center, target: float) -> float:
    lo, hi = 0.0, 4.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if unstable_fraction(ws, bs, center, mid) < target else (lo, mid)
    return hi


def unstable_relus(ws, bs, lo, up) -> int:
    count = 0
    for k in range(len(ws) - 1):
        lo, up = map(np.asarray, interval_dense(ws[k], bs[k], lo, up))
        count += int(np.sum((lo < 0) & (up > 0)))
        lo, up = map(np.asarray, interval_relu(lo, up))
    return count


def instances(quick: bool):
    shapes = [(16, 2), (32, 2), (64, 2)] if quick else [(16, 2), (32, 2), (64, 2), (128, 2), (256, 2), (16, 3), (32, 3), (64, 3)]
    d_in, d_out = 10, 5
    for width, depth in shapes:
        seed = 1000 + width + depth
        widths = [d_in] + [width] * depth + [d_out]
        ws, bs = random_mlp(seed, widths)
        center = np.random.default_rng(seed + 1).uniform(-1, 1, d_in)
        for expl in ("prune50", "svd50"):
            regions = [(f"ball{int(100 * t)}", radius_for(ws, bs, center, t)) for t in (0.1, 0.5)]
            if width == 16:
                regions.append(("box", None))
            for region, radius in regions:
                yield f"w{width}x{depth}-{expl}-{region}", ws, bs, center, radius, expl


def write_problem(tmp: Path, name: str, ws, bs, center, radius, expl) -> Path:
    sha = save_model(tmp / f"{name}.npz", ws, bs)
    if radius is None:
        inp = "  box: {lower: -1, upper: 1}"
    else:
        np.save(tmp / f"{name}.x0.npy", center)
        inp = f"  linf_ball: {{center: {name}.x0.npy, radius: {Fraction(radius).limit_denominator(10**9)}}}"
    lines = prune50(ws) if expl == "prune50" else svd50(ws)
    spec = tmp / f"{name}.yaml"
    spec.write_text("\n".join([
        "version: 1", f'model: {{path: {name}.npz, sha256: "{sha}"}}', "input:", inp, "explanation:", *lines,
        "property: {deviation: linf, tolerance: 1000000}", "options: {max_leaves: 100000}", ""]))
    return spec


def run_instance(tmp: Path, name, ws, bs, center, radius, expl, quick: bool, lirpa: bool) -> dict:
    spec = write_problem(tmp, name, ws, bs, center, radius, expl)
    p = prepare(spec, tmp / f"{name}.cert.json")
    witness, lower = attained_lower(p)
    rec = {"instance": name, "hidden_relus": sum(w.shape[0] for w in ws[:-1]),
           "unstable_relus": unstable_relus(ws, bs, *(np.asarray(v) for v in box_floats(*p.domain))),
           "exact": None, "lower": float(lower), "certify": {}, "auto_lirpa": {}, "notes": {}}
    lo, up = box_floats(*p.box)
    t = time.perf_counter()
    value, arg = milp_max_deviation(p.net, lo, up, time_limit=20.0 if quick else 120.0)
    rec["notes"]["milp_seconds"] = round(time.perf_counter() - t, 3)
    if value is not None:
        rec["exact"] = value
        replay = max(abs(v) for v in exact.forward(p.joint, [Fraction(float(v)) for v in arg]))
        rec["lower"] = max(rec["lower"], float(replay))
    for m in METHODS:
        t = time.perf_counter()
        target = Fraction(rec["lower"]) * Fraction(101, 100)
        bound, body, notes = bound_with(p, m, time_budget=15.0 if quick else 60.0, stop_below=target)
        seconds = time.perf_counter() - t
        result = write_and_check(p, m, bound, body, witness, lower, notes, tmp / f"{name}.{m}.cert.json")
        assert result.verdict is not Verdict.REJECTED, f"{name} {m}: the checker rejected: {result.reason}"
        rec["certify"][m] = {"bound": float(result.bound), "seconds": round(seconds, 3), "check_seconds": round(result.seconds, 3),
                             **({"leaves": notes["bab"]["leaves"]} if "bab" in notes else {})}
    if lirpa:
        rec["auto_lirpa"] = lirpa_bounds(p, rec["notes"])
    return rec


def print_table(records: list[dict]) -> None:
    head = f"{'instance':28} {'relus':>5} {'unst':>4} {'exact':>8} {'lower':>8} | " + " ".join(f"{m:>8}" for m in METHODS) + " | " + \
        " ".join(f"{'L-' + m:>10}" for m in LIRPA_METHODS)
    print(head)
    print("-" * len(head))
    for r in records:
        ref = r["exact"] if r["exact"] is not None else r["lower"]
        ratio = lambda b: f"{b / ref:8.3f}" if ref > 0 else f"{b:8.2g}"
        ours = " ".join(ratio(r["certify"][m]["bound"]) for m in METHODS)
        theirs = " ".join(f"{ratio(r['auto_lirpa'][m]['bound']):>10}" if m in r["auto_lirpa"] else f"{'-':>10}" for m in LIRPA_METHODS)
        ex = f"{r['exact']:8.4f}" if r["exact"] is not None else f"{'-':>8}"
        print(f"{r['instance']:28} {r['hidden_relus']:5d} {r['unstable_relus']:4d} {ex} {r['lower']:8.4f} | {ours} | {theirs}")
    print("\nratios are bound / exact (or / attained lower bound where MILP did not finish); 1.000 is exact.")
    times = " ".join(f"{m} {np.median([r['certify'][m]['seconds'] for r in records]):.2f}s" for m in METHODS)
    print(f"median time per instance, certify: {times}")
    if any(r["auto_lirpa"] for r in records):
        times = " ".join(f"{m} {np.median([r['auto_lirpa'][m]['seconds'] for r in records if r['auto_lirpa']]):.2f}s" for m in LIRPA_METHODS)
        print(f"median time per instance, auto_LiRPA: {times}")


def targets(records: list[dict]) -> list[str]:
    """The issue's targets, checked in the same run."""
    lines = []
    for r in records:
        best = min(v["bound"] for v in r["certify"].values())
        if r["exact"] is not None and best > 1.05 * r["exact"]:
            lines.append(f"{r['instance']}: best {best:.4g} is {best / r['exact']:.3f}x exact (target 1.05x)")
        la = r["auto_lirpa"].get("alpha")
        if la:
            ours = r["certify"]["alpha"]
            if ours["bound"] > la["bound"] * (1 + 1e-6):  # certify pads intermediate bounds by 1e-8 (exact checking)
                lines.append(f"{r['instance']}: certify alpha {ours['bound']:.4g} looser than auto_LiRPA alpha {la['bound']:.4g}")
            if ours["seconds"] > la["seconds"]:
                lines.append(f"{r['instance']}: certify alpha {ours['seconds']:.2f}s slower than auto_LiRPA alpha {la['seconds']:.2f}s")
            if r["exact"] is None and best - r["lower"] > 0.5 * (la["bound"] - r["lower"]):
                lines.append(f"{r['instance']}: excess {best - r['lower']:.4g} > half of auto_LiRPA alpha's {la['bound'] - r['lower']:.4g}")
    return lines


def _timed(inst, quick: bool, lirpa: bool, jax_cache: str | None = None) -> dict:
    if jax_cache is not None:  # workers share one XLA cache, empty at the start of the run (times include compiles)
        import jax

        jax.config.update("jax_compilation_cache_dir", jax_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        rec = run_instance(Path(tmp), *inst, quick=quick, lirpa=lirpa)
    rec["notes"]["wall_seconds"] = round(time.perf_counter() - t, 1)
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 model sizes, shorter budgets (under 10 minutes on 2 cores)")
    ap.add_argument("--json", type=Path, help="write the records here")
    ap.add_argument("--no-lirpa", action="store_true", help="skip the auto_LiRPA columns")
    ap.add_argument("--only", help="run instances whose name contains one of these comma-separated strings (in this order)")
    ap.add_argument("--workers", type=int, help="instances run in this many processes (default: 2 with --quick, else 1)")
    args = ap.parse_args(argv)
    records = []
    every = list(instances(args.quick))
    picked = every if not args.only else [i for part in args.only.split(",") for i in every if part in i[0]]
    todo = list({i[0]: i for i in picked}.values())  # each instance once, in the order first named
    workers = args.workers or (2 if args.quick else 1)
    with contextlib.ExitStack() as stack:
        if workers > 1:  # spawn, not fork (JAX); each process times its own instances
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")))
            cache = stack.enter_context(tempfile.TemporaryDirectory(prefix="certify-xla-"))
            results = (f.result() for f in as_completed([pool.submit(_timed, inst, args.quick, not args.no_lirpa, cache)
                                                         for inst in todo]))
        else:
            results = (_timed(inst, args.quick, not args.no_lirpa) for inst in todo)
        for rec in results:
            records.append(rec)
            records.sort(key=lambda r: [i[0] for i in todo].index(r["instance"]))
            if args.json:  # after every instance: a run cut short keeps what it measured
                args.json.write_text(json.dumps(records, indent=1))
            print(f"{rec['instance']} ({rec['notes']['wall_seconds']} s; milp {rec['notes']['milp_seconds']} s, checks "
                  f"{sum(v['check_seconds'] for v in rec['certify'].values()):.1f} s): lower {rec['lower']:.4g} exact {rec['exact']} " +
                  " ".join(f"{m} {v['bound']:.4g} ({v['seconds']:.1f}s)" for m, v in rec["certify"].items()) +
                  (" | lirpa " + " ".join(f"{m} {v['bound']:.4g} ({v['seconds']:.1f}s)" for m, v in rec["auto_lirpa"].items())
                   if rec["auto_lirpa"] else f" | {rec['notes'].get('auto_lirpa', '')}"), flush=True)
    print()
    print_table(records)
    missed = targets(records)
    print("\ntargets: " + ("all met" if not missed else f"{len(missed)} missed"))
    for line in missed:
        print("  " + line)
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
