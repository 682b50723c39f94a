"""The exact objects a certificate speaks about: g built from f, the joint network, the input box.

g is f after the spec's transforms, in order. Exact transforms (prune with zero, a given
constant or free values read as extra inputs, merge with given groups, quantize, a second model) are rebuilt here; float ones
(low_rank's SVD, a mean fill, merge's k-means labels, pca's components and mean) are read from the
materialised arrays whose sha256 the certificate carries, and applied exactly. The joint network shares f's
and g's common prefix, runs the two tails side by side (block-diagonal weights) and ends in one
dense layer whose outputs are f_i - g_i for the selected outputs i: an ordinary dense/relu network.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from .errors import BadInput
from .exact import IntMat, IntVec, interval_dense, product, qmat, qvec
from .model import Model, read_model, read_npy
from .spec import PCA, LowRank, Merge, Prune, Quantize, Replace, SecondModel, Spec
from .vnnlib import read_vnnlib

Layer = tuple[list[list[Fraction]], list[Fraction]]


class Explained(list):
    """g's layers. `free` = (L, lower, upper) for a `fill: free` prune of layer L (always the last
    transform): g reads extra inputs v in R = [lower, upper] after x, carried by identity rows through
    layers 1..L (exact under ReLU: v >= 0), and layer L+1 reads v where it read the pruned neurons."""
    free: tuple[int, list[Fraction], list[Fraction]] | None = None


def exact_layers(model: Model) -> list[Layer]:
    return [([[Fraction(v) for v in row] for row in d.weight], [Fraction(v) for v in d.bias]) for d in model.dense]


def pruned_indices(spec: Spec, t: Prune, width: int, key: str) -> list[int]:
    bad = [k for k in t.keep if k >= width]
    spec.need(not bad, f"{key}.keep", f"neurons {bad} do not exist (layer {t.layer} has {width})", f"keep indices 0..{width - 1}", t.line)
    kept = set(t.keep)
    return [j for j in range(width) if j not in kept]


def check_outputs(spec: Spec, f: Model) -> None:
    bad = [i for i in spec.property.outputs or () if i >= f.out_dim]
    spec.need(not bad, "property.outputs", f"outputs {bad} do not exist (the model has {f.out_dim})",
              f"list output indices in 0..{f.out_dim - 1}", spec.property.line)


def check_transform(spec: Spec, index: int, t, g: list[Layer]) -> None:
    """Impossible parameters (unknown layer, rank or group count too large, missing neuron) are BadInput."""
    key, n = f"{spec.explanation_key}[{index}].{t.kind}", len(g)
    hidden = isinstance(t, (Prune, Merge, PCA))
    last = n - 1 if hidden else n
    spec.need(1 <= t.layer <= last, f"{key}.layer", f"layer {t.layer} does not exist",
              f"use a layer in 1..{last}" + (" (a hidden layer)" if hidden else ""), t.line)
    out_dim, in_dim = len(g[t.layer - 1][0]), len(g[t.layer - 1][0][0])
    limit = min(out_dim, in_dim)
    if isinstance(t, Prune):
        pruned_indices(spec, t, out_dim, key)
    elif isinstance(t, LowRank):
        spec.need(t.rank <= limit and max(t.keep or [0]) < limit, f"{key}.{'rank' if t.keep is None else 'keep'}",
                  f"rank {t.rank} exceeds min(out, in) = {limit}" if t.keep is None else f"singular directions beyond {limit - 1}",
                  f"use a rank <= {limit}", t.line)
    elif isinstance(t, PCA):
        spec.need(max(t.keep) < out_dim, f"{key}.{'keep' if t.components is None else 'components'}",
                  f"{'components' if t.components is None else t.components} exceed layer {t.layer}'s {out_dim} neurons",
                  f"keep components 0..{out_dim - 1}", t.line)
    elif isinstance(t, Merge):
        merge_blocks(spec, index, t, out_dim, None, validate_only=True)


def merge_blocks(spec: Spec, index: int, t: Merge, width: int, materialized, validate_only: bool = False) -> list[list[int]]:
    """The blocks of a merge: its explicit groups, or the materialised k-means labels (one per neuron).
    Without the labels a clustered merge cannot be rebuilt: KeyError (a certificate is rejected)."""
    key = f"{spec.explanation_key}[{index}].merge.groups"
    if isinstance(t.groups, int):
        spec.need(t.groups <= width, key, f"{t.groups} groups for layer {t.layer}'s {width} neurons", f"use at most {width} groups", t.line)
        if validate_only:
            return []
        labels = _materialized(materialized, index, "labels", (width,))
        if set(labels) != set(range(t.groups)):
            raise ValueError(f"labels must use each of 0..{t.groups - 1} (the spec's group count)")
        return [[j for j, c in enumerate(labels) if c == b] for b in range(t.groups)]
    flat = sorted(j for b in t.groups for j in b)
    missing, extra = sorted(set(range(width)) - set(flat)), sorted(set(flat) - set(range(width)))
    spec.need(flat == list(range(width)), key, f"not a partition of layer {t.layer}'s {width} neurons (missing {missing}, "
              f"unknown {extra})", f"put each neuron 0..{width - 1} in exactly one group", t.line)
    return [list(b) for b in t.groups]


def build_g(spec: Spec, f: Model, materialized: dict | None) -> list[Layer]:
    """g's exact layers. `materialized` maps `explanation.<i>.<name>` to (shape, flat floats)."""
    check_outputs(spec, f)
    g = exact_layers(f)
    for i, t in enumerate(spec.explanation):
        if isinstance(t, SecondModel):
            other = read_model(t.model.path, t.model.sha256, f"{spec.explanation_key}[{i}].model.sha256")
            if other.widths != f.widths or (other.input_scale, other.input_shift) != (f.input_scale, f.input_shift):
                raise spec.error(f"{spec.explanation_key}[{i}].model", f"architecture {other.widths} differs from the model's {f.widths}",
                                 "g must have f's layer widths and input normalisation", t.line)
            g = exact_layers(other)
            continue
        if isinstance(t, Replace):  # always the last transform (the reader checks)
            g = replaced(spec, i, t, g)
            continue
        check_transform(spec, i, t, g)
        (w1, b1), width = g[t.layer - 1], len(g[t.layer - 1][1])
        w1, b1 = [list(row) for row in w1], list(b1)
        if t.layer < len(g):
            w, b = [list(row) for row in g[t.layer][0]], list(g[t.layer][1])  # the dense layer that reads layer t.layer
        if isinstance(t, Prune):
            pruned = pruned_indices(spec, t, width, f"{spec.explanation_key}[{i}].{t.kind}")
            cols = [[row[j] for j in pruned] for row in w]  # read from v instead under `fill: free`
            for r, row in enumerate(w):
                for j, c in zip(pruned, fill_values(spec, t, i, len(pruned), materialized)):
                    b[r] += row[j] * c
                    row[j] = Fraction(0)
        elif isinstance(t, Merge):  # block unit at the block's smallest index: summed in, averaged out
            for block in merge_blocks(spec, i, t, width, materialized):
                m, rest = min(block), [j for j in block if j != min(block)]
                w1[m], b1[m] = [sum(col) for col in zip(*(w1[j] for j in block))], sum(b1[j] for j in block)
                for row in w:
                    row[m] = sum(row[j] for j in block) / len(block)
                for j in rest:
                    w1[j], b1[j] = [Fraction(0)] * len(w1[j]), Fraction(0)
                    for row in w:
                        row[j] = Fraction(0)
        elif isinstance(t, PCA):  # the next layer reads mu + P P^T (h - mu): W' = W P P^T, b' = b + W (mu - P P^T mu)
            p = _materialized(materialized, i, "P", (width, len(t.keep)))
            mu = _materialized(materialized, i, "mean", (width,))
            pt = [list(col) for col in zip(*p)]
            shift = [m - x for m, (x,) in zip(mu, product(p, product(pt, [[m] for m in mu], 1), 1))]
            b = [v + x for v, (x,) in zip(b, product(w, [[x] for x in shift], 1))]
            w = product(product(w, p, len(t.keep)), pt, width)
        elif isinstance(t, Quantize):  # s = max|W| / (2^(bits-1) - 1); W' = s * round_half_even(W / s)
            top = max(abs(x) for row in w1 for x in row)
            s = top / (2 ** (t.bits - 1) - 1)
            w1 = [[s * round(x / s) for x in row] for row in w1] if top else w1
        else:
            u = _materialized(materialized, i, "U", (width, t.rank))
            v = _materialized(materialized, i, "V", (t.rank, len(w1[0])))
            w1 = product(u, v, len(w1[0]))
        g[t.layer - 1] = (w1, b1)
        if t.layer < len(g):
            g[t.layer] = (w, b)
        if isinstance(t, Prune) and t.fill == "free":  # the last transform (the reader checks)
            return free_inputs(spec, f, g, t.layer, pruned, cols)
    return Explained(g)


def free_inputs(spec: Spec, f: Model, g: list[Layer], layer: int, pruned: list[int], cols) -> Explained:
    """g reading the pruned neurons' values v from extra inputs. R_j = [relu(l_j), relu(u_j)] from exact
    interval propagation of g's layers 1..layer over the box contains neuron j's reachable range."""
    lo, up = normalise_box(f, *input_box(spec, f))
    for w, b in g[:layer]:
        lo, up = ([max(v, Fraction(0)) for v in z] for z in interval_dense((qmat(w), qvec(b)), lo, up))
    out = Explained(carried(g, len(pruned), layer, cols))
    out.free = (layer, [lo[j] for j in pruned], [up[j] for j in pruned])
    return out


def carried(layers: list[Layer], m: int, depth: int, cols) -> list[Layer]:
    """`layers` with m extra inputs carried by identity rows through layers 1..depth; layer depth+1
    reads them through `cols` (one row of m weights per neuron)."""
    out = []
    for k, (w, b) in enumerate(layers):
        if k < depth:
            eye = [[Fraction(0)] * len(w[0]) + [Fraction(int(r == c)) for c in range(m)] for r in range(m)]
            w, b = [list(row) + [Fraction(0)] * m for row in w] + eye, list(b) + [Fraction(0)] * m
        elif k == depth:
            w = [list(row) + list(c) for row, c in zip(w, cols)]
        out.append((w, b))
    return out


def replaced(spec: Spec, index: int, t: Replace, g: list[Layer]) -> list[Layer]:
    """g with its dense layers k..m (1-based) replaced by the sub-model's layers."""
    (k, m), key = t.layers, f"{spec.explanation_key}[{index}].replace"
    spec.need(m <= len(g), f"{key}.layers", f"layer {m} does not exist", f"use layers in 1..{len(g)}", t.line)
    sub = read_model(t.model.path, t.model.sha256, f"{key}.model.sha256")
    dims = (len(g[k - 1][0][0]), len(g[m - 1][1]))
    spec.need(sub.input_scale is None and (sub.in_dim, sub.out_dim) == dims, f"{key}.model", f"the sub-model maps {sub.in_dim} -> "
              f"{sub.out_dim}" + (" after an input affine layer" if sub.input_scale is not None else ""),
              f"layers {k}..{m} map {dims[0]} -> {dims[1]}: give a dense/relu/.../dense model of those widths", t.line)
    return g[:k - 1] + exact_layers(sub) + g[m:]


def fill_values(spec: Spec, t: Prune, index: int, count: int, materialized) -> list[Fraction]:
    if t.fill in ("zero", "free"):  # free: the neurons' own outgoing weights are zero
        return [Fraction(0)] * count
    if t.fill == "mean":
        return _materialized(materialized, index, "fill", (count,))
    if isinstance(t.constant, tuple):
        spec.need(len(t.constant) == count, f"{spec.explanation_key}[{index}].{t.kind}.fill.constant", f"{len(t.constant)} values "
                  f"for {count} pruned neurons", "give one value per pruned neuron (in increasing index order) or a single number", t.line)
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

    if inp.kind == "vnnlib":
        lo, up = read_vnnlib(inp.vnnlib, "input.vnnlib")
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
