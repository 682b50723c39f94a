"""Strict reader of ONNX residual graphs into the graph IR (checker/graph.py), with no onnx package.

`onnx.read_onnx` parses the file (its protobuf decoder) and sends any model that is not a chain of
dense/ReLU ops here. Each ONNX node becomes rows of the existing op table, exactly (Fractions, no
float arithmetic): Gemm / MatMul by a constant -> linear; Add / Sub / Mul / Div with a constant ->
affine (Div by c: scale 1/c), of two values -> add / sub / mul (Div a/b: mul by reciprocal(b), or
by rsqrt(z) when b = Sqrt(z)); Relu, Erf, Tanh, Sigmoid, Exp, Sqrt, Reciprocal, Gelu (exact erf
form) -> their curves; Pow by 2 / 0.5 / -0.5 / -1 -> square / sqrt / rsqrt / reciprocal;
ReduceMean -> a linear row of 1/n (a value of width 1; where it meets a wider value it is broadcast
by a linear column of ones); LayerNormalization -> centre, square, mean (width 1), + eps, rsqrt,
broadcast, multiply, scale and shift: what its decomposed export reads as, so both forms give the
same bounds (the variance is one scalar relaxed once, not n copies relaxed apart, as in
GraphBuilder.layernorm: measured tighter, docs/extending.md); Identity / Flatten / Reshape name
the same vector (flat order kept); Constant; a last Softmax is dropped (the model is its logits).

Values are vectors: every dimension but those an op reduces over is 1 (a symbolic batch dimension
is 1). A graph value is named by its ONNX tensor name (a spec's `site`); the input is `x`.
"""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction

from .errors import BadInput, need
from .graph import FloatRow, Graph, Node, make_graph
from .onnx_attention import ATTRS as ATTENTION_ATTRS, Attention  # attention ops (issue 17)

CURVES = {"Relu": "relu", "Erf": "erf", "Tanh": "tanh", "Sigmoid": "sigmoid", "Exp": "exp", "Sqrt": "sqrt",
          "Reciprocal": "reciprocal", "Gelu": "gelu"}
POW = {2: "square", 0.5: "sqrt", -0.5: "rsqrt", -1: "reciprocal"}
ATTRS = {**{op: set() for op in CURVES}, "Gelu": {"approximate"}, "Gemm": {"alpha", "beta", "transA", "transB"},
         "MatMul": set(), "Add": set(), "Sub": set(), "Mul": set(), "Div": set(), "Pow": set(), "Identity": set(),
         "ReduceMean": {"axes", "keepdims", "noop_with_empty_axes"}, "LayerNormalization": {"axis", "epsilon", "stash_type"},
         "Flatten": {"axis"}, "Reshape": {"allowzero"}, "Constant": {"value"}, "Softmax": {"axis"}, **ATTENTION_ATTRS}
FIX = ("export a residual network of Gemm/MatMul, Add/Sub/Mul/Div, Relu/Gelu/Erf/Tanh/Sigmoid, LayerNormalization or its "
       "decomposed form (see models/export_resmlp_onnx.py)")
RESERVED = ("x", "d", "d.all")  # the graph input and the joint graph's output names


def _unsupported(op, dom, a, last) -> list[str]:
    extra = sorted(k for k, v in a.items() if k not in ATTRS.get(op, ()) or v is None)
    extra += ["transA"] * bool(op == "Gemm" and a.get("transA")) + ["approximate"] * bool(op == "Gelu" and a.get("approximate", "none") != "none")
    return extra if dom in ("", "ai.onnx") and op in ATTRS else extra or ["op"]


def read_onnx_graph(file: str, digest: str, consts: dict, nodes: list, ops: list, inputs: list, outputs: list, shape: tuple) -> Graph:
    """The parsed ONNX graph (onnx.read_onnx's pieces) as a `Graph`; BadInput with one line otherwise."""
    from .onnx import _bcast, _show

    bad = [f"{nm} ({_show(dom + '.' if dom else '')}{_show(op)}{' with ' + _show(', '.join(x)) if x != ['op'] else ''})"
           for i, (op, dom, a, nm) in enumerate(ops) if (x := _unsupported(op, dom, a, i == len(ops) - 1))]
    need(not bad, file, "graph", f"unsupported nodes: {', '.join(bad)}", FIX)
    need(len(inputs) == 1 and len(outputs) == 1, file, "graph", f"{len(inputs)} inputs and {len(outputs)} outputs",
         "export a model with one input and one output")
    in_name = inputs[0][1][-1].decode() if inputs[0].get(1) else ""
    vals, out_nodes, notes, made, matmul = {in_name: ("x", tuple(shape))}, [], [], {}, set()
    n_in = math.prod(shape)
    need(0 < n_in <= 1 << 24, file, "graph", f"the input has {n_in} entries", "certify reads models with 1 to 2^24 inputs")
    used = [s.decode() for node in nodes for s in node.get(1, []) if s]

    def emit(name, op, inputs, **params):
        if name in RESERVED or name in made:
            raise ValueError(f"value name {name!r} is reserved or defined twice")
        params = {k: tuple(r if type(r) is FloatRow else tuple(map(Fraction, r)) if isinstance(r, (list, tuple)) else Fraction(r) for r in v)
                  for k, v in params.items()}  # (a FloatRow: a weight row of floats, read as their Fractions)
        made[name] = Node(name, op, tuple(inputs), **params)
        out_nodes.append(made[name])
        return name

    def last_axis(nm, sh, what):  # an op over the last axes: the leading ones must be 1
        if math.prod(sh[:-1]) != 1:
            raise ValueError(f"{nm} ({what}): acts on {list(sh)}; every dimension but the last must be 1")

    def lift(name, sh, to, tag):  # a width-1 value broadcast to the shape `to` (a column of ones)
        return (name, sh) if math.prod(sh) == math.prod(to) else (emit(tag, "linear", [name], weight=[[1]] * math.prod(to), bias=[0] * math.prod(to)), to)

    once = lambda name: name in made and used.count(name) + outputs.count(name) <= 1  # read by one node only

    def chain(name):  # (source, W, b): name = W source + b through linear nodes each read once, else (name, None, None)
        nd = made.get(name)
        if not once(name) or nd.op != "linear":
            return name, None, None
        src, w, b = chain(nd.inputs[0])
        if w is None:
            return src, nd.weight, nd.bias
        return src, [[sum(r * c for r, c in zip(row, col)) for col in zip(*w)] for row in nd.weight], \
            [sum(r * c for r, c in zip(row, b)) + t for row, t in zip(nd.weight, nd.bias)]

    def source(name):  # the value chain(name) reaches, without composing weights (that costs O(n^3) Fractions)
        return source(made[name].inputs[0]) if once(name) and made[name].op == "linear" else name

    def recip(name, sh, tag):  # 1/b: rsqrt(z) when b = sqrt(z) (the same function, one relaxation)
        node = made.get(name)
        return (emit(tag, "rsqrt", node.inputs) if node and node.op == "sqrt" else emit(tag, "reciprocal", [name])), sh

    attention = Attention(emit, vals, consts)  # MatMul of values, Transpose, Gather, -inf masks, inner Softmax
    try:
        for node, (op, _, a, nm) in zip(nodes, ops):
            ins, outs = [s.decode() for s in node.get(1, [])], [s.decode() for s in node.get(2, [])]
            out = outs[0]
            if any(s in used or s in outputs for s in outs[1:] if s):
                raise ValueError(f"{nm} ({op}): only its first output may be used")
            if op == "Constant":
                consts[out] = a["value"][1:]
                continue
            if attention.step(op, a, nm, ins, out, node is nodes[-1]):
                continue
            missing = [s for s in ins if s and s not in vals and s not in consts]
            if missing or not ins:
                raise ValueError(f"{nm} ({op}) reads undefined values {missing}")
            v = [s for s in ins if s in vals]
            if not v:
                raise ValueError(f"{nm} ({op}) computes on constants only (export with do_constant_folding=True)")
            if op in ("Add", "Sub", "Mul", "Div") and len(v) == 1:  # with a constant: an elementwise affine map
                (x, sh), (cd, cv), first = vals[v[0]], consts[ins[1] if ins[0] == v[0] else ins[0]], ins[0] != v[0]
                c, sh = _bcast(cv, cd, sh, nm)
                if op == "Div" and first:
                    x, sh = recip(x, sh, f"{out}.reciprocal")
                if op == "Div" and not first and 0 in c:
                    raise ValueError(f"{nm} (Div): divides by zero")
                n = len(c)
                scale = c if op == "Mul" or op == "Div" and first else [1 / Fraction(t) for t in c] if op == "Div" else [-1 if first and op == "Sub" else 1] * n
                shift = [0] * n if op in ("Mul", "Div") else [-t for t in c] if op == "Sub" and not first else c
                inner = made.get(x) if once(x) else None  # an affine map after a linear/affine one read only here: composed
                if inner and inner.op == "affine":
                    scale, shift, x = [a * b for a, b in zip(scale, inner.scale)], [a * b + t for a, b, t in zip(scale, inner.shift, shift)], inner.inputs[0]
                elif inner and inner.op == "linear" and x in matmul and set(scale) == {1}:  # MatMul + a bias Add
                    vals[out] = emit(out, "linear", inner.inputs, weight=inner.weight,  # (scale 1)
                                     bias=[a * b + t for a, b, t in zip(scale, inner.bias, shift)]), sh
                    continue
                vals[out] = emit(out, "affine", [x], scale=scale, shift=shift), sh
            elif op in ("Add", "Sub", "Mul", "Div"):
                (x, sx), (y, sy) = vals[ins[0]], vals[ins[1]]
                to = sx if math.prod(sx) >= math.prod(sy) else sy
                strip = lambda s: tuple(s)[next((i for i, d in enumerate(s) if d != 1), len(s)):]
                if min(math.prod(sx), math.prod(sy)) not in (1, math.prod(to)) or math.prod(sx) == math.prod(sy) and strip(sx) != strip(sy):
                    raise ValueError(f"{nm} ({op}): shapes {list(sx)} and {list(sy)} do not broadcast (one must be equal or of size 1)")
                if op == "Div":
                    y, sy = recip(y, sy, f"{out}.reciprocal")
                (x, _), (y, _) = lift(x, sx, to, f"{out}.lhs"), lift(y, sy, to, f"{out}.rhs")
                src, w, b = chain(y) if source(y) == x else (y, None, None)
                if op in ("Add", "Sub") and src == x:  # x -/+ W x + b, as ReduceMean + Sub centre a LayerNorm: one linear
                    sign = 1 if op == "Add" else -1
                    vals[out] = emit(out, "linear", [x], weight=[[int(i == j) + sign * v for j, v in enumerate(r)] for i, r in enumerate(w)],
                                     bias=[sign * t for t in b]), to
                    continue
                vals[out] = emit(out, {"Add": "add", "Sub": "sub"}.get(op, "mul"), [x, y]), to
            elif op in ("Identity", "Flatten", "Reshape", "Softmax"):
                x, sh = vals[ins[0]]
                if op == "Flatten":
                    ax = a.get("axis", 1) + (len(sh) if a.get("axis", 1) < 0 else 0)
                    if not 0 <= ax <= len(sh):
                        raise ValueError(f"{nm} (Flatten): axis {a.get('axis')} out of range for {list(sh)}")
                    sh = (math.prod(sh[:ax]), math.prod(sh[ax:]))
                elif op == "Reshape":
                    t = [sh[i] if x_ == 0 and not a.get("allowzero") else x_ for i, x_ in enumerate(consts[ins[1]][1])]
                    t = [math.prod(sh) // max(1, math.prod(x_ for x_ in t if x_ != -1)) if x_ == -1 else x_ for x_ in t]
                    if math.prod(t) != math.prod(sh) or min(t, default=1) < 0 or list(consts[ins[1]][1]).count(-1) > 1:
                        raise ValueError(f"{nm} (Reshape): shape {list(consts[ins[1]][1])} does not fit {list(sh)}")
                    sh = tuple(t)
                elif op == "Softmax":
                    notes.append(f"{file}: Softmax at the output ({nm}) dropped; the model is bounded as its pre-softmax logits")
                vals[out] = x, sh
            elif op in ("Gemm", "MatMul"):
                if ins[0] not in vals or ins[1] not in consts or len(consts[ins[1]][0]) != 2 or len(ins) > (3 if op == "Gemm" else 2):
                    raise ValueError(f"{nm} ({op}): needs the value times a constant matrix (and a constant bias)")
                (x, sh), (wd, wv) = vals[ins[0]], consts[ins[1]]
                last_axis(nm, sh, op)
                w = [wv[i * wd[1]:(i + 1) * wd[1]] for i in range(wd[0])]
                w = w if a.get("transB") else [list(r) for r in zip(*w)]  # (out, in)
                if len(w[0]) != sh[-1] or op == "Gemm" and len(sh) != 2:
                    raise ValueError(f"{nm} ({op}): weight {list(wd)} does not fit the value {list(sh)}")
                al, be = Fraction(a.get("alpha", 1.0)), Fraction(a.get("beta", 1.0))
                bias = [be * Fraction(t) for t in _bcast(consts[ins[2]][1], consts[ins[2]][0], (1, len(w)), nm)[0]] if len(ins) > 2 else [0] * len(w)
                floats = al == 1 and all(type(t) is float and math.isfinite(t) for r in w for t in r)
                vals[out] = emit(out, "linear", [x], weight=[FloatRow(tuple(r)) if floats else [al * Fraction(t) for t in r] for r in w],
                                 bias=bias), sh[:-1] + (len(w),)
                matmul.add(out)
            elif op in CURVES or op == "Pow":
                x, sh = vals[ins[0]]
                if op == "Pow":
                    e = consts[ins[1]][1] if ins[1] in consts else None
                    if e is None or len(e) != 1 or e[0] not in POW:
                        raise ValueError(f"{nm} (Pow): the exponent must be a constant 2, 0.5, -0.5 or -1")
                vals[out] = emit(out, POW[e[0]] if op == "Pow" else CURVES[op], [x]), sh
            elif op == "ReduceMean":
                x, sh = vals[ins[0]]
                axes = a.get("axes") if len(ins) < 2 else list(consts[ins[1]][1])
                if not axes and a.get("noop_with_empty_axes"):
                    vals[out] = x, sh
                    continue
                axes = sorted({t % len(sh) for t in axes} if axes else range(len(sh)))
                if any(sh[i] != 1 for i in range(len(sh)) if i not in axes):
                    raise ValueError(f"{nm} (ReduceMean): over axes {axes} of {list(sh)}; the other dimensions must be 1")
                n = math.prod(sh)
                sh = tuple(1 if i in axes else d for i, d in enumerate(sh) if a.get("keepdims", 1) or i not in axes)
                vals[out] = emit(out, "linear", [x], weight=[[Fraction(1, n)] * n], bias=[0]), sh
            elif op == "LayerNormalization":
                (x, sh), ax = vals[ins[0]], a.get("axis", -1) % max(1, len(vals[ins[0]][1]))
                n, eps = math.prod(sh), Fraction(a.get("epsilon", 1e-5))
                if math.prod(sh[:ax]) != 1 or len(ins) < 2 or ins[1] not in consts or len(ins) > 2 and ins[2] not in consts:
                    raise ValueError(f"{nm} (LayerNormalization): needs constant scale and bias over the last axes of {list(sh)}")
                gamma = _bcast(consts[ins[1]][1], consts[ins[1]][0], sh, nm)[0]
                beta = _bcast(consts[ins[2]][1], consts[ins[2]][0], sh, nm)[0] if len(ins) > 2 and ins[2] else [0] * n
                c = emit(f"{out}.centre", "linear", [x], weight=[[int(i == j) - Fraction(1, n) for j in range(n)] for i in range(n)], bias=[0] * n)
                var = emit(f"{out}.var", "linear", [emit(f"{out}.sq", "square", [c])], weight=[[Fraction(1, n)] * n], bias=[0])
                inv = emit(f"{out}.rsqrt", "rsqrt", [emit(f"{out}.eps", "affine", [var], scale=[1], shift=[eps])])  # one scalar, relaxed once
                inv, _ = lift(inv, (1,), sh, f"{out}.bcast")
                vals[out] = emit(out, "affine", [emit(f"{out}.norm", "mul", [c, inv])], scale=gamma, shift=beta), sh
        if outputs[0] not in vals or vals[outputs[0]][0] == "x":
            raise ValueError(f"the output {outputs[0]!r} is not computed from the input by the graph")
        keep, order = {vals[outputs[0]][0]}, []
        for nd in reversed(out_nodes):  # dead values (a Sqrt replaced by rsqrt, unused branches) are dropped
            if nd.name in keep:
                keep.update(nd.inputs)
                order.append(nd)
        graph = make_graph(n_in, order[::-1], vals[outputs[0]][0], file)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, ZeroDivisionError) as exc:
        raise BadInput(file, "graph", str(exc) if isinstance(exc, ValueError) else f"malformed node ({type(exc).__name__}: {exc!r})", FIX) from None
    return replace(graph, sha256=digest, path=file, notes=tuple(notes))
