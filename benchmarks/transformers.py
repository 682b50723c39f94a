"""Transformers (issue 17): the exhaustive exact maximum against certify's checked bounds on token-sequence
domains, and certify against auto_LiRPA on continuous boxes of the same graph.

    python benchmarks/transformers.py [--quick] [--json PATH] [--bab-seconds S] [--no-lirpa]

Token domains (the shipped Max-of-K transformers, explanation: positional embeddings zero-ablated; the
pattern is one `softmax` node per query row):
    maxofk_v16_pos   specs/max_of_k_small.yaml    V = 16, K = 4: 65,536 sequences
    maxofk_v64_pos   specs/max_of_k_circuit.yaml  V = 64, K = 4: 16,777,216 sequences (--quick: CROWN only,
                                                  no enumeration)
Per instance: the exact maximum of max_i |f_i - g_i| over every sequence (JAX batches, float64, the
reduction in numpy) and its seconds; the attained lower bound (the discrete falsifier, replayed exactly
by the checker); per method (crown: CROWN with exact per-position token concretisation; bab: branch and
bound over tokens for --bab-seconds, target 1.05x the exact maximum) the checked bound, the engine's
seconds and the checker's seconds. `baseline` holds CROWN on the same weights written with the old
pattern (exp, sum, reciprocal nodes: TransformerBuilder's "difference" form) and the old McCormick
plane choice ("centre"), as shipped before the softmax op.

Continuous boxes (needs torch; auto_LiRPA for its columns):
    maxofk_v16_box_r*   the V = 16 weights as a torch module that computes the last query row (the
                        task's output; no mask is needed there), exported to ONNX (opset 17) and read by
                        certify's ONNX reader; the domain is an L-inf ball of radius r around the one-hot
                        input of the worst token sequence (5, 5, 5, 12); explanation: W_pos ablated
                        (/Add_output_0). auto_LiRPA 0.7.1 bounds f - g on the same torch module (float64,
                        its IBP, CROWN and alpha-CROWN, 60 iterations). The shipped all-rows export with
                        its -inf causal mask is also given to auto_LiRPA: its CROWN gives NaN there (noted).

Prints a table and writes JSON: a list of {instance, exact, exact_seconds, lower, certify{method:
{bound, seconds, check_seconds, leaves?}}, auto_lirpa{method: {bound, seconds}}, baseline{...}, ...}.
Targets (issue 17): bound <= 1.05x exact; bound + check seconds <= exact_seconds / 10 (V = 64);
certify's alpha-CROWN no looser than auto_LiRPA's on the continuous boxes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from certify.bounds.tokens import FloatTokens, exhaustive  # noqa: E402
from certify.engine import run_check  # noqa: E402
from certify.engine_graph import prepare_graph  # noqa: E402

INSTANCES = {"maxofk_v16_pos": ("specs/max_of_k_small.yaml", "models/maxofk_v16_tl.npz"),
             "maxofk_v64_pos": ("specs/max_of_k_circuit.yaml", "models/maxofk_tl.npz")}
RADII = ("1/100", "1/20")
WORST = (5, 5, 5, 12)  # the V = 16 instance's worst sequence (exhaustive)


JOBS = [os.cpu_count() or 1]  # processes that check a split tree (--jobs), as `certify check` does


def _entry(o, cert_path: Path) -> dict:
    cert = json.loads(cert_path.read_text())
    e = {"bound": float(o.check.bound) if o.check.bound is not None else None, "verdict": o.check.verdict.value,
         "seconds": round(o.seconds["bound"], 3), "check_seconds": round(o.seconds["check"], 3),
         "falsify_seconds": round(o.seconds["falsify"], 3)}
    if "bab" in cert.get("engine", {}):
        e["leaves"] = cert["engine"]["bab"]["leaves"]
    return e


def _model_of(spec: str) -> Path:
    line = next(v for v in (ROOT / spec).read_text().splitlines() if v.startswith("model:"))
    return ((ROOT / spec).parent / line.split("path: ")[1].split(",")[0]).resolve()


def _with_model(spec: str, model: Path, tmp: Path, name: str, tolerance: str | None = None) -> Path:
    """A copy of the spec reading another model file (and another tolerance)."""
    text = (ROOT / spec).read_text()
    line = next(v for v in text.splitlines() if v.startswith("model:"))
    text = text.replace(line, f'model: {{path: {model}, sha256: "{hashlib.sha256(model.read_bytes()).hexdigest()}"}}')
    if tolerance is not None:
        text = text.replace("tolerance: 1000", f'tolerance: "{tolerance}"')
    path = tmp / f"{name}.yaml"
    path.write_text(text)
    return path


def baseline(name: str, spec: str, tl: str, tmp: Path) -> dict:
    """CROWN on the same weights as shipped before the softmax op: difference-form pattern, centre planes."""
    from certify.bounds import graph as gb
    from certify.model.transformer import attn_only, read_tl

    p = read_tl(ROOT / tl)
    model = tmp / f"{name}.difference.npz"
    attn_only(p, vocab=p["W_E"].shape[0], length=p["W_pos"].shape[0], queries=[p["W_pos"].shape[0] - 1], fold=True,
              softmax="difference").save(model, output="unembed")
    with gb.mul_rule("centre"):
        o = run_check(_with_model(spec, model, tmp, f"{name}.difference"), tmp / f"{name}.difference.cert.json", "crown", timeout=600,
                      jobs=JOBS[0])
    return {"crown_difference_centre": _entry(o, tmp / f"{name}.difference.cert.json")}


def run_tokens(name: str, bab_seconds: float, tmp: Path, quick: bool) -> dict:
    spec, tl = INSTANCES[name]
    p = prepare_graph(ROOT / spec, tmp / f"{name}.cert.json", None, False)
    enumerate_all = not (quick and name == "maxofk_v64_pos")
    row = {"instance": name, "spec": spec, "vocab": p.box.vocab, "length": len(p.box.allowed), "exact": None, "exact_tokens": None,
           "exact_seconds": None, "certify": {}, "auto_lirpa": {}}
    if enumerate_all:
        exact, tokens, exact_s = exhaustive(p.joint, FloatTokens(p.box.vocab, p.box.allowed))
        row.update(exact=exact, exact_tokens=[int(t) for t in tokens], exact_seconds=round(exact_s, 3))
    for method in ("crown", "bab") if enumerate_all else ("crown",):
        path = ROOT / spec
        if method == "bab":  # the target is the tolerance: a spec copy with tolerance 1.05x exact makes branch and bound aim there
            path = _with_model(spec, _model_of(spec), tmp, f"{name}.bab", f"{row['exact'] * 1.05:.6f}")
        o = run_check(path, tmp / f"{name}.{method}.cert.json", method, timeout=bab_seconds, jobs=JOBS[0])
        row["certify"][method] = _entry(o, tmp / f"{name}.{method}.cert.json")
        row["lower"] = float(o.lower) if o.lower is not None else None
    row["baseline"] = baseline(name, spec, tl, tmp)
    return row


# ----------------------------------------------------------------------------- continuous boxes


def torch_module(p: dict, last_row: bool = True):
    """Max-of-K f (TransformerLens weights p, float32 numbers in float64) on the one-hot input [.., n, V]:
    last_row: the last query row only (the task's output; a Gather, no mask); else all rows with the -inf
    causal mask and the last row's logits selected at the end (the shipped export's graph)."""
    import torch
    from torch import nn

    t = lambda a: torch.tensor(np.asarray(a, dtype=np.float32).astype(np.float64))  # noqa: E731

    class MaxOfK(nn.Module):
        def __init__(self):
            super().__init__()
            n = p["W_pos"].shape[0]
            for k, v in {"W_E": p["W_E"], "W_pos": p["W_pos"], "W_U": p["W_U"], "zero": np.zeros(p["W_E"].shape),
                         **{f"W_{c}": p[f"blocks.0.attn.W_{c}"][0] for c in "QKVO"}}.items():
                self.register_buffer(k, t(v))
            self.scale = float(1 / np.sqrt(p["blocks.0.attn.W_Q"].shape[-1]))
            self.register_buffer("mask", torch.triu(torch.full((n, n), float("-inf"), dtype=torch.float64), diagonal=1))
            self.register_buffer("last", torch.tensor([n - 1]))

        def forward(self, x):
            ax = x.dim() - 2  # the positions' axis, non-negative (auto_LiRPA's Gather needs that)
            h = x @ self.W_E + (x @ self.zero + self.W_pos)
            q, k, v = h @ self.W_Q, h @ self.W_K, h @ self.W_V
            if last_row:
                a = torch.softmax(q.index_select(ax, self.last) @ k.transpose(ax, ax + 1) * self.scale, dim=-1)
                return (h.index_select(ax, self.last) + (a @ v) @ self.W_O) @ self.W_U
            a = torch.softmax(q @ k.transpose(ax, ax + 1) * self.scale + self.mask, dim=-1)
            return ((h + (a @ v) @ self.W_O) @ self.W_U).index_select(ax, self.last)

    return MaxOfK().eval()


def lirpa(p: dict, center: np.ndarray, radius: float, last_row: bool, iterations: int = 60, crown_only: bool = False) -> dict:
    """auto_LiRPA's IBP, CROWN, alpha-CROWN bounds on max_i |f_i - g_i| (g: W_pos = 0) over the L-inf ball
    (crown_only: its CROWN bound alone, a float, NaN included)."""
    import torch
    from auto_LiRPA import BoundedModule

    from certify.crosscheck import module_bounds

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        f, g = torch_module(p, last_row), torch_module({**p, "W_pos": np.zeros_like(p["W_pos"])}, last_row)

        class Diff(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.f, self.g = f, g

            def forward(self, x):
                return self.f(x) - self.g(x)

        x0 = torch.tensor(center.reshape(1, *p["W_pos"].shape[:1], -1))
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracing warns
            model = BoundedModule(Diff(), torch.zeros_like(x0), verbose=False, bound_opts={"optimize_bound_args": {"iteration": iterations}})
        if crown_only:
            from auto_LiRPA import BoundedTensor, PerturbationLpNorm

            lb, ub = model.compute_bounds(x=(BoundedTensor(x0, PerturbationLpNorm(norm=float("inf"), x_L=x0 - radius, x_U=x0 + radius)),),
                                          method="CROWN")
            return float(max(ub.max(), (-lb).max()))
        return module_bounds(model, x0 - radius, x0 + radius)
    finally:
        torch.set_default_dtype(previous)


def run_box(radius: str, tmp: Path, with_lirpa: bool) -> dict:
    """certify (the exported ONNX graph) and auto_LiRPA (its torch module) on a ball around WORST."""
    import torch

    from certify.model.transformer import read_tl

    p = read_tl(ROOT / "models" / "maxofk_v16_tl.npz")
    V, n = p["W_E"].shape[0], p["W_pos"].shape[0]
    onnx = tmp / "maxofk_v16_last.onnx"
    if not onnx.exists():
        m32 = torch_module(p).float()
        buf = io.BytesIO()
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(m32, (torch.zeros(n, V, dtype=torch.float32),), buf, input_names=["x"], output_names=["logits"],
                              opset_version=17, do_constant_folding=True, dynamo=False)
        onnx.write_bytes(buf.getvalue())
    center = np.zeros(n * V)
    center[[i * V + t for i, t in enumerate(WORST)]] = 1
    name = f"maxofk_v16_box_r{radius.replace('/', '_')}"
    spec = tmp / f"{name}.yaml"
    spec.write_text(f'version: 1\nmodel: {{path: {onnx}, sha256: "{hashlib.sha256(onnx.read_bytes()).hexdigest()}"}}\n'
                    f'input:\n  linf_ball: {{center: {json.dumps([int(v) for v in center])}, radius: "{radius}"}}\n'
                    "explanation:\n  - ablate: {site: /Add_output_0, fill: zero}\nproperty: {deviation: linf, tolerance: 100000}\n")
    row = {"instance": name, "spec": "(benchmark: ONNX export of the last query row, L-inf ball around (5, 5, 5, 12))",
           "radius": radius, "exact": None, "exact_seconds": None, "certify": {}, "auto_lirpa": {}, "notes": {}}
    for method in ("crown", "alpha"):
        o = run_check(spec, tmp / f"{name}.{method}.cert.json", method, timeout=600, jobs=JOBS[0])
        row["certify"][method] = _entry(o, tmp / f"{name}.{method}.cert.json")
        row["lower"] = float(o.lower) if o.lower is not None else None
    if with_lirpa:
        num, den = (int(v) for v in radius.split("/"))
        row["auto_lirpa"] = lirpa(p, center, num / den, last_row=True)
        full = lirpa(p, center, num / den, last_row=False, crown_only=True)
        row["notes"]["auto_lirpa_all_rows_masked_crown"] = None if full != full else full  # NaN: -inf mask unsupported
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="V = 16 (exact, CROWN, bab), V = 64 CROWN only, the continuous boxes")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--bab-seconds", type=float, default=60.0)
    ap.add_argument("--no-lirpa", action="store_true", help="skip the continuous boxes' auto_LiRPA columns")
    ap.add_argument("--jobs", type=int, default=JOBS[0], help="processes that check a token tree (default: the CPU count)")
    args = ap.parse_args()
    JOBS[0] = args.jobs
    rows = []
    meta = {"python": platform.python_version(), "machine": platform.machine(), "bab_seconds": args.bab_seconds, "jobs": args.jobs,
            "load_average": [round(v, 2) for v in os.getloadavg()], "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}

    def keep(r):
        rows.append(r)
        if args.json:  # after every instance: a long run that is stopped keeps what it measured
            args.json.write_text(json.dumps([{**x, "meta": meta} for x in rows], indent=1))

    with tempfile.TemporaryDirectory() as tmp:
        for name in INSTANCES:
            keep(r := run_tokens(name, args.bab_seconds, Path(tmp), args.quick))
            ex = f"exact {r['exact']:.4f} at {r['exact_tokens']} ({r['exact_seconds']:.1f} s)" if r["exact"] else "exact: not enumerated"
            print(f"\n{name}: {ex}, {r['vocab']}^{r['length']} sequences; attained (falsifier) {r['lower']:.4f}")
            ref = r["exact"] or r["lower"]
            print(f"  {'method':26s} {'bound':>10s} {'x ref':>7s} {'bound s':>8s} {'check s':>8s}  verdict")
            for m, e in list(r["certify"].items()) + list(r["baseline"].items()):
                print(f"  {m:26s} {e['bound']:10.4f} {e['bound'] / ref:7.3f} {e['seconds']:8.1f} {e['check_seconds']:8.1f}  "
                      f"{e['verdict']}{'  leaves ' + str(e['leaves']) if 'leaves' in e else ''}")
        try:
            import torch  # noqa: F401
            with_lirpa = not args.no_lirpa
            if with_lirpa:
                import auto_LiRPA  # noqa: F401
        except ImportError as exc:
            print(f"\ncontinuous boxes skipped: {exc.name} is not installed (make bench-deps)")
            return
        for radius in RADII:
            keep(r := run_box(radius, Path(tmp), with_lirpa))
            print(f"\n{r['instance']}: attained {r['lower']:.4f}")
            for who in ("certify", "auto_lirpa"):
                for m, e in r[who].items():
                    print(f"  {who:10s} {m:8s} {e['bound']:12.4f} {e['bound'] / r['lower']:7.3f}x {e['seconds']:8.1f} s")
            if r["notes"]:
                print(f"  notes: {r['notes']}")


if __name__ == "__main__":
    main()
