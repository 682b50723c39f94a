"""alpha-CROWN's compiled program does not depend on how many ReLU splits a region has (issue 19, the quick tightness
benchmark: w16x2-prune50-box compiled 15 programs in its first 15 CPU s when split counts were padded to multiples of
8), each split's multiplier acts on its own neuron with its own sign, and branch and bound keeps XLA to one
intra-op thread."""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction

import numpy as np

from .conftest import ROOT


def _problem(seed: int = 5, widths=(4, 12, 12, 3)):
    from certify.bounds.driver import propose
    from certify.bounds.network import box_floats, from_exact
    from certify.checker import exact

    rng = np.random.default_rng(seed)
    layers = [(exact.qmat(rng.normal(0, 1, (b, a)).tolist()), exact.qvec(rng.normal(0, 0.1, b).tolist()))
              for a, b in zip(widths[:-1], widths[1:])]
    net = from_exact(layers)
    box = ([Fraction(-1)] * widths[0], [Fraction(1)] * widths[0])
    root = propose(net, layers, box, "crown")
    claims = [(np.asarray(a), np.asarray(b)) for a, b in root.claims]
    return net, list(root.relax), claims, box_floats(*box)


def _splits(n: int) -> dict:
    """n splits over layers 1 and 2 (12 neurons each), alternating phases."""
    cells = [(1, i) for i in range(12)] + [(2, i) for i in range(12)]
    return {cell: ("active" if s % 2 else "inactive") for s, cell in enumerate(cells[:n])}


def test_split_count_does_not_change_the_compiled_program():
    """1 split, then 9 (a multiple of 8 apart, where padded split counts compiled a second program), then 20: one
    program serves them all for the same layer."""
    from certify.bounds import alpha

    net, relax, claims, (lo, up) = _problem()
    alpha.optimise_alpha(net, 3, relax, claims, lo, up, assume=_splits(1), iters=2)
    compiled = alpha._optimise._cache_size()
    for n in (9, 20):
        alpha.optimise_alpha(net, 3, relax, claims, lo, up, assume=_splits(n), iters=2)
        assert alpha._optimise._cache_size() == compiled, f"{n} splits compiled another program"


def test_each_multiplier_acts_on_its_own_neuron_with_its_sign():
    """With no Adam step, the bounds are those of the starting parameters: CROWN's slopes and the given multipliers,
    which the float back-substitution with split terms (beta-CROWN: +beta on an inactive neuron's z, -beta on an
    active one's) reproduces."""
    from certify.bounds.alpha import optimise_alpha
    from certify.bounds.linear import backsubstitute

    net, relax, claims, (lo, up) = _problem()
    width = net.widths[2]
    assume = {(1, 2): "active", (1, 7): "inactive", (2, 5): "active", (2, 9): "inactive"}
    rng = np.random.default_rng(0)
    values = {cell: rng.uniform(0.1, 2.0, 2 * width) for cell in assume}
    start = [np.broadcast_to(np.asarray(relax[0].lower_slope), (2 * width, net.widths[1])).copy()]
    warm = (start, [(j, i, v) for (j, i), v in values.items()])
    _, betas, low, high = optimise_alpha(net, 2, relax, claims, lo, up, assume=assume, warm=warm, iters=0)
    assert {(j, i): list(v) for j, i, v in betas} == {cell: list(v) for cell, v in values.items()}
    terms = {j: np.zeros((2 * width, net.widths[j])) for j in (1, 2)}
    for (j, i), v in values.items():
        terms[j][:, i] = v if assume[(j, i)] == "inactive" else -v
    lam = np.concatenate([np.eye(width), -np.eye(width)])
    rows = backsubstitute(net, 2, lam, relax[:1], lo, up, split_terms=terms)
    assert np.allclose(low, rows[:width], rtol=1e-12, atol=1e-12)
    assert np.allclose(high, -rows[width:], rtol=1e-12, atol=1e-12)
    plain = backsubstitute(net, 2, lam, relax[:1], lo, up)
    assert not np.allclose(rows, plain), "the multipliers changed nothing: the test would not see a misplaced one"


def test_branch_and_bound_gives_xla_one_intra_op_thread():
    """`certify.bounds.bab` sets PJRT_NPROC (unless set) before JAX starts: XLA's CPU client then runs one pool thread."""
    code = ("import os, certify.engine, jax.numpy as jnp\n"
            "(jnp.ones((64, 64)) @ jnp.ones((64, 64))).block_until_ready()\n"
            "names = [open(f'/proc/self/task/{t}/comm').read().strip() for t in os.listdir('/proc/self/task')]\n"
            "print(os.environ['PJRT_NPROC'], sum(n.startswith('tf_XLAEigen') for n in names))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PJRT_NPROC", "NPROC")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    setting, threads = out.stdout.split()
    assert setting == "1"
    assert int(threads) <= 1, out.stdout


def test_sampled_lower_is_the_networks_own_forward_pass():
    """`sampled_lower` (numpy) gives max |net(x)| over its samples, as the JAX forward pass does."""
    from certify.bounds.bab import box_floats, sampled_lower
    from certify.bounds.network import FloatNet

    rng = np.random.default_rng(1)
    net = FloatNet((rng.normal(size=(7, 4)), rng.normal(size=(6, 7)), rng.normal(size=(3, 6))),
                   (rng.normal(size=7), rng.normal(size=6), rng.normal(size=3)),
                   input_scale=np.array([2.0, 1.0, 0.5, 3.0]), input_shift=np.array([0.5, 0.0, -1.0, 1.0]))
    box = ([Fraction(-1), Fraction(0), Fraction(-2), Fraction(1, 2)], [Fraction(1), Fraction(3), Fraction(0), Fraction(1)])
    lo, up = box_floats(*box)
    x = lo + (up - lo) * np.random.default_rng(0).uniform(size=(256, 4))
    expected = float(np.max(np.abs(np.asarray(net(np.vstack([(lo + up) / 2, x]))))))
    assert abs(sampled_lower(net, box) - expected) <= 1e-12 * max(1.0, expected)
