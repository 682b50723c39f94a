"""alpha-CROWN and beta-CROWN: optimise, per bound row, the lower-relaxation slope of every unstable
ReLU (alpha in [0, 1]) and a multiplier for each of the region's ReLU splits (beta >= 0), with JAX
autodiff and optax's Adam.

Each row of the back-substitution (one per neuron and sign) gets its own parameters, so maximising
the sum of the rows' lower bounds maximises each row. Parameters are projected after every step;
the best parameters seen per row are kept, so the result is never looser than CROWN's choice.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .linear import Difference, Relaxation, backsubstitute
from .network import FloatNet

LEARNING_RATE = 0.2
GRID = 2.0 ** 20  # slopes are kept on this grid: short exact rationals in certificates, small integers in checking
_OPT = optax.adam(LEARNING_RATE)
SAME_LAYER = True  # a layer's bounds take multipliers on the region's splits of that layer too, not only below it (see
# `optimise_alpha`); False: below only, as before
# A region's split multipliers (beta) are one (rows x width) array per layer 1..k, nonzero only in the columns of
# the region's split neurons (`split_signs`: +1 inactive, -1 active, 0 not split): the compiled program's shapes do not
# depend on how many splits a region has, so a tree compiles one program per layer and step count for every depth (it
# used to pad the split count to a multiple of 8: w16x2-prune50-box compiled 15 programs in its first 15 CPU s, a
# third of them and more in XLA's compiler). A column without a split has gradient 0 and stays 0 under Adam.


def _rows(params, weights, biases, k, lam, unstable, base, relax, lower_in, upper_in, split_signs, diffs):
    alphas, betas = params
    net = FloatNet(weights, biases)
    rs = [Relaxation(jnp.where(u, jnp.clip(p, 0.0, 1.0), b), r[0], r[1], r[2])
          for p, u, b, r in zip(alphas, unstable, base, relax)]
    terms = {j: jnp.maximum(beta, 0.0) * s for j, (beta, s) in enumerate(zip(betas, split_signs), start=1)}
    diff = {j: Difference(d[0], d[1], Relaxation(*d[2:])) for j, d in enumerate(diffs, start=1) if d is not None}
    # lam is [I; -I] (`optimise_alpha`): lam @ W_k is [W_k; -W_k], not a product (the same floats). As a product it was
    # most of a call on wide layers, redone at every step: w64x2-svd50-ball50's layer 2, 256 x 128 @ 128 x 128
    w, b = weights[k - 1], biases[k - 1]
    top = (jnp.concatenate([w, -w]), jnp.concatenate([b, -b]))
    if k in terms:  # multipliers on layer k's own splits: (lam + T) @ W_k
        own = terms.pop(k)
        top = (top[0] + own @ w, top[1] + own @ b)
    return backsubstitute(net, k, lam, rs, lower_in, upper_in, split_terms=terms, diff=diff, top=top)


@partial(jax.jit, static_argnums=(3,))
def _optimise(params, weights, biases, k, iters, *args):  # iters traced: one compile serves every step count
    args = (weights, biases, k, *args)

    def objective(p):
        rows = _rows(p, *args)
        return -jnp.sum(rows), rows

    def body(_, carry):  # one copy of the rows and their gradient in the program: XLA compiles it faster
        params, state, best, best_params = carry
        (_, current), grads = jax.value_and_grad(objective, has_aux=True)(params)
        better = current > best
        best_params = jax.tree_util.tree_map(lambda p, bp: jnp.where(better[:, None], p, bp), params, best_params)
        best = jnp.maximum(best, current)
        updates, state = _OPT.update(grads, state, params)
        alphas, betas = optax.apply_updates(params, updates)
        params = ([jnp.round(jnp.clip(a, 0.0, 1.0) * GRID) / GRID for a in alphas], [jnp.maximum(b, 0.0) for b in betas])
        return params, state, best, best_params

    best = jnp.full(args[3].shape[0], -jnp.inf)  # args[3]: lam, one row per bound
    # iters + 1 evaluations: the starting parameters (CROWN's slopes) and every update but the last
    _, _, best, best_params = jax.lax.fori_loop(0, iters + 1, body, (params, _OPT.init(params), best, params))
    return best_params, best


def _bucket(n: int) -> int:
    """Padded size of a dimension: shapes within a bucket share one XLA compile (a compile costs
    0.1-2 s, far more than the optimisation itself on small and medium networks)."""
    return max(2, 1 << (n - 1).bit_length()) if n <= 128 else -(-n // 128) * 128


def _pad(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape)
    out[tuple(slice(0, s) for s in a.shape)] = a
    return out


def _warm_start(params, warm: tuple, width: int, pk: int, splits: list) -> None:
    """Write an enclosing region's (alphas, betas) into the padded starting parameters, in place (a multiplier only
    where the region has that split)."""
    alphas, betas = warm
    for p, a in zip(params[0], alphas):
        a = np.asarray(a)
        p[:width, : a.shape[1]], p[pk:pk + width, : a.shape[1]] = a[:width], a[width:]
    here = {(j, i) for j, i, _ in splits}
    for j, i, values in betas:
        if (j, i) in here:
            params[1][j - 1][:width, i], params[1][j - 1][pk:pk + width, i] = values[:width], values[width:]


def optimise_alpha(net: FloatNet, k: int, relax: list[Relaxation], bounds: list[tuple[np.ndarray, np.ndarray]],
                   lower_in, upper_in, *, assume: dict | None = None, iters: int = 60, diff: dict | None = None,
                   warm: tuple | None = None):
    """Per-row parameters for the bounds of layer k. Returns (alphas, betas, lower, upper).

    `warm`: (alphas, betas) as returned for the same layer on an enclosing region (a branch-and-bound
    parent): the optimisation starts there instead of at CROWN's slopes (only the unstable neurons'
    entries are read; a split the parent did not have starts at beta = 0).

    alphas[j-1] has shape (2*width_k, width_j): rows < width_k bound the neurons from below, the
    others from above. betas is a list of (layer, neuron, values of shape (2*width_k,)) for the
    region's splits on layers 1..k (layer k's own splits too: z_ki <= 0 or >= 0 holds on the region, so a multiplier
    on it is as sound as on a lower layer's split, and it tightens the layer's other neurons: on w16x2-prune50-box's
    worst leaves, 7-17 % lower output bounds with layers 1 and 2 bounded so). `bounds[j-1]` are the (claimed) pre-activation bounds of layer j.

    Every dimension is zero-padded to a bucket size: a padded neuron has zero weights and bias, so
    its pre-activation is 0, it is stable, and it adds nothing to any row; padded rows are dropped.
    """
    widths = net.widths[: k + 1]
    pw = [_bucket(n) for n in widths]
    width, pk = widths[k], pw[k]
    ws = tuple(_pad(net.weights[j], (pw[j + 1], pw[j])) for j in range(k))
    bs = tuple(_pad(net.biases[j], (pw[j + 1],)) for j in range(k))
    eye = np.eye(pk)
    lam = np.concatenate([eye, -eye])
    unstable = [_pad((np.asarray(lo) < 0) & (np.asarray(up) > 0), (pw[j + 1],)).astype(bool)
                for j, (lo, up) in enumerate(bounds[: k - 1])]
    base = [_pad(np.asarray(r.lower_slope), (pw[j + 1],)) for j, r in enumerate(relax[: k - 1])]
    rel = [tuple(_pad(np.asarray(v), (pw[j + 1],)) for v in (r.lower_intercept, r.upper_slope, r.upper_intercept))
           for j, r in enumerate(relax[: k - 1])]
    splits = [(j, i, 1.0 if phase == "inactive" else -1.0) for (j, i), phase in sorted((assume or {}).items())
              if j < k or (j == k and SAME_LAYER)]
    signs = [np.zeros(pw[j]) for j in range(1, k + 1)] if splits else []  # no splits: no beta in the compiled program
    for j, i, sign in splits:
        signs[j - 1][i] = sign
    params = ([np.broadcast_to(b, (2 * pk, b.shape[0])).copy() for b in base], [np.zeros((2 * pk, len(s))) for s in signs])
    if warm is not None:
        _warm_start(params, warm, width, pk, splits)
    diffs = []  # per layer below k: the pairs (padded with no-op pairs (0, 0)) and their lines, or None
    for j in range(1, k):
        d = (diff or {}).get(j)
        if d is None:
            diffs.append(None)
            continue
        m = _bucket(len(d.a))
        lines = d.lines
        diffs.append((_pad(d.a, (m,)).astype(np.int32), _pad(d.b, (m,)).astype(np.int32),
                      *(_pad(np.asarray(v), (m,)) for v in (lines.lower_slope, lines.lower_intercept, lines.upper_slope, lines.upper_intercept))))
    best_params, best = _optimise(params, ws, bs, k, iters, lam, unstable, base, rel,
                                  _pad(np.asarray(lower_in), (pw[0],)), _pad(np.asarray(upper_in), (pw[0],)), signs, diffs)
    rows = np.r_[0:width, pk:pk + width]
    alphas = [np.where(u, np.clip(np.asarray(p), 0.0, 1.0), b)[rows][:, : widths[j + 1]]
              for j, (p, u, b) in enumerate(zip(best_params[0], unstable, base))]
    beta = [np.maximum(np.asarray(b), 0.0)[rows] for b in best_params[1]]
    betas = [(j, i, beta[j - 1][:, i]) for j, i, _ in splits]
    best = np.asarray(best)[rows]
    return alphas, betas, best[:width], -best[width:]
