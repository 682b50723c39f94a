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
import hashlib
import json
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from .errors import BadInput

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


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _parse_npy(data: bytes, file: str, name: str):
    """One .npy payload -> (shape, flat values). Floats stay Python floats (exact)."""
    bad = lambda what: BadInput(file, name, what, "save arrays with numpy.savez (float64 or float32, C order)")
    if data[:6] != b"\x93NUMPY" or len(data) < 10:
        raise bad("not a .npy array")
    major = data[6]
    if major == 1:
        (hlen,), start = struct.unpack("<H", data[8:10]), 10
    elif major in (2, 3):
        (hlen,), start = struct.unpack("<I", data[8:12]), 12
    else:
        raise bad(f"unsupported .npy version {major}")
    try:
        header = ast.literal_eval(data[start:start + hlen].decode("latin1"))
        descr, fortran, shape = header["descr"], header["fortran_order"], tuple(header["shape"])
    except (ValueError, SyntaxError, KeyError, TypeError, UnicodeDecodeError):
        raise bad("unreadable .npy header") from None
    if fortran:
        raise bad("Fortran-order array")
    body = data[start + hlen:]
    count = 1
    for n in shape:
        count *= n
    if isinstance(descr, str) and descr.startswith("<U") and shape == ():
        width = int(descr[2:])
        if len(body) != 4 * width:
            raise bad("truncated text entry")
        return shape, body.decode("utf-32-le").rstrip("\x00")
    if descr not in _DTYPES:
        raise bad(f"unsupported dtype {descr!r}")
    code, size = _DTYPES[descr]
    if len(body) != count * size:
        raise bad(f"truncated: expected {count * size} bytes of data, found {len(body)}")
    values = struct.unpack(f"<{count}{code}", body)
    for i, v in enumerate(values):
        if v != v or v in (float("inf"), float("-inf")):
            raise BadInput(file, name, f"contains a non-finite value ({v}) at flat index {i}",
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
    file = str(path)
    if not Path(path).is_file():
        raise BadInput(file, "", "model file not found", "check model.path (relative to the spec file)")
    digest = sha256_file(path)
    if sha256 is not None and digest != sha256:
        raise BadInput(file, key, f"sha256 mismatch: the file hashes to {digest}",
                       "if this model is the one you mean to certify, write that hash in the spec")
    if Path(path).suffix.lower() == ".onnx":
        from .onnx import read_onnx
        return read_onnx(path, digest)
    arrays = read_arrays(path)
    if "__layers__" not in arrays or not isinstance(arrays["__layers__"][1], str):
        raise BadInput(file, "__layers__", "missing layer list", FIX_LAYERS)
    try:
        layers = json.loads(arrays["__layers__"][1])
        assert isinstance(layers, list) and all(isinstance(l, dict) for l in layers)
    except (ValueError, AssertionError):
        raise BadInput(file, "__layers__", "not a JSON list of layer objects", FIX_LAYERS) from None
    unsupported = [f"#{i} {l.get('op')!r}" for i, l in enumerate(layers) if l.get("op") not in ("affine", "dense", "relu")]
    if unsupported:
        raise BadInput(file, "__layers__", "unsupported layers " + ", ".join(unsupported),
                       "certify supports affine (leading), dense and relu")

    def array(layer_index, key, ndim):
        name = layers[layer_index].get(key)
        if not isinstance(name, str) or name not in arrays:
            raise BadInput(file, f"__layers__[{layer_index}].{key}", f"names no array ({name!r})", FIX_LAYERS)
        shape, flat = arrays[name]
        if len(shape) != ndim or 0 in shape:
            raise BadInput(file, name, f"shape {shape} is not a non-empty {ndim}-d array", FIX_LAYERS)
        return name, shape, flat

    scale = shift = None
    dense: list[Dense] = []
    expect, width = "affine|dense", None
    for i, layer in enumerate(layers):
        op = layer["op"]
        if op not in expect.split("|"):
            raise BadInput(file, f"__layers__[{i}]", f"{op} cannot follow the layers before it",
                           "layers must be [affine] dense relu dense ... dense")
        if op == "affine":
            _, s_shape, s = array(i, "scale", 1)
            _, t_shape, t = array(i, "shift", 1)
            if s_shape != t_shape:
                raise BadInput(file, f"__layers__[{i}]", f"scale {s_shape} and shift {t_shape} differ in shape", FIX_LAYERS)
            scale, shift, width, expect = tuple(s), tuple(t), s_shape[0], "dense"
        elif op == "dense":
            wname, w_shape, w = array(i, "weight", 2)
            bname, b_shape, b = array(i, "bias", 1)
            if width is not None and w_shape[1] != width:
                raise BadInput(file, wname, f"shape {w_shape} takes {w_shape[1]} inputs but the layer before gives {width}",
                               "weights are (out, in); fix the shapes")
            if b_shape != (w_shape[0],):
                raise BadInput(file, bname, f"shape {b_shape} does not match weight {wname} {w_shape}",
                               "the bias has one entry per output")
            dense.append(Dense(_rows(w_shape, w), tuple(b)))
            width, expect = w_shape[0], "relu"
        else:
            expect = "dense"
    if not dense or layers[-1]["op"] != "dense":
        raise BadInput(file, "__layers__", "the layer list must end with a dense layer", FIX_LAYERS)
    return Model(file, digest, tuple(dense), scale, shift)


def read_npy(path: str | Path, key: str) -> tuple[float, ...]:
    """A 1-d (or flattened) float array from a `.npy` file, for input centres and box corners."""
    file = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError:
        raise BadInput(file, key, "file not found or unreadable", "check the path (relative to the spec file)") from None
    shape, flat = _parse_npy(data, file, key)
    if isinstance(flat, str):
        raise BadInput(file, key, "holds text, not numbers", "save a float array with numpy.save")
    return tuple(flat)
