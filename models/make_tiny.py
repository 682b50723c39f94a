"""Write the tiny test model: a random (untrained) ReLU MLP 4 -> 8 -> 8 -> 3, for fast tests.

Nothing is trained. Weights ~ N(0, std 1/sqrt(fan_in)), biases ~ N(0, std 0.1), drawn in layer
order (W1, b1, W2, b2, W3, b3) from `numpy.random.default_rng(seed)` (seed 0 by default), and
written with `certify.model.save_model` (dense, relu, dense, relu, dense; weights (out, in)).
Also writes a perturbed copy (`--perturbed`, default models/tiny_mlp_perturbed.npz): every weight
and bias plus N(0, 0.01) noise from a second stream (seed + 1), the "g given as a second model"
example. Prints the files' sha256.

Rerun from the repository root:
    .venv/bin/python models/make_tiny.py [--out models/tiny_mlp.npz] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from certify.model import save_model  # noqa: E402

WIDTHS = (4, 8, 8, 3)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="models/tiny_mlp.npz", help="model file to write")
    ap.add_argument("--perturbed", default="models/tiny_mlp_perturbed.npz", help="perturbed copy to write")
    ap.add_argument("--seed", type=int, default=0, help="numpy default_rng seed")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    weights, biases = [], []
    for fan_in, fan_out in zip(WIDTHS[:-1], WIDTHS[1:]):
        weights.append(rng.normal(0.0, 1.0 / np.sqrt(fan_in), size=(fan_out, fan_in)))
        biases.append(rng.normal(0.0, 0.1, size=fan_out))
    digest = save_model(args.out, weights, biases)
    noise = np.random.default_rng(args.seed + 1)
    digest2 = save_model(args.perturbed, [w + noise.normal(0.0, 0.01, w.shape) for w in weights],
                         [b + noise.normal(0.0, 0.01, b.shape) for b in biases])
    print(f"widths {WIDTHS}")
    print(f"sha256 {digest}  {args.out}")
    print(f"sha256 {digest2}  {args.perturbed}")


if __name__ == "__main__":
    main()
