"""Train the shipped Max-of-K transformer (JAX + optax, CPU, about a minute).

Task (Gross et al., "Compact Proofs of Model Performance via Mechanistic Interpretability", 2024):
read K = 4 tokens from a vocabulary of 64 and predict the largest at the last position. Model: one
layer, one attention head, attention only (no MLP, no LayerNorm, no biases), d_model = d_head = 32,
causal, TransformerLens conventions. Trained on uniformly random sequences; weights are float32
numbers (stored as float64, so the exact checker reads the same values).

Writes
    models/maxofk.npz      the graph model (certify.model.transformer.attn_only(..., fold=True, softmax="softmax"): logits
                           at the last position only, the task's output; QK in its singular basis and
                           OV folded into W_U, the same function up to float64 rounding, ~1e-13; input
                           = 4 concatenated one-hot vectors)
    models/maxofk_tl.npz   the same weights under TransformerLens names (W_E, W_pos,
                           blocks.0.attn.W_Q/W_K/W_V (1, 32, 32), W_O (1, 32, 32), W_U)

and prints the accuracy over all 64^4 = 16,777,216 sequences (exhaustive, JAX batches) and the
sha256 of both files.

    nice -n 10 .venv/bin/python models/train_maxofk.py [--seed 0] [--steps 6000]
    nice -n 10 .venv/bin/python models/train_maxofk.py --vocab 16 --d-model 16 --out models/maxofk_v16.npz   # the small instance
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

V, K, D = 64, 4, 32  # the defaults; --vocab, --length, --d-model train smaller instances (tests, benchmarks)


def logits_last(params, tokens):
    """JAX forward, logits at the last position only: (batch, K) -> (batch, V)."""
    import jax.numpy as jnp

    h = params["W_E"][tokens] + params["W_pos"][None, :tokens.shape[1]]
    q = h[:, -1] @ params["blocks.0.attn.W_Q"][0]
    k = h @ params["blocks.0.attn.W_K"][0]
    v = h @ params["blocks.0.attn.W_V"][0]
    s = jnp.einsum("bc,bjc->bj", q, k) / jnp.sqrt(q.shape[-1])
    a = jnp.exp(s - s.max(-1, keepdims=True))
    a = a / a.sum(-1, keepdims=True)
    out = jnp.einsum("bj,bjc->bc", a, v) @ params["blocks.0.attn.W_O"][0]
    return (h[:, -1] + out) @ params["W_U"]


def all_sequences(vocab: int, length: int, start: int, stop: int) -> np.ndarray:
    """Sequences start..stop-1 in lexicographic order (base-vocab digits, position 0 most significant)."""
    idx = np.arange(start, stop, dtype=np.int64)
    return np.stack([(idx // vocab ** (length - 1 - p)) % vocab for p in range(length)], axis=1).astype(np.int32)


def exhaustive_accuracy(params, batch: int = 1 << 18) -> float:
    V, K = params["W_E"].shape[0], params["W_pos"].shape[0]
    import jax

    fn = jax.jit(lambda t: (logits_last(params, t).argmax(-1) == t.max(-1)).sum())
    total = V ** K
    right = sum(int(fn(all_sequences(V, K, s, min(s + batch, total)))) for s in range(0, total, batch))
    return right / total


def main() -> None:
    import jax
    import jax.numpy as jnp
    import optax

    from certify.model.transformer import attn_only

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--out", default=str(ROOT / "models" / "maxofk.npz"))
    ap.add_argument("--vocab", type=int, default=V)
    ap.add_argument("--length", type=int, default=K)
    ap.add_argument("--d-model", type=int, default=D)
    args = ap.parse_args()
    vocab, length, d = args.vocab, args.length, args.d_model

    ks = jax.random.split(jax.random.PRNGKey(args.seed), 8)
    init = lambda k, shape, fan: jax.random.normal(k, shape, jnp.float32) / np.sqrt(fan)  # noqa: E731
    params = {"W_E": init(ks[0], (vocab, d), 1), "W_pos": init(ks[1], (length, d), 1) * 0.1,
              "blocks.0.attn.W_Q": init(ks[2], (1, d, d), d), "blocks.0.attn.W_K": init(ks[3], (1, d, d), d),
              "blocks.0.attn.W_V": init(ks[4], (1, d, d), d), "blocks.0.attn.W_O": init(ks[5], (1, d, d), d),
              "W_U": init(ks[6], (d, vocab), d)}
    sched = optax.warmup_cosine_decay_schedule(0.0, 1e-2, 200, args.steps, 1e-4)
    opt = optax.adamw(sched, weight_decay=0.01)
    state = opt.init(params)

    def loss(p, tokens):
        logp = jax.nn.log_softmax(logits_last(p, tokens))
        return -jnp.take_along_axis(logp, tokens.max(-1, keepdims=True), -1).mean()

    @jax.jit
    def step(p, s, key):
        tokens = jax.random.randint(key, (512, length), 0, vocab)
        value, grads = jax.value_and_grad(loss)(p, tokens)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, value

    t0 = time.perf_counter()
    key = ks[7]
    for i in range(args.steps):
        key, sub = jax.random.split(key)
        params, state, value = step(params, state, sub)
        if i % 1000 == 0 or i == args.steps - 1:
            print(f"step {i:5d}  loss {float(value):.4f}", flush=True)
    print(f"trained in {time.perf_counter() - t0:.1f} s")
    t1 = time.perf_counter()
    acc = exhaustive_accuracy(params)
    print(f"accuracy over all {vocab ** length:,} sequences: {acc:.6f} ({time.perf_counter() - t1:.1f} s)")

    weights = {k: np.asarray(v, dtype=np.float32).astype(np.float64) for k, v in params.items()}
    out = Path(args.out)
    tl = out.with_name(out.stem + "_tl.npz")
    np.savez(tl, **weights)
    attn_only(weights, vocab=vocab, length=length, queries=[length - 1], fold=True, softmax="softmax").save(out, output="unembed")
    for path in (out, tl):
        print(f"{path.name}: sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main()
