"""Coarse-graining transforms that need float numerics, materialised as arrays.

The checker rebuilds exact transforms itself (prune with zero, given constants or the exact mean fill,
merge with given groups, quantize, a second model). A truncated SVD, a k-means clustering or a
principal-component projection needs floating point: the spec pins its arrays by path and sha256
(`arrays:`, written by `certify pin`), or else the engine computes them here and the certificate is
about f against g built from exactly these arrays (hashed, beside the certificate; every output says so).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from ..bounds.network import from_exact
from ..checker.model import Model
from ..checker.network import build_g, check_transform, input_box
from ..checker.exact import qmat, qvec
from ..checker.spec import PCA, LowRank, Merge, Spec, is_float


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


def principal_components(acts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, eigenvalues descending, eigenvectors as columns) of the activations' covariance."""
    mu = acts.mean(axis=0)
    cov = np.cov(acts, rowvar=False, bias=True).reshape(acts.shape[1], acts.shape[1])
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1]
    return mu, np.maximum(vals[order], 0.0), vecs[:, order]


def kmeans_labels(points: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means labels, renumbered in order of first appearance (so the same partition gives the same labels)."""
    from sklearn.cluster import KMeans

    distinct = len(np.unique(points, axis=0))
    if k > distinct:
        raise ValueError(f"only {distinct} distinct neurons")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(points).labels_
    order = {c: i for i, c in enumerate(dict.fromkeys(raw.tolist()))}
    return np.array([order[c] for c in raw.tolist()], dtype=np.float64)


def materialize(spec: Spec, f: Model) -> dict[str, np.ndarray]:
    """Arrays named `explanation.<i>.<name>` that the spec's float transforms need (may be empty)."""
    arrays: dict[str, np.ndarray] = {}
    for i, t in enumerate(spec.explanation):
        if not needs_arrays(t):
            continue
        partial = dataclasses.replace(spec, explanation=spec.explanation[:i])
        loaded = {k: (v.shape, tuple(v.ravel().tolist())) for k, v in arrays.items()}
        g = build_g(partial, f, loaded)
        check_transform(spec, i, t, g)
        if isinstance(t, LowRank):
            w = np.array([[float(x) for x in row] for row in g[t.layer - 1][0]])
            u, s, vt = np.linalg.svd(w, full_matrices=False)
            keep = list(t.keep if t.keep is not None else range(t.rank))
            arrays[f"explanation.{i}.U"] = np.ascontiguousarray(u[:, keep] * s[keep])
            arrays[f"explanation.{i}.V"] = np.ascontiguousarray(vt[keep])
        elif isinstance(t, Merge):  # cluster neurons on their incoming weights and bias
            w, b = g[t.layer - 1]
            points = np.array([[float(x) for x in row] + [float(c)] for row, c in zip(w, b)])
            try:
                arrays[f"explanation.{i}.labels"] = kmeans_labels(points, t.groups, t.seed)
            except ValueError as exc:
                raise spec.error(f"{spec.explanation_key}[{i}].merge.groups", f"cannot form {t.groups} groups: {exc}",
                                 "use fewer groups", t.line) from None
        else:
            acts = hidden_activations(g, t.layer, sample_domain(spec, f, t.samples, t.seed))
            mu, _, vecs = principal_components(acts)
            arrays[f"explanation.{i}.P"] = np.ascontiguousarray(vecs[:, list(t.keep)])
            arrays[f"explanation.{i}.mean"] = mu
    return arrays
