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

from .linear import Relaxation, backsubstitute
from .network import FloatNet

LEARNING_RATE = 0.2
_OPT = optax.adam(LEARNING_RATE)
_PAD = 8  # split counts are padded to a multiple of this, so leaves of similar depth share one compile


def _rows(params, weights, biases, k, lam, unstable, base, relax, lower_in, upper_in, split_maps):
    alphas, beta = params
    net = FloatNet(weights, biases)
    rs = [Relaxation(jnp.where(u, jnp.clip(p, 0.0, 1.0), b), r[0], r[1], r[2])
          for p, u, b, r in zip(alphas, unstable, base, relax)]
    terms = {j: jnp.maximum(beta, 0.0) @ m for j, m in enumerate(split_maps, start=1)}
    return backsubstitute(net, k, lam, rs, lower_in, upper_in, split_terms=terms)


@partial(jax.jit, static_argnums=(3, 4))
def _optimise(params, weights, biases, k, iters, *args):
    args = (weights, biases, k, *args)

    def body(_, carry):
        params, state, best, best_params = carry
        current = _rows(params, *args)
        grads = jax.grad(lambda p: -jnp.sum(_rows(p, *args)))(params)
        better = current > best
        best_params = jax.tree_util.tree_map(lambda p, bp: jnp.where(better[:, None], p, bp), params, best_params)
        best = jnp.maximum(best, current)
        updates, state = _OPT.update(grads, state, params)
        alphas, beta = optax.apply_updates(params, updates)
        params = ([jnp.clip(a, 0.0, 1.0) for a in alphas], jnp.maximum(beta, 0.0))
        return params, state, best, best_params

    init = (params, _OPT.init(params), _rows(params, *args), params)
    params, _, best, best_params = jax.lax.fori_loop(0, iters, body, init)
    final = _rows(params, *args)
    better = final > best
    best_params = jax.tree_util.tree_map(lambda p, bp: jnp.where(better[:, None], p, bp), params, best_params)
    return best_params, jnp.maximum(best, final)


def optimise_alpha(net: FloatNet, k: int, relax: list[Relaxation], bounds: list[tuple[np.ndarray, np.ndarray]],
                   lower_in, upper_in, *, assume: dict | None = None, iters: int = 60):
    """Per-row parameters for the bounds of layer k. Returns (alphas, betas, lower, upper).

    alphas[j-1] has shape (2*width_k, width_j): rows < width_k bound the neurons from below, the
    others from above. betas is a list of (layer, neuron, values of shape (2*width_k,)) for the
    region's splits below layer k. `bounds[j-1]` are the (claimed) pre-activation bounds of layer j.
    """
    width = net.weights[k - 1].shape[0]
    lam = jnp.concatenate([jnp.eye(width), -jnp.eye(width)])
    unstable = [jnp.asarray((np.asarray(lo) < 0) & (np.asarray(up) > 0)) for lo, up in bounds[: k - 1]]
    base = [jnp.asarray(r.lower_slope) for r in relax[: k - 1]]
    rel = [tuple(jnp.asarray(v) for v in (r.lower_intercept, r.upper_slope, r.upper_intercept)) for r in relax[: k - 1]]
    splits = [(j, i, 1.0 if phase == "inactive" else -1.0) for (j, i), phase in sorted((assume or {}).items()) if j < k]
    slots = max(_PAD, -(-len(splits) // _PAD) * _PAD)
    maps = [np.zeros((slots, net.weights[j - 1].shape[0])) for j in range(1, k)]
    for s, (j, i, sign) in enumerate(splits):
        maps[j - 1][s, i] = sign
    params = ([jnp.broadcast_to(b, (2 * width, b.shape[0])) for b in base], jnp.zeros((2 * width, slots)))
    best_params, best = _optimise(params, tuple(net.weights[:k]), tuple(net.biases[:k]), k, iters, lam, unstable, base,
                                  rel, jnp.asarray(lower_in), jnp.asarray(upper_in), [jnp.asarray(m) for m in maps])
    alphas = [np.asarray(jnp.where(u, jnp.clip(p, 0.0, 1.0), b)) for p, u, b in zip(best_params[0], unstable, base)]
    beta = np.maximum(np.asarray(best_params[1]), 0.0)
    betas = [(j, i, beta[:, s]) for s, (j, i, _) in enumerate(splits)]
    best = np.asarray(best)
    return alphas, betas, best[:width], -best[width:]
