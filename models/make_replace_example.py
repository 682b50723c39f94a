"""Write the `replace` example's sub-model: tiny_mlp's dense layer 2 (8 -> 8) as two narrower layers 8 -> 4 -> 8.

W2's rank-2 truncated SVD, W2 ~ U S V^T, written as a ReLU network: h = relu([V^T; -V^T] a), out = [U S, -U S] h + b2,
which is exactly (U S V^T) a + b2 since v = relu(v) - relu(-v). The example spec specs/tiny_replace.yaml
replaces layer 2 by it. Deterministic (no randomness); prints the file's sha256.

Rerun from the repository root:
    .venv/bin/python models/make_replace_example.py [--model models/tiny_mlp.npz] [--out models/tiny_replace_sub.npz]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from certify.checker.model import read_model  # noqa: E402
from certify.model import save_model  # noqa: E402

RANK = 2


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/tiny_mlp.npz", help="the model whose layer 2 is replaced")
    ap.add_argument("--out", default="models/tiny_replace_sub.npz", help="sub-model file to write")
    args = ap.parse_args(argv)

    dense = read_model(args.model).dense[1]
    w, b = np.array(dense.weight, dtype=np.float64), np.array(dense.bias, dtype=np.float64)
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    us, v = u[:, :RANK] * s[:RANK], vt[:RANK]
    digest = save_model(args.out, [np.vstack([v, -v]), np.hstack([us, -us])], [np.zeros(2 * RANK), b])
    print(f"sha256 {digest}  {args.out}")


if __name__ == "__main__":
    main()
