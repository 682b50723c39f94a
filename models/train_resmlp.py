"""Train the shipped residual MLP and its sparse autoencoder on scikit-learn's digits (JAX + optax).

Model (a graph model, certify.model.graph): x (64 pixels in [0, 1]) -> embed (32) -> two residual
blocks h + W_down gelu(W_up LN(h) + b_up) + b_down (hidden 64) -> LN -> unembed (10 logits).
LayerNorm (eps 1e-5) is written as primitive nodes (mean, centre, square, mean, + eps, rsqrt,
multiply, scale and shift), so the checker checks it op by op.

SAE: a ReLU sparse autoencoder on the residual stream after block 1 (node `block1`, width 32),
64 features, SAELens layout (W_enc (32, 64), b_enc, W_dec (64, 32), b_dec; encoder input x - b_dec),
trained on the training images' activations with an L1 penalty on the features; decoder rows
normalised to unit length after each step. Its feature ranking by mean activation is written beside
it (`models/resmlp_sae_ranking.json`) for `levels:` over features.

Data: `sklearn.datasets.load_digits` (no download), the fixed stratified 80/20 split of
models/train_digits.py. Deterministic for a seed on one machine kind; takes about 20 s on a CPU.

    .venv/bin/python models/train_resmlp.py [--seed 0]

Prints test accuracy, the SAE's reconstruction quality (fraction of variance unexplained, L0, and
the accuracy with the SAE spliced in) and the files' sha256.

Explanations built on the shipped model and SAE (also alone: `--explanations-only`, which leaves
resmlp.npz and resmlp_sae.npz as they are):
  * models/resmlp_sae/: the same SAE in SAELens layout (cfg.json + sae_weights.safetensors, float64);
  * models/resmlp_sae_jumprelu/: a JumpReLU SAE derived from it, SAELens layout (architecture
    jumprelu): the same weights, per-feature thresholds fitted on the training activations (for each
    feature, the largest of a grid of cut points whose zeroing raises the training reconstruction
    error by at most 1% of its variance, features taken in order);
  * models/resmlp_transcoder.npz (+ _ranking.json): a ReLU transcoder replacing block 1's MLP branch
    (LN -> up -> gelu -> down) by relu(r W_enc + b_enc) W_dec + b_dec on the block's input r (node
    `embed`), 64 features, trained on the training images (MSE + L1 on the features, JAX/optax);
  * models/resmlp_explanations.json: the reconstruction quality of each on the test images (fraction
    of variance unexplained of the replaced value, mean L0, the accuracy with it spliced in).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

D, HIDDEN, FEATURES, EPS, L1 = 32, 64, 64, 1e-5, 0.5


def main() -> None:
    import jax
    import jax.numpy as jnp
    import optax

    from certify.model.graph import GraphBuilder, evaluate

    jax.config.update("jax_enable_x64", True)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "models" / "resmlp.npz"))
    ap.add_argument("--explanations-only", action="store_true", help="keep resmlp.npz and its SAE; build the other explanations")
    args = ap.parse_args()
    if args.explanations_only:
        return explanations(Path(args.out), args.seed)

    data = load_digits()
    x, y = data.data / 16.0, data.target
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    key = jax.random.PRNGKey(args.seed)
    ks = jax.random.split(key, 8)

    def dense(k, out, inp):
        return jax.random.normal(k, (out, inp)) * jnp.sqrt(2.0 / inp), jnp.zeros(out)

    params = {"embed": dense(ks[0], D, 64), "unembed": dense(ks[1], 10, D),
              "blocks": [{"up": dense(ks[2 + 2 * b], HIDDEN, D), "down": dense(ks[3 + 2 * b], D, HIDDEN),
                          "ln": (jnp.ones(D), jnp.zeros(D))} for b in range(2)],
              "ln_f": (jnp.ones(D), jnp.zeros(D))}
    params["blocks"][0]["down"] = (params["blocks"][0]["down"][0] * 0.5, params["blocks"][0]["down"][1])
    params["blocks"][1]["down"] = (params["blocks"][1]["down"][0] * 0.5, params["blocks"][1]["down"][1])

    def ln(h, gb):
        c = h - h.mean(-1, keepdims=True)
        return c / jnp.sqrt((c * c).mean(-1, keepdims=True) + EPS) * gb[0] + gb[1]

    def gelu(z):
        return 0.5 * z * (1 + jax.scipy.special.erf(z / jnp.sqrt(2.0)))

    def forward(p, xb, sae=None):
        h = xb @ p["embed"][0].T + p["embed"][1]
        for i, blk in enumerate(p["blocks"]):
            u = gelu(ln(h, blk["ln"]) @ blk["up"][0].T + blk["up"][1])
            h = h + u @ blk["down"][0].T + blk["down"][1]
            if i == 0 and sae is not None:
                h = sae(h)
            if i == 0:
                site = h
        return ln(h, p["ln_f"]) @ p["unembed"][0].T + p["unembed"][1], site

    def loss(p, xb, yb):
        logits, _ = forward(p, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    opt = optax.adam(3e-3)
    state = opt.init(params)
    step = jax.jit(lambda p, s, xb, yb: (lambda g: (optax.apply_updates(p, opt.update(g, s, p)[0]), opt.update(g, s, p)[1]))(
        jax.grad(loss)(p, xb, yb)))
    xtr_j, ytr_j = jnp.asarray(xtr), jnp.asarray(ytr)
    for _ in range(600):
        params, state = step(params, state, xtr_j, ytr_j)
    acc = float((jnp.argmax(forward(params, jnp.asarray(xte))[0], -1) == jnp.asarray(yte)).mean())

    # ---- the SAE on block 1's output
    acts = forward(params, xtr_j)[1]
    k1, k2 = jax.random.split(ks[7])
    sae = {"W_enc": jax.random.normal(k1, (D, FEATURES)) * 0.1, "b_enc": jnp.zeros(FEATURES),
           "W_dec": jax.random.normal(k2, (FEATURES, D)) * 0.1, "b_dec": acts.mean(0)}

    def encode(s, h):
        return jax.nn.relu((h - s["b_dec"]) @ s["W_enc"] + s["b_enc"])

    def decode(s, f):
        return f @ s["W_dec"] + s["b_dec"]

    def sae_loss(s, h):
        f = encode(s, h)
        return ((decode(s, f) - h) ** 2).sum(-1).mean() + L1 * jnp.abs(f).sum(-1).mean()

    sopt = optax.adam(3e-3)
    sstate = sopt.init(sae)

    @jax.jit
    def sstep(s, st):
        g = jax.grad(sae_loss)(s, acts)
        upd, st = sopt.update(g, st, s)
        s = optax.apply_updates(s, upd)
        return {**s, "W_dec": s["W_dec"] / jnp.linalg.norm(s["W_dec"], axis=1, keepdims=True)}, st

    for _ in range(3000):
        sae, sstate = sstep(sae, sstate)
    te_acts = forward(params, jnp.asarray(xte))[1]
    recon = decode(sae, encode(sae, te_acts))
    fvu = float(((recon - te_acts) ** 2).sum() / ((te_acts - te_acts.mean(0)) ** 2).sum())
    l0 = float((encode(sae, te_acts) > 0).sum(-1).mean())
    spliced = float((jnp.argmax(forward(params, jnp.asarray(xte), lambda h: decode(sae, encode(sae, h)))[0], -1)
                     == jnp.asarray(yte)).mean())
    ranking = np.argsort(-np.asarray(encode(sae, acts).mean(0)), kind="stable").tolist()

    # ---- write the graph model, the SAE and the ranking
    P = jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=np.float64), params)
    b = GraphBuilder(64)
    h = b.linear("embed", "x", *P["embed"])
    for i, blk in enumerate(P["blocks"], start=1):
        n = b.layernorm(f"block{i}.ln", h, *blk["ln"], eps=EPS)
        u = b.unary(f"block{i}.gelu", "gelu", b.linear(f"block{i}.up", n, *blk["up"]))
        h = b.add(f"block{i}", h, b.linear(f"block{i}.down", u, *blk["down"]))
    out = b.linear("logits", b.layernorm("ln_f", h, *P["ln_f"], eps=EPS), *P["unembed"])
    b.save(args.out, out)
    sae_path = Path(args.out).with_name("resmlp_sae.npz")
    np.savez(sae_path, **{k: np.asarray(v, dtype=np.float64) for k, v in sae.items()})
    Path(args.out).with_name("resmlp_sae_ranking.json").write_text(json.dumps({"by": "mean activation on the training images",
                                                                               "features": ranking}) + "\n")
    check = np.abs(evaluate(args.out, xte[:50]) - np.asarray(forward(params, jnp.asarray(xte[:50]))[0])).max()
    for p in (Path(args.out), sae_path):
        print(f"{p}: sha256 {hashlib.sha256(p.read_bytes()).hexdigest()}")
    print(f"test accuracy {acc:.4f}; SAE: fraction of variance unexplained {fvu:.4f}, L0 {l0:.1f} of {FEATURES}, "
          f"accuracy with the SAE spliced in {spliced:.4f}; saved graph vs JAX max |diff| {check:.2e}")
    explanations(Path(args.out), args.seed)


def values(path: Path, x: np.ndarray) -> dict:
    """Every node's float64 value (rows: images) of a saved graph model."""
    from certify.bounds.graph import ENGINE, floats
    from certify.checker.graph import read_graph

    graph = read_graph(path)
    out = {"x": np.asarray(x, dtype=np.float64).T}
    for n in floats(graph):
        ins = [out[s] for s in n.inputs]
        out[n.name] = (n.weight @ ins[0] + n.bias[:, None] if n.op == "linear" else
                       n.scale[:, None] * ins[0] + n.shift[:, None] if n.op == "affine" else ENGINE[n.op].eval(n, ins))
    return {k: v.T for k, v in out.items()} | {"__output__": out[graph.output].T}


def save_saelens(folder: Path, arrays: dict, cfg: dict) -> None:
    """SAELens's on-disk layout: cfg.json and sae_weights.safetensors."""
    from safetensors.numpy import save_file

    folder.mkdir(exist_ok=True)
    save_file({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()}, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps(cfg, indent=2) + "\n")


def explanations(model: Path, seed: int) -> None:
    import jax
    import jax.numpy as jnp
    import optax

    jax.config.update("jax_enable_x64", True)
    data = load_digits()
    x, y = data.data / 16.0, data.target
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    sae = dict(np.load(model.with_name("resmlp_sae.npz")))
    tr, te = values(model, xtr), values(model, xte)
    report, files = {"data": "sklearn digits, test split (360 images)", "fraction_of_variance_unexplained": "sum |recon - v|^2 / sum |v - mean v|^2"}, []

    def fvu(recon, v):
        return float(((recon - v) ** 2).sum() / ((v - v.mean(0)) ** 2).sum())

    def spliced_accuracy(site, replace):
        """Accuracy with the value at `site` replaced (the rest of the graph re-evaluated from it)."""
        from certify.bounds.graph import ENGINE, floats
        from certify.checker.graph import read_graph

        graph = read_graph(model)
        out = {"x": xte.T}
        for n in floats(graph):
            ins = [out[s] for s in n.inputs]
            out[n.name] = (n.weight @ ins[0] + n.bias[:, None] if n.op == "linear" else
                           n.scale[:, None] * ins[0] + n.shift[:, None] if n.op == "affine" else ENGINE[n.op].eval(n, ins))
            if n.name == site:
                out[n.name] = replace(out).T
        return float((np.argmax(out[graph.output].T, -1) == yte).mean())

    # ---- the SAE in SAELens layout, and a JumpReLU SAE with fitted thresholds
    base_cfg = {"d_in": D, "d_sae": FEATURES, "dtype": "float64", "device": "cpu", "apply_b_dec_to_input": True,
                "normalize_activations": "none", "reshape_activations": "none",
                "metadata": {"model_name": "certify resmlp (models/train_resmlp.py)", "hook_name": "block1"}}
    save_saelens(model.with_name("resmlp_sae"), sae, {**base_cfg, "architecture": "standard"})
    pre_tr = (tr["block1"] - sae["b_dec"]) @ sae["W_enc"] + sae["b_enc"]
    target = tr["block1"]
    theta = np.zeros(FEATURES)
    budget = 0.01 * ((target - target.mean(0)) ** 2).sum() / FEATURES
    for j in range(FEATURES):
        base = ((np.maximum(pre_tr, 0) * (pre_tr > theta)) @ sae["W_dec"] + sae["b_dec"] - target)
        err0 = (base ** 2).sum()
        for cut in sorted(np.quantile(pre_tr[:, j][pre_tr[:, j] > 0], [0.05, 0.1, 0.2, 0.3, 0.4, 0.5]) if (pre_tr[:, j] > 0).any() else [],
                          reverse=True):
            drop = (pre_tr[:, j] > 0) & (pre_tr[:, j] <= cut)
            trial = base - np.outer(np.where(drop, pre_tr[:, j], 0), sae["W_dec"][j])
            if (trial ** 2).sum() - err0 <= budget:
                theta[j] = cut
                break
    jump = {**sae, "threshold": theta}
    save_saelens(model.with_name("resmlp_sae_jumprelu"), jump, {**base_cfg, "architecture": "jumprelu"})

    def encode(a, v, centre=True):
        """SAELens's features: relu(pre) * [pre > threshold], pre from v - b_dec (an SAE) or v (a transcoder)."""
        pre = ((v - a["b_dec"]) if centre else v) @ a["W_enc"] + a["b_enc"]
        return np.maximum(pre, 0) * (pre > a.get("threshold", 0))

    for name, a in (("sae", sae), ("sae_jumprelu", jump)):
        f = encode(a, te["block1"])
        recon = f @ a["W_dec"] + a["b_dec"]
        report[name] = {"site": "block1", "features": FEATURES, "fvu": fvu(recon, te["block1"]), "l0": float((f > 0).sum(-1).mean()),
                        "accuracy_spliced": spliced_accuracy("block1", lambda out, a=a: encode(a, out["block1"].T) @ a["W_dec"] + a["b_dec"])}

    # ---- a transcoder for block 1's MLP branch: r = embed -> block1.down
    r_tr, m_tr = jnp.asarray(tr["embed"]), jnp.asarray(tr["block1.down"])
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed + 1))
    params = {"W_enc": jax.random.normal(k1, (D, FEATURES)) * 0.1, "b_enc": jnp.zeros(FEATURES),
              "W_dec": jax.random.normal(k2, (FEATURES, D)) * 0.1, "b_dec": m_tr.mean(0)}

    def tc_loss(p):
        f = jax.nn.relu(r_tr @ p["W_enc"] + p["b_enc"])
        return ((f @ p["W_dec"] + p["b_dec"] - m_tr) ** 2).sum(-1).mean() + 0.05 * (f.sum(-1) * jnp.linalg.norm(p["W_dec"], axis=1).mean()).mean()

    opt = optax.adam(3e-3)
    state = opt.init(params)

    @jax.jit
    def step(p, st):
        upd, st = opt.update(jax.grad(tc_loss)(p), st, p)
        return optax.apply_updates(p, upd), st

    for _ in range(4000):
        params, state = step(params, state)
    tc = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    tc_path = model.with_name("resmlp_transcoder.npz")
    np.savez(tc_path, **tc)
    f = encode(tc, te["embed"], centre=False)
    recon = f @ tc["W_dec"] + tc["b_dec"]
    report["transcoder"] = {"block": "block1", "replaces": "block1.down (LN -> up -> gelu -> down) read from embed", "features": FEATURES,
                            "fvu": fvu(recon, te["block1.down"]), "l0": float((f > 0).sum(-1).mean()),
                            "accuracy_spliced": spliced_accuracy("block1", lambda out: out["embed"].T + encode(tc, out["embed"].T, False) @ tc["W_dec"]
                                                                 + tc["b_dec"])}
    ranking = np.argsort(-encode(tc, tr["embed"], centre=False).mean(0), kind="stable").tolist()
    model.with_name("resmlp_transcoder_ranking.json").write_text(json.dumps({"by": "mean activation on the training images",
                                                                             "features": ranking}) + "\n")
    report["accuracy"] = float((np.argmax(te["__output__"], -1) == yte).mean())
    model.with_name("resmlp_explanations.json").write_text(json.dumps(report, indent=2) + "\n")
    for p in (model.with_name("resmlp_sae") / "sae_weights.safetensors", model.with_name("resmlp_sae") / "cfg.json",
              model.with_name("resmlp_sae_jumprelu") / "sae_weights.safetensors", model.with_name("resmlp_sae_jumprelu") / "cfg.json", tc_path):
        print(f"{p}: sha256 {hashlib.sha256(p.read_bytes()).hexdigest()}")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
