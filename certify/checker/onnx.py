"""Strict reader of ONNX files into the layer IR, with no onnx or protobuf package.

A minimal protobuf wire-format decoder reads ModelProto -> GraphProto. The graph must be a chain
from its one input to its one output through Gemm (transA=0), MatMul by a constant, Add/Sub/Mul/Div
by constants, Relu, Flatten, Reshape, Identity, Constant, and optionally a last Softmax (dropped:
the model is its logits, said in `Model.notes`). Each op keeps the activation's flat order, so the
chain is affine maps and ReLUs on one vector; the affine maps between two ReLUs are composed exactly
(a value stays a float unless that is inexact; a ReLU at either end or twice in a row gets an
identity layer). A symbolic (batch) dimension is 1. Any other graph (a node reading two values, as a
residual Add does, or an op outside that list: LayerNormalization, Gelu, ReduceMean, ...) is read into
the graph IR by `onnx_graph.read_onnx_graph`, from the same parsed pieces.
"""

from __future__ import annotations

import hashlib
import math
import struct
from fractions import Fraction
from functools import reduce
from pathlib import Path

from .errors import BadInput, need
from .graph import Graph
from .model import Dense, Model

ATTRS = {"Gemm": {"alpha", "beta", "transA", "transB"}, "MatMul": set(), "Add": set(), "Sub": set(), "Mul": set(),
         "Div": set(), "Relu": set(), "Flatten": {"axis"}, "Reshape": {"allowzero"}, "Identity": set(),
         "Constant": {"value"}, "Softmax": {"axis"}}  # the supported ops and their attributes
ARITY = {"Gemm": (2, 3), "MatMul": (2,), "Add": (2,), "Sub": (2,), "Mul": (2,), "Div": (2,), "Reshape": (2,)}
TYPES = {1: ("f", 4, 4), 11: ("d", 8, 10), 7: ("q", 8, 7)}  # TensorProto data_type -> struct code, size, typed field
FIX = "export a chain of Gemm/MatMul/Add/Sub/Mul/Div/Relu/Flatten/Reshape (a ReLU MLP), optionally ending in Softmax"


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while buf[i] & 0x80:  # IndexError when truncated
        value, shift, i = value | (buf[i] & 0x7F) << shift, shift + 7, i + 1
    return value | buf[i] << shift, i + 1


def _msg(buf: bytes) -> dict[int, list]:
    """One message: field number -> values (int for varints, bytes for the other wire types)."""
    out, i = {}, 0
    while i < len(buf):
        key, i = _varint(buf, i)
        if key & 7 not in (0, 1, 2, 5):
            raise ValueError(f"wire type {key & 7}")
        n, i = _varint(buf, i) if key & 7 == 2 else ({0: 0, 1: 8, 5: 4}[key & 7], i)
        v, i = _varint(buf, i) if key & 7 == 0 else (buf[i:i + n], i + n)
        if i > len(buf):
            raise ValueError("truncated field")
        out.setdefault(key >> 3, []).append(v)
    return out


def _ints(values: list) -> list[int]:
    """A repeated int64 field, packed or not, as signed integers."""
    out = []
    for v in values:
        i = 0
        while isinstance(v, bytes) and i < len(v):
            x, i = _varint(v, i)
            out.append(x)
        out += [v] if isinstance(v, int) else []
    return [x - (1 << 64) if x >= 1 << 63 else x for x in out]


def _str(m: dict, field: int) -> str:
    return m.get(field, [b""])[-1].decode("utf-8")


_show = lambda s: s if s.isprintable() else ascii(s)  # names in messages stay on one line


def _tensor(buf: bytes, file: str) -> tuple[str, tuple[int, ...], list]:
    t = _msg(buf)
    name, dims, dtype = _str(t, 8), tuple(_ints(t.get(1, []))), t.get(2, [0])[-1]
    need(dtype in TYPES and t.get(14, [0])[-1] == 0, file, _show(name), f"tensor of data type {dtype} or with external data",
         "store weights as float, double or int64 inside the file")
    code, size, field = TYPES[dtype]
    raw = t[9][-1] if 9 in t else b"".join(t.get(field, [])) if code != "q" else None
    values = _ints(t.get(7, [])) if raw is None else list(struct.unpack(f"<{len(raw) // size}{code}", raw[:len(raw) // size * size]))
    need(len(values) == math.prod(dims) and (raw is None or len(raw) % size == 0), file, _show(name),
         f"holds {len(values)} values for shape {list(dims)}", "re-export the model")
    need(all(math.isfinite(v) or v == -math.inf for v in values), file, _show(name), "contains a non-finite value",
         "every weight must be a finite number (-inf only in an attention mask): fix or retrain the model")
    return name, dims, values


def _attrs(node: dict, file: str) -> dict:
    """Attributes by name: float (type 1), int (2), string (3), tensor (4) as (name, dims, values), ints (7), else None."""
    out = {}
    for a in map(_msg, node.get(5, [])):
        kind = a.get(20, [0])[-1]
        out[_str(a, 1)] = (struct.unpack("<f", a.get(2, [bytes(4)])[-1])[0] if kind == 1 else _ints(a.get(3, [0]))[-1] if kind == 2
                           else _str(a, 4) if kind == 3 else _tensor(a[5][-1], file) if kind == 4 else _ints(a.get(8, [])) if kind == 7 else None)
    return out


_mul = lambda a, b: 0.0 if a == 0 or b == 0 else b if a == 1 else a if b == 1 else Fraction(a) * Fraction(b)  # exact
_add = lambda a, b: b if a == 0 else a if b == 0 else Fraction(a) + Fraction(b)


def _bcast(values: list, cdims: tuple, shape: tuple, nm: str) -> tuple[list, tuple]:
    """A constant broadcast (numpy rules) onto the activation, which must not grow: (flat values, new shape)."""
    r = max(len(cdims), len(shape))
    c, s = (1,) * (r - len(cdims)) + tuple(cdims), (1,) * (r - len(shape)) + tuple(shape)
    if any(x != 1 and x != y for x, y in zip(c, s)):
        raise ValueError(f"{nm}: a constant of shape {list(cdims)} does not broadcast onto the activation {list(shape)}")
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
    w = [[_mul(a, s) for a, s in zip(row, w1)] for row in w2] if k1 == "diag" else \
        [[reduce(_add, map(_mul, row, col), 0.0) for col in zip(*w1)] for row in w2]
    return "full", w, [reduce(_add, map(_mul, row, b1), b) for row, b in zip(w2, b2)]


def _dense(acc, n: int) -> Dense:
    if acc is None and n > 4096:
        raise ValueError(f"a ReLU at the input or output, or two in a row, needs a {n}x{n} identity layer (at most 4096)")
    kind, w, b = acc or ("diag", [1.0] * n, [0.0] * n)  # nothing between two ReLUs: the identity
    if kind == "diag":
        w = [[s if i == j else 0.0 for j in range(len(w))] for i, s in enumerate(w)]
    tidy = lambda v: v if type(v) is float else float(v) if abs(v) < 1e300 and v == float(v) else v  # exact floats stay floats
    return Dense(tuple(tuple(map(tidy, row)) for row in w), tuple(map(tidy, b)))


def read_onnx(path, digest: str) -> Model | Graph:
    """The ONNX model at `path`, whose bytes hash to `digest` (checked again here), as a `Model` (a chain) or a `Graph`."""
    file, data = str(path), Path(path).read_bytes()
    need(hashlib.sha256(data).hexdigest() == digest, file, "", "the file changed while it was read", "keep the model file unchanged during a run")
    try:
        graph = _msg(_msg(data)[7][-1])
        consts = {n: (d, v) for n, d, v in (_tensor(b, file) for b in graph.get(5, []))}
        nodes = [_msg(b) for b in graph.get(1, [])]
        ops = [(_str(n, 4), _str(n, 7), _attrs(n, file), _show(_str(n, 3)) or f"#{i}") for i, n in enumerate(nodes)]
        inputs = [m for m in map(_msg, graph.get(11, [])) if _str(m, 1) not in consts]
        outputs = [_str(_msg(b), 1) for b in graph.get(12, [])]
        shape = inputs[0] if len(inputs) == 1 else {}
        for f in (2, 1, 2):  # ValueInfoProto.type -> TypeProto.tensor_type -> .shape
            shape = _msg(shape.get(f, [b""])[-1])
        shape = tuple(max(1, _msg(d).get(1, [1])[-1]) for d in shape.get(1, []))
        fixed = set(consts) | {s.decode() for n, o in zip(nodes, ops) if o[0] == "Constant" for s in n.get(2, [])}
        chain = all(-math.inf not in v for _, v in consts.values()) and all(o[0] in ATTRS and sum(s.decode() not in fixed for s in n.get(1, []) if s) <= 1 for n, o in zip(nodes, ops))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, struct.error) as exc:
        raise BadInput(file, "", f"not a readable ONNX model ({exc or type(exc).__name__})", "export the model with onnx / torch.onnx") from None
    if not chain:  # a residual graph (a node reading two values, LayerNorm, GELU, ...): the graph IR
        from .onnx_graph import read_onnx_graph
        return read_onnx_graph(file, digest, consts, nodes, ops, inputs, outputs, shape)
    bad = []
    for i, (op, dom, a, nm) in enumerate(ops):
        extra = sorted(k for k, v in a.items() if k not in ATTRS.get(op, ()) or v is None or k == "transA" and v)
        if dom not in ("", "ai.onnx") or op not in ATTRS or op == "Softmax" and i < len(ops) - 1 or extra:
            bad.append(f"{nm} ({_show(dom + '.' if dom else '')}{_show(op)}{' with ' + _show(', '.join(extra)) if extra else ''})")
    need(not bad, file, "graph", f"unsupported nodes: {', '.join(bad)}", FIX)
    need(len(inputs) == 1 and len(outputs) == 1, file, "graph", f"{len(inputs)} inputs and {len(outputs)} outputs",
         "export a model with one input and one output")
    cur, n, acc, layers, notes = _str(inputs[0], 1), math.prod(shape), None, [], []
    need(n <= 1 << 24, file, "graph", f"the input has {n} entries", "certify reads models with at most 2^24 inputs")
    try:
        for node, (op, _, a, nm) in zip(nodes, ops):
            ins, (out,) = [s.decode() for s in node.get(1, []) if s], [s.decode() for s in node.get(2, [])]
            if op == "Constant":
                consts[out] = a["value"][1:]
                continue
            if (ins.count(cur) != 1 or len(ins) not in ARITY.get(op, (1,)) or any(s not in consts for s in ins if s != cur)
                    or op not in ("Add", "Sub", "Mul", "Div", "MatMul") and ins[0] != cur):
                raise ValueError(f"{nm} ({op}) must read the running activation {cur!r} once and constants only (the graph must be a chain)")
            c = [consts[s] for s in ins if s != cur]
            if op in ("Add", "Sub", "Mul", "Div"):
                (cd, cv), first = c[0], ins[0] != cur
                if op == "Div" and (first or 0 in cv):
                    raise ValueError(f"{nm} (Div): divides by the activation or by zero")
                v, shape = _bcast(cv, cd, shape, nm)
                v = [1 / Fraction(x) for x in v] if op == "Div" else [-x for x in v] if op == "Sub" and not first else v
                sign = [-1.0 if op == "Sub" and first else 1.0] * n
                acc = _compose(acc, ("diag", v, [0.0] * n) if op in ("Mul", "Div") else ("diag", sign, v))
            elif op in ("Gemm", "MatMul"):
                (wd, wv), left = c[0], op == "MatMul" and ins[0] != cur  # left: W @ x
                col = left and len(shape) > 1  # W @ x with x a column (..., K, 1)
                if len(wd) != 2 or op == "Gemm" and len(shape) != 2 or col and shape[-1] != 1:
                    raise ValueError(f"{nm} ({op}): weight {list(wd)} on activation {list(shape)} is not a matrix-vector product")
                w = [wv[i * wd[1]:(i + 1) * wd[1]] for i in range(wd[0])]
                w = w if left or a.get("transB") else [list(r) for r in zip(*w)]  # (out, in)
                if len(w[0]) != (shape[-2] if col else shape[-1]) or len(w[0]) != n:
                    raise ValueError(f"{nm} ({op}): weight {list(wd)} does not fit the activation {list(shape)}")
                shape = shape[:-2] + (len(w), 1) if col else shape[:-1] + (len(w),)
                alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
                bias = [_mul(beta, x) for x in _bcast(c[1][1], c[1][0], (1, len(w)), nm)[0]] if len(c) > 1 else [0.0] * len(w)
                acc = _compose(acc, ("full", [[_mul(alpha, x) for x in r] for r in w], bias))
            elif op == "Relu":
                layers, acc = layers + [_dense(acc, n)], None
            elif op == "Flatten":
                ax = a.get("axis", 1) + (len(shape) if a.get("axis", 1) < 0 else 0)
                if not 0 <= ax <= len(shape):
                    raise ValueError(f"{nm} (Flatten): axis {a.get('axis')} out of range for {list(shape)}")
                shape = (math.prod(shape[:ax]), math.prod(shape[ax:]))
            elif op == "Reshape":
                t = [shape[i] if x == 0 and not a.get("allowzero") else x for i, x in enumerate(c[0][1])]
                t = [n // max(1, math.prod(x for x in t if x != -1)) if x == -1 else x for x in t]
                if math.prod(t) != n or min(t, default=1) < 0 or list(c[0][1]).count(-1) > 1:
                    raise ValueError(f"{nm} (Reshape): shape {list(c[0][1])} does not fit {n} values")
                shape = tuple(t)
            elif op == "Softmax":
                notes.append(f"{file}: Softmax at the output ({nm}) dropped; the model is bounded as its pre-softmax logits")
            n, cur = math.prod(shape), out
        if cur != outputs[0]:
            raise ValueError(f"the chain ends in {cur!r}, not in the output {outputs[0]!r}")
        layers.append(_dense(acc, n))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, ZeroDivisionError) as exc:
        raise BadInput(file, "graph", str(exc) if isinstance(exc, ValueError) else f"malformed node ({type(exc).__name__}: {exc!r})", FIX) from None
    return Model(file, digest, tuple(layers), notes=tuple(notes))
