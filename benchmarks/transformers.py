"""Transformers on token-sequence domains (issue 17): the exhaustive exact maximum against certify's
checked bounds.

    python benchmarks/transformers.py [--quick] [--json PATH] [--bab-seconds S]

Instances (the shipped Max-of-K transformers, explanation: positional embeddings zero-ablated):
    maxofk_v16_pos   specs/max_of_k_small.yaml    V = 16, K = 4: 65,536 sequences (--quick: this one only)
    maxofk_v64_pos   specs/max_of_k_circuit.yaml  V = 64, K = 4: 16,777,216 sequences

Per instance: the exact maximum of max_i |f_i - g_i| over every sequence (JAX batches, float64, the
reduction in numpy) and its seconds; the attained lower bound (the discrete falsifier, replayed
exactly by the checker); per method (crown: CROWN with exact per-position token concretisation;
bab: branch and bound over tokens for --bab-seconds, target 1.05x the exact maximum) the checked
bound, the engine's seconds and the checker's seconds. auto_lirpa stays empty: token domains are
not a box, so auto_LiRPA has no like-for-like run (continuous-domain comparisons are not done yet).
Targets (issue 17): bound <= 1.05x exact, bound + check seconds <= exact_seconds / 10.

Prints a table and writes JSON: a list of {instance, exact, exact_seconds, lower, certify{method:
{bound, seconds, check_seconds, leaves?}}, auto_lirpa{}, ...}.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from certify.bounds.tokens import FloatTokens, exhaustive  # noqa: E402
from certify.engine import run_check  # noqa: E402
from certify.engine_graph import prepare_graph  # noqa: E402

INSTANCES = {"maxofk_v16_pos": "specs/max_of_k_small.yaml", "maxofk_v64_pos": "specs/max_of_k_circuit.yaml"}
QUICK = ("maxofk_v16_pos",)


def run(name: str, spec: str, bab_seconds: float, tmp: Path) -> dict:
    p = prepare_graph(ROOT / spec, tmp / f"{name}.cert.json", None, False)
    exact, tokens, exact_s = exhaustive(p.joint, FloatTokens(p.box.vocab, p.box.allowed))
    row = {"instance": name, "spec": spec, "vocab": p.box.vocab, "length": len(p.box.allowed), "exact": exact,
           "exact_tokens": [int(t) for t in tokens], "exact_seconds": round(exact_s, 3), "certify": {}, "auto_lirpa": {}}
    for method in ("crown", "bab"):
        # bab: the target is the tolerance; a spec copy with tolerance 1.05x exact makes branch and bound aim there
        path = ROOT / spec
        if method == "bab":
            text = (ROOT / spec).read_text().replace("tolerance: 1000", f"tolerance: \"{exact * 1.05:.6f}\"")
            text = text.replace("path: ../models/", f"path: {ROOT / 'models'}/")
            path = tmp / f"{name}.bab.yaml"
            path.write_text(text)
        o = run_check(path, tmp / f"{name}.{method}.cert.json", method, timeout=bab_seconds)
        cert = json.loads((tmp / f"{name}.{method}.cert.json").read_text())
        entry = {"bound": float(o.check.bound) if o.check.bound is not None else None, "verdict": o.check.verdict.value,
                 "seconds": round(o.seconds["bound"], 3), "check_seconds": round(o.seconds["check"], 3),
                 "falsify_seconds": round(o.seconds["falsify"], 3)}
        if "bab" in cert.get("engine", {}):
            entry["leaves"] = cert["engine"]["bab"]["leaves"]
        row["certify"][method] = entry
        row["lower"] = float(o.lower) if o.lower is not None else None
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the V = 16 instance only")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--bab-seconds", type=float, default=120.0)
    args = ap.parse_args()
    names = QUICK if args.quick else tuple(INSTANCES)
    rows = []
    meta = {"python": platform.python_version(), "machine": platform.machine(), "bab_seconds": args.bab_seconds,
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows.append(run(name, INSTANCES[name], args.bab_seconds, Path(tmp)))
            if args.json:  # after every instance: a long run that is stopped keeps what it measured
                args.json.write_text(json.dumps([{**r, "meta": meta} for r in rows], indent=1))
            r = rows[-1]
            print(f"\n{name}: exact {r['exact']:.4f} at {r['exact_tokens']} ({r['exact_seconds']:.1f} s, {r['vocab']}^{r['length']} sequences); "
                  f"attained (falsifier) {r['lower']:.4f}")
            print(f"  {'method':8s} {'bound':>10s} {'x exact':>8s} {'bound s':>8s} {'check s':>8s} {'(b+c)/exact_s':>14s}  verdict")
            for m, e in r["certify"].items():
                ratio = e["bound"] / r["exact"] if e["bound"] is not None else float("nan")
                share = (e["seconds"] + e["check_seconds"]) / r["exact_seconds"]
                print(f"  {m:8s} {e['bound']:10.4f} {ratio:8.3f} {e['seconds']:8.1f} {e['check_seconds']:8.1f} {share:14.2f}  "
                      f"{e['verdict']}{'  leaves ' + str(e['leaves']) if 'leaves' in e else ''}")


if __name__ == "__main__":
    main()
