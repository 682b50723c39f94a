"""alpha-CROWN: optimise the lower-relaxation slope of every unstable ReLU, per bound row (JAX + optax).

Each row of the back-substitution (one per neuron and sign) gets its own slopes, so maximising the
sum of the rows' lower bounds maximises each row. Slopes are projected to [0, 1] after every step;
the best slopes seen per row are kept, so the result is never looser than CROWN's initial choice.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .linear import Relaxation, backsubstitute
from .network import FloatNet


def optimise_alpha(net: FloatNet, k: int, relax: list[Relaxation], bounds: list[tuple[np.ndarray, np.ndarray]],
                   lower_in, upper_in, *, iters: int = 60, lr: float = 0.2):
    """Per-row slopes for the bounds of layer k. Returns (alphas, lower, upper).

    alphas[j-1] has shape (2*width_k, width_j): rows < width_k bound the neurons from below, the
    others from above. `bounds[j-1]` are the (claimed) pre-activation bounds of layer j.
    """
    width = net.weights[k - 1].shape[0]
    lam = jnp.concatenate([jnp.eye(width), -jnp.eye(width)])
    unstable = [jnp.asarray((lo < 0) & (up > 0)) for lo, up in bounds[: k - 1]]
    base = [jnp.asarray(r.lower_slope) for r in relax[: k - 1]]
    params = [jnp.broadcast_to(b, (2 * width, b.shape[0])) for b in base]

    def rows(params):
        rs = [Relaxation(jnp.where(u, jnp.clip(p, 0.0, 1.0), b), r.lower_intercept, r.upper_slope, r.upper_intercept)
              for p, u, b, r in zip(params, unstable, base, relax)]
        return backsubstitute(net, k, lam, rs, lower_in, upper_in)

    opt = optax.adam(lr)

    @jax.jit
    def step(params, state, best, best_params):
        value, grads = jax.value_and_grad(lambda p: -jnp.sum(rows(p)))(params)
        current = rows(params)
        better = current > best
        best_params = [jnp.where(better[:, None], p, bp) for p, bp in zip(params, best_params)]
        best = jnp.maximum(best, current)
        updates, state = opt.update(grads, state, params)
        params = [jnp.clip(p, 0.0, 1.0) for p in optax.apply_updates(params, updates)]
        return params, state, best, best_params

    state = opt.init(params)
    best, best_params = rows(params), params
    for _ in range(iters):
        params, state, best, best_params = step(params, state, best, best_params)
    final = rows(params)
    better = final > best
    best_params = [np.asarray(jnp.where(better[:, None], jnp.where(u, jnp.clip(p, 0, 1), b), jnp.where(u, jnp.clip(bp, 0, 1), b)))
                   for p, bp, u, b in zip(params, best_params, unstable, base)]
    best = np.asarray(jnp.maximum(best, final))
    return best_params, best[:width], -best[width:]
