"""Explanation transforms, exact half: one registered unit per kind (`UNITS`).

A unit reads its transform from the spec (`read`), refuses impossible parameters against g's layers
(`validate`: bad input) and rebuilds g exactly (`apply`). Its float half (materialise, degrees of
freedom, discarded components, the description that flow and report show) is the row of the same
kind in `certify/explain/transforms.py`; tests/test_transforms.py fails when a kind lacks either
half, and nothing dispatches on a transform's type anywhere else. Adding a transform is one dataclass
and one `Unit` here, one row there (docs/extending.md).

Float arrays (a truncated SVD, principal components, k-means labels) come from the file the spec
pins (`arrays: {path, sha256}`) or, for a spec that pins none, from the certificate's materialised
arrays (`explanation.<i>.<name>`); a mean fill is computed here, exactly, from the spec alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, ClassVar

from flint import fmpz_mat

from .exact import interval_dense, product, qmat, qvec
from .model import Model, read_arrays, read_model, sha256_file

Layer = tuple[list[list[Fraction]], list[Fraction]]


@dataclass(frozen=True)
class ModelRef:
    path: Path
    sha256: str
    key: str = field(default="model", compare=False)
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Prune:
    """Neurons of hidden layer `layer` (1-based dense layer) outside `keep` are replaced by `fill`."""

    layer: int
    keep: tuple[int, ...]
    fill: str  # "zero" | "constant" | "mean" (exact, over domain_points) | "free" (each v_j free in a range containing neuron j's)
    constant: tuple[Fraction, ...] | Fraction | None = None
    samples: int = 1000
    seed: int = 0
    line: int | None = field(default=None, compare=False)
    kind: str = field(default="prune", compare=False)  # "prune" or its alias "ablate"


@dataclass(frozen=True)
class LowRank:
    """Weight of dense layer `layer` replaced by U V (its rank-`rank` truncated SVD, or the singular
    directions `keep`); U, V pinned by `arrays` or materialised."""

    kind: ClassVar[str] = "low_rank"
    layer: int
    rank: int
    line: int | None = field(default=None, compare=False)
    keep: tuple[int, ...] | None = None
    arrays: ModelRef | None = None


@dataclass(frozen=True)
class Merge:
    """RG block step on hidden layer `layer`: each block becomes one unit at its smallest index, with
    the block's summed incoming weights and biases and its averaged outgoing columns; the other
    members' rows and columns are zeroed. `groups`: a partition, or a count (k-means labels: pinned
    by `arrays` or materialised)."""

    kind: ClassVar[str] = "merge"
    layer: int
    groups: tuple[tuple[int, ...], ...] | int
    seed: int = 0
    line: int | None = field(default=None, compare=False)
    arrays: ModelRef | None = None


@dataclass(frozen=True)
class PCA:
    """Hidden layer `layer`'s activations h read as mu + P P^T (h - mu) by the next layer; P holds the
    principal components `keep`; P, mu pinned by `arrays` or materialised."""

    kind: ClassVar[str] = "pca"
    layer: int
    keep: tuple[int, ...]
    components: int | None = None  # how the spec said it: `components: r` (keep = 0..r-1)
    samples: int = 1000
    seed: int = 0
    line: int | None = field(default=None, compare=False)
    arrays: ModelRef | None = None


@dataclass(frozen=True)
class Quantize:
    """Weight of dense layer `layer` rounded (half to even) to the grid s*Z, s = max|W| / (2^(bits-1) - 1)."""

    kind: ClassVar[str] = "quantize"
    layer: int
    bits: int
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class SecondModel:
    """g is this model (same architecture), before any later transform."""

    kind: ClassVar[str] = "model"
    model: ModelRef
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Replace:
    """g's dense layers k..m (1-based) replaced by the sub-model `model` (dense/relu/.../dense, no input
    affine layer); g then continues with f's ReLU (if m < n) and layers m+1..n. Only the last transform."""

    kind: ClassVar[str] = "replace"
    layers: tuple[int, int]
    model: ModelRef
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Sae:
    """On a graph model, the value at `site` is replaced by a sparse autoencoder's reconstruction
    relu((v - b_dec) W_enc + b_enc)[F] W_dec[F] + b_dec, F the kept `features` (None: all). The SAE
    file is pinned by path and sha256 (SAELens names: W_enc (d, m), b_enc (m), W_dec (m, d), b_dec (d))."""

    kind: ClassVar[str] = "sae"
    site: str
    model: ModelRef
    features: tuple[int, ...] | None = None
    line: int | None = field(default=None, compare=False)


class Explained(list):
    """g's layers. `free` = (L, lower, upper) for a `fill: free` prune of layer L (always the last
    transform): g reads extra inputs v in R = [lower, upper] after x, carried by identity rows through
    layers 1..L (exact under ReLU: v >= 0), and layer L+1 reads v where it read the pruned neurons."""
    free: tuple[int, list[Fraction], list[Fraction]] | None = None
    used: frozenset = frozenset()  # the keys of the certificate's materialised arrays that g was built from


@dataclass
class Build:
    """What `apply` may use besides g: the spec, f, the certificate's materialised arrays (and the keys
    read from them), the spec's input box and its image under f's input normalisation."""

    spec: object
    f: Model
    materialized: dict | None
    domain: Callable[[], tuple]
    net_box: Callable[[], tuple]
    used: set = field(default_factory=set)


def exact_layers(model: Model) -> list[Layer]:
    return [([[Fraction(v) for v in row] for row in d.weight], [Fraction(v) for v in d.bias]) for d in model.dense]


def _key(spec, index: int, t) -> str:
    return f"{spec.explanation_key}[{index}].{t.kind}"


def _layers(g: list[Layer], layer: int):
    """Copies of dense layer `layer` (w1, b1) and of the layer that reads it (w, b; None past the end)."""
    (w1, b1) = g[layer - 1]
    nxt = g[layer] if layer < len(g) else ([], [])
    return [list(r) for r in w1], list(b1), [list(r) for r in nxt[0]], list(nxt[1])


def _store(g: list[Layer], layer: int, w1, b1, w, b) -> list[Layer]:
    g = list(g)
    g[layer - 1] = (w1, b1)
    if layer < len(g):
        g[layer] = (w, b)
    return g


# --------------------------------------------------------------------------- validation


def validate_layer(spec, index: int, t, g: list[Layer]) -> None:
    """The layer must exist (a hidden layer for prune, merge and pca), and the kind's own limits hold."""
    key, n = _key(spec, index, t), len(g)
    hidden = isinstance(t, (Prune, Merge, PCA))
    last = n - 1 if hidden else n
    spec.need(1 <= t.layer <= last, f"{key}.layer", f"layer {t.layer} does not exist",
              f"use a layer in 1..{last}" + (" (a hidden layer)" if hidden else ""), t.line)
    out_dim, in_dim = len(g[t.layer - 1][0]), len(g[t.layer - 1][0][0])
    if isinstance(t, Prune):
        pruned_indices(spec, t, out_dim, key)
    elif isinstance(t, LowRank):
        limit = min(out_dim, in_dim)
        spec.need(t.rank <= limit and max(t.keep or [0]) < limit, f"{key}.{'rank' if t.keep is None else 'keep'}",
                  f"rank {t.rank} exceeds min(out, in) = {limit}" if t.keep is None else f"singular directions beyond {limit - 1}",
                  f"use a rank <= {limit}", t.line)
    elif isinstance(t, PCA):
        spec.need(max(t.keep) < out_dim, f"{key}.{'keep' if t.components is None else 'components'}",
                  f"{'components' if t.components is None else t.components} exceed layer {t.layer}'s {out_dim} neurons",
                  f"keep components 0..{out_dim - 1}", t.line)
    elif isinstance(t, Merge):
        merge_blocks(spec, index, t, out_dim, None, validate_only=True)


def no_validation(spec, index: int, t, g: list[Layer]) -> None:
    """Transforms that replace layers check what they read when they are applied."""


def pruned_indices(spec, t: Prune, width: int, key: str) -> list[int]:
    bad = [k for k in t.keep if k >= width]
    spec.need(not bad, f"{key}.keep", f"neurons {bad} do not exist (layer {t.layer} has {width})", f"keep indices 0..{width - 1}", t.line)
    kept = set(t.keep)
    return [j for j in range(width) if j not in kept]


def merge_blocks(spec, index: int, t: Merge, width: int, materialized, validate_only: bool = False,
                 used: set | None = None) -> list[list[int]]:
    """The blocks of a merge: its explicit groups, or the k-means labels (one per neuron) from the
    pinned file or the certificate's arrays (KeyError when neither has them: a certificate is rejected)."""
    key = f"{spec.explanation_key}[{index}].merge.groups"
    if isinstance(t.groups, int):
        spec.need(t.groups <= width, key, f"{t.groups} groups for layer {t.layer}'s {width} neurons", f"use at most {width} groups", t.line)
        if validate_only:
            return []
        labels = float_array(spec, index, t, materialized, "labels", (width,), set() if used is None else used)
        if set(labels) != set(range(t.groups)):
            raise ValueError(f"labels must use each of 0..{t.groups - 1} (the spec's group count)")
        return [[j for j, c in enumerate(labels) if c == b] for b in range(t.groups)]
    flat = sorted(j for b in t.groups for j in b)
    missing, extra = sorted(set(range(width)) - set(flat)), sorted(set(flat) - set(range(width)))
    spec.need(flat == list(range(width)), key, f"not a partition of layer {t.layer}'s {width} neurons (missing {missing}, "
              f"unknown {extra})", f"put each neuron 0..{width - 1} in exactly one group", t.line)
    return [list(b) for b in t.groups]


# --------------------------------------------------------------------------- float arrays and the exact mean


def float_array(spec, index: int, t, materialized, name: str, shape: tuple[int, ...], used: set):
    """A float array of transform `index`: from the spec's pinned file (`arrays:`, hash-checked: a
    mismatch is bad input) or else from the certificate's materialised arrays (KeyError if missing;
    the key goes into `used`, so that the checker can refuse arrays nobody reads)."""
    if t.arrays is not None:
        key = f"{_key(spec, index, t)}.arrays"
        arrays = pinned_arrays(spec, key, t.arrays, t.line, " (or run `certify pin`)")
        spec.need(name in arrays, f"{key}.path", f"{t.arrays.path.name} has no array {name!r}",
                  f"save the arrays {', '.join(UNITS[t.kind].arrays)} in it (`certify pin` writes them)", t.line)
        got, flat = arrays[name]
        spec.need(tuple(got) == shape, f"{key}.path", f"{t.arrays.path.name}: {name} has shape {tuple(got)}, expected {shape}",
                  "pin arrays of this transform's shape (`certify pin` writes them)", t.line)
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


# --------------------------------------------------------------------------- apply: g, exactly


def apply_prune(b: Build, i: int, t: Prune, g: list[Layer]) -> list[Layer]:
    """Pruned neuron j's activation becomes the constant c_j in the next layer (b_r += W[r][j] c_j, column
    j zeroed); `fill: free` reads it from an extra input v_j instead (free_inputs)."""
    w1, b1, w, bias = _layers(g, t.layer)
    pruned = pruned_indices(b.spec, t, len(b1), _key(b.spec, i, t))
    cols = [[row[j] for j in pruned] for row in w]
    if t.fill == "mean":
        fill = mean_activations(b.f, g[:t.layer], b.domain(), pruned, t.samples, t.seed)
    elif t.fill in ("zero", "free"):  # free: the neurons' own outgoing weights become zero
        fill = [Fraction(0)] * len(pruned)
    elif isinstance(t.constant, tuple):
        b.spec.need(len(t.constant) == len(pruned), f"{_key(b.spec, i, t)}.fill.constant", f"{len(t.constant)} values for "
                    f"{len(pruned)} pruned neurons", "give one value per pruned neuron (in increasing index order) or a single number", t.line)
        fill = list(t.constant)
    else:
        fill = [t.constant] * len(pruned)
    for r, row in enumerate(w):
        for j, c in zip(pruned, fill):
            bias[r] += row[j] * c
            row[j] = Fraction(0)
    g = _store(g, t.layer, w1, b1, w, bias)
    return free_inputs(b, g, t.layer, pruned, cols) if t.fill == "free" else g


def free_inputs(b: Build, g: list[Layer], layer: int, pruned: list[int], cols) -> Explained:
    """g reading the pruned neurons' values v from extra inputs. R_j = [relu(l_j), relu(u_j)] from exact
    interval propagation of g's layers 1..layer over the box contains neuron j's reachable range."""
    lo, up = b.net_box()
    for w, bias in g[:layer]:
        lo, up = ([max(v, Fraction(0)) for v in z] for z in interval_dense((qmat(w), qvec(bias)), lo, up))
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


def apply_low_rank(b: Build, i: int, t: LowRank, g: list[Layer]) -> list[Layer]:
    w1, b1, w, bias = _layers(g, t.layer)
    u = float_array(b.spec, i, t, b.materialized, "U", (len(b1), t.rank), b.used)
    v = float_array(b.spec, i, t, b.materialized, "V", (t.rank, len(w1[0])), b.used)
    return _store(g, t.layer, product(u, v, len(w1[0])), b1, w, bias)


def apply_merge(b: Build, i: int, t: Merge, g: list[Layer]) -> list[Layer]:
    """Block unit at the block's smallest index: summed in, averaged out; the other members zeroed."""
    w1, b1, w, bias = _layers(g, t.layer)
    for block in merge_blocks(b.spec, i, t, len(b1), b.materialized, used=b.used):
        m, rest = min(block), [j for j in block if j != min(block)]
        w1[m], b1[m] = [sum(col) for col in zip(*(w1[j] for j in block))], sum(b1[j] for j in block)
        for row in w:
            row[m] = sum(row[j] for j in block) / len(block)
        for j in rest:
            w1[j], b1[j] = [Fraction(0)] * len(w1[j]), Fraction(0)
            for row in w:
                row[j] = Fraction(0)
    return _store(g, t.layer, w1, b1, w, bias)


def apply_pca(b: Build, i: int, t: PCA, g: list[Layer]) -> list[Layer]:
    """The next layer reads mu + P P^T (h - mu): W' = W P P^T, b' = b + W (mu - P P^T mu)."""
    w1, b1, w, bias = _layers(g, t.layer)
    width = len(b1)
    p = float_array(b.spec, i, t, b.materialized, "P", (width, len(t.keep)), b.used)
    mu = float_array(b.spec, i, t, b.materialized, "mean", (width,), b.used)
    pt = [list(col) for col in zip(*p)]
    shift = [m - x for m, (x,) in zip(mu, product(p, product(pt, [[m] for m in mu], 1), 1))]
    bias = [v + x for v, (x,) in zip(bias, product(w, [[x] for x in shift], 1))]
    return _store(g, t.layer, w1, b1, product(product(w, p, len(t.keep)), pt, width), bias)


def apply_quantize(b: Build, i: int, t: Quantize, g: list[Layer]) -> list[Layer]:
    """s = max|W| / (2^(bits-1) - 1); W' = s * round_half_even(W / s)."""
    w1, b1, w, bias = _layers(g, t.layer)
    top = max(abs(x) for row in w1 for x in row)
    s = top / (2 ** (t.bits - 1) - 1)
    return _store(g, t.layer, [[s * round(x / s) for x in row] for row in w1] if top else w1, b1, w, bias)


def apply_model(b: Build, i: int, t: SecondModel, g: list[Layer]) -> list[Layer]:
    spec, f = b.spec, b.f
    other = read_model(t.model.path, t.model.sha256, f"{spec.explanation_key}[{i}].model.sha256")
    if other.widths != f.widths or (other.input_scale, other.input_shift) != (f.input_scale, f.input_shift):
        raise spec.error(f"{spec.explanation_key}[{i}].model", f"architecture {other.widths} differs from the model's {f.widths}",
                         "g must have f's layer widths and input normalisation", t.line)
    return exact_layers(other)


def apply_replace(b: Build, index: int, t: Replace, g: list[Layer]) -> list[Layer]:
    """g with its dense layers k..m (1-based) replaced by the sub-model's layers (the last transform)."""
    spec, (k, m), key = b.spec, t.layers, _key(b.spec, index, t)
    spec.need(m <= len(g), f"{key}.layers", f"layer {m} does not exist", f"use layers in 1..{len(g)}", t.line)
    sub = read_model(t.model.path, t.model.sha256, f"{key}.model.sha256")
    dims = (len(g[k - 1][0][0]), len(g[m - 1][1]))
    spec.need(sub.input_scale is None and (sub.in_dim, sub.out_dim) == dims, f"{key}.model", f"the sub-model maps {sub.in_dim} -> "
              f"{sub.out_dim}" + (" after an input affine layer" if sub.input_scale is not None else ""),
              f"layers {k}..{m} map {dims[0]} -> {dims[1]}: give a dense/relu/.../dense model of those widths", t.line)
    return g[:k - 1] + exact_layers(sub) + g[m:]


def pinned_arrays(spec, key: str, ref: ModelRef, line, also: str = "") -> dict:
    """The arrays of a file the spec pins by sha256 (a mismatch is bad input, like a model's)."""
    digest = sha256_file(ref.path)
    spec.need(digest == ref.sha256, f"{key}.sha256", f"{ref.path.name}: sha256 mismatch (the file hashes to {digest})",
              f"if this file is the one you mean, write that hash in the spec{also}", line)
    return read_arrays(ref.path)


def sae_arrays(spec, key: str, t: Sae, width: int) -> dict:
    """W_enc, b_enc, W_dec, b_dec as exact rows/vectors, shapes checked against the site's width."""
    arrays, out = pinned_arrays(spec, key, t.model, t.line), {}
    m = arrays.get("W_enc", ((0, 0), ()))[0][-1] if "W_enc" in arrays and len(arrays["W_enc"][0]) == 2 else None
    spec.need("threshold" not in arrays, f"{key}.path", "a JumpReLU SAE (it has `threshold`) is not supported yet",
              "use a ReLU SAE (W_enc, b_enc, W_dec, b_dec)", t.line)
    for name, shape in (("W_enc", (width, m)), ("b_enc", (m,)), ("W_dec", (m, width)), ("b_dec", (width,))):
        got = tuple(arrays[name][0]) if name in arrays else None
        spec.need(m and got == shape, f"{key}.path", f"{t.model.path.name}: {name} has shape {got}, expected {shape} for "
                  f"site width {width}", "give an SAE of the site's width (SAELens layout: W_enc (d, m), W_dec (m, d))", t.line)
        flat = [Fraction(v) for v in arrays[name][1]]
        out[name] = [flat[r * shape[1]:(r + 1) * shape[1]] for r in range(shape[0])] if len(shape) == 2 else flat
    bad = [j for j in t.features or () if j >= m]
    spec.need(not bad, f"{key}.features", f"features {bad[:5]} do not exist (the SAE has {m})", f"list features in 0..{m - 1}", t.line)
    return out


def apply_sae(b: Build, i: int, t: Sae, g):
    """g's value at the site becomes the SAE's reconstruction; the nodes downstream of the site are
    copied (named `g<i>.<name>`) to read it, the rest stay shared with f."""
    from .graph import Node, make_graph

    spec, key = b.spec, _key(b.spec, i, t)
    names = [n.name for n in g.nodes]
    spec.need(t.site in names, f"{key}.site", f"no value named {t.site!r} in the model", f"use one of {', '.join(names[:12])}", t.line)
    a = sae_arrays(spec, key, t, g.dims[t.site])
    keep = list(t.features) if t.features is not None else list(range(len(a["b_enc"])))
    w_enc_t = [[a["W_enc"][r][j] for r in range(len(a["b_dec"]))] for j in keep]  # (kept, d)
    pre_b = [a["b_enc"][j] - sum(w * c for w, c in zip(row, a["b_dec"])) for j, row in zip(keep, w_enc_t)]
    w_dec_t = [[a["W_dec"][j][r] for j in keep] for r in range(len(a["b_dec"]))]  # (d, kept)
    pre, act, out = f"g{i}.sae.pre", f"g{i}.sae.act", f"g{i}.sae.out"
    sae = [Node(pre, "linear", (t.site,), tuple(map(tuple, w_enc_t)), tuple(pre_b)), Node(act, "relu", (pre,)),
           Node(out, "linear", (act,), tuple(map(tuple, w_dec_t)), tuple(a["b_dec"]))]
    down, rename = {t.site}, {t.site: out}
    for n in g.nodes:
        if n.name != t.site and down.intersection(n.inputs):
            down.add(n.name)
            rename[n.name] = f"g{i}.{n.name}"
    kept = [n for n in g.nodes if n.name not in down or n.name == t.site]
    copies = [Node(rename[n.name], n.op, tuple(rename.get(s, s) for s in n.inputs), n.weight, n.bias, n.scale, n.shift)
              for n in g.nodes if n.name in down and n.name != t.site]
    return make_graph(g.in_dim, kept + sae + copies, rename.get(g.output, g.output), key)


# --------------------------------------------------------------------------- reading from the spec


def read_prune(r, body, key, line, kind):
    t = r.mapping(body, key, ("layer", "keep"), ("fill",))
    keep = r.indices(t["keep"], f"{key}.keep", "neuron")
    layer = r.integer(t["layer"], f"{key}.layer", 1)
    fill = t.get("fill")
    if fill is None or r.is_scalar(fill):
        name = "zero" if fill is None else r.string(fill, f"{key}.fill", ("zero", "mean", "free"))
        return Prune(layer, keep, name, line=line, kind=kind)
    f = r.mapping(fill, f"{key}.fill", (), ("constant", "mean"))
    r.need(len(f) == 1, fill, f"{key}.fill", "give one fill",
           "write zero, mean, free, {constant: 0.5} or {mean: {samples: 1000, seed: 0}}")
    if "constant" in f:
        value = r.vector(f["constant"], f"{key}.fill.constant")
        r.need(not isinstance(value, Path), f["constant"], f"{key}.fill.constant", "a file is not accepted here",
               "write a number or a list of numbers")
        return Prune(layer, keep, "constant", constant=value, line=line, kind=kind)
    mm = r.mapping(f["mean"], f"{key}.fill.mean", (), ("samples", "seed"))
    samples, seed = r.samples_seed(mm, f"{key}.fill.mean")
    return Prune(layer, keep, "mean", samples=samples, seed=seed, line=line, kind=kind)


def read_low_rank(r, body, key, line, kind):
    t = r.mapping(body, key, ("layer",), ("rank", "keep", "arrays"))
    keep, rank = r.count_or_keep(t, body, key, "rank", 0)
    return LowRank(r.integer(t["layer"], f"{key}.layer", 1), len(keep), line, None if rank is not None else keep, r.arrays(t, key))


def read_merge(r, body, key, line, kind):
    t = r.mapping(body, key, ("layer", "groups"), ("seed", "arrays"))
    layer, groups = r.integer(t["layer"], f"{key}.layer", 1), t["groups"]
    if not r.is_seq(groups):
        seed = r.integer(t["seed"], f"{key}.seed") if "seed" in t else 0
        return Merge(layer, r.integer(groups, f"{key}.groups", 1), seed, line, r.arrays(t, key))
    for extra in ("seed", "arrays"):
        r.need(extra not in t, t.get(extra), f"{key}.{extra}", f"`{extra}` only applies to `groups: N` (clustering)", f"remove `{extra}:`")
    blocks = tuple(r.indices(n, f"{key}.groups[{i}]", "neuron") for i, n in enumerate(r.seq(groups, f"{key}.groups")))
    r.need(blocks and all(blocks), groups, f"{key}.groups", "empty group (or no groups)", "every group lists at least one neuron")
    flat = [j for b in blocks for j in b]
    twice = sorted({j for j in flat if flat.count(j) > 1})
    r.need(not twice, groups, f"{key}.groups", f"neurons {twice} are in more than one group", "put every neuron in exactly one group")
    return Merge(layer, blocks, line=line)


def read_pca(r, body, key, line, kind):
    t = r.mapping(body, key, ("layer",), ("components", "keep", "samples", "seed", "arrays"))
    keep, n = r.count_or_keep(t, body, key, "components", 1)
    return PCA(r.integer(t["layer"], f"{key}.layer", 1), keep, n, *r.samples_seed(t, key), line, r.arrays(t, key))


def read_quantize(r, body, key, line, kind):
    t = r.mapping(body, key, ("layer", "bits"))
    bits = r.integer(t["bits"], f"{key}.bits", 2)
    r.need(bits <= 32, t["bits"], f"{key}.bits", f"{bits} bits", "use 2..32 bits")
    return Quantize(r.integer(t["layer"], f"{key}.layer", 1), bits, line)


def read_model_transform(r, body, key, line, kind):
    return SecondModel(r.model_ref(body, key), line)


def read_replace(r, body, key, line, kind):
    t = r.mapping(body, key, ("layers", "model"))
    items = r.seq(t["layers"], f"{key}.layers")
    r.need(len(items) == 2, t["layers"], f"{key}.layers", "expected [k, m]", "write `layers: [2, 3]` (first and last replaced layer)")
    k, m = (r.integer(n, f"{key}.layers[{j}]", 1) for j, n in enumerate(items))
    r.need(k <= m, t["layers"], f"{key}.layers", f"first layer {k} > last layer {m}", "write the first replaced layer first")
    return Replace((k, m), r.model_ref(t["model"], f"{key}.model"), line)


def read_sae(r, body, key, line, kind):
    t = r.mapping(body, key, ("site", "path", "sha256"), ("features",))
    ref = ModelRef(r.file(t["path"], f"{key}.path"), r.sha(t["sha256"], f"{key}.sha256"), key, line)
    features = None
    if "features" in t and r.is_seq(t["features"]):
        features = r.indices(t["features"], f"{key}.features", "feature")
        r.need(features, t["features"], f"{key}.features", "no features", "keep at least one feature, or write `features: all`")
    elif "features" in t:
        r.string(t["features"], f"{key}.features", ("all",))
    return Sae(r.string(t["site"], f"{key}.site"), ref, features, line)


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Unit:
    """One transform's exact half. `arrays`: the names of its float arrays (pinned or materialised),
    empty for an exact transform; `floating(t)` says whether this instance reads them."""

    cls: type
    read: Callable  # (reader, body node, key, line, kind as written) -> transform
    validate: Callable  # (spec, index, t, g) -> None, or bad input
    apply: Callable  # (Build, index, t, g) -> g
    arrays: tuple[str, ...] = ()
    floating: Callable = lambda t: False
    graph: bool = False  # True: for graph models (named values); False: for dense/ReLU MLPs (numbered layers)


UNITS: dict[str, Unit] = {
    "prune": Unit(Prune, read_prune, validate_layer, apply_prune),
    "low_rank": Unit(LowRank, read_low_rank, validate_layer, apply_low_rank, ("U", "V"), lambda t: True),
    "merge": Unit(Merge, read_merge, validate_layer, apply_merge, ("labels",), lambda t: isinstance(t.groups, int)),
    "pca": Unit(PCA, read_pca, validate_layer, apply_pca, ("P", "mean"), lambda t: True),
    "quantize": Unit(Quantize, read_quantize, validate_layer, apply_quantize),
    "model": Unit(SecondModel, read_model_transform, no_validation, apply_model),
    "replace": Unit(Replace, read_replace, no_validation, apply_replace),
    "sae": Unit(Sae, read_sae, no_validation, apply_sae, graph=True),
}
ALIASES = {"ablate": "prune"}  # another name in the spec, the same unit
FLOAT_ARRAYS = {kind: u.arrays for kind, u in UNITS.items() if u.arrays}  # a pinned file's arrays, per kind
_BY_CLASS = {u.cls: u for u in UNITS.values()}


def unit(t) -> Unit:
    """The registered unit of a transform (KeyError for a type nobody registered: no fallback)."""
    return _BY_CLASS[type(t)]


def is_float(t) -> bool:
    """Does the transform read float arrays (an SVD, principal components, k-means labels)?"""
    return unit(t).floating(t)
