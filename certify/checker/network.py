"""The exact objects a certificate speaks about: g built from f, the joint network, the input box.

g is f after the spec's transforms, in order. Exact transforms (prune with zero or a given
constant, a second model) are rebuilt here; float ones (low_rank's SVD, a mean fill) are read
from the materialised arrays whose sha256 the certificate carries. The joint network shares f's
and g's common prefix, runs the two tails side by side (block-diagonal weights) and ends in one
dense layer whose outputs are f_i - g_i for the selected outputs i: an ordinary dense/relu network.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from .errors import BadInput
from .exact import IntMat, IntVec, qmat, qvec
from .model import Model, read_model, read_npy
from .spec import LowRank, Prune, SecondModel, Spec
from .vnnlib import read_vnnlib

Layer = tuple[list[list[Fraction]], list[Fraction]]


def exact_layers(model: Model) -> list[Layer]:
    return [([[Fraction(v) for v in row] for row in d.weight], [Fraction(v) for v in d.bias]) for d in model.dense]


def pruned_indices(spec: Spec, t: Prune, width: int, key: str) -> list[int]:
    bad = [k for k in t.keep if k >= width]
    if bad:
        raise spec.error(f"{key}.keep", f"neurons {bad} do not exist (layer {t.layer} has {width})",
                         f"keep indices 0..{width - 1}", t.line)
    kept = set(t.keep)
    return [j for j in range(width) if j not in kept]


def check_outputs(spec: Spec, f: Model) -> None:
    bad = [i for i in spec.property.outputs or () if i >= f.out_dim]
    if bad:
        raise spec.error("property.outputs", f"outputs {bad} do not exist (the model has {f.out_dim})",
                         f"list output indices in 0..{f.out_dim - 1}", spec.property.line)


def check_transform(spec: Spec, index: int, t, g: list[Layer]) -> None:
    """Impossible parameters (unknown layer, rank too large, missing neuron) are BadInput."""
    key, n = f"explanation[{index}].{'prune' if isinstance(t, Prune) else 'low_rank'}", len(g)
    last = n if isinstance(t, LowRank) else n - 1
    if not 1 <= t.layer <= last:
        raise spec.error(f"{key}.layer", f"layer {t.layer} does not exist", f"use a layer in 1..{last}"
                         + ("" if isinstance(t, LowRank) else " (a hidden layer)"), t.line)
    if isinstance(t, Prune):
        pruned_indices(spec, t, len(g[t.layer - 1][1]), key)
    elif t.rank > min(len(g[t.layer - 1][0]), len(g[t.layer - 1][0][0])):
        limit = min(len(g[t.layer - 1][0]), len(g[t.layer - 1][0][0]))
        raise spec.error(f"{key}.rank", f"rank {t.rank} exceeds min(out, in) = {limit}",
                         f"use a rank <= {limit}", t.line)


def build_g(spec: Spec, f: Model, materialized: dict | None) -> list[Layer]:
    """g's exact layers. `materialized` maps `explanation.<i>.<name>` to (shape, flat floats)."""
    check_outputs(spec, f)
    g = exact_layers(f)
    for i, t in enumerate(spec.explanation):
        if isinstance(t, SecondModel):
            other = read_model(t.model.path, t.model.sha256, f"explanation[{i}].model.sha256")
            if other.widths != f.widths or (other.input_scale, other.input_shift) != (f.input_scale, f.input_shift):
                raise spec.error(f"explanation[{i}].model", f"architecture {other.widths} differs from the model's {f.widths}",
                                 "g must have f's layer widths and input normalisation", t.line)
            g = exact_layers(other)
            continue
        check_transform(spec, i, t, g)
        if isinstance(t, Prune):
            w, b = g[t.layer]  # the dense layer that reads the pruned neurons
            pruned = pruned_indices(spec, t, len(g[t.layer - 1][1]), f"explanation[{i}].prune")
            fills = fill_values(spec, t, i, len(pruned), materialized)
            w, b = [list(row) for row in w], list(b)
            for r, row in enumerate(w):
                for j, c in zip(pruned, fills):
                    b[r] += row[j] * c
                    row[j] = Fraction(0)
            g[t.layer] = (w, b)
        else:
            out_dim, in_dim = len(g[t.layer - 1][0]), len(g[t.layer - 1][0][0])
            u = _materialized(materialized, i, "U", (out_dim, t.rank))
            v = _materialized(materialized, i, "V", (t.rank, in_dim))
            w = [[sum((u[r][k] * v[k][c] for k in range(t.rank)), Fraction(0)) for c in range(in_dim)] for r in range(out_dim)]
            g[t.layer - 1] = (w, g[t.layer - 1][1])
    return g


def fill_values(spec: Spec, t: Prune, index: int, count: int, materialized) -> list[Fraction]:
    if t.fill == "zero":
        return [Fraction(0)] * count
    if t.fill == "mean":
        return _materialized(materialized, index, "fill", (count,))
    if isinstance(t.constant, tuple):
        if len(t.constant) != count:
            raise spec.error(f"explanation[{index}].prune.fill.constant",
                             f"{len(t.constant)} values for {count} pruned neurons",
                             "give one value per pruned neuron (in increasing index order) or a single number", t.line)
        return list(t.constant)
    return [t.constant] * count


def _materialized(materialized, index: int, name: str, shape: tuple[int, ...]):
    key = f"explanation.{index}.{name}"
    if materialized is None or key not in materialized:
        raise KeyError(key)
    got, flat = materialized[key]
    if tuple(got) != shape:
        raise ValueError(f"materialised array {key} has shape {tuple(got)}, expected {shape}")
    values = [Fraction(v) for v in flat]
    if len(shape) == 1:
        return values
    return [values[r * shape[1]:(r + 1) * shape[1]] for r in range(shape[0])]


def joint_network(f: list[Layer], g: list[Layer], outputs: tuple[int, ...] | None) -> tuple[list[tuple[IntMat, IntVec]], int]:
    """The joint network computing f_i - g_i (i in outputs), and how many dense layers it shares."""
    n = len(f)
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


def input_box(spec: Spec, model: Model) -> tuple[list[Fraction], list[Fraction]]:
    """The input domain as an exact box in the model's input space (after clip)."""
    inp, dim = spec.input, model.in_dim

    def vec(value, key):
        if isinstance(value, Path):
            value = tuple(Fraction(v) for v in read_npy(value, key))
        if isinstance(value, Fraction):
            return [value] * dim
        if len(value) != dim:
            raise spec.error(key, f"has {len(value)} entries but the model takes {dim} inputs",
                             f"give {dim} numbers (or one, for every input)", inp.line)
        return list(value)

    if inp.kind == "vnnlib":
        lo, up = read_vnnlib(inp.vnnlib, "input.vnnlib")
        if len(lo) != dim:
            raise spec.error("input.vnnlib", f"{inp.vnnlib.name} declares {len(lo)} inputs but the model takes {dim}",
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
    if empty:
        raise spec.error("input", f"the domain is empty at inputs {empty[:5]}", "make lower <= upper (after clip)", inp.line)
    return lo, up


def normalise_box(model: Model, lo: list[Fraction], up: list[Fraction]) -> tuple[list[Fraction], list[Fraction]]:
    """The image of the box under the model's leading elementwise affine map (itself a box)."""
    if model.input_scale is None:
        return lo, up
    s = [Fraction(v) for v in model.input_scale]
    t = [Fraction(v) for v in model.input_shift]
    return ([min(l * a, u * a) + c for l, u, a, c in zip(lo, up, s, t)],
            [max(l * a, u * a) + c for l, u, a, c in zip(lo, up, s, t)])
