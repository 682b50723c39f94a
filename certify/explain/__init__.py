"""Coarse-graining transforms that need float numerics, materialised as arrays.

The checker rebuilds exact transforms itself (prune with zero or given constants, a second model).
A truncated SVD or a mean activation needs floating point, so the engine computes it once here and
the certificate is about f against g built from exactly these arrays (hashed, beside the certificate).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..bounds.network import from_exact
from ..checker.model import Model
from ..checker.network import build_g, check_transform, input_box, pruned_indices
from ..checker.exact import qmat, qvec
from ..checker.spec import LowRank, Prune, Spec


def _float_layers(layers):
    return from_exact([(qmat(w), qvec(b)) for w, b in layers])


def materialize(spec: Spec, f: Model) -> dict[str, np.ndarray]:
    """Arrays named `explanation.<i>.<name>` that the spec's float transforms need (may be empty)."""
    arrays: dict[str, np.ndarray] = {}
    for i, t in enumerate(spec.explanation):
        if not (isinstance(t, LowRank) or (isinstance(t, Prune) and t.fill == "mean")):
            continue
        partial = dataclasses.replace(spec, explanation=spec.explanation[:i])
        loaded = {k: (v.shape, tuple(v.ravel().tolist())) for k, v in arrays.items()}
        g = build_g(partial, f, loaded)
        check_transform(spec, i, t, g)
        if isinstance(t, LowRank):
            w = np.array([[float(x) for x in row] for row in g[t.layer - 1][0]])
            u, s, vt = np.linalg.svd(w, full_matrices=False)
            arrays[f"explanation.{i}.U"] = np.ascontiguousarray(u[:, :t.rank] * s[:t.rank])
            arrays[f"explanation.{i}.V"] = np.ascontiguousarray(vt[:t.rank])
        else:
            pruned = pruned_indices(spec, t, len(g[t.layer - 1][1]), f"explanation[{i}].prune")
            net = _float_layers(g[:t.layer])
            lo, up = input_box(spec, f)
            rng = np.random.default_rng(t.seed)
            lo_f, up_f = np.array([float(v) for v in lo]), np.array([float(v) for v in up])
            x = lo_f + (up_f - lo_f) * rng.random((t.samples, len(lo_f)))
            if f.input_scale is not None:
                x = x * np.array(f.input_scale) + np.array(f.input_shift)
            acts = np.maximum(np.asarray(net(x)), 0.0)
            arrays[f"explanation.{i}.fill"] = acts[:, pruned].mean(axis=0)
    return arrays
