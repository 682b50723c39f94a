"""The exact objects a certificate speaks about: g built from f, the joint network, the input box.

g is f after the spec's transforms, in order. Exact transforms (prune with zero, a given constant,
free values read as extra inputs, or the mean over a fixed rational point sequence; merge with given
groups, quantize, a second model) are rebuilt here. Float ones (low_rank's SVD, merge's k-means labels,
pca's components and mean) are read from the arrays the spec pins (`arrays: {path, sha256}`) or, for a
spec that does not pin them, from the certificate's materialised arrays, and applied exactly. The joint network shares f's
and g's common prefix, runs the two tails side by side (block-diagonal weights) and ends in one
dense layer whose outputs are f_i - g_i for the selected outputs i: an ordinary dense/relu network.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

from flint import fmpz_mat

from .errors import BadInput
from .exact import IntMat, IntVec, interval_dense, product, qmat, qvec
from .model import Model, read_arrays, read_model, read_npy, sha256_file
from .spec import PCA, LowRank, Merge, Prune, Quantize, Replace, SecondModel, Spec

FLOAT_ARRAYS = {"low_rank": ("U", "V"), "pca": ("P", "mean"), "merge": ("labels",)}  # a pinned file's arrays
from .vnnlib import read_vnnlib

Layer = tuple[list[list[Fraction]], list[Fraction]]


class Explained(list):
    """g's layers. `free` = (L, lower, upper) for a `fill: free` prune of layer L (always the last
    transform): g reads extra inputs v in R = [lower, upper] after x, carried by identity rows through
    layers 1..L (exact under ReLU: v >= 0), and layer L+1 reads v where it read the pruned neurons."""
    free: tuple[int, list[Fraction], list[Fraction]] | None = None
    used: frozenset = frozenset()  # the keys of the certificate's materialised arrays that g was built from


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


def merge_blocks(spec: Spec, index: int, t: Merge, width: int, materialized, validate_only: bool = False,
                 used: set | None = None) -> list[list[int]]:
    """The blocks of a merge: its explicit groups, or the materialised k-means labels (one per neuron).
    Without the labels a clustered merge cannot be rebuilt: KeyError (a certificate is rejected)."""
    key = f"{spec.explanation_key}[{index}].merge.groups"
    if isinstance(t.groups, int):
        spec.need(t.groups <= width, key, f"{t.groups} groups for layer {t.layer}'s {width} neurons", f"use at most {width} groups", t.line)
        if validate_only:
            return []
        labels = _materialized(spec, index, t, materialized, "labels", (width,), set() if used is None else used)
        if set(labels) != set(range(t.groups)):
            raise ValueError(f"labels must use each of 0..{t.groups - 1} (the spec's group count)")
        return [[j for j, c in enumerate(labels) if c == b] for b in range(t.groups)]
    flat = sorted(j for b in t.groups for j in b)
    missing, extra = sorted(set(range(width)) - set(flat)), sorted(set(flat) - set(range(width)))
    spec.need(flat == list(range(width)), key, f"not a partition of layer {t.layer}'s {width} neurons (missing {missing}, "
              f"unknown {extra})", f"put each neuron 0..{width - 1} in exactly one group", t.line)
    return [list(b) for b in t.groups]


def build_g(spec: Spec, f: Model, materialized: dict | None) -> list[Layer]:
    """g's exact layers. A transform's float arrays come from the spec's pinned `arrays:` file or else from
    `materialized` (the certificate's arrays: `explanation.<i>.<name>` -> (shape, flat floats)); a mean
    fill is computed here, exactly (`mean_activations`). `.used` lists the materialised keys read."""
    check_outputs(spec, f)
    g, used = exact_layers(f), set()
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
            fill = (mean_activations(f, g[:t.layer], input_box(spec, f), pruned, t.samples, t.seed) if t.fill == "mean"
                    else fill_values(spec, t, i, len(pruned), materialized))
            for r, row in enumerate(w):
                for j, c in zip(pruned, fill):
                    b[r] += row[j] * c
                    row[j] = Fraction(0)
        elif isinstance(t, Merge):  # block unit at the block's smallest index: summed in, averaged out
            for block in merge_blocks(spec, i, t, width, materialized, used=used):
                m, rest = min(block), [j for j in block if j != min(block)]
                w1[m], b1[m] = [sum(col) for col in zip(*(w1[j] for j in block))], sum(b1[j] for j in block)
                for row in w:
                    row[m] = sum(row[j] for j in block) / len(block)
                for j in rest:
                    w1[j], b1[j] = [Fraction(0)] * len(w1[j]), Fraction(0)
                    for row in w:
                        row[j] = Fraction(0)
        elif isinstance(t, PCA):  # the next layer reads mu + P P^T (h - mu): W' = W P P^T, b' = b + W (mu - P P^T mu)
            p = _materialized(spec, i, t, materialized, "P", (width, len(t.keep)), used)
            mu = _materialized(spec, i, t, materialized, "mean", (width,), used)
            pt = [list(col) for col in zip(*p)]
            shift = [m - x for m, (x,) in zip(mu, product(p, product(pt, [[m] for m in mu], 1), 1))]
            b = [v + x for v, (x,) in zip(b, product(w, [[x] for x in shift], 1))]
            w = product(product(w, p, len(t.keep)), pt, width)
        elif isinstance(t, Quantize):  # s = max|W| / (2^(bits-1) - 1); W' = s * round_half_even(W / s)
            top = max(abs(x) for row in w1 for x in row)
            s = top / (2 ** (t.bits - 1) - 1)
            w1 = [[s * round(x / s) for x in row] for row in w1] if top else w1
        else:
            u = _materialized(spec, i, t, materialized, "U", (width, t.rank), used)
            v = _materialized(spec, i, t, materialized, "V", (t.rank, len(w1[0])), used)
            w1 = product(u, v, len(w1[0]))
        g[t.layer - 1] = (w1, b1)
        if t.layer < len(g):
            g[t.layer] = (w, b)
        if isinstance(t, Prune) and t.fill == "free":  # the last transform (the reader checks)
            out = free_inputs(spec, f, g, t.layer, pruned, cols)
            out.used = frozenset(used)
            return out
    out = Explained(g)
    out.used = frozenset(used)
    return out


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
        raise AssertionError("a mean fill is derived by build_g (mean_activations)")
    if isinstance(t.constant, tuple):
        spec.need(len(t.constant) == count, f"{spec.explanation_key}[{index}].{t.kind}.fill.constant", f"{len(t.constant)} values "
                  f"for {count} pruned neurons", "give one value per pruned neuron (in increasing index order) or a single number", t.line)
        return list(t.constant)
    return [t.constant] * count


def _primes(count: int) -> list[int]:
    out, c = [], 2
    while len(out) < count:
        if all(c % p for p in out if p * p <= c):
            out.append(c)
        c += 1
    return out


def domain_points(lo: list[Fraction], up: list[Fraction], count: int, seed: int) -> tuple[list[list[int]], int]:
    """The sample points of a `fill: mean`, exactly: integer numerators (one row per point) over one
    denominator. Point k = 1..count has index i = seed * count + k and coordinates
    x_j = lo_j + (up_j - lo_j) * t_ij, t_ij = ((2^31 + i * a_j) mod 2^32) / 2^32, a_j = floor(2^32 sqrt(p_j)),
    p_j the (j+1)-th prime: a Kronecker (Richtmyer) sequence on the 2^-32 grid, shifted by 1/2."""
    gens, den = [math.isqrt(p << 64) for p in _primes(len(lo))], math.lcm(*(v.denominator for v in lo + up))
    base, width = [int(v * den) << 32 for v in lo], [int((u - v) * den) for v, u in zip(lo, up)]
    first, mod = seed * count + 1, (1 << 32) - 1
    return [[b + w * (((1 << 31) + i * a) & mod) for b, w, a in zip(base, width, gens)]
            for i in range(first, first + count)], den << 32


def mean_activations(f: Model, layers: list[Layer], box: tuple, neurons: list[int], count: int, seed: int) -> list[Fraction]:
    """The exact mean, over `domain_points` of the box (then f's input normalisation), of the post-ReLU
    activations `neurons` of the last of `layers`: FLINT integer products, one layer at a time."""
    rows, den = domain_points(*box, count, seed)
    if f.input_scale is not None:  # x -> s x + c, exactly
        (s, sd), (c, cd) = qvec(f.input_scale), qvec(f.input_shift)
        rows, den = [[a * x * cd + b * den * sd for x, a, b in zip(row, s, c)] for row in rows], den * sd * cd
    h = fmpz_mat(rows)
    for w, b in layers:
        (wn, wd), (bn, bd) = qmat(w), qvec(b)
        z = h * fmpz_mat(wn).transpose() * bd + fmpz_mat(count, len(bn), bn * count) * (den * wd)
        h, den = fmpz_mat(count, len(bn), [max(v, 0) for v in z.entries()]), den * wd * bd
    cols = h.transpose().table()
    return [Fraction(int(sum(cols[j])), count * den) for j in neurons]


def _materialized(spec: Spec, index: int, t, materialized, name: str, shape: tuple[int, ...], used: set):
    """A float array of transform `index`: from the spec's pinned file (`arrays:`, hash-checked: a
    mismatch is bad input) or else from the certificate's materialised arrays (KeyError if missing;
    the key goes into `used`, so that the checker can refuse arrays nobody reads)."""
    if t.arrays is not None:
        key = f"{spec.explanation_key}[{index}].{t.kind}.arrays"
        digest = sha256_file(t.arrays.path)
        spec.need(digest == t.arrays.sha256, f"{key}.sha256", f"{t.arrays.path.name}: sha256 mismatch (the file hashes to {digest})",
                  "if these arrays are the ones you mean, write that hash in the spec (or run `certify pin`)", t.line)
        arrays = read_arrays(t.arrays.path)
        spec.need(name in arrays, f"{key}.path", f"{t.arrays.path.name} has no array {name!r}",
                  f"save the arrays {', '.join(FLOAT_ARRAYS[t.kind])} in it (`certify pin` writes them)", t.line)
        got, flat = arrays[name]
        spec.need(tuple(got) == shape, f"{key}.path", f"{t.arrays.path.name}: {name} has shape {tuple(got)}, expected {shape}",
                  f"pin arrays of this transform's shape (`certify pin` writes them)", t.line)
    else:
        key = f"explanation.{index}.{name}"
        if materialized is None or key not in materialized:
            raise KeyError(key)
        used.add(key)
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
