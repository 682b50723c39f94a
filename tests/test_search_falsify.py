"""The falsifier's polish (`falsify.POLISH`): its second, finer ascent from the first one's best inputs."""

from __future__ import annotations

import numpy as np
import pytest

from certify.bounds import falsify as falsify_module
from certify.bounds.falsify import falsify
from certify.bounds.network import from_exact
from certify.checker import exact


def _tent(c: float, slope: float):
    """One input in [0, 1]: relu(1 - slope |x - c|), peak 1 at x = c (a ReLU net)."""
    return from_exact([(exact.qmat([[1.0], [-1.0]]), exact.qvec([-c, c])),
                       (exact.qmat([[-slope, -slope]]), exact.qvec([1.0])),
                       (exact.qmat([[1.0]]), exact.qvec([0.0]))])


def test_the_polish_finds_a_narrow_peak_the_first_ascent_steps_over(monkeypatch):
    """The first ascent's steps end at 1e-3 of the box (plus the schedule's last step): it stops about 2e-3 from the
    peak (0.979); the polish, from its best inputs with steps down to 1e-5, within 2e-7."""
    net = _tent(0.3337, 10.0)
    lo, up = np.zeros(1), np.ones(1)
    monkeypatch.setattr(falsify_module, "POLISH", 0)
    x0, v0 = falsify(net, lo, up)
    monkeypatch.setattr(falsify_module, "POLISH", 8)
    x1, v1 = falsify(net, lo, up)
    assert v0 < 0.99 and v1 > 0.99995 and abs(x1[0] - 0.3337) < 5e-6, (x0, v0, x1, v1)  # (2e-7; 1e-5 with steps ending at 1e-3)


@pytest.mark.parametrize("seed", range(3))
def test_the_polish_never_loses_the_first_ascents_best(seed, monkeypatch):
    """Random 6-16-16-3 nets: with the polish the best value is at least the first ascent's, inside the box."""
    rng = np.random.default_rng(seed)
    widths = [6, 16, 16, 3]
    net = from_exact([(exact.qmat(rng.normal(size=(o, i)).tolist()), exact.qvec(rng.normal(size=o).tolist()))
                      for i, o in zip(widths, widths[1:])])
    lo, up = -np.ones(6), np.ones(6)
    monkeypatch.setattr(falsify_module, "POLISH", 0)
    _, v0 = falsify(net, lo, up, seed=seed)
    monkeypatch.setattr(falsify_module, "POLISH", 8)
    x1, v1 = falsify(net, lo, up, seed=seed)
    assert v1 >= v0 and np.all(x1 >= lo) and np.all(x1 <= up)
    assert np.isclose(v1, np.max(np.abs(net.numpy(x1[None]))))
