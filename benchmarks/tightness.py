"""How close is certify's certified bound to the deviation an input really attains?

    python benchmarks/tightness.py [--quick] [--json PATH] [--no-lirpa] [--cpu-clock]

Builds random ReLU MLPs (fixed seeds; widths 16-256, 2-3 hidden layers) and two explanations:
`prune50` (keep the half of each hidden layer with the largest product of incoming and outgoing
weight norms, zero the rest) and `svd50` (every weight matrix at rank ceil(min(in, out)/2)). Input
regions: L-inf balls whose radius makes about 10 % and 50 % of the first hidden layer's ReLUs
unstable under interval bounds, and the box [-1, 1]^d for the smallest models.

Per instance, in one run: the exact maximum of |f - g|_inf (MILP with HiGHS; null when it does not
finish in its budget; rows solved with the attained deviation as a cutoff, see MILP_SECONDS_QUICK), the attained lower bound (falsifier, replayed exactly), certify's bound and
time per method (interval, CROWN, alpha-CROWN, the triangle LP through its dual (`lp`), branch and
bound), each from a certificate the checker accepted, and auto_LiRPA's IBP, CROWN and alpha-CROWN
bounds and times on one torch module computing f(x) - g(x) (optional: `make bench-deps`; skipped
with a note when it is absent).
Prints a table of ratios to exact (or to the attained lower bound) and writes JSON.

`--family residual` (issue 16; needs torch, skipped without it): the shipped residual MLP
(models/resmlp.npz's weights, float32) exported by torch as ONNX (opset 20: LayerNormalization and
Gelu nodes) with the shipped SAE spliced in, and two variants that isolate an op (embed ->
LayerNorm -> unembed; embed -> GELU block without LayerNorm -> unembed, the SAE after embed), at two
radii. certify reads the ONNX file (checker/onnx_graph.py) and bounds it with interval, CROWN,
alpha-CROWN and branch and bound (to 1 % of the attained deviation or 60 s); auto_LiRPA's IBP, CROWN
and alpha-CROWN bound the same graph as a torch module (nn.LayerNorm traced into its ops, GELU as its
custom::Gelu op, the site computed once), same JSON keys (exact: null; hidden_relus: the SAE's).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import multiprocessing
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from certify.bounds.linear import interval_dense, interval_relu  # noqa: E402
from certify.bounds.driver import propose  # noqa: E402
from certify.bounds.milp import difference_cuts, milp_max_deviation  # noqa: E402
from certify.bounds.network import box_floats  # noqa: E402
from certify.checker import Verdict, exact  # noqa: E402
from certify.crosscheck import METHODS as LIRPA_METHODS, lirpa_bounds, module_bounds  # noqa: E402  (auto_LiRPA on f - g)
from certify.engine import attained_lower, bound_with, prepare, write_and_check  # noqa: E402
from certify.model import save_model  # noqa: E402

METHODS = ("interval", "crown", "alpha", "lp", "bab")
MILP_SECONDS_QUICK = 120.0  # HiGHS's limit per output row and sign (wall seconds: HiGHS counts no other clock). Rows are
# solved with the attained deviation as a cutoff (certify.bounds.milp.milp_rows) and CROWN's bounds as a guide:
# w16x2-prune50-box's exact maximum in 7.6 CPU s (10.8 wall), against 90 CPU s (143 wall) for the plain MILP, which
# under load missed the old 20 s limit on some rows and lost its exact value
MILP_SECONDS = 300.0


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
    t, cpu = time.perf_counter(), time.process_time()
    guide = propose(p.net, p.joint, p.box, "crown", margins=p.margins)  # sound bounds: rows ordered and pruned, tighter big-M
    limit = MILP_SECONDS_QUICK if quick else MILP_SECONDS
    info: dict = {}
    value, arg = milp_max_deviation(p.net, lo, up, time_limit=limit, output_bounds=(guide.output_lower, guide.output_upper),
                                    layer_bounds=guide.claims, differences=difference_cuts(guide.steps), above=float(lower), info=info)
    rec["notes"].update(milp_seconds=round(time.perf_counter() - t, 3), milp_cpu_seconds=round(time.process_time() - cpu, 3),
                        milp_limit_per_row=limit, milp_finished=value is not None, milp_upper=info["upper"],
                        milp_rows=[{k: v for k, v in r.items()} for r in info["rows"]])
    if value is not None:
        rec["exact"] = value
    arg = arg if arg is not None else info["x"]  # an unfinished MILP's best point can still beat the falsifier's
    if arg is not None:  # (w16x2-svd50-box: 1.41262 against 1.39651, alone with 600 s per row)
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


def unjudged(records: list[dict]) -> list[str]:
    """Instances the 1.05x-exact target could not be judged on (no exact maximum), and why."""
    return [f"{r['instance']}: not judged against 1.05x exact: MILP did not finish (limit {r['notes'].get('milp_limit_per_row')} s "
            f"per row; {r['notes']['milp_seconds']:.0f} s wall, {r['notes'].get('milp_cpu_seconds', 0):.0f} CPU s); "
            f"best {min(v['bound'] for v in r['certify'].values()) / r['lower']:.3f}x the attained lower bound" +
            (f", so at least {min(v['bound'] for v in r['certify'].values()) / r['notes']['milp_upper']:.3f}x exact (HiGHS's dual "
             f"bound on the maximum: {r['notes']['milp_upper']:.6g}, a float estimate)" if r["notes"].get("milp_upper") else "")
            for r in records if r["exact"] is None]


def targets_line(missed: list[str], skipped: list[str]) -> str:
    if not missed and not skipped:
        return "targets: all met"
    return f"targets: {len(missed)} missed" + (f"; {len(skipped)} instance(s) not judged against 1.05x exact" if skipped else "")


def _timed(inst, quick: bool, lirpa: bool, jax_cache: str | None = None, cpu_clock: bool = False, same_layer: bool = True) -> dict:
    from certify.bounds import alpha

    alpha.SAME_LAYER = same_layer  # split multipliers on the bounded layer's own splits (off: below it only, as before)
    if cpu_clock:  # branch and bound's budget in this process's CPU seconds (a shared machine: load steals wall time)
        from certify.bounds import bab

        bab.CLOCK = time.process_time
    if jax_cache is not None:  # workers share one XLA cache, empty at the start of the run (times include compiles)
        import jax

        jax.config.update("jax_compilation_cache_dir", jax_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        rec = run_instance(Path(tmp), *inst, quick=quick, lirpa=lirpa)
    rec["notes"]["wall_seconds"] = round(time.perf_counter() - t, 1)
    rec["notes"]["budget_clock"] = "cpu" if cpu_clock else "wall"
    rec["notes"]["same_layer"] = same_layer
    return rec


# ----------------------------------------------------------------------------- residual ONNX graphs (issue 16)

RESIDUAL_VARIANTS = ("resmlp", "ln", "gelu")  # the shipped model; embed -> LayerNorm -> unembed; embed -> GELU block (no LN) -> unembed
RESIDUAL_RADII = ("1/255", "4/255")
GRAPH_METHODS = ("interval", "crown", "alpha", "bab")


def residual_modules(variant: str, lirpa: bool):
    """(pre, post): torch modules with models/resmlp.npz's weights (float32, as the shipped ONNX) before
    and after the SAE's site. lirpa: GELU as auto_LiRPA's custom::Gelu op (its BoundGelu); float64."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "models"))
    from export_resmlp_onnx import module, npz_weights

    m = module(npz_weights(Path(__file__).resolve().parent.parent / "models" / "resmlp.npz"))

    class GeluOp(torch.autograd.Function):
        @staticmethod
        def symbolic(g, x):
            return g.op("custom::Gelu", x)

        @staticmethod
        def forward(ctx, x):
            return F.gelu(x)

    class LirpaGelu(nn.Module):
        def forward(self, x):
            return GeluOp.apply(x)

    class NoLN(nn.Module):  # block 1 without its LayerNorm: h + down(gelu(up(h)))
        def __init__(self, b):
            super().__init__()
            self.b = b

        def forward(self, h):
            return h + self.b.down(self.b.gelu(self.b.up(h)))

    if lirpa:
        m.block1.gelu, m.block2.gelu = LirpaGelu(), LirpaGelu()
        m = m.double()
    pre = {"resmlp": nn.Sequential(m.embed, m.block1), "ln": m.embed, "gelu": m.embed}[variant]
    post = {"resmlp": nn.Sequential(m.block2, m.ln_f, m.unembed), "ln": nn.Sequential(m.ln_f, m.unembed),
            "gelu": nn.Sequential(NoLN(m.block1), m.unembed)}[variant]
    return pre, post


_LIRPA_MODELS: dict = {}  # variant -> (BoundedModule, seconds to build it): auto_LiRPA's BoundGelu takes minutes to set up on a CPU


def residual_lirpa(variant: str, sae: dict, box, notes: dict, iterations: int = 60) -> dict:
    """auto_LiRPA's IBP, CROWN and alpha-CROWN on x -> post(pre(x)) - post(sae(pre(x))), the graph certify
    bounds (the site computed once, as in certify's joint graph), float64, on the same box. The bounded
    module is built once per variant (its build time goes to notes, not to the methods' seconds)."""
    import torch
    from auto_LiRPA import BoundedModule

    pre, post = residual_modules(variant, lirpa=True)
    t = {k: torch.tensor(np.asarray(v, dtype=np.float64)) for k, v in sae.items()}

    class Diff(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pre, self.post = pre, post
            for k, v in t.items():
                self.register_buffer(k, v)

        def forward(self, x):
            h = self.pre(x)
            rec = torch.relu((h - self.b_dec) @ self.W_enc + self.b_enc) @ self.W_dec + self.b_dec
            return self.post(h) - self.post(rec)

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    out = {}
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lo, up = (torch.tensor([float(v) for v in b])[None] for b in box)
            if variant not in _LIRPA_MODELS:
                t0 = time.perf_counter()
                _LIRPA_MODELS[variant] = (BoundedModule(Diff(), torch.zeros_like(lo), verbose=False,  # intermediate bounds: CROWN's
                                                        bound_opts={"optimize_bound_args": {"iteration": iterations},  # intersected with
                                                                    "compare_crown_with_ibp": True}),  # IBP's, as certify does (the
                                          round(time.perf_counter() - t0, 1))  # LayerNorm's variance stays positive: 1/sqrt is defined)
            model, notes["auto_lirpa_build_seconds"] = _LIRPA_MODELS[variant]
            out = module_bounds(model, lo, up)
    finally:
        torch.set_default_dtype(previous)
    return out


def residual_instance(tmp: Path, variant: str, radius: str, lirpa: bool) -> dict:
    """Export the variant as ONNX (torch, opset 20: LayerNormalization and Gelu nodes), certify it with the
    shipped SAE at its site (read by the checker's ONNX graph reader), and run auto_LiRPA on the same graph."""
    from dataclasses import replace

    import torch

    from certify.bounds import graph as gb
    from certify.checker.graph import Graph, deviation_at
    from certify.checker.model import read_arrays, read_model, sha256_file
    from certify.engine import exact_witness
    from certify.engine_graph import bound_graph, prepare_graph, write_and_check_graph

    root = Path(__file__).resolve().parent.parent
    pre, post = residual_modules(variant, lirpa=False)
    path = tmp / f"{variant}.onnx"
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.nn.Sequential(pre, post).eval(), (torch.zeros(1, 64),), str(path), dynamo=False, opset_version=20,
                          input_names=["x"], output_names=["logits"])
    f = read_model(path, sha256_file(path))
    assert isinstance(f, Graph)
    site = next(n.name for n in f.nodes if n.op == "add") if variant == "resmlp" else f.nodes[0].name
    sae = root / "models" / "resmlp_sae.npz"
    name = f"onnx-{variant}-sae-r{radius.split('/')[0]}"
    spec = tmp / f"{name}.yaml"
    spec.write_text("\n".join([
        "version: 1", f'model: {{path: {path.name}, sha256: "{sha256_file(path)}"}}',
        f'input: {{linf_ball: {{center: {root / "models" / "digits_x0.npy"}, radius: "{radius}"}}, clip: [0, 1]}}',
        f'explanation: [{{sae: {{site: "{site}", path: {sae}, sha256: "{sha256_file(sae)}", features: all}}}}]',
        "property: {deviation: linf, tolerance: 1000000}", ""]))
    ops = [n.op for n in f.nodes]
    rec = {"instance": name, "hidden_relus": 64, "unstable_relus": None, "exact": None, "lower": None, "certify": {},
           "auto_lirpa": {}, "notes": {"site": site, "radius": radius, "gelu_nodes": ops.count("gelu"), "layernorms": ops.count("rsqrt"),
                                       "graph_nodes": len(f.nodes)}}
    p = prepare_graph(spec, tmp / f"{name}.cert.json")
    x = gb.falsify(p.joint, p.box, starts=p.options.starts, steps=p.options.steps, seed=p.options.seed)
    witness = exact_witness(x, p.box)
    lower = deviation_at(p.joint, witness)
    rec["lower"] = float(lower)
    for m in GRAPH_METHODS:  # bab: split until within 1 % of the attained deviation or 60 s
        t = time.perf_counter()
        bound, body, extra = bound_graph(p, m, time_budget=60.0, lower=lower, target=lower * Fraction(101, 100))
        seconds = time.perf_counter() - t
        result = write_and_check_graph(replace(p, certificate=tmp / f"{name}.{m}.cert.json"), m, bound, body, witness, lower, extra)
        assert result.verdict is not Verdict.REJECTED, f"{name} {m}: the checker rejected: {result.reason}"
        rec["certify"][m] = {"bound": float(result.bound), "seconds": round(seconds, 3), "check_seconds": round(result.seconds, 3),
                             **({"leaves": extra["bab"]["leaves"], "leaf_method": extra["bab"]["leaf_method"]} if "bab" in extra else {})}
        if m == "crown":  # unstable SAE ReLUs under CROWN's bounds of their inputs
            steps = [s for s in body["steps"] if s.get("node") == "g0.sae.pre" and s["kind"] == "bounds"]
            lo = np.max([[float(Fraction(v)) for v in s["lower"]] for s in steps], axis=0)
            up = np.min([[float(Fraction(v)) for v in s["upper"]] for s in steps], axis=0)
            rec["unstable_relus"] = int(np.sum((lo < 0) & (up > 0)))
    if lirpa:
        try:
            import auto_LiRPA  # noqa: F401
        except ImportError:
            rec["notes"]["auto_lirpa"] = "not installed (make bench-deps)"
        else:
            rec["auto_lirpa"] = residual_lirpa(variant, {k: np.array(v[1]).reshape(v[0]) for k, v in read_arrays(sae).items()}, p.box,
                                               rec["notes"])
    return rec


def run_residual(args) -> int:
    """`--family residual`: the residual ONNX instances; needs torch (skipped with a note without it)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        print("residual ONNX instances skipped: torch is not installed (make bench-deps)")
        return 0
    records = []
    for variant in RESIDUAL_VARIANTS:
        for radius in RESIDUAL_RADII:
            if args.only and not any(part in f"onnx-{variant}-sae-r{radius.split('/')[0]}" for part in args.only.split(",")):
                continue
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                rec = residual_instance(Path(tmp), variant, radius, not args.no_lirpa)
            rec["notes"]["wall_seconds"] = round(time.perf_counter() - t, 1)
            records.append(rec)
            if args.json:
                args.json.write_text(json.dumps(records, indent=1))
            print(f"{rec['instance']} ({rec['notes']['wall_seconds']} s): lower {rec['lower']:.4g} " +
                  " ".join(f"{m} {v['bound']:.4g} ({v['seconds']:.1f}s)" for m, v in rec["certify"].items()) +
                  (" | lirpa " + " ".join(f"{m} {v['bound']:.4g} ({v['seconds']:.1f}s)" for m, v in rec["auto_lirpa"].items())
                   if rec["auto_lirpa"] else f" | {rec['notes'].get('auto_lirpa', '')}"), flush=True)
    print(f"\n{'instance':22} {'lower':>8} | " + " ".join(f"{m:>8}" for m in GRAPH_METHODS) + " | " +
          " ".join(f"{'L-' + m:>10}" for m in LIRPA_METHODS) + " | certify/auto_LiRPA crown, alpha")
    for r in records:
        ours = " ".join(f"{r['certify'][m]['bound'] / r['lower']:8.3f}" for m in GRAPH_METHODS)
        theirs = " ".join(f"{r['auto_lirpa'][m]['bound'] / r['lower']:10.3f}" if m in r["auto_lirpa"] else f"{'-':>10}" for m in LIRPA_METHODS)
        vs = " ".join(f"{r['certify'][m]['bound'] / r['auto_lirpa'][m]['bound']:6.3f}" if m in r["auto_lirpa"] else "     -"
                      for m in ("crown", "alpha"))
        print(f"{r['instance']:22} {r['lower']:8.4f} | {ours} | {theirs} | {vs}")
    print("\nratios are bound / attained lower bound (no exact maximum for these graphs); the last two columns are certify's bound\n"
          "over auto_LiRPA's with the same method (below 1: certify is tighter).")
    missed = targets(records)
    print("\ntargets: " + ("all met" if not missed else f"{len(missed)} missed"))
    for line in missed:
        print("  " + line)
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 model sizes, shorter budgets (under 10 minutes on 2 cores)")
    ap.add_argument("--json", type=Path, help="write the records here")
    ap.add_argument("--no-lirpa", action="store_true", help="skip the auto_LiRPA columns")
    ap.add_argument("--no-same-layer", action="store_true",
                    help="alpha leaves without multipliers on the bounded layer's own ReLU splits (the engine before session 10)")
    ap.add_argument("--cpu-clock", action="store_true",
                    help="count branch and bound's budget in CPU seconds of its process (for a loaded, shared machine)")
    ap.add_argument("--only", help="run instances whose name contains one of these comma-separated strings (in this order)")
    ap.add_argument("--workers", type=int, help="instances run in this many processes (default: 2 with --quick, else 1)")
    ap.add_argument("--family", choices=("dense", "residual"), default="dense",
                    help="residual: the residual ONNX graphs (resmlp with the shipped SAE; LayerNorm-only and GELU-only variants)")
    args = ap.parse_args(argv)
    if args.family == "residual":
        return run_residual(args)
    records = []
    every = list(instances(args.quick))
    picked = every if not args.only else [i for part in args.only.split(",") for i in every if part in i[0]]
    todo = list({i[0]: i for i in picked}.values())  # each instance once, in the order first named
    workers = args.workers or (2 if args.quick else 1)
    with contextlib.ExitStack() as stack:
        if workers > 1:  # spawn, not fork (JAX); each process times its own instances
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")))
            cache = stack.enter_context(tempfile.TemporaryDirectory(prefix="certify-xla-"))
            results = (f.result() for f in as_completed([pool.submit(_timed, inst, args.quick, not args.no_lirpa, cache, args.cpu_clock,
                                                                  not args.no_same_layer)
                                                         for inst in todo]))
        else:
            results = (_timed(inst, args.quick, not args.no_lirpa, None, args.cpu_clock, not args.no_same_layer) for inst in todo)
        for rec in results:
            records.append(rec)
            records.sort(key=lambda r: [i[0] for i in todo].index(r["instance"]))
            if args.json:  # after every instance: a run cut short keeps what it measured
                args.json.write_text(json.dumps(records, indent=1))
            print(f"{rec['instance']} ({rec['notes']['wall_seconds']} s; milp {rec['notes']['milp_seconds']} s, "
                  f"{rec['notes']['milp_cpu_seconds']} CPU s, checks "
                  f"{sum(v['check_seconds'] for v in rec['certify'].values()):.1f} s): lower {rec['lower']:.4g} exact {rec['exact']} " +
                  " ".join(f"{m} {v['bound']:.4g} ({v['seconds']:.1f}s)" for m, v in rec["certify"].items()) +
                  (" | lirpa " + " ".join(f"{m} {v['bound']:.4g} ({v['seconds']:.1f}s)" for m, v in rec["auto_lirpa"].items())
                   if rec["auto_lirpa"] else f" | {rec['notes'].get('auto_lirpa', '')}"), flush=True)
    print()
    print_table(records)
    missed, skipped = targets(records), unjudged(records)
    print("\n" + targets_line(missed, skipped))
    for line in missed + skipped:
        print("  " + line)
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
