"""Strict reader of model files (.npz here, .onnx in `onnx.py`) into the layer IR, with no numpy.

A model file is a NumPy `.npz` archive (a zip of `.npy` arrays) holding the weights and one
entry `__layers__`: a 0-d unicode array whose text is a JSON layer list, for example
`[{"op": "affine", "scale": "s", "shift": "t"}, {"op": "dense", "weight": "W1", "bias": "b1"},
{"op": "relu"}, {"op": "dense", "weight": "W2", "bias": "b2"}]`. Dense weights are (out, in),
float64 or float32, C order. Supported: optional leading affine (elementwise x*scale+shift),
then dense, relu, dense, ..., dense. Every value is finite; every shape chains.
"""

from __future__ import annotations

import ast
import gc
import hashlib
import json
import math
import re
import struct
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import BadInput, need

_DTYPES = {"<f8": ("d", 8), "<f4": ("f", 4)}
FIX_LAYERS = "write it with certify.model.save_model (see models/train_digits.py)"


@dataclass(frozen=True)
class Dense:
    """y = weight @ x + bias; weight is (out, in) as rows of exact floats (Fractions where an ONNX fold needs them)."""

    weight: tuple[tuple[float, ...], ...]
    bias: tuple[float, ...]

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.weight), len(self.weight[0])


@dataclass(frozen=True)
class Model:
    """Optional input affine map, then dense layers with ReLU between them (none after the last)."""

    path: str
    sha256: str
    dense: tuple[Dense, ...]
    input_scale: tuple[float, ...] | None = None
    input_shift: tuple[float, ...] | None = None
    notes: tuple[str, ...] = ()  # what reading changed, for the report (e.g. an ONNX Softmax dropped)

    @property
    def in_dim(self) -> int:
        return self.dense[0].shape[1]

    @property
    def out_dim(self) -> int:
        return self.dense[-1].shape[0]

    @property
    def widths(self) -> tuple[int, ...]:
        return (self.in_dim,) + tuple(d.shape[0] for d in self.dense)


@contextmanager
def gc_paused():
    """Python's cyclic garbage collector off for a while (exact arithmetic allocates ~10^5 Fractions and tuples and makes
    no reference cycles, which refcounting frees): in a process that holds a large heap (the engine's JAX) a full
    collection took 0.06 s of a 0.26 s graph check. Nesting keeps it off; it is back on as it was when the outer ends."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _parse_npy(data: bytes, file: str, name: str):
    """One .npy payload -> (shape, flat values). Floats stay Python floats (exact)."""
    fix = "save arrays with numpy.savez (float64 or float32, C order)"
    need(data[:6] == b"\x93NUMPY" and len(data) >= 12, file, name, "not a .npy array", fix)
    need(data[6] in (1, 2, 3), file, name, f"unsupported .npy version {data[6]}", fix)
    start = 10 if data[6] == 1 else 12
    (hlen,) = struct.unpack("<H" if start == 10 else "<I", data[8:start])
    try:
        header = ast.literal_eval(data[start:start + hlen].decode("latin1"))
        descr, fortran, shape = header["descr"], header["fortran_order"], tuple(header["shape"])
    except (ValueError, SyntaxError, KeyError, TypeError, UnicodeDecodeError):
        raise BadInput(file, name, "unreadable .npy header", fix) from None
    need(all(type(n) is int and n >= 0 for n in shape), file, name, "unreadable .npy header", fix)
    need(not fortran, file, name, "Fortran-order array", fix)
    body, count = data[start + hlen:], math.prod(shape)
    if isinstance(descr, str) and re.fullmatch("<U[0-9]{1,9}", descr) and shape == ():
        need(len(body) == 4 * int(descr[2:]), file, name, "truncated text entry", fix)
        try:
            return shape, body.decode("utf-32-le").rstrip("\x00")
        except UnicodeDecodeError:
            raise BadInput(file, name, "text entry is not UTF-32", fix) from None
    need(isinstance(descr, str) and descr in _DTYPES, file, name, f"unsupported dtype {descr!r}", fix)
    code, size = _DTYPES[descr]
    need(len(body) == count * size, file, name, f"truncated: expected {count * size} bytes of data, found {len(body)}", fix)
    values = struct.unpack(f"<{count}{code}", body)
    # (a sum of floats is finite only if every term is: inf and nan propagate; an overflowing sum of finite values is
    # scanned like any other: the scan finds no index and passes)
    i = None if math.isfinite(sum(values)) else next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
    need(i is None, file, name, f"contains a non-finite value ({values[i] if i is not None else ''}) at flat index {i}",
         "every weight must be a finite number: fix or retrain the model")
    return shape, values


def read_arrays(path: str | Path) -> dict[str, tuple[tuple[int, ...], object]]:
    """All entries of an .npz archive: name -> (shape, flat values or text)."""
    file = str(path)
    try:
        with zipfile.ZipFile(path) as zf:
            out = {}
            for info in zf.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                out[name] = _parse_npy(zf.read(info), file, name)
            return out
    except FileNotFoundError:
        raise BadInput(file, "", "file not found", "check the path (relative paths are relative to the spec file)") from None
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError) as exc:
        raise BadInput(file, "", f"not a readable .npz archive ({exc})", "save the model with numpy.savez") from None


def _rows(shape, flat):
    n = shape[1]
    return tuple(tuple(flat[i * n:(i + 1) * n]) for i in range(shape[0]))


def read_model(path: str | Path, sha256: str | None = None, key: str = "model.sha256") -> Model:
    """Read and validate a model file; if `sha256` is given, the file must hash to it."""
    with gc_paused():  # (a Fraction per weight)
        return _read_model(path, sha256, key)


def _read_model(path: str | Path, sha256: str | None, key: str) -> Model:
    file = str(path)
    need(Path(path).is_file(), file, "", "model file not found", "check model.path (relative to the spec file)")
    digest = sha256_file(path)
    need(sha256 is None or digest == sha256, file, key, f"sha256 mismatch: the file hashes to {digest}",
         "if this model is the one you mean to certify, write that hash in the spec")
    if Path(path).suffix.lower() == ".onnx":
        from .onnx import read_onnx
        return read_onnx(path, digest)
    arrays = read_arrays(path)
    if "__graph__" in arrays:  # a graph model (named values, typed nodes): checker/graph.py
        from .graph import read_graph
        return read_graph(path, None, key, arrays)
    need("__layers__" in arrays and isinstance(arrays["__layers__"][1], str), file, "__layers__", "missing layer list", FIX_LAYERS)
    try:
        layers = json.loads(arrays["__layers__"][1])
        assert isinstance(layers, list) and all(isinstance(l, dict) for l in layers)
    except (ValueError, AssertionError):
        raise BadInput(file, "__layers__", "not a JSON list of layer objects", FIX_LAYERS) from None
    unsupported = [f"#{i} {l.get('op')!r}" for i, l in enumerate(layers) if l.get("op") not in ("affine", "dense", "relu")]
    need(not unsupported, file, "__layers__", "unsupported layers " + ", ".join(unsupported),
         "certify supports affine (leading), dense and relu")

    def array(layer_index, key, ndim):
        name = layers[layer_index].get(key)
        need(isinstance(name, str) and name in arrays, file, f"__layers__[{layer_index}].{key}", f"names no array ({name!r})", FIX_LAYERS)
        shape, flat = arrays[name]
        need(len(shape) == ndim and 0 not in shape, file, name, f"shape {shape} is not a non-empty {ndim}-d array", FIX_LAYERS)
        return name, shape, flat

    scale = shift = None
    dense: list[Dense] = []
    expect, width = "affine|dense", None
    for i, layer in enumerate(layers):
        op = layer["op"]
        need(op in expect.split("|"), file, f"__layers__[{i}]", f"{op} cannot follow the layers before it",
             "layers must be [affine] dense relu dense ... dense")
        if op == "affine":
            _, s_shape, s = array(i, "scale", 1)
            _, t_shape, t = array(i, "shift", 1)
            need(s_shape == t_shape, file, f"__layers__[{i}]", f"scale {s_shape} and shift {t_shape} differ in shape", FIX_LAYERS)
            scale, shift, width, expect = tuple(s), tuple(t), s_shape[0], "dense"
        elif op == "dense":
            wname, w_shape, w = array(i, "weight", 2)
            bname, b_shape, b = array(i, "bias", 1)
            need(width is None or w_shape[1] == width, file, wname, f"shape {w_shape} takes {w_shape[1]} inputs but the layer "
                 f"before gives {width}", "weights are (out, in); fix the shapes")
            need(b_shape == (w_shape[0],), file, bname, f"shape {b_shape} does not match weight {wname} {w_shape}",
                 "the bias has one entry per output")
            dense.append(Dense(_rows(w_shape, w), tuple(b)))
            width, expect = w_shape[0], "relu"
        else:
            expect = "dense"
    need(dense and layers[-1]["op"] == "dense", file, "__layers__", "the layer list must end with a dense layer", FIX_LAYERS)
    return Model(file, digest, tuple(dense), scale, shift)


def read_npy(path: str | Path, key: str) -> tuple[float, ...]:
    """A 1-d (or flattened) float array from a `.npy` file, for input centres and box corners."""
    file = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError:
        raise BadInput(file, key, "file not found or unreadable", "check the path (relative to the spec file)") from None
    shape, flat = _parse_npy(data, file, key)
    need(not isinstance(flat, str), file, key, "holds text, not numbers", "save a float array with numpy.save")
    return tuple(flat)
