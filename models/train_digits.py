"""Train the shipped digits model: a ReLU MLP 64 -> 32 -> 32 -> 10 on scikit-learn's digits.

Data: `sklearn.datasets.load_digits` (bundled with scikit-learn, no download): 1797 8x8
images, pixel values 0..16 divided by 16 so inputs lie in [0, 1]. Fixed stratified 80/20
split (`train_test_split(..., test_size=0.2, random_state=0, stratify=y)`), independent of
--seed.

Training: plain numpy, full-batch Adam (lr 1e-2) on softmax cross-entropy with a small L2
penalty, He-normal initialisation from `numpy.random.default_rng(seed)`. Deterministic for a
given seed: BLAS is pinned to one thread (threadpoolctl) so the bits, and the sha256, do not
depend on the machine's core count (they may still differ across CPU kinds / BLAS builds).
Takes a few seconds on one CPU core.

Writes:
  * the model (default models/digits_mlp.npz) with `certify.model.save_model`: dense, relu,
    dense, relu, dense; weights (out, in) float64; no input affine (inputs are already in [0, 1]);
  * models/digits_x0.npy (next to the model): the first test image, float64, length 64, in [0, 1].

Prints the test accuracy and the model file's sha256 (paste it into a spec's model.sha256).

Rerun from the repository root:
    .venv/bin/python models/train_digits.py [--out models/digits_mlp.npz] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from certify.model import save_model  # noqa: E402

WIDTHS = (64, 32, 32, 10)


def forward(params, x):
    """Logits and the hidden activations (kept for the backward pass)."""
    acts = [x]
    n = len(params) // 2
    for i in range(n):
        z = acts[-1] @ params[2 * i].T + params[2 * i + 1]
        acts.append(np.maximum(z, 0.0) if i < n - 1 else z)
    return acts


def loss_and_grads(params, x, y, l2):
    acts = forward(params, x)
    logits = acts[-1]
    logits = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    m = len(x)
    loss = -np.log(p[np.arange(m), y]).mean()
    delta = p
    delta[np.arange(m), y] -= 1.0
    delta /= m
    grads = [None] * len(params)
    for i in reversed(range(len(params) // 2)):
        w = params[2 * i]
        loss += 0.5 * l2 * np.sum(w * w)
        grads[2 * i] = delta.T @ acts[i] + l2 * w
        grads[2 * i + 1] = delta.sum(axis=0)
        if i > 0:
            delta = (delta @ w) * (acts[i] > 0)
    return loss, grads


def train(x, y, seed, steps=1500, lr=1e-2, l2=1e-4, b1=0.9, b2=0.999, eps=1e-8):
    rng = np.random.default_rng(seed)
    params = []
    for fan_in, fan_out in zip(WIDTHS[:-1], WIDTHS[1:]):
        params.append(rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_out, fan_in)))
        params.append(np.zeros(fan_out))
    mom = [np.zeros_like(p) for p in params]
    vel = [np.zeros_like(p) for p in params]
    for t in range(1, steps + 1):
        loss, grads = loss_and_grads(params, x, y, l2)
        for p, g, m_, v_ in zip(params, grads, mom, vel):
            m_ *= b1
            m_ += (1 - b1) * g
            v_ *= b2
            v_ += (1 - b2) * g * g
            p -= lr * (m_ / (1 - b1 ** t)) / (np.sqrt(v_ / (1 - b2 ** t)) + eps)
        if t % 500 == 0:
            print(f"step {t}: train loss {loss:.4f}")
    return params


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="models/digits_mlp.npz", help="model file to write")
    ap.add_argument("--seed", type=int, default=0, help="initialisation seed")
    args = ap.parse_args(argv)

    digits = load_digits()
    x = digits.data.astype(np.float64) / 16.0
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)

    with threadpool_limits(limits=1):  # one BLAS thread: same bits on any core count
        params = train(x_tr, y_tr, args.seed)
        train_acc = (forward(params, x_tr)[-1].argmax(axis=1) == y_tr).mean()
        test_acc = (forward(params, x_te)[-1].argmax(axis=1) == y_te).mean()
    weights, biases = params[0::2], params[1::2]

    out = Path(args.out)
    digest = save_model(out, weights, biases)
    x0_path = out.parent / "digits_x0.npy"
    np.save(x0_path, np.ascontiguousarray(x_te[0], dtype=np.float64))

    print(f"train accuracy {train_acc:.4f} ({len(y_tr)} images)")
    print(f"test accuracy  {test_acc:.4f} ({len(y_te)} images)")
    print(f"x0 = first test image (label {y_te[0]}) -> {x0_path}")
    print(f"sha256 {digest}  {out}")


if __name__ == "__main__":
    main()
