"""Model IR: read (via the checker's strict reader), write, and evaluate in float with numpy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..checker.model import Dense as Dense, Model as Model, read_model as read_model, sha256_file as sha256_file
from ..files import atomic_open


def save_model(path: str | Path, weights: list[np.ndarray], biases: list[np.ndarray], *,
               input_scale: np.ndarray | None = None, input_shift: np.ndarray | None = None) -> str:
    """Write an MLP (dense, relu, ..., dense; weights (out, in)) as a certify .npz; return its sha256.

    The file is written atomically (temporary file, then rename).
    """
    arrays: dict[str, np.ndarray] = {}
    layers: list[dict] = []
    if input_scale is not None or input_shift is not None:
        arrays["input_scale"] = np.asarray(input_scale, dtype=np.float64)
        arrays["input_shift"] = np.asarray(input_shift, dtype=np.float64)
        layers.append({"op": "affine", "scale": "input_scale", "shift": "input_shift"})
    for i, (w, b) in enumerate(zip(weights, biases), start=1):
        if i > 1:
            layers.append({"op": "relu"})
        arrays[f"W{i}"] = np.ascontiguousarray(w, dtype=np.float64)
        arrays[f"b{i}"] = np.ascontiguousarray(b, dtype=np.float64)
        layers.append({"op": "dense", "weight": f"W{i}", "bias": f"b{i}"})
    arrays["__layers__"] = np.array(json.dumps(layers))
    save_arrays(path, arrays)
    return sha256_file(path)


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez, atomically (no half-written file is ever left at `path`)."""
    with atomic_open(path, "wb") as fh:
        np.savez(fh, **arrays)


def to_numpy(model: Model) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The model's dense layers as float64 arrays (exact: the file holds floats)."""
    return ([np.array(d.weight, dtype=np.float64) for d in model.dense],
            [np.array(d.bias, dtype=np.float64) for d in model.dense])
