"""Train the shipped two-layer modular-addition transformer (JAX + optax, CPU, about 40 s).

Task: read "a b =" (tokens a, b in 0..p-1, then the token p for "="; vocabulary p + 1, length 3)
and predict (a + b) mod p at the last position. Model: two layers, each attention (n_heads heads,
causal, no attention biases) then a ReLU MLP with biases, no LayerNorm, no b_U; TransformerLens
conventions and names. Full-batch AdamW with weight decay on a random `--train-frac` of the p^2
pairs; the held-out pairs measure generalisation. Weights are float32 numbers stored as float64,
so the exact checker reads the same values.

Writes
    models/modadd_tl.npz   the weights under TransformerLens names: W_E (p+1, d), W_pos (3, d),
                           blocks.{0,1}.attn.W_Q/W_K/W_V (heads, d, d_head), W_O (heads, d_head, d),
                           blocks.{0,1}.mlp.W_in (d, m), b_in (m), W_out (m, d), b_out (d), W_U (d, p)
    models/modadd.npz      the graph model (certify.model.transformer.tl_graph, softmax="softmax": one
                           `softmax` node per attention pattern; logits at the last position only;
                           input = 3 concatenated one-hot vectors of width p + 1)

and prints the accuracy on the held-out pairs and on all p^2 pairs (certify.model.transformer.forward,
float64), how far the graph model's forward is from it, and the sha256 of both files.

    nice -n 10 .venv/bin/python models/train_modadd.py [--p 13] [--seed 0] [--steps 15000]
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


def logits_last(params, tokens, layers: int):
    """JAX forward, logits at the last position: (batch, 3) -> (batch, p)."""
    import jax
    import jax.numpy as jnp

    n = tokens.shape[1]
    h = params["W_E"][tokens] + params["W_pos"][None, :n]
    mask = jnp.tril(jnp.ones((n, n), dtype=bool))
    for layer in range(layers):
        pre = f"blocks.{layer}.attn"
        q = jnp.einsum("bpd,hdc->bhpc", h, params[f"{pre}.W_Q"])
        k = jnp.einsum("bpd,hdc->bhpc", h, params[f"{pre}.W_K"])
        v = jnp.einsum("bpd,hdc->bhpc", h, params[f"{pre}.W_V"])
        s = jnp.where(mask, jnp.einsum("bhic,bhjc->bhij", q, k) / jnp.sqrt(q.shape[-1]), -jnp.inf)
        a = jax.nn.softmax(s, axis=-1)
        h = h + jnp.einsum("bhij,bhjc,hcd->bid", a, v, params[f"{pre}.W_O"])
        mlp = f"blocks.{layer}.mlp"
        h = h + jax.nn.relu(h @ params[f"{mlp}.W_in"] + params[f"{mlp}.b_in"]) @ params[f"{mlp}.W_out"] + params[f"{mlp}.b_out"]
    return h[:, -1] @ params["W_U"]


def main() -> None:
    import jax
    import jax.numpy as jnp
    import optax

    from certify.model.graph import evaluate
    from certify.model.transformer import forward, one_hot, tl_graph

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--p", type=int, default=13)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=15000)
    ap.add_argument("--d-model", type=int, default=24)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--d-mlp", type=int, default=32)
    ap.add_argument("--train-frac", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=1.0)
    ap.add_argument("--out", default=str(ROOT / "models" / "modadd.npz"))
    args = ap.parse_args()
    p, d, heads, m, layers = args.p, args.d_model, args.heads, args.d_mlp, 2
    dh = d // heads

    pairs = np.array([(a, b) for a in range(p) for b in range(p)])
    tokens_all = np.concatenate([pairs, np.full((p * p, 1), p)], axis=1).astype(np.int32)
    labels_all = (pairs[:, 0] + pairs[:, 1]) % p
    order = np.random.default_rng(args.seed).permutation(p * p)
    cut = int(round(args.train_frac * p * p))
    train, held = order[:cut], order[cut:]

    ks = iter(jax.random.split(jax.random.PRNGKey(args.seed), 32))
    init = lambda shape, fan: jax.random.normal(next(ks), shape, jnp.float32) / np.sqrt(fan)  # noqa: E731
    params = {"W_E": init((p + 1, d), 1), "W_pos": init((3, d), 1), "W_U": init((d, p), d)}
    for layer in range(layers):
        pre, mlp = f"blocks.{layer}.attn", f"blocks.{layer}.mlp"
        for c in "QKV":
            params[f"{pre}.W_{c}"] = init((heads, d, dh), d)
        params[f"{pre}.W_O"] = init((heads, dh, d), d)
        params[f"{mlp}.W_in"], params[f"{mlp}.b_in"] = init((d, m), d), jnp.zeros(m)
        params[f"{mlp}.W_out"], params[f"{mlp}.b_out"] = init((m, d), m), jnp.zeros(d)
    opt = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, 3e-3, 100, args.steps, 1e-4), weight_decay=args.weight_decay)
    state = opt.init(params)
    x_train, y_train = jnp.asarray(tokens_all[train]), jnp.asarray(labels_all[train])

    def loss(q):
        logp = jax.nn.log_softmax(logits_last(q, x_train, layers))
        return -jnp.take_along_axis(logp, y_train[:, None], -1).mean()

    @jax.jit
    def step(q, s):
        value, grads = jax.value_and_grad(loss)(q)
        updates, s = opt.update(grads, s, q)
        return optax.apply_updates(q, updates), s, value

    acc = lambda q, idx: float((np.asarray(logits_last(q, jnp.asarray(tokens_all[idx]), layers)).argmax(-1) == labels_all[idx]).mean())  # noqa: E731
    t0 = time.perf_counter()
    for i in range(args.steps):
        params, state, value = step(params, state)
        if i % 500 == 0 or i == args.steps - 1:
            print(f"step {i:5d}  loss {float(value):.4f}  train {acc(params, train):.3f}  held-out {acc(params, held):.3f}", flush=True)
    print(f"trained in {time.perf_counter() - t0:.1f} s")

    weights = {k: np.asarray(v, dtype=np.float32).astype(np.float64) for k, v in params.items()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tl = out.with_name(out.stem + "_tl.npz")
    np.savez(tl, **weights)
    tl_graph(weights, vocab=p + 1, length=3, queries=[2], softmax="softmax").save(out, output="unembed")
    ref = forward(weights, tokens_all)[:, -1]  # the numpy TransformerLens forward, float64
    graph = evaluate(out, one_hot(tokens_all, p + 1))
    got = ref.argmax(-1)
    print(f"accuracy {float((got[held] == labels_all[held]).mean()):.4f} on the {len(held)} held-out pairs, "
          f"{float((got == labels_all).mean()):.4f} on all {p * p} pairs; graph model vs forward: max |diff| {np.abs(graph - ref).max():.1e}")
    for path in (out, tl):
        print(f"{path.name}: sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main()
