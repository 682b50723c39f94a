"""The joint network in float64, converted from the checker's exact construction (one source of truth)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

# JAX computes in float64 here. It is imported only where it is used (alpha-CROWN, the falsifier, graph and token
# bounds): a Ray worker that bounds CROWN leaves never imports it, which saves it ~1.3 s of start-up.
if "jax" in sys.modules:
    sys.modules["jax"].config.update("jax_enable_x64", True)
else:
    os.environ["JAX_ENABLE_X64"] = "1"  # what JAX reads when it is first imported


@dataclass(frozen=True)
class FloatNet:
    """Dense layers (weight (out, in), bias), ReLU between them, none after the last. Arrays are
    numpy (float64); JAX code converts them where it traces."""

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    input_scale: np.ndarray | None = None
    input_shift: np.ndarray | None = None
    pairs: dict | None = None  # hidden layer -> (a, b) index arrays: f's neuron a and g's copy b (differential bounds)
    shared: int = 0  # hidden layers 1..shared are f's and g's alike (computed once in the joint network)

    def __post_init__(self):
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            assert w.ndim == 2 and b.shape == (w.shape[0],), f"layer {i + 1}: shapes {w.shape}, {b.shape}"
            if i:
                assert w.shape[1] == self.weights[i - 1].shape[0], f"layer {i + 1} does not chain"

    @property
    def widths(self) -> tuple[int, ...]:
        return (self.weights[0].shape[1],) + tuple(w.shape[0] for w in self.weights)

    def __call__(self, x):
        """x: (..., in) in the spec's input space -> (..., out), a JAX array."""
        import jax.numpy as jnp

        return self._forward(x, jnp)

    def numpy(self, x) -> np.ndarray:
        """`self(x)` in numpy, float64, without JAX (which compiles a small program per layer and shape)."""
        return self._forward(np.asarray(x, dtype=np.float64), np)

    def _forward(self, x, xp):
        if self.input_scale is not None:
            x = x * self.input_scale + self.input_shift
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = x @ xp.asarray(w).T + b
            if i < len(self.weights) - 1:
                x = xp.maximum(x, 0.0)
        return x


def from_exact(layers, input_scale=None, input_shift=None) -> FloatNet:
    """IntMat/IntVec layers -> float64 arrays (each entry correctly rounded)."""
    ws, bs = [], []
    for (w, wden), (b, bden) in layers:
        ws.append(np.array([[x / wden for x in row] for row in w], dtype=np.float64))
        bs.append(np.array([x / bden for x in b], dtype=np.float64))
    scale = None if input_scale is None else np.array(input_scale, dtype=np.float64)
    shift = None if input_shift is None else np.array(input_shift, dtype=np.float64)
    return FloatNet(tuple(ws), tuple(bs), scale, shift)


def joint_pairs(joint_widths, f_widths, shared: int) -> dict:
    """Pairs (f's neuron i, g's neuron i) of the joint network's hidden layers after the shared
    prefix, where f and g have the same width there (every transform but replace)."""
    pairs = {}
    for j in range(shared + 1, len(joint_widths) - 1):
        w = f_widths[j] if j < len(f_widths) - 1 else None
        if w is not None and joint_widths[j] == 2 * w:
            pairs[j] = (np.arange(w), w + np.arange(w))
    return pairs


def box_floats(lo: list[Fraction], up: list[Fraction]) -> tuple[np.ndarray, np.ndarray]:
    """An exact box as float64 arrays rounded outward (contains the exact box)."""
    flo = np.array([float(v) for v in lo])
    fup = np.array([float(v) for v in up])
    flo = np.where([Fraction(a) > b for a, b in zip(flo, lo)], np.nextafter(flo, -np.inf), flo)
    fup = np.where([Fraction(a) < b for a, b in zip(fup, up)], np.nextafter(fup, np.inf), fup)
    return flo, fup
