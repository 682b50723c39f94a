"""How far is the VeryDiff pairs' attained deviation from their true maximum? A guided MILP, as an estimate.

    python benchmarks/verydiff_exact.py [--only mnist0,2_80] [--time-limit S] --json PATH
    python benchmarks/verydiff_exact.py --worst-leaves K [--tree-seconds S] [--only mnist7] [--time-limit S] --json PATH

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

--worst-leaves K: where the whole region's MILP does not finish (MNIST-7), ask it of the regions that
set a branch-and-bound tree's bound. A tree is bounded for --tree-seconds CPU seconds (as
benchmarks/verydiff.py's bab, not checked); its leaves' boxes are read off the tree's input splits,
each leaf is bounded again by CROWN (the MILP's big-M and cuts), and HiGHS solves the K leaves with the
largest CROWN bound, every row and sign above the attained deviation with it as the cutoff. A leaf
whose rows all come back infeasible (status 2) holds no input above the attained deviation (within
HiGHS's tolerances: an estimate, never a certificate): its excess over it is the bound's, not the
falsifier's. Keys: instance, lower, tree {bound, leaves, seconds}, leaves [{crown, rows [{row, sign,
status, incumbent, replayed, dual, below}], below (every row infeasible under the cutoff), seconds}].
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from fractions import Fraction
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
            r["replayed"] = _replay(p, lo, free, r["x"])
        r.pop("x")
    rec["rows"] = rows
    done = all(r["status"] == 0 for r in rows)
    rec["maximum"] = max([rec["lower"]] + [r["replayed"] for r in rows if r.get("replayed") is not None]) if done else None
    return rec


def _replay(p, lo: np.ndarray, free: np.ndarray, x_free: np.ndarray) -> float:
    """The deviation at an MILP maximiser on the free inputs (the fixed ones at `lo`), replayed exactly on the joint network."""
    x = np.array(lo, dtype=np.float64)
    x[free] = x_free
    return float(max(abs(v) for v in exact.forward(p.joint, exact_witness(x, p.domain))))


def _leaf_boxes(node: dict, box: tuple) -> list:
    """The boxes of a split tree's leaves (input splits: the first child x_d <= at, the second x_d >= at)."""
    if "children" not in node:
        return [box]
    if node["split"] != "input":
        raise SystemExit("--worst-leaves reads input-split trees only")
    d, at = node["dim"], Fraction(node["at"])
    (lo, up), left, right = box, list(box[1]), list(box[0])
    left[d], right[d] = at, at
    return _leaf_boxes(node["children"][0], (lo, left)) + _leaf_boxes(node["children"][1], (right, up))


def worst_leaves(name: str, count: int, tree_seconds: float, time_limit: float) -> dict:
    """HiGHS on the `count` leaves of a `tree_seconds` CPU s tree with the largest CROWN bound (module docstring)."""
    from certify.bounds import bab
    from certify.engine import bound_with

    bab.CLOCK = time.process_time
    tmp = Path(tempfile.mkdtemp())
    p = prepare(verydiff.write_spec(tmp, name), tmp / "c.json")
    _, lower = attained_lower(p)
    c = time.process_time()
    bound, body, notes = bound_with(p, "bab", time_budget=tree_seconds, stop_below=lower * Fraction(101, 100))
    rec = {"instance": name, "lower": float(lower), "tree": {"bound": float(bound), "leaves": notes["bab"]["leaves"],
                                                             "seconds": round(time.process_time() - c, 1)}, "leaves": []}
    boxes = _leaf_boxes(body["tree"], p.box)
    rec["tree"]["written_leaves"] = len(boxes)  # a split region whose own bound meets the claim is written as a leaf
    folded = [fold_inputs(p.net, p.joint, b) for b in boxes]  # each leaf on its free inputs, as branch and bound has it
    crowns = [propose(net, joint, box, "crown") for net, joint, box, _ in folded]
    worst = sorted(range(len(boxes)), key=lambda i: -float(crowns[i].bound))[:count]
    for i in worst:
        (net, _, box, free), guide = folded[i], crowns[i]
        lo = box_floats(*boxes[i])[0]
        free = np.arange(len(lo)) if free is None else np.asarray(free)
        t = time.process_time()
        rows = milp_rows(net, *box_floats(*box), (guide.output_lower, guide.output_upper), layer_bounds=guide.claims,
                         differences=difference_cuts(guide.steps), above=float(lower), time_limit=time_limit, cutoff=True)
        leaf = {"crown": float(crowns[i].bound), "seconds": round(time.process_time() - t, 1), "rows": []}
        for r in rows:
            if r["x"] is not None:
                r["replayed"] = _replay(p, lo, free, r["x"])
            leaf["rows"].append({k: r.get(k) for k in ("row", "sign", "status", "incumbent", "replayed", "dual", "below")})
        leaf["below"] = all(r["below"] for r in rows)
        rec["leaves"].append(leaf)
        print(f"  {name} leaf crown {leaf['crown']:.4f}: statuses {[r['status'] for r in rows]}, "
              f"below the attained {float(lower):.6f}: {leaf['below']} ({leaf['seconds']} CPU s)", flush=True)
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="mnist0,2_80")
    ap.add_argument("--time-limit", type=float, default=600.0, help="seconds per output row and sign")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--worst-leaves", type=int, metavar="K", help="HiGHS on the K worst leaves of a branch-and-bound tree")
    ap.add_argument("--tree-seconds", type=float, default=30.0, help="the tree's bounding CPU seconds (--worst-leaves)")
    args = ap.parse_args(argv)
    out = []
    if args.worst_leaves:
        for name in args.only.split(","):
            out.append(worst_leaves(name, args.worst_leaves, args.tree_seconds, args.time_limit))
            if args.json:
                args.json.write_text(json.dumps(out, indent=1))
        return 0
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
