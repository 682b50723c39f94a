"""Falsifier: projected gradient ascent on max_i |f_i(x) - g_i(x)| from many starts (JAX).

The best input is an attained *lower* bound on the worst-case deviation once it has been replayed
in exact arithmetic (see `certify.engine`); the float value here only ranks candidates.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .network import FloatNet


def falsify(net: FloatNet, lower: np.ndarray, upper: np.ndarray, *, starts: int = 64, steps: int = 100,
            seed: int = 0) -> tuple[np.ndarray, float]:
    """The input in [lower, upper] with the largest deviation found, and that (float) deviation.

    `net` computes the differences f - g. Starts: the box centre, random corners and uniform points.
    """
    lower, upper = jnp.asarray(lower), jnp.asarray(upper)
    width = upper - lower
    key = jax.random.PRNGKey(seed)
    k1, k2 = jax.random.split(key)
    uniform = lower + width * jax.random.uniform(k1, (starts, lower.shape[0]), dtype=jnp.float64)
    corners = jnp.where(jax.random.bernoulli(k2, 0.5, (starts, lower.shape[0])), upper, lower)
    x0 = jnp.concatenate([((lower + upper) / 2)[None], corners[: starts // 4], uniform])[:max(starts, 1)]

    def objective(x):
        return jnp.max(jnp.abs(net(x)))

    grad = jax.vmap(jax.grad(objective))

    @jax.jit
    def run(x):
        def body(i, carry):
            x, best_x, best_v = carry
            step = width * 0.25 * (1.0 - i / steps) + width * 1e-3
            x = jnp.clip(x + step * jnp.sign(grad(x)), lower, upper)
            v = jax.vmap(objective)(x)
            better = v > best_v
            return x, jnp.where(better[:, None], x, best_x), jnp.where(better, v, best_v)
        v0 = jax.vmap(objective)(x)
        return jax.lax.fori_loop(0, steps, body, (x, x, v0))

    _, best_x, best_v = run(x0)
    i = int(jnp.argmax(best_v))
    return np.asarray(best_x[i]), float(best_v[i])
