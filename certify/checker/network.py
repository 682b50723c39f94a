"""The exact objects a certificate speaks about: g built from f, the joint network, the input box.

g is f after the spec's transforms, in order, each rebuilt exactly by its registered unit
(checker/transforms.py: exact transforms from the spec alone, float ones from the arrays the spec
pins or else from the certificate's materialised arrays). The joint network shares f's
and g's common prefix, runs the two tails side by side (block-diagonal weights) and ends in one
dense layer whose outputs are f_i - g_i for the selected outputs i: an ordinary dense/relu network.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from .exact import IntMat, IntVec, qmat, qvec
from .model import Model, read_npy
from .spec import Spec
from .transforms import (FLOAT_ARRAYS, Build, Explained, Layer, carried, domain_points, exact_layers,  # noqa: F401 - re-exported
                         mean_activations, merge_blocks, pruned_indices, unit)
from .graph import Graph, TokenBox
from .vnnlib import read_vnnlib


def check_outputs(spec: Spec, f: Model) -> None:
    bad = [i for i in spec.property.outputs or () if i >= f.out_dim]
    spec.need(not bad, "property.outputs", f"outputs {bad} do not exist (the model has {f.out_dim})",
              f"list output indices in 0..{f.out_dim - 1}", spec.property.line)


def check_transform(spec: Spec, index: int, t, g: list[Layer]) -> None:
    """Impossible parameters (unknown layer, rank or group count too large, missing neuron) are BadInput."""
    unit(t).validate(spec, index, t, g)


def build_g(spec: Spec, f: Model, materialized: dict | None) -> Explained:
    """g's exact layers: each transform of the explanation, in order, by its registered unit
    (checker/transforms.py). `materialized`: the certificate's arrays (`explanation.<i>.<name>` ->
    (shape, flat floats)) for float transforms the spec does not pin; `.used` lists the keys read."""
    check_outputs(spec, f)
    b = Build(spec, f, materialized, lambda: input_box(spec, f), lambda: normalise_box(f, *input_box(spec, f)))
    graph = isinstance(f, Graph)
    g = f if graph else exact_layers(f)
    for i, t in enumerate(spec.explanation):
        u = unit(t)
        spec.need(u.graph in (graph, None), f"{spec.explanation_key}[{i}].{t.kind}",
                  f"{t.kind} works on {'graph models (named values)' if u.graph else 'dense/ReLU MLPs (numbered layers)'}, "
                  f"and {f.path if graph else 'this model'} is {'a graph' if graph else 'a dense/ReLU MLP'}",
                  "use a transform for this kind of model (graph models: sae, transcoder, ablate {site, indices, fill}; "
                  "docs/extending.md lists them)", t.line)
        u.validate(spec, i, t, g)
        g = u.apply(b, i, t, g)
    if graph:
        return g
    out = g if isinstance(g, Explained) else Explained(g)
    out.used = frozenset(b.used)
    return out


def joint_network(f: list[Layer], g: list[Layer], outputs: tuple[int, ...] | None) -> tuple[list[tuple[IntMat, IntVec]], int]:
    """The joint network computing f_i - g_i (i in outputs), and how many dense layers it shares.
    The shallower branch is padded to the other's depth by identity layers before its final layer.
    g's free inputs (`Explained.free`) are carried through f's layers too (which ignores them), so
    that the two branches still share their common prefix."""
    if getattr(g, "free", None):
        depth, m = g.free[0], len(g.free[1])
        f = carried(f, m, depth, [[Fraction(0)] * m for _ in f[depth][1]])
    n = max(len(f), len(g))
    f, g = padded(f, n), padded(g, n)
    shared = next((i for i in range(n) if f[i] != g[i]), n - 1)
    shared = min(shared, n - 1)
    layers: list[Layer] = []
    for i in range(n):
        (wf, bf), (wg, bg) = f[i], g[i]
        if i < shared:
            layers.append((wf, bf))
        elif i < n - 1 and i == shared:  # both branches read the shared activations
            layers.append((wf + wg, bf + bg))
        elif i < n - 1:  # block-diagonal
            zf, zg = [Fraction(0)] * len(wg[0]), [Fraction(0)] * len(wf[0])
            layers.append(([list(r) + zf for r in wf] + [zg + list(r) for r in wg], bf + bg))
        else:
            if shared == n - 1:
                w = [[a - c for a, c in zip(rf, rg)] for rf, rg in zip(wf, wg)]
            else:
                w = [list(rf) + [-c for c in rg] for rf, rg in zip(wf, wg)]
            b = [a - c for a, c in zip(bf, bg)]
            rows = range(len(b)) if outputs is None else outputs
            layers.append(([w[r] for r in rows], [b[r] for r in rows]))
    return [(qmat(w), qvec(b)) for w, b in layers], shared


def padded(layers: list[Layer], depth: int) -> list[Layer]:
    """`layers` made `depth` deep, same function: identity layers before the final dense layer are exact
    under ReLU, as they read post-ReLU activations (>= 0). Without hidden layers the input may be
    negative, so the first pad is [I; -I] and the final layer reads [W, -W] (x = relu(x) - relu(-x))."""
    *body, (w, b) = layers
    extra, d = depth - len(layers), len(w[0])
    if extra == 0:
        return layers
    eye = [[Fraction(int(r == c)) for c in range(d)] for r in range(d)]
    pads = [(eye, [Fraction(0)] * d)] * extra
    if not body:
        pads[0] = (eye + [[-v for v in row] for row in eye], [Fraction(0)] * (2 * d))
        eye2 = [[Fraction(int(r == c)) for c in range(2 * d)] for r in range(2 * d)]
        pads[1:] = [(eye2, [Fraction(0)] * (2 * d))] * (extra - 1)
        w = [list(row) + [-v for v in row] for row in w]
    return body + pads + [(w, b)]


def input_box(spec: Spec, model: Model) -> tuple[list[Fraction], list[Fraction]]:
    """The input domain as an exact box in the model's input space (after clip)."""
    inp, dim = spec.input, model.in_dim

    def vec(value, key):
        if isinstance(value, Path):
            value = tuple(Fraction(v) for v in read_npy(value, key))
        if isinstance(value, Fraction):
            return [value] * dim
        spec.need(len(value) == dim, key, f"has {len(value)} entries but the model takes {dim} inputs",
                  f"give {dim} numbers (or one, for every input)", inp.line)
        return list(value)

    if inp.kind == "tokens":
        vocab, length, allowed = inp.tokens
        spec.need(isinstance(model, Graph) and dim == vocab * length, "input.tokens",
                  f"the model is not a graph model reading {length} one-hot vectors of {vocab} tokens ({dim} inputs)",
                  "use a transformer graph (certify.model.transformer) of that vocabulary and length", inp.line)
        return TokenBox(vocab, allowed)
    if inp.kind == "vnnlib":
        lo, up = read_vnnlib(inp.vnnlib, "input.vnnlib", spec, model)  # a 2.0 query is checked against spec and f
        spec.need(len(lo) == dim, "input.vnnlib", f"{inp.vnnlib.name} declares {len(lo)} inputs but the model takes {dim}",
                  "use the VNN-LIB file written for this model", inp.line)
    elif inp.kind == "box":
        lo, up = vec(inp.lower, "input.box.lower"), vec(inp.upper, "input.box.upper")
    else:
        c = vec(inp.center, "input.linf_ball.center")
        lo, up = [x - inp.radius for x in c], [x + inp.radius for x in c]
    if inp.clip is not None:
        lo = [max(x, inp.clip[0]) for x in lo]
        up = [min(x, inp.clip[1]) for x in up]
    empty = [i for i, (l, u) in enumerate(zip(lo, up)) if l > u]
    spec.need(not empty, "input", f"the domain is empty at inputs {empty[:5]}", "make lower <= upper (after clip)", inp.line)
    return lo, up


def with_free(g: list[Layer], lo: list[Fraction], up: list[Fraction]) -> tuple[list[Fraction], list[Fraction]]:
    """The domain box, times R (the free values' ranges) when g has free inputs."""
    free = getattr(g, "free", None)
    return (lo, up) if free is None else (list(lo) + free[1], list(up) + free[2])


def normalise_box(model: Model, lo: list[Fraction], up: list[Fraction]) -> tuple[list[Fraction], list[Fraction]]:
    """The image of the box under the model's leading elementwise affine map (itself a box). It maps
    the model's inputs x only: coordinates past them (free values v) are kept as they are."""
    if model.input_scale is None:
        return lo, up
    s = [Fraction(v) for v in model.input_scale]
    t = [Fraction(v) for v in model.input_shift]
    n = len(s)
    return ([min(l * a, u * a) + c for l, u, a, c in zip(lo, up, s, t)] + list(lo[n:]),
            [max(l * a, u * a) + c for l, u, a, c in zip(lo, up, s, t)] + list(up[n:]))
