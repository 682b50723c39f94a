"""Coarse-graining transforms that need float numerics, materialised as arrays.

The checker rebuilds exact transforms itself (prune with zero, given constants or the exact mean fill,
merge with given groups, quantize, a second model). A truncated SVD, a k-means clustering or a
principal-component projection needs floating point: the spec pins its arrays by path and sha256
(`arrays:`, written by `certify pin`), or else the engine computes them here and the certificate is
about f against g built from exactly these arrays (hashed, beside the certificate; every output says so).
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np

from ..bounds.network import from_exact
from ..checker.model import Model
from ..checker.network import build_g, check_transform, input_box
from ..checker.exact import qmat, qvec
from ..checker.spec import Spec
from ..checker.transforms import is_float, unit
from .transforms import half, kmeans_labels as kmeans_labels, principal_components as principal_components  # noqa: F401 - re-exported


def _float_layers(layers):
    return from_exact([(qmat(w), qvec(b)) for w, b in layers])


def needs_arrays(t) -> bool:
    """A float transform the spec does not pin: its arrays are computed here and travel with the certificate."""
    return is_float(t) and t.arrays is None


def sample_domain(spec: Spec, f: Model, samples: int, seed: int) -> np.ndarray:
    """`samples` uniform points of the spec's input box, mapped by f's input normalisation."""
    lo, up = input_box(spec, f)
    rng = np.random.default_rng(seed)
    lo_f, up_f = np.array([float(v) for v in lo]), np.array([float(v) for v in up])
    x = lo_f + (up_f - lo_f) * rng.random((samples, len(lo_f)))
    if f.input_scale is not None:
        x = x * np.array(f.input_scale) + np.array(f.input_shift)
    return x


def hidden_activations(layers, layer: int, x: np.ndarray) -> np.ndarray:
    """Post-ReLU activations of hidden layer `layer` (1-based) of exact `layers` at network inputs x."""
    net = _float_layers(layers[:layer])
    return np.maximum(np.asarray(net(x)), 0.0)


def materialize(spec: Spec, f: Model) -> dict[str, np.ndarray]:
    """Arrays named `explanation.<i>.<name>` of the spec's float transforms that it does not pin (may be
    empty), each computed by its kind's float half (explain/transforms.py) on g as built so far."""
    arrays: dict[str, np.ndarray] = {}
    for i, t in enumerate(spec.explanation):
        if not needs_arrays(t):
            continue
        partial = dataclasses.replace(spec, explanation=spec.explanation[:i])
        loaded = {k: (v.shape, tuple(v.ravel().tolist())) for k, v in arrays.items()}
        g = build_g(partial, f, loaded)
        check_transform(spec, i, t, g)
        made = half(t).materialize(SimpleNamespace(spec=spec, f=f), i, t, g)
        assert sorted(made) == sorted(unit(t).arrays), (t.kind, sorted(made))
        arrays.update({f"explanation.{i}.{name}": value for name, value in made.items()})
    return arrays
