"""Falsifier: projected gradient ascent on max_i |f_i(x) - g_i(x)| from many starts (JAX).

The best input is an attained *lower* bound on the worst-case deviation once it has been replayed
in exact arithmetic (see `certify.engine`); the float value here only ranks candidates.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .network import FloatNet

POLISH = 8  # after the first ascent, its best POLISH inputs are refined by a second ascent with smaller steps (0 = off).
# The first ascent's steps end at 1e-3 of the box and stop short of a maximum: the VeryDiff pairs' attained deviations,
# 64 starts, MNIST-7 0.334120 -> 0.334552 (4,096 starts of the first ascent alone: 0.33518), 2_80 8.452150 -> 8.454480
# (exact 8.4545066), MNIST-0 1.031564 -> 1.031582 (exact 1.0315945), w16x2-svd50-box 1.396508 -> 1.399418, for 0.1-0.8 CPU s


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
    def run(x, hi, lo):
        def body(i, carry):
            x, best_x, best_v = carry
            step = width * hi * (1.0 - i / steps) + width * lo
            x = jnp.clip(x + step * jnp.sign(grad(x)), lower, upper)
            v = jax.vmap(objective)(x)
            better = v > best_v
            return x, jnp.where(better[:, None], x, best_x), jnp.where(better, v, best_v)
        v0 = jax.vmap(objective)(x)
        return jax.lax.fori_loop(0, steps, body, (x, x, v0))

    _, best_x, best_v = run(x0, 0.25, 1e-3)
    if POLISH and x0.shape[0] >= POLISH:  # see POLISH: the best POLISH points again, each from x0.shape[0] // POLISH
        # starts (itself, then nudged by up to 1 % of the box), with steps from 2 % of the box down to 1e-5 (the same
        # batch shape: the program compiled above, the schedule its arguments)
        top = jnp.argsort(-best_v)[:POLISH]
        reps = jnp.repeat(best_x[top], x0.shape[0] // POLISH, axis=0)
        nudge = width * 0.01 * jax.random.uniform(jax.random.fold_in(key, 1), reps.shape, minval=-1.0, maxval=1.0, dtype=jnp.float64)
        nudge = nudge.at[:: x0.shape[0] // POLISH].set(0.0)
        x1 = jnp.concatenate([jnp.clip(reps + nudge, lower, upper), best_x[: x0.shape[0] - reps.shape[0]]])
        _, x2, v2 = run(x1, 0.02, 1e-5)
        best_x, best_v = jnp.concatenate([best_x, x2]), jnp.concatenate([best_v, v2])
    i = int(jnp.argmax(best_v))
    return np.asarray(best_x[i]), float(best_v[i])
