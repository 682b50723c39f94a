"""How far is the VeryDiff pairs' attained deviation from their true maximum? A guided MILP, as an estimate.

    python benchmarks/verydiff_exact.py [--only mnist0,2_80] [--time-limit S] --json PATH

Per instance (benchmarks/verydiff.py's): the falsifier's attained deviation (replayed exactly), an
alpha-CROWN proposal on the whole region (its intermediate bounds and difference lines, untrusted
floats), and HiGHS on the joint network with those bounds as big-M and the difference lines as cuts
(`certify.bounds.milp.milp_rows`), per output row and sign whose alpha bound exceeds the best value
found so far. Each row's incumbent is replayed exactly (`exact.forward` on the joint network: a true
deviation, a lower bound); where every row solved is optimal, the largest incumbent is the maximum
within HiGHS's tolerances (1e-9 relative gap, feasibility 1e-7 on padded bounds): an estimate of the
exact maximum, never a certificate. It says how tight a certified bound could get: issue 19's targets
are ratios to the attained deviation.

Keys per instance: instance, lower, lower_seconds, alpha, alpha_seconds, rows [{row, sign, bound,
status, incumbent, replayed, dual, seconds}], maximum (null unless every row solved is optimal),
milp_seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import verydiff  # noqa: E402

from certify.bounds.bab import fold_inputs  # noqa: E402
from certify.bounds.driver import propose  # noqa: E402
from certify.bounds.milp import difference_cuts, milp_rows  # noqa: E402
from certify.bounds.network import box_floats  # noqa: E402
from certify.checker import exact  # noqa: E402
from certify.engine import attained_lower, exact_witness, prepare  # noqa: E402


def run(name: str, time_limit: float) -> dict:
    tmp = Path(tempfile.mkdtemp())
    p = prepare(verydiff.write_spec(tmp, name), tmp / "c.json")
    t = time.perf_counter()
    _, lower = attained_lower(p)
    rec = {"instance": name, "lower": float(lower), "lower_seconds": round(time.perf_counter() - t, 1)}
    t = time.perf_counter()
    prop = propose(p.net, p.joint, p.box, "alpha")
    rec.update(alpha=float(prop.bound), alpha_seconds=round(time.perf_counter() - t, 1))
    lo, up = box_floats(*p.box)
    net, _, box, free = fold_inputs(p.net, p.joint, p.box)  # the fixed pixels in the first layer's bias, as branch and bound does
    free = np.arange(len(lo)) if free is None else np.asarray(free)
    t = time.perf_counter()
    rows = milp_rows(net, *box_floats(*box), (prop.output_lower, prop.output_upper), layer_bounds=prop.claims,
                     differences=difference_cuts(prop.steps), above=float(lower), time_limit=time_limit)
    rec["milp_seconds"] = round(time.perf_counter() - t, 1)
    for r in rows:
        if r["x"] is not None:
            x = lo.copy()
            x[free] = r["x"]
            w = exact_witness(x, p.domain)
            r["replayed"] = float(max(abs(v) for v in exact.forward(p.joint, w)))
        r.pop("x")
    rec["rows"] = rows
    done = all(r["status"] == 0 for r in rows)
    rec["maximum"] = max([rec["lower"]] + [r["replayed"] for r in rows if r.get("replayed") is not None]) if done else None
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="mnist0,2_80")
    ap.add_argument("--time-limit", type=float, default=600.0, help="seconds per output row and sign")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    out = []
    for name in args.only.split(","):
        rec = run(name, args.time_limit)
        out.append(rec)
        solved = ", ".join(f"row {r['row']}{'+' if r['sign'] > 0 else '-'}: status {r['status']} incumbent {r['incumbent']} "
                           f"dual {r['dual']} ({r.get('replayed')})" for r in rec["rows"])
        print(f"{name}: attained {rec['lower']:.7f}, alpha {rec['alpha']:.4f}, MILP {rec['milp_seconds']} s [{solved}], "
              f"maximum {rec['maximum']}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
