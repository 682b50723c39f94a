"""How long the checker takes to re-derive a `fill: mean` exactly (issue 15).

    python benchmarks/mean_fill.py [--json PATH]

The mean is computed by the trusted checker (`network.mean_activations`: FLINT integer products over
the exact points of `network.domain_points`), and compared here with a float64 evaluation over the
same points (largest absolute difference), on the shipped digits MLP and the VeryDiff MNIST network.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from certify.checker.model import read_model  # noqa: E402
from certify.checker.network import domain_points, exact_layers, input_box, mean_activations  # noqa: E402
from certify.checker.spec import read_spec  # noqa: E402

CASES = [("digits 64-32-32-10, layer 1", "specs/digits_prune.yaml", 1, 1000),
         ("digits 64-32-32-10, layer 2", "specs/digits_prune.yaml", 2, 1000),
         ("digits 64-32-32-10, layer 1", "specs/digits_prune.yaml", 1, 10000),
         ("MNIST 784-100-100-10, layer 2", "specs/verydiff_mnist.yaml", 2, 1000)]


def measure(label, spec_path, layer, samples) -> dict:
    spec = read_spec(ROOT / spec_path)
    f = read_model(spec.model.path, spec.model.sha256)
    layers, box = exact_layers(f)[:layer], input_box(spec, f)
    width = len(layers[-1][1])
    t = time.perf_counter()
    exact = mean_activations(f, layers, box, list(range(width)), samples, 0)
    seconds = time.perf_counter() - t
    rows, den = domain_points(*box, samples, 0)
    h = np.array([[float(Fraction(v, den)) for v in r] for r in rows])
    if f.input_scale is not None:
        h = h * np.array(f.input_scale) + np.array(f.input_shift)
    for w, b in layers:
        h = np.maximum(h @ np.array(w, float).T + np.array(b, float), 0)
    diff = float(np.abs(h.mean(axis=0) - np.array([float(v) for v in exact])).max())
    return {"case": label, "samples": samples, "neurons": width, "seconds": round(seconds, 4), "max_abs_diff_float64": diff}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the rows as JSON")
    args = ap.parse_args()
    rows = [measure(*c) for c in CASES]
    print(f"{'case':<32} {'samples':>8} {'neurons':>8} {'exact mean s':>13} {'|exact - float64|':>18}")
    for r in rows:
        print(f"{r['case']:<32} {r['samples']:>8} {r['neurons']:>8} {r['seconds']:>13.3f} {r['max_abs_diff_float64']:>18.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
