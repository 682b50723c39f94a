"""Strict reader of ONNX files into the layer IR, with no onnx or protobuf package.

A minimal protobuf wire-format decoder reads ModelProto -> GraphProto (nodes, initializers, input,
output). The graph must be a chain from its one input to its one output through Gemm (transA=0),
MatMul with a constant matrix, Add/Sub/Mul/Div by constants, Relu, Flatten, Reshape, Identity and
Constant nodes, with an optional Softmax as the last node (dropped: the model is its pre-softmax
logits, recorded in `Model.notes`). Every op keeps the flat (row-major) order of the activation,
so the chain is a sequence of affine maps and ReLUs on one vector; consecutive affine maps are
composed EXACTLY (Fractions; a float stays a float), and a ReLU at either end gets an identity layer.
"""

from __future__ import annotations

import hashlib
import math
import struct
from fractions import Fraction
from functools import reduce

from .errors import BadInput

SUPPORTED = {"Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "Flatten", "Reshape", "Identity", "Constant", "Softmax"}
ATTRS = {"Gemm": {"alpha", "beta", "transA", "transB"}, "Flatten": {"axis"}, "Reshape": {"allowzero"},
         "Softmax": {"axis"}, "Constant": {"value"}}
TYPES = {1: ("f", 4, 4), 11: ("d", 8, 10), 7: ("q", 8, 7)}  # data_type -> (struct code, size, typed field)
FIX = "export a chain of Gemm/MatMul/Add/Sub/Mul/Div/Relu/Flatten/Reshape (a ReLU MLP), optionally ending in Softmax"


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[i]  # IndexError on truncation
        value, shift, i = value | (b & 0x7F) << shift, shift + 7, i + 1
        if b < 0x80:
            return value, i


def _msg(buf: bytes) -> dict[int, list]:
    """One message: field number -> values (int for varints, bytes otherwise)."""
    out, i = {}, 0
    while i < len(buf):
        key, i = _varint(buf, i)
        wire = key & 7
        if wire == 0:
            v, i = _varint(buf, i)
        elif wire in (1, 5):
            v, i = buf[i:i + (8 if wire == 1 else 4)], i + (8 if wire == 1 else 4)
        elif wire == 2:
            n, i = _varint(buf, i)
            v, i = buf[i:i + n], i + n
        else:
            raise ValueError(f"wire type {wire}")
        if i > len(buf):
            raise ValueError("truncated field")
        out.setdefault(key >> 3, []).append(v)
    return out


def _ints(values: list) -> list[int]:
    """A repeated int64 field, packed or not, as signed integers."""
    out = []
    for v in values:
        if isinstance(v, int):
            out.append(v)
        else:
            i = 0
            while i < len(v):
                x, i = _varint(v, i)
                out.append(x)
    return [x - (1 << 64) if x >= 1 << 63 else x for x in out]


def _str(m: dict, field: int) -> str:
    return m.get(field, [b""])[-1].decode("utf-8")


def _tensor(buf: bytes, file: str) -> tuple[str, tuple[int, ...], list]:
    t = _msg(buf)
    name, dims, dtype = _str(t, 8), tuple(_ints(t.get(1, []))), t.get(2, [0])[-1]
    if dtype not in TYPES or t.get(14, [0])[-1] != 0:
        raise BadInput(file, name, f"tensor of data type {dtype} or with external data", "store weights as float, double or int64 inside the file")
    code, size, field = TYPES[dtype]
    count = math.prod(dims)
    raw = t[9][-1] if 9 in t else b"".join(v if isinstance(v, bytes) else b"" for v in t.get(field, []))
    values = list(struct.unpack(f"<{len(raw) // size}{code}", raw)) if code != "q" or 9 in t else _ints(t.get(7, []))
    if len(values) != count or len(raw) % size:
        raise BadInput(file, name, f"holds {len(values)} values for shape {list(dims)}", "re-export the model")
    if dtype != 7 and not all(map(math.isfinite, values)):
        raise BadInput(file, name, "contains a non-finite value", "every weight must be a finite number: fix or retrain the model")
    return name, dims, values


def _attrs(node: dict, file: str) -> dict:
    out = {}
    for a in map(_msg, node.get(5, [])):
        name = _str(a, 1)
        if 3 in a or 8 in a:
            out[name] = _ints(a[3])[-1] if 3 in a else _ints(a[8])
        elif 2 in a:
            out[name] = struct.unpack("<f", a[2][-1])[0]
        else:
            out[name] = _tensor(a[5][-1], file) if 5 in a else None
    return out


def _mul(a, b):
    return 0.0 if a == 0 or b == 0 else b if a == 1 else a if b == 1 else Fraction(a) * Fraction(b)


def _add(a, b):
    return b if a == 0 else a if b == 0 else Fraction(a) + Fraction(b)


def _bcast(values, cdims, shape, where):
    """Numpy broadcasting of a constant onto the activation shape; the activation must not grow."""
    r = max(len(cdims), len(shape))
    c, s = (1,) * (r - len(cdims)) + tuple(cdims), (1,) * (r - len(shape)) + tuple(shape)
    if any(x != 1 and x != y for x, y in zip(c, s)):
        raise ValueError(f"{where}: constant of shape {list(cdims)} does not broadcast onto the activation {list(shape)}")
    idx = [0]
    for d, n in enumerate(s):
        idx = [i + j * (0 if c[d] == 1 else math.prod(c[d + 1:])) for i in idx for j in range(n)]
    return [values[i] for i in idx], s


def _compose(acc, op):
    """op after acc; each is ("diag", scale, shift) or ("full", weight rows, bias); None is the identity."""
    if acc is None:
        return op
    (k1, w1, b1), (k2, w2, b2) = acc, op
    if k2 == "diag":
        w = [_mul(a, s) for a, s in zip(w1, w2)] if k1 == "diag" else [[_mul(a, s) for a in row] for row, s in zip(w1, w2)]
        return k1, w, [_add(_mul(b, s), t) for b, s, t in zip(b1, w2, b2)]
    if k1 == "diag":
        return "full", [[_mul(a, s) for a, s in zip(row, w1)] for row in w2], [reduce(_add, map(_mul, row, b1), b) for row, b in zip(w2, b2)]
    cols = list(zip(*w1))
    return "full", [[reduce(_add, map(_mul, row, col), 0.0) for col in cols] for row in w2], [reduce(_add, map(_mul, row, b1), b) for row, b in zip(w2, b2)]


def _dense(acc):
    from .model import Dense
    kind, w, b = acc
    if kind == "diag":
        w = [[s if i == j else 0.0 for j in range(len(w))] for i, s in enumerate(w)]
    tidy = lambda v: v if type(v) is float else float(v) if v == float(v) else v  # exact floats stay floats
    return Dense(tuple(tuple(map(tidy, row)) for row in w), tuple(map(tidy, b)))


def read_onnx(path, digest: str):
    """The ONNX file at `path` (whose bytes hash to `digest`) as a `Model`."""
    from .model import Model
    file = str(path)
    data = open(path, "rb").read()
    if hashlib.sha256(data).hexdigest() != digest:
        raise BadInput(file, "", "the file changed while it was read", "keep the model file unchanged during a run")
    try:
        graph = _msg(_msg(data)[7][-1])
        consts = {n: (d, v) for n, d, v in (_tensor(b, file) for b in graph.get(5, []))}
        nodes = [_msg(b) for b in graph.get(1, [])]
        inputs = [m for m in map(_msg, graph.get(11, [])) if _str(m, 1) not in consts]
        outputs = [_str(_msg(b), 1) for b in graph.get(12, [])]
        ops = [(_str(n, 4), _str(n, 7), _attrs(n, file)) for n in nodes]
    except (ValueError, KeyError, IndexError, UnicodeDecodeError, struct.error) as exc:
        raise BadInput(file, "", f"not a readable ONNX model ({exc or type(exc).__name__})", "export the model with onnx / torch.onnx") from None
    names = [_str(n, 3) or f"#{i}" for i, n in enumerate(nodes)]
    bad = [f"{nm} ({op}{' with ' + ', '.join(sorted(set(a) - ATTRS.get(op, set()))) if set(a) - ATTRS.get(op, set()) else ''})"
           for i, (nm, (op, dom, a)) in enumerate(zip(names, ops))
           if dom not in ("", "ai.onnx") or op not in SUPPORTED or set(a) - ATTRS.get(op, set()) or a.get("transA")
           or (op == "Softmax" and i != len(nodes) - 1)]
    if bad:
        raise BadInput(file, "graph", f"unsupported nodes: {', '.join(bad)}", FIX)
    if len(inputs) != 1 or len(outputs) != 1:
        raise BadInput(file, "graph", f"{len(inputs)} inputs and {len(outputs)} outputs", "export a model with one input and one output")
    dims = [_msg(d) for d in _msg(_msg(_msg(inputs[0].get(2, [b""])[-1]).get(1, [b""])[-1]).get(2, [b""])[-1]).get(1, [])]
    shape = tuple(d[1][-1] if 1 in d and d[1][-1] > 0 else 1 for d in dims)  # a symbolic (batch) dim is 1
    cur, n, acc, layers, notes = _str(inputs[0], 1), math.prod(shape), None, [], []
    try:
        for nm, node, (op, _, a) in zip(names, nodes, ops):
            ins, out = [s.decode() for s in node.get(1, [])], _str(node, 2)
            if op == "Constant":
                consts[out] = a["value"][1:]
                continue
            if cur not in ins or any(s not in consts for s in ins if s != cur) or op == "Gemm" and ins[0] != cur:
                raise ValueError(f"{nm} ({op}) must read the running activation {cur!r} and constants only (the graph must be a chain)")
            c = [consts[s] for s in ins if s != cur]
            if op in ("Add", "Sub", "Mul", "Div"):
                (cd, cv), first = c[0], ins[0] != cur
                if op == "Div" and (first or 0 in cv):
                    raise ValueError(f"{nm} (Div): divides by the activation or by zero")
                v, shape = _bcast(cv, cd, shape, nm)
                one, zero = [1.0] * n, [0.0] * n
                op_map = {"Add": (one, v), "Sub": ([-1.0] * n, v) if first else (one, [-x for x in v]),
                          "Mul": (v, zero), "Div": ([1 / Fraction(x) for x in v], zero)}[op]
                acc = _compose(acc, ("diag",) + op_map)
            elif op in ("Gemm", "MatMul"):
                (wd, wv), left = c[0], op == "MatMul" and ins[0] != cur
                if len(wd) != 2 or op == "Gemm" and len(shape) != 2:
                    raise ValueError(f"{nm} ({op}): weight {list(wd)} on activation {list(shape)} is not a matrix-vector product")
                rows = [wv[i * wd[1]:(i + 1) * wd[1]] for i in range(wd[0])]
                w = rows if left or a.get("transB") else [list(col) for col in zip(*rows)]
                k = shape[-2] if left and len(shape) > 1 else shape[-1]
                if len(w[0]) != k or n != k or left and len(shape) > 1 and shape[-1] != 1:
                    raise ValueError(f"{nm} ({op}): weight {list(wd)} does not fit the activation {list(shape)}")
                shape = shape[:-2] + (len(w), 1) if left and len(shape) > 1 else shape[:-1] + (len(w),)
                alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
                bias = [_mul(beta, x) for x in _bcast(c[1][1], c[1][0], (1, len(w)), nm)[0]] if len(c) > 1 else [0.0] * len(w)
                acc = _compose(acc, ("full", [[_mul(alpha, x) for x in row] for row in w], bias))
            elif op == "Relu":
                layers.append(_dense(acc or ("diag", [1.0] * n, [0.0] * n)))
                acc = None
            elif op == "Flatten":
                ax = a.get("axis", 1) % (len(shape) + 1) if a.get("axis", 1) != len(shape) else len(shape)
                shape = (math.prod(shape[:ax]), math.prod(shape[ax:]))
            elif op == "Reshape":
                t = [shape[i] if x == 0 and not a.get("allowzero") else x for i, x in enumerate(c[0][1])]
                t = [n // max(1, -math.prod(t)) if x == -1 else x for x in t]
                if math.prod(t) != n or min(t, default=1) < 0:
                    raise ValueError(f"{nm} (Reshape): shape {c[0][1]} does not fit {n} values")
                shape = tuple(t)
            elif op == "Softmax":
                notes.append(f"{file}: Softmax at the output ({nm}) dropped; the model is bounded as its pre-softmax logits")
            n = math.prod(shape)
            cur = out
    except (ValueError, KeyError, IndexError, ZeroDivisionError) as exc:
        raise BadInput(file, "graph", str(exc) or f"malformed node ({type(exc).__name__})", FIX) from None
    if cur != outputs[0]:
        raise BadInput(file, "graph", f"the chain ends in {cur!r}, not in the output {outputs[0]!r}", FIX)
    layers.append(_dense(acc or ("diag", [1.0] * n, [0.0] * n)))
    return Model(file, digest, tuple(layers), notes=tuple(notes))
