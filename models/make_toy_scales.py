"""Train the toy models with planted scales (for `certify flow`, `certify scales`, `certify components`).

Synthetic problems whose multi-scale structure is known by construction:

* **features** (models/toy_features_<variant>.npz): the target on the box [-1, 1]^6 is a teacher
  sum of 4 *strong* ReLU ridge features (output effect 1) and W - 4 *weak* ones (output effect
  3e-4), each unit balanced (incoming and outgoing weights of the same size). A student MLP
  6 -> W -> 1 (W = 16, or 32 for `w32`) is trained on the teacher's data with full-batch Adam
  (mean squared error, weight decay 1e-5), starting from the teacher's weights plus 5% noise
  (seed 0, or 1 for `s1`), units shuffled: a warm start keeps unit identities, whereas from scratch
  gradient descent spreads each strong feature over several units and blurs the unit-level scales.
  Planted: 4 strong units (listed in models/toy_planted.json) and 4 strong principal directions of
  the hidden activations; keeping them stays close to f, dropping one does not.
* **tiers** (models/toy_tiers.npz): the same construction with three tiers of features, 2 strong
  (output effect 1), 4 medium (1e-2) and 10 weak (3e-5), student 6 -> 16 -> 1 (seed 0): two planted
  scale boundaries. The tier of every unit is written to models/toy_planted.json.
* **clusters** (models/toy_clusters.npz): a base MLP 4 -> 4 -> 2 is trained on a smooth synthetic
  target; each of its 4 hidden units is then split into a tight cluster of 6 (incoming weights
  and bias times (1 + 1e-3 noise) plus 1e-3 noise; the outgoing weight shared out by random
  Dirichlet fractions), the units are shuffled, and the 24-unit network is fine-tuned briefly at a
  small learning rate. Planted: 4 clusters of hidden units (the cluster of every unit is written
  to models/toy_planted.json); `merge` with >= 4 k-means groups stays close to f, with 3 groups it
  must merge two different clusters. Also written: models/toy_clusters_x0.npy, the training point
  farthest (in L-inf input distance) from every unit's kink; specs/toy_clusters.yaml uses the
  ball of radius 1 around it: merge changes the merged layer itself, so f and g share no ReLU
  there and CROWN relaxes their units independently; on the whole box that relaxation error, not
  the explanation, dominates the bound (see README).
* **tree** (models/toy_tree.npz): a hierarchical generative process on a binary tree of depth 3 over
  d = 8 leaves (the inputs): the root is uniform on [-s_0, s_0], each child is its parent plus an
  independent uniform innovation on [-s_l, s_l], s_l = (0.75, 0.1875, 0.046875, 0.01171875) shrinking
  4x per depth (the innovations' variance 16x); sum s_l < 1, so every sample lies in [-1, 1]^8. The
  target reads the coarse tree structure strongly and the finer nodes weakly: a teacher of 2 *coarse*
  ReLU units (output effect 1), unit k on the mean of the 4 leaves under depth-1 node k, 6 units
  (effect 2e-3) on random directions of the depth-2 details (the differences of the two depth-2 nodes
  under a depth-1 node) and 8 units (effect 1e-3) on the leaf details (differences of sibling leaves),
  the fine units' kinks within the process's spread at their depth. A student 8 -> 16 -> 1 is trained
  as for the features toy (warm start, seed 0, units shuffled) on 4096 samples of the tree process.
  Planted: the 2 coarse units and the 2 principal directions of the hidden activations they span
  (models/toy_planted.json, key "tree"); `pca` keeping 2 components stays close to f, keeping 1 does
  not. (The fine directions barely vary in the training data, so training turns 3 fine units into
  small copies of a coarse unit, effect ~3e-3; being collinear with it, they add no principal
  direction.) `--only tree` trains only this toy and adds its entry to toy_planted.json (the other
  models are not rewritten).

Plain numpy, full batch, BLAS pinned to one thread (deterministic bits for a given machine kind).
Writes the .npz models and models/toy_planted.json (what was planted), and prints each file's
sha256 (paste into specs/toy_*.yaml). Takes about 15 seconds on one core.

Rerun from the repository root:
    .venv/bin/python models/make_toy_scales.py              # every toy
    .venv/bin/python models/make_toy_scales.py --only tree  # only models/toy_tree.npz
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from certify.model import save_model  # noqa: E402

HERE = Path(__file__).resolve().parent
STRONG, WEAK_SIZE = 4, 3e-4
CLUSTERS, PER_CLUSTER, CLUSTER_NOISE = 4, 6, 1e-3
TIERS = [(2, 1.0, 1100), (4, 1e-2, 1101), (10, 3e-5, 1102)]  # three scales: strong, medium, weak features
TREE_DEPTH, TREE_SHRINK = 3, 4.0  # binary tree over 2^3 = 8 leaves; innovation scale / 4 per depth
TREE_SCALES = [0.75 / TREE_SHRINK ** depth for depth in range(TREE_DEPTH + 1)]  # root, depth 1, 2, 3 (leaves)
TREE_TIERS = [(2, 1.0, 1, 1200), (6, 2e-3, 2, 1201), (8, 1e-3, 3, 1202)]  # (count, output effect, tree depth, seed)


def forward(params, x):
    w1, b1, w2, b2 = params
    z = x @ w1.T + b1
    h = np.maximum(z, 0.0)
    return z, h, h @ w2.T + b2


def train(params, x, y, *, steps, lr, decay, seed=0):
    """Full-batch Adam on mean squared error + decay * |W|^2 (weights only)."""
    params = [p.copy() for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    n = len(x)
    for t in range(1, steps + 1):
        w1, b1, w2, b2 = params
        z, h, out = forward(params, x)
        g_out = 2.0 * (out - y) / n / y.shape[1]
        g_w2 = g_out.T @ h + 2 * decay * w2
        g_b2 = g_out.sum(0)
        g_z = (g_out @ w2) * (z > 0)
        g_w1 = g_z.T @ x + 2 * decay * w1
        g_b1 = g_z.sum(0)
        rate = lr * (0.5 * (1 + np.cos(np.pi * t / steps)) * 0.99 + 0.01)  # cosine decay
        for i, g in enumerate((g_w1, g_b1, g_w2, g_b2)):
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g * g
            params[i] -= rate * (m[i] / (1 - 0.9 ** t)) / (np.sqrt(v[i] / (1 - 0.999 ** t)) + 1e-12)
    return params


def mse(params, x, y):
    return float(np.mean((forward(params, x)[2] - y) ** 2))


def teacher(tiers):
    """ReLU features on [-1, 1]^6 in tiers (count, output effect, seed), each unit balanced (|incoming|
    = |outgoing| = sqrt(effect)); a tier's features depend only on its count and seed."""
    units = []
    for count, effect, seed in tiers:
        rng = np.random.default_rng(seed)
        u = rng.normal(size=(count, 6))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        size = np.sqrt(effect)
        units.append((u * size, rng.uniform(-0.3, 0.3, count) * size, rng.choice([-1.0, 1.0], count) * size))
    return [np.concatenate([u[0] for u in units]), np.concatenate([u[1] for u in units]),
            np.concatenate([u[2] for u in units])[None, :], np.zeros(1)]


def features_teacher(weak: int):
    """4 strong features (effect 1) and `weak` weak ones (effect WEAK_SIZE); the strong ones are the
    same for every variant."""
    return teacher([(STRONG, 1.0, 1000), (weak, WEAK_SIZE, 1001)])


def student(teach, seed: int, x=None):
    """A student trained on the teacher's data (x: uniform on the box unless given) from the
    teacher's weights plus 5% noise (a warm start keeps unit identities: from scratch, gradient
    descent spreads each strong feature over several units and the unit-level scales blur); units
    shuffled. Returns params and the permutation."""
    width = teach[0].shape[0]
    x = np.random.default_rng(2000).uniform(-1, 1, (4096, 6)) if x is None else x
    y = forward(teach, x)[2]
    rng = np.random.default_rng(seed)
    init = [p * (1 + 0.05 * rng.normal(size=p.shape)) for p in teach]
    perm = rng.permutation(width)
    init = [init[0][perm], init[1][perm], init[2][:, perm], init[3]]
    params = train(init, x, y, steps=2000, lr=1e-3, decay=1e-5)
    return params, perm, mse(params, x, y), float(np.mean(y ** 2))


def make_features(width: int, seed: int):
    params, perm, err, power = student(features_teacher(width - STRONG), seed)
    return params, sorted(int(i) for i in np.flatnonzero(perm < STRONG)), err, power


def make_clusters():
    rng = np.random.default_rng(3000)
    x = rng.uniform(-1, 1, (4096, 4))
    y = np.stack([np.sin(1.5 * x[:, 0] + x[:, 1]) + 0.5 * x[:, 2], np.abs(x[:, 3] - 0.3 * x[:, 0])], axis=1)
    base = [rng.normal(0, 0.5, (CLUSTERS, 4)), np.zeros(CLUSTERS), rng.normal(0, 0.5, (2, CLUSTERS)), np.zeros(2)]
    base = train(base, x, y, steps=4000, lr=1e-2, decay=0.0)
    w1, b1, w2, b2 = base
    n = CLUSTERS * PER_CLUSTER
    scale = 1 + CLUSTER_NOISE * rng.normal(size=(n, 1))
    big_w1 = np.repeat(w1, PER_CLUSTER, axis=0) * scale + CLUSTER_NOISE * rng.normal(size=(n, 4))
    big_b1 = np.repeat(b1, PER_CLUSTER) * scale[:, 0] + CLUSTER_NOISE * rng.normal(size=n)
    share = rng.dirichlet(np.ones(PER_CLUSTER), size=CLUSTERS).ravel()
    big_w2 = np.repeat(w2, PER_CLUSTER, axis=1) * share
    perm = rng.permutation(n)
    labels = np.repeat(np.arange(CLUSTERS), PER_CLUSTER)[perm]
    params = [big_w1[perm], big_b1[perm], big_w2[:, perm], b2.copy()]
    params = train(params, x, y, steps=200, lr=1e-5, decay=0.0)
    # the centre of the domain: the training point farthest (in units of the L1 weight norm,
    # i.e. in L-inf input distance) from every unit's kink
    z = x @ params[0].T + params[1]
    margin = np.min(np.abs(z) / np.abs(params[0]).sum(axis=1), axis=1)
    x0 = x[int(np.argmax(margin))]
    return params, base, labels, x0, float(margin.max()), mse(params, x, y), float(np.mean(y ** 2))


def haar(depth: int) -> np.ndarray:
    """The orthonormal Haar directions of tree depth `depth` over the 2^TREE_DEPTH leaves: depth 0 the
    all-leaves mean, depth l >= 1 the difference of the two children of each depth-(l-1) node."""
    d = 2 ** TREE_DEPTH
    if depth == 0:
        return np.ones((1, d)) / np.sqrt(d)
    block = d // 2 ** (depth - 1)  # leaves under a depth-(l-1) node
    rows = []
    for start in range(0, d, block):
        v = np.zeros(d)
        v[start:start + block // 2], v[start + block // 2:start + block] = 1.0, -1.0
        rows.append(v / np.sqrt(block))
    return np.array(rows)


def tree_samples(n: int, seed: int) -> np.ndarray:
    """n samples of the tree process: each node is its parent plus a uniform innovation on
    [-s_l, s_l] (the root: on [-s_0, s_0]); the leaves are the inputs."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 1))
    for depth, s in enumerate(TREE_SCALES):
        if depth:
            x = np.repeat(x, 2, axis=1)  # node i's children are 2i and 2i + 1
        x = x + rng.uniform(-s, s, x.shape)
    return x


def tree_teacher():
    """Balanced ReLU units (|incoming| = |outgoing| = sqrt(effect)). The coarse tier (depth 1): unit k
    reads the mean of the leaves under depth-1 node k; a finer tier (depth l >= 2) reads random unit
    directions in the span of depth l's Haar directions (differences of sibling nodes)."""
    units = []
    for count, effect, depth, seed in TREE_TIERS:
        rng = np.random.default_rng(seed)
        if depth == 1:
            u = np.kron(np.eye(2), np.ones(2 ** (TREE_DEPTH - 1)))[:count]  # the two depth-1 node means
        else:
            u = rng.normal(size=(count, 2 ** (depth - 1))) @ haar(depth)
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        size = np.sqrt(effect)
        kink = 0.3 if depth == 1 else TREE_SCALES[depth] / 2  # kinks where the process puts samples
        units.append((u * size, rng.uniform(-kink, kink, count) * size, rng.choice([-1.0, 1.0], count) * size))
    return [np.concatenate([u[0] for u in units]), np.concatenate([u[1] for u in units]),
            np.concatenate([u[2] for u in units])[None, :], np.zeros(1)]


def make_tree(seed: int = 0):
    """The student of the tree teacher, trained on samples of the tree process (as `student`)."""
    params, perm, err, scale = student(tree_teacher(), seed, tree_samples(4096, 2100))
    bounds = np.cumsum([0] + [count for count, _, _, _ in TREE_TIERS])
    tier_of = [int(np.searchsorted(bounds, p, side="right") - 1) for p in perm]
    return params, tier_of, err, scale


def write_tree(planted: dict) -> None:
    params, tier_of, err, power = make_tree()
    path = HERE / "toy_tree.npz"
    sha = save_model(path, [params[0], params[2]], [params[1], params[3]])
    coarse = [j for j, t in enumerate(tier_of) if t == 0]
    print(f"{path.name}: tree depth {TREE_DEPTH}, scales {TREE_SCALES}, coarse units {coarse}, mse {err:.2e} "
          f"(target power {power:.3f})  sha256 {sha}")
    planted["tree"] = {"depth": TREE_DEPTH, "leaves": 2 ** TREE_DEPTH, "innovation_scales": TREE_SCALES,
                       "tiers": [{"count": c, "output_effect": e, "tree_depth": d}
                                 for c, e, d, _ in TREE_TIERS],
                       "tier_of_unit": tier_of, "coarse_units": coarse, "planted_components": len(coarse),
                       "planted_level": f"pca{len(coarse)}",  # specs/toy_tree.yaml: the boundary is pca2 -> pca1
                       "domain": "box [-1, 1]^8 (holds every sample of the process)"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["tree"], help="train only this toy; update its entry of toy_planted.json")
    args = parser.parse_args(argv)
    if args.only == "tree":
        planted = json.loads((HERE / "toy_planted.json").read_text())
        with threadpool_limits(1):
            write_tree(planted)
        (HERE / "toy_planted.json").write_text(json.dumps(planted, indent=1) + "\n")
        return
    planted = {}
    with threadpool_limits(1):
        planted["features"] = {"strong_units": STRONG, "weak_output_effect": WEAK_SIZE, "domain": "box [-1, 1]^6"}
        for name, width, seed in (("s0", 16, 0), ("s1", 16, 1), ("w32", 32, 0)):
            params, strong, err, power = make_features(width, seed)
            path = HERE / f"toy_features_{name}.npz"
            sha = save_model(path, [params[0], params[2]], [params[1], params[3]])
            print(f"{path.name}: width {width}, seed {seed}, strong units {strong}, mse {err:.2e} "
                  f"(target power {power:.3f})  sha256 {sha}")
            planted["features"][name] = {"width": width, "seed": seed, "strong": strong}
        tiers = TIERS
        params, perm, err, power = student(teacher(tiers), 0)
        path = HERE / "toy_tiers.npz"
        sha = save_model(path, [params[0], params[2]], [params[1], params[3]])
        bounds = np.cumsum([0] + [count for count, _, _ in tiers])
        tier_of = [int(np.searchsorted(bounds, p, side="right") - 1) for p in perm]
        print(f"{path.name}: tiers {[(c, e) for c, e, _ in tiers]}, mse {err:.2e}  sha256 {sha}")
        planted["tiers"] = {"tiers": [{"count": c, "output_effect": e} for c, e, _ in tiers], "tier_of_unit": tier_of,
                            "domain": "box [-1, 1]^6"}
        params, base, labels, x0, margin, err, power = make_clusters()
        path = HERE / "toy_clusters.npz"
        sha = save_model(path, [params[0], params[2]], [params[1], params[3]])
        np.save(HERE / "toy_clusters_x0.npy", x0)
        print(f"{path.name}: 24 units in 4 clusters, mse {err:.2e} (base 4-unit {mse(base, *_cluster_data()):.2e}, "
              f"target power {power:.3f}); x0 margin {margin:.3f}  sha256 {sha}")
        planted["clusters"] = {"clusters": CLUSTERS, "per_cluster": PER_CLUSTER, "noise": CLUSTER_NOISE,
                               "cluster_of_unit": labels.tolist(), "x0_margin": round(margin, 4)}
        write_tree(planted)
    (HERE / "toy_planted.json").write_text(json.dumps(planted, indent=1) + "\n")


def _cluster_data():
    rng = np.random.default_rng(3000)
    x = rng.uniform(-1, 1, (4096, 4))
    y = np.stack([np.sin(1.5 * x[:, 0] + x[:, 1]) + 0.5 * x[:, 2], np.abs(x[:, 3] - 0.3 * x[:, 0])], axis=1)
    return x, y


if __name__ == "__main__":
    main()
