"""Certificate writer: a body of exact steps (from `certify.bounds`) as versioned JSON (certificate
format version 2, the checker's VERSION), written atomically. See docs/certificate-format.md.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..checker.check import FORMAT, VERSION, data_hashes
from ..checker.numbers import rational_str
from ..files import atomic_open


def _rational(v) -> str:
    if isinstance(v, Fraction):
        return rational_str(v)
    p, q = float(v).as_integer_ratio()
    return str(p) if q == 1 else f"{p}/{q}"


def _floats(values) -> list[str]:
    """A list of Python floats as exact rational strings, as `_rational` writes each (the bulk of a split tree:
    its steps' claims and difference lines), None kept (a side not claimed). TypeError on the first value that is
    neither a float nor None."""
    ratio, out = float.as_integer_ratio, []
    for v in values:
        if v is None:
            out.append(None)
            continue
        p, q = ratio(v)
        out.append(str(p) if q == 1 else f"{p}/{q}")
    return out


_NONE = type(None)
_PLAIN = frozenset({str, int, _NONE})


def serialize(obj):
    """A body of steps (floats, Fractions, arrays) as JSON with exact rational strings."""
    kind = type(obj)
    if kind is str or kind is int or obj is None:  # strings (rational strings), neuron indices, unclaimed sides
        return obj
    if kind is dict:
        return {k: serialize(v) for k, v in obj.items()}
    if kind is list or kind is tuple:
        first = type(obj[0]) if obj else None
        if first is float or first is _NONE:
            try:  # a list of floats (nearly always all floats, or floats and None): one loop without a call per value
                return _floats(obj)
            except TypeError:
                pass
        if first in _PLAIN and set(map(type, obj)) <= _PLAIN:  # neuron indices, pairs' ends: written as they are
            return list(obj)
        return [serialize(v) for v in obj]
    if isinstance(obj, str):
        return obj
    if isinstance(obj, dict):
        return {k: serialize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [serialize(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return serialize(obj.tolist())
    if isinstance(obj, (float, Fraction, np.floating)):
        return _rational(obj)
    return obj


def certificate_json(*, spec, model_sha256: str, bound: Fraction, body: dict, witness, materialized, engine: dict) -> dict:
    """body: {"steps": [...]} for one region, or {"tree": {...}} for branch and bound."""
    prop = spec.property
    return {
        "format": FORMAT,
        "version": VERSION,
        "spec_sha256": spec.sha256,
        "model_sha256": model_sha256,
        "data_sha256": data_hashes(spec),
        "materialized": materialized,
        "claim": {"deviation": prop.deviation, "semantics": prop.semantics,
                  "outputs": None if prop.outputs is None else list(prop.outputs),
                  "tolerance": rational_str(prop.tolerance), "bound": rational_str(bound)},
        **serialize(body),
        "witness": None if witness is None else {"x": serialize(witness[0]), "deviation": rational_str(witness[1])},
        "engine": engine,
    }


def write_json_atomic(path: str | Path, obj: dict) -> None:
    """Write JSON to a temporary file beside `path`, then rename: never a half-written certificate."""
    with atomic_open(path) as fh:  # a split tree unindented, in one string: json.dumps runs the C encoder (json.dump
        # to a file runs the Python one), 10x faster on large trees
        fh.write(json.dumps(obj) if "tree" in obj else json.dumps(obj, indent=1))
        fh.write("\n")
