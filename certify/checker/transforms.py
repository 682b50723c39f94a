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

import json
import math
import re
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
    layer: int | str  # a dense layer (1-based), or on a graph model the name of a linear node
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
class Transcoder:
    """On a graph model, the MLP branch m(r) of the residual block `block` (an add node r + m(r)) is
    replaced by a transcoder reading the block's input r: g's block is r + act(r W_enc + b_enc)[F] W_dec[F]
    + b_dec, act ReLU or JumpReLU; F the kept `features` (None: all). Files as for `sae`."""

    kind: ClassVar[str] = "transcoder"
    block: str
    model: ModelRef
    features: tuple[int, ...] | None = None
    line: int | None = field(default=None, compare=False)
    cfg: ModelRef | None = None


@dataclass(frozen=True)
class Ablate:
    """On a graph model, coordinates `indices` (None: all) of the value at `site` are replaced by `fill`:
    zero, constants, their exact mean over domain_points (a site that only rational ops reach), or free
    values v_j, each in a range R_j that the checker derives by exact interval propagation over the box
    (so R_j contains the coordinate's reachable range), the worst case taken over x and v together."""

    kind: ClassVar[str] = "ablate"
    site: str
    indices: tuple[int, ...] | None
    fill: str  # "zero" | "constant" | "mean" | "free"
    constant: tuple[Fraction, ...] | Fraction | None = None
    samples: int = 1000
    seed: int = 0
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Sae:
    """On a graph model, the value v at `site` is replaced by a sparse autoencoder's reconstruction
    act((v - b_dec) W_enc + b_enc)[F] W_dec[F] + b_dec, act ReLU or JumpReLU, F the kept `features`
    (None: all). Files: an .npz (W_enc (d, m), b_enc (m), W_dec (m, d), b_dec (d), optional threshold (m):
    JumpReLU), or the SAELens layout (a directory with cfg.json and sae_weights.safetensors, or the
    .safetensors file beside its cfg.json), each file pinned by its own sha256 (`sha256`, `cfg_sha256`)."""

    kind: ClassVar[str] = "sae"
    site: str
    model: ModelRef
    features: tuple[int, ...] | None = None
    line: int | None = field(default=None, compare=False)
    cfg: ModelRef | None = None


@dataclass(frozen=True)
class Attention:
    """On a graph model, head `head`'s attention pattern (the value `<head>.pattern`: one weight per (query, key)
    pair, query rows in order) replaced by a fixed one: `uniform` (1/|row| on each key of a query's row), given
    weights (one list per row, keys in position order, each row >= 0 summing to 1) or, on a token domain,
    `max_token` (all weight on the key holding the largest token id, the last such key on ties)."""

    kind: ClassVar[str] = "attention"
    head: str
    pattern: str | tuple[tuple[Fraction, ...], ...]
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class CircuitRank:
    """On a graph model, head `head`'s QK circuit (the d x d matrix W_Q W_K^T of its `<head>.q`, `<head>.k` nodes'
    diagonal blocks) or OV circuit (the diagonal block of `<head>.ov`) replaced by U V (its truncated SVD, the
    pinned `arrays`): g's q and k blocks become U^T and V (zero rows padded), or g's ov blocks U V."""

    kind: ClassVar[str] = "low_rank_circuit"
    head: str
    circuit: str  # "qk" | "ov"
    rank: int
    line: int | None = field(default=None, compare=False)
    keep: tuple[int, ...] | None = None
    arrays: ModelRef | None = None


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
    from .graph import Graph

    if isinstance(g, Graph):  # low_rank, the one numbered-layer kind that also names a graph's linear node
        low_rank_node(spec, index, t, g)
        return
    key, n = _key(spec, index, t), len(g)
    spec.need(isinstance(t.layer, int), f"{key}.layer", f"{t.layer!r}: a dense MLP's layers are numbered", "write the layer's number", t.line)
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


def low_rank_node(spec, index: int, t: LowRank, g):
    """On a graph model: g's current linear node named `layer`, the rank within min(out, in)."""
    key = _key(spec, index, t)
    spec.need(isinstance(t.layer, str), f"{key}.layer", "a graph model has no numbered layers", "name a linear node (e.g. block1.up)", t.line)
    node = g.by_name[_site(spec, key, g, t.layer, t.line, "layer")]
    spec.need(node.op == "linear", f"{key}.layer", f"{t.layer!r} is a {node.op} node", "name a linear node", t.line)
    limit = min(len(node.weight), len(node.weight[0]))
    spec.need(t.rank <= limit and max(t.keep or [0]) < limit, f"{key}.{'rank' if t.keep is None else 'keep'}",
              f"rank {t.rank} exceeds min(out, in) = {limit}" if t.keep is None else f"singular directions beyond {limit - 1}",
              f"use a rank <= {limit}", t.line)
    return node


def apply_low_rank(b: Build, i: int, t: LowRank, g: list[Layer]) -> list[Layer]:
    from .graph import Graph

    if isinstance(g, Graph):  # the node's weight becomes U V, read by copies of the nodes downstream of it
        from dataclasses import replace

        node = low_rank_node(b.spec, i, t, g)
        b.spec.need(t.arrays is not None or f"explanation.{i}.U" in (b.materialized or {}), f"{_key(b.spec, i, t)}.arrays",  # (materialised: by pin)
                    "on a graph model the factors U, V must be pinned by the spec", "run `certify pin SPEC` (it writes `arrays: {path, sha256}`)", t.line)
        u = float_array(b.spec, i, t, b.materialized, "U", (len(node.weight), t.rank), b.used)
        v = float_array(b.spec, i, t, b.materialized, "V", (t.rank, len(node.weight[0])), b.used)
        new = replace(node, name=f"g{i}.{t.layer}", weight=tuple(map(tuple, product(u, v, len(node.weight[0])))))
        return splice(g, node.name, [new], new.name, i, _key(b.spec, i, t))
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


# SAELens architectures modelled exactly, per kind: name -> JumpReLU? Anything else (topk, batchtopk,
# gated, skip_transcoder, ...) is refused with one line.
ARCHITECTURES = {"sae": {"standard": False, "jumprelu": True}, "transcoder": {"transcoder": False, "jumprelu_transcoder": True}}
FIX_DICT = "give a ReLU or JumpReLU {kind} (SAELens architecture {names}, or an .npz of W_enc, b_enc, W_dec, b_dec[, threshold])"


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")
    return dict(pairs)


def dictionary_cfg(spec, key: str, t) -> tuple[bool | None, bool, dict]:
    """An SAELens cfg.json (hash-checked): (JumpReLU?, apply_b_dec_to_input, cfg). An .npz has no cfg: its
    `threshold` array says JumpReLU; an SAE subtracts b_dec from its input, a transcoder does not."""
    if t.cfg is None:
        return None, t.kind == "sae", {}
    digest = sha256_file(t.cfg.path)
    spec.need(digest == t.cfg.sha256, f"{key}.cfg_sha256", f"cfg.json: sha256 mismatch (the file hashes to {digest})",
              "if this cfg.json is the one you mean, write that hash in the spec", t.line)
    try:
        cfg = json.loads(t.cfg.path.read_text(encoding="utf-8"), object_pairs_hook=_no_duplicates)
        assert isinstance(cfg, dict)
    except (ValueError, AssertionError, OSError) as exc:
        raise spec.error(f"{key}.path", f"{t.cfg.path}: not a JSON object ({str(exc)[:60]})", "give SAELens's cfg.json", t.line) from None
    names = ARCHITECTURES[t.kind]
    arch = cfg.get("architecture", next(iter(names)))
    act = cfg.get("activation_fn_str", cfg.get("activation_fn", "relu"))
    fix = FIX_DICT.format(kind=t.kind, names=" or ".join(names))
    problems = [(arch in names, f"architecture {arch!r} is not modelled"), (act == "relu", f"activation {act!r} is not modelled"),
                (cfg.get("normalize_activations") in (None, "none"), f"normalize_activations {cfg.get('normalize_activations')!r} "
                 "rescales the input at run time (not modelled)"),
                (cfg.get("reshape_activations") in (None, "none"), "reshape_activations is not modelled"),
                (not cfg.get("finetuning_scaling_factor"), "finetuning_scaling_factor is not modelled"),
                (cfg.get("apply_b_dec_to_input", t.kind == "sae") in ((True, False) if t.kind == "sae" else (False,)),
                 "apply_b_dec_to_input must be true or false" + ("" if t.kind == "sae" else " (false for a transcoder)"))]
    what = next((w for ok, w in problems if not ok), None)
    spec.need(what is None, f"{key}.path", f"{t.cfg.path}: {what}", fix, t.line)
    return names[arch], cfg.get("apply_b_dec_to_input", t.kind == "sae"), cfg


def dictionary(spec, key: str, t, d_in: int, d_out: int) -> dict:
    """An SAE's or transcoder's exact weights: W_enc rows (d_in, m), b_enc, W_dec rows (m, d_out), b_dec,
    `threshold` (m; None for ReLU) and `centre` (subtract b_dec from the input), shapes checked."""
    from .safetensors import read_safetensors

    jump, centre, cfg = dictionary_cfg(spec, key, t)
    digest = sha256_file(t.model.path)
    spec.need(digest == t.model.sha256, f"{key}.sha256", f"{t.model.path.name}: sha256 mismatch (the file hashes to {digest})",
              "if this file is the one you mean, write that hash in the spec", t.line)
    arrays = read_safetensors(t.model.path) if t.model.path.suffix == ".safetensors" else read_arrays(t.model.path)
    jump = "threshold" in arrays if jump is None else jump
    m = arrays["W_enc"][0][-1] if "W_enc" in arrays and len(arrays["W_enc"][0]) == 2 else 0
    names = ("W_enc", "b_enc", "W_dec", "b_dec") + (("threshold",) if jump else ())
    extra = sorted(set(arrays) - set(names))
    spec.need(not extra, f"{key}.path", f"{t.model.path.name}: tensors {extra} are not modelled" + (" (JumpReLU needs `threshold`, "
              "not log_threshold)" if "log_threshold" in extra else ""), FIX_DICT.format(kind=t.kind, names=" or ".join(ARCHITECTURES[t.kind])), t.line)
    out = {"centre": centre, "threshold": None}
    for name, shape in (("W_enc", (d_in, m)), ("b_enc", (m,)), ("W_dec", (m, d_out)), ("b_dec", (d_out,)), ("threshold", (m,))):
        if name not in names:
            continue
        got = tuple(arrays[name][0]) if name in arrays else None
        spec.need(m and got == shape, f"{key}.path", f"{t.model.path.name}: {name} has shape {got}, expected {shape} for "
                  f"{'site width' if t.kind == 'sae' else 'block widths'} {d_in}", f"give a {t.kind} of these widths "
                  "(SAELens layout: W_enc (d_in, d_sae), W_dec (d_sae, d_out))", t.line)
        flat = [Fraction(v) for v in arrays[name][1]]
        out[name] = [flat[r * shape[1]:(r + 1) * shape[1]] for r in range(shape[0])] if len(shape) == 2 else flat
    sizes = [(k, cfg[k], v) for k, v in (("d_in", d_in), ("d_sae", m), ("d_out", d_out)) if k in cfg]
    bad = next(((k, c, v) for k, c, v in sizes if c != v), None)
    spec.need(bad is None, f"{key}.path", f"cfg.json says {bad and bad[0]} = {bad and bad[1]} but the weights give {bad and bad[2]}",
              "give the cfg.json saved with these weights", t.line)
    missing = [j for j in t.features or () if j >= m]
    spec.need(not missing, f"{key}.features", f"features {missing[:5]} do not exist (the {t.kind} has {m})", f"list features in 0..{m - 1}", t.line)
    return out


def dictionary_nodes(a: dict, features, source: str, prefix: str) -> list:
    """Encoder, activation and decoder of an SAE/transcoder as graph nodes reading `source`; the last is the output.
    JumpReLU features relu(z)*[z > t] are z*[z > max(t, 0)], one jumprelu node."""
    from .graph import Node

    keep = list(features) if features is not None else list(range(len(a["b_enc"])))
    d_in = len(a["W_enc"])
    w_enc_t = [[a["W_enc"][r][j] for r in range(d_in)] for j in keep]  # (kept, d_in)
    shift = a["b_dec"] if a["centre"] else [Fraction(0)] * d_in
    pre_b = [a["b_enc"][j] - sum(w * c for w, c in zip(row, shift)) for j, row in zip(keep, w_enc_t)]
    w_dec_t = [[a["W_dec"][j][r] for j in keep] for r in range(len(a["b_dec"]))]  # (d_out, kept)
    act = (Node(f"{prefix}.act", "relu", (f"{prefix}.pre",)) if a["threshold"] is None else
           Node(f"{prefix}.act", "jumprelu", (f"{prefix}.pre",), threshold=tuple(max(a["threshold"][j], Fraction(0)) for j in keep)))
    return [Node(f"{prefix}.pre", "linear", (source,), tuple(map(tuple, w_enc_t)), tuple(pre_b)), act,
            Node(f"{prefix}.out", "linear", (act.name,), tuple(map(tuple, w_dec_t)), tuple(a["b_dec"]))]


def splice(g, site: str, nodes: list, value: str, i: int, key: str):
    """g whose nodes downstream of `site` read `value` (made by `nodes`) instead: those nodes are copied
    (named `g<i>.<name>`), the rest stay shared with f."""
    from dataclasses import replace

    from .graph import make_graph

    down, rename = {site}, {site: value}
    for n in g.nodes:
        if n.name != site and down.intersection(n.inputs):
            down.add(n.name)
            rename[n.name] = n.name if n.name.startswith(f"g{i}.") else f"g{i}.{n.name}"  # a second splice of transform i
    kept = [n for n in g.nodes if n.name not in down or n.name == site]
    copies = [replace(n, name=rename[n.name], inputs=tuple(rename.get(s, s) for s in n.inputs)) for n in g.nodes if n.name in down and n.name != site]
    return make_graph(g.in_dim, kept + nodes + copies, rename.get(g.output, g.output), key)


def _site(spec, key: str, g, site: str, line, what: str = "site") -> str:
    """g's current node for the model's value `site`: the site itself, or its latest copy `g<k>.<site>` made by an
    earlier transform (the copy is what g's output reads)."""
    names, found = [n.name for n in g.nodes], current(g, site)
    spec.need(found, f"{key}.{what}", f"no value named {site!r} in the model", f"use one of {', '.join(names[:12])}", line)
    return found


def current(g, name: str) -> str | None:
    """g's node for the model's value `name`: its latest copy `g<k>.<name>` (copies come later), or itself."""
    found = [n.name for n in g.nodes if n.name == name or re.fullmatch(r"g[0-9]+\." + re.escape(name), n.name)]
    return found[-1] if found else None


def apply_sae(b: Build, i: int, t: Sae, g):
    """g's value at the site becomes the SAE's reconstruction (`splice`)."""
    spec, key = b.spec, _key(b.spec, i, t)
    site = _site(spec, key, g, t.site, t.line)
    width = g.dims[site]
    nodes = dictionary_nodes(dictionary(spec, key, t, width, width), t.features, site, f"g{i}.sae")
    return splice(g, site, nodes, nodes[-1].name, i, key)


def residual_input(spec, key: str, g, t) -> str:
    """The block's residual input r: of the add node's two inputs, the one the other (the MLP branch) reads."""
    from .graph import ancestors

    node = g.by_name[_site(spec, key, g, t.block, t.line, "block")]
    ok = node.op == "add" and len(node.inputs) == 2
    pairs = (node.inputs, node.inputs[::-1]) if ok else ()
    reads = [a for a, c in pairs if a != c and a in {n.name for n in ancestors(g, c)} | {"x"}]
    spec.need(len(reads) == 1, f"{key}.block", f"{t.block!r} is not a residual block r + m(r) (an add node whose one input reads the other)",
              "name the add node that closes an MLP block (resmlp: block1)", t.line)
    return reads[0]


def apply_transcoder(b: Build, i: int, t: Transcoder, g):
    """g's block becomes r + transcoder(r): its MLP branch is dropped from g, the rest spliced as for sae."""
    from .graph import Node

    spec, key = b.spec, _key(b.spec, i, t)
    r, block = residual_input(spec, key, g, t), _site(spec, key, g, t.block, t.line, "block")
    nodes = dictionary_nodes(dictionary(spec, key, t, g.dims[r], g.dims[block]), t.features, r, f"g{i}.tc")
    nodes.append(Node(f"g{i}.tc.block", "add", (r, nodes[-1].name)))
    return splice(g, block, nodes, nodes[-1].name, i, key)


def site_ranges(g, site: str, box, prepared: dict | None = None) -> tuple[list[Fraction], list[Fraction]]:
    """Exact interval bounds of the value at `site` over the box, by the checker's interval rules."""
    from .graph import OPS, ancestors

    bounds, prepared = {"x": (list(box[0]), list(box[1]))}, {} if prepared is None else prepared
    for n in ancestors(g, site):
        if n.name not in prepared:
            prepared[n.name] = OPS[n.op].prepare(n)
        bounds[n.name] = OPS[n.op].interval(n, [bounds[s] for s in n.inputs], prepared[n.name])
    return bounds[site]


def site_mean(spec, key: str, g, site: str, box, count: int, seed: int, line) -> list[Fraction]:
    """The exact mean of the value at `site` over domain_points: each point through the exact interval rules on
    a point box (exact for rational ops); a site that a curve (gelu, rsqrt, ...) reaches has no rational mean."""
    from .graph import CURVE_OPS, ancestors

    curves_ = sorted({n.op for n in ancestors(g, site) if n.op in CURVE_OPS + ("free",)})
    spec.need(not curves_, f"{key}.fill", f"the value at {site!r} passes through {', '.join(curves_)}: its mean over the sample points "
              "is not a rational number (or not one value)", "use fill: zero, free or {constant: ...} at this site (or mean at a site before them)", line)
    rows, den = domain_points(*box, count, seed)
    total, prepared = None, {}
    for row in rows:
        x = [Fraction(v, den) for v in row]
        lo, _ = site_ranges(g, site, (x, x), prepared)
        total = lo if total is None else [a + c for a, c in zip(total, lo)]
    return [v / count for v in total]


def apply_ablate(b: Build, i: int, t: Ablate, g):
    """Coordinates J of the site's value replaced: y = s*v + c (s_j = 0, c_j = fill_j on J; an affine node),
    or for `fill: free` y_j = a free value in R_j (a `free` node, its range from site_ranges)."""
    from .graph import Node

    spec, key = b.spec, _key(b.spec, i, t)
    site = _site(spec, key, g, t.site, t.line)
    width = g.dims[site]
    bad = [j for j in t.indices or () if j >= width]
    spec.need(not bad, f"{key}.indices", f"coordinates {bad[:5]} do not exist ({t.site!r} has {width})", f"list indices in 0..{width - 1}", t.line)
    J = list(t.indices) if t.indices is not None else list(range(width))
    if t.fill == "free":
        try:
            lo, up = site_ranges(g, site, b.domain())
        except ValueError as exc:  # a curve's interval leaves its domain or the checker's range (2^16384) on the way
            spec.need(False, f"{key}.fill", f"the range of {t.site!r} over the domain has no exact interval bound ({exc})",
                      "use fill: zero or {constant: ...}, or narrow the input domain", t.line)
        free = Node(f"g{i}.ablate.free", "free", (site,), lower=tuple(lo), upper=tuple(up))
        scale = tuple(Fraction(int(j not in J)) for j in range(width))
        mix = [free, Node(f"g{i}.ablate.kept", "affine", (site,), scale=scale, shift=(Fraction(0),) * width),
               Node(f"g{i}.ablate.mask", "affine", (free.name,), scale=tuple(1 - v for v in scale), shift=(Fraction(0),) * width)]
        nodes = mix + [Node(f"g{i}.ablate", "add", (mix[1].name, mix[2].name))]
        return splice(g, site, nodes, nodes[-1].name, i, key)
    if t.fill == "mean":
        values = site_mean(spec, key, g, site, b.domain(), t.samples, t.seed, t.line)
        fill = [values[j] for j in J]
    elif isinstance(t.constant, tuple):
        spec.need(len(t.constant) == len(J), f"{key}.fill.constant", f"{len(t.constant)} values for {len(J)} ablated coordinates",
                  "give one value per ablated coordinate (in the order of indices) or a single number", t.line)
        fill = list(t.constant)
    else:
        fill = [t.constant if t.fill == "constant" else Fraction(0)] * len(J)
    c = dict(zip(J, fill))
    node = Node(f"g{i}.ablate", "affine", (site,), scale=tuple(Fraction(int(j not in c)) for j in range(width)),
                shift=tuple(c.get(j, Fraction(0)) for j in range(width)))
    return splice(g, site, [node], node.name, i, key)


def softmax_rows(g, site: str) -> list[list[int]] | None:
    """The rows (each query's entries, in order) of a softmax pattern value: a `softmax` node's groups, or
    TransformerBuilder's difference form (1 / denominator, its row r summing exp(diffs t), diffs row t = s_l - s_r:
    r's row is r and every such l). None for another value, or rows that overlap."""
    node, by = g.by_name[site], g.by_name
    if node.op == "softmax":
        return [[j for j, c in enumerate(node.groups) if c == u] for u in dict.fromkeys(node.groups)]
    den = by.get(node.inputs[0]) if node.op == "reciprocal" else None
    exp = den and den.op == "linear" and by.get(den.inputs[0])
    diffs = exp and exp.op == "exp" and by.get(exp.inputs[0])
    if not (diffs and diffs.op == "linear"):
        return None
    rows = [tuple(sorted({r} | {l for t, w in enumerate(d) if w for l, v in enumerate(diffs.weight[t]) if v == 1})) for r, d in enumerate(den.weight)]
    out = [list(v) for v in dict.fromkeys(rows)]
    return out if sorted(j for v in out for j in v) == list(range(len(rows))) else None


def pattern_rows(spec, key: str, g, head: str, line) -> tuple[str, list[list[int]]]:
    site = _site(spec, key, g, f"{head}.pattern", line, "head")
    rows = softmax_rows(g, site)
    spec.need(rows, f"{key}.head", f"{site!r} is not a softmax pattern (a softmax node, or 1 / sum exp(s_l - s_r) with rows that do not overlap)",
              "name a head built by certify.model.transformer (e.g. blocks.0.attn.h0)", line)
    return site, rows


def apply_attention(b: Build, i: int, t: Attention, g):
    """The pattern value replaced by constants: y = 0 * pattern + w (an affine node), `splice`d into g."""
    from .graph import Node

    spec, key = b.spec, _key(b.spec, i, t)
    site, rows = pattern_rows(spec, key, g, t.head, t.line)
    if t.pattern == "max_token":
        nodes = max_token_nodes(spec, key, t, g, rows, f"g{i}.attention")
        return splice(g, site, nodes, nodes[-1].name, i, key)
    if t.pattern == "uniform":
        given = [[Fraction(1, len(r))] * len(r) for r in rows]
    else:
        given = [list(w) for w in t.pattern]
        sizes = [len(r) for r in rows]
        spec.need([len(w) for w in given] == sizes, f"{key}.pattern", f"rows of {[len(w) for w in given]} weights; the head's rows "
                  f"have {sizes} keys", "give one list per query row, one weight per key (causal: keys 0..query)", t.line)
    w = {j: v for r, ws in zip(rows, given) for j, v in zip(r, ws)}
    width = g.dims[site]
    node = Node(f"g{i}.attention", "affine", (site,), scale=(Fraction(0),) * width, shift=tuple(w[j] for j in range(width)))
    return splice(g, site, [node], node.name, i, key)


def max_token_nodes(spec, key: str, t: Attention, g, rows: list[list[int]], name: str) -> list:
    """All weight on the key holding the largest token (the last such key on ties), a polynomial in the one-hot x:
    a_j = sum_t x_{j,t} prod_{l < j} F_l(t) prod_{l > j} F_l(t - 1), F_l(t) = sum_{s <= t} x_{l,s} (keys 0..|row|-1).
    Nodes: x_{j,t} for every entry (r, t), one `mul` by the next factor per other key (1 where a row has no more), a sum over t."""
    from .graph import Node

    spec.need(spec.input.kind == "tokens", f"{key}.pattern", "max_token reads the tokens: it needs a token domain", "use `input: tokens`", t.line)
    V, n = spec.input.tokens[0], spec.input.tokens[1]
    spec.need(max(len(r) for r in rows) <= n and g.in_dim == n * V, f"{key}.head", f"{t.head!r}'s rows do not fit {n} positions of {V} tokens",
              "name a causal head of this token model", t.line)
    entry = {r: (j, len(row)) for row in rows for j, r in enumerate(row)}
    width, zero, cols = sum(len(r) for r in rows), Fraction(0), n * V

    def linear(label, pick, bias, source="x"):  # pick(r, j, size) -> the x columns summed into entry (r, t), per t
        w = [[zero] * cols for _ in range(width * V)]
        for r in range(width):
            for tok, c in enumerate(pick(r, *entry[r])):
                for col in c:
                    w[r * V + tok][col] = Fraction(1)
        return Node(f"{name}.{label}", "linear", (source,), tuple(map(tuple, w)), tuple(Fraction(bias(r)) for r in range(width) for _ in range(V)))

    nodes = [linear("x0", lambda r, j, size: [[j * V + tok] for tok in range(V)], lambda r: 0)]
    for m in range(1, max(len(r) for r in rows)):
        def others(r, j, size, m=m):
            ls = [l for l in range(size) if l != j]
            if m > len(ls):
                return [[] for _ in range(V)]
            l = ls[m - 1]
            return [[l * V + s for s in range(tok + 1 if l < j else tok)] for tok in range(V)]
        factor = linear(f"f{m}", others, lambda r, m=m: int(m > entry[r][1] - 1))
        nodes += [factor, Node(f"{name}.p{m}", "mul", (nodes[-1].name, factor.name))]
    total = tuple(tuple(Fraction(int(c // V == r)) for c in range(width * V)) for r in range(width))
    return nodes + [Node(name, "linear", (nodes[-1].name,), total, (zero,) * width)]


def circuit_blocks(weight) -> tuple[int, list]:
    """(k, B): a weight that is k equal copies of the block B on its diagonal, k the largest such (1: B is the weight)."""
    rows, cols = len(weight), len(weight[0])
    for k in range(math.gcd(rows, cols), 0, -1):
        if rows % k or cols % k:
            continue
        r, c = rows // k, cols // k
        if all(weight[a][e] == (weight[a % r][e % c] if a // r == e // c else 0) for a in range(rows) for e in range(cols)):
            return k, [list(row[:c]) for row in weight[:r]]
    raise AssertionError("k = 1 always matches")


def circuit_nodes(spec, key: str, g, t: CircuitRank) -> list:
    """The head's circuit nodes (q and k, or ov), g's current ones; q and k without biases."""
    names = ("q", "k") if t.circuit == "qk" else ("ov",)
    nodes = [g.by_name[_site(spec, key, g, f"{t.head}.{n}", t.line, "head")] for n in names]
    spec.need(all(n.op == "linear" for n in nodes), f"{key}.head", f"{t.head!r}: its {'/'.join(names)} nodes are not linear",
              "name a head built by certify.model.transformer (e.g. blocks.0.attn.h0)", t.line)
    spec.need(t.circuit == "ov" or not any(any(n.bias or ()) for n in nodes), f"{key}.circuit", f"{t.head!r} has b_Q or b_K",
              "low-rank the OV circuit, or a head without query/key biases", t.line)
    return nodes


def apply_circuit_rank(b: Build, i: int, t: CircuitRank, g):
    """g's q, k (or ov) nodes rebuilt exactly from the pinned factors, block-diagonally, and `splice`d into g."""
    from dataclasses import replace

    spec, key = b.spec, _key(b.spec, i, t)
    nodes = circuit_nodes(spec, key, g, t)
    spec.need(t.arrays is not None or f"explanation.{i}.U" in (b.materialized or {}), f"{key}.arrays",  # (materialised: by `certify pin`)
              "the factors U, V must be pinned by the spec", "run `certify pin SPEC`", t.line)
    blocks = [circuit_blocks(n.weight) for n in nodes]
    (k, blk) = blocks[0]
    d_in, d_out = len(blk[0]), (len(blk) if t.circuit == "ov" else len(blk[0]))
    limit = min(len(blk), d_in, len(blocks[-1][1]))  # ov: the block's rank; qk: at most the head's width
    spec.need(t.rank <= limit and max(t.keep or [0]) < limit and (t.circuit == "ov" or blocks[1][0] == k), f"{key}.rank",
              f"rank {t.rank} for a circuit of rank at most {limit}" + ("" if t.circuit == "ov" or blocks[1][0] == k else " (q and k blocks differ)"),
              f"use a rank <= {limit}", t.line)
    u = float_array(spec, i, t, b.materialized, "U", (d_out, t.rank), b.used)
    v = float_array(spec, i, t, b.materialized, "V", (t.rank, d_in), b.used)
    if t.circuit == "ov":
        mats = [product(u, v, d_in)]
    else:  # q block U^T, k block V, each padded with zero rows to the head's width
        pad = [[Fraction(0)] * d_in for _ in range(len(blk) - t.rank)]
        mats = [[list(c) for c in zip(*u)] + pad, [list(r) for r in v] + [[Fraction(0)] * d_in for _ in range(len(blocks[1][1]) - t.rank)]]
    for n, m in zip(nodes, mats):
        r, c = len(m), len(m[0])
        weight = tuple(tuple(m[a % r][e % c] if a // r == e // c else Fraction(0) for e in range(k * c)) for a in range(k * r))
        new = replace(n, name=f"g{i}.{t.head}.{n.name.rsplit('.', 1)[1]}", weight=weight)
        g = splice(g, n.name, [new], new.name, i, key)
    return g


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
    named = r.is_scalar(t["layer"]) and not t["layer"].tag.endswith(":int")  # a graph model's linear node
    layer = r.string(t["layer"], f"{key}.layer") if named else r.integer(t["layer"], f"{key}.layer", 1)
    return LowRank(layer, len(keep), line, None if rank is not None else keep, r.arrays(t, key))


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


def read_dictionary(r, t, key, line):
    """`path` (an .npz; an SAELens directory; or its .safetensors beside cfg.json), `sha256` (of the weights
    file), `cfg_sha256` (of cfg.json: the SAELens layout only) and `features` (all, or a list)."""
    node = t["path"]
    rel = r.string(node, f"{key}.path")
    try:
        folder = (r.base / rel).resolve()
        folder = folder if folder.is_dir() else None
    except (OSError, RuntimeError):
        folder = None
    weights = folder / "sae_weights.safetensors" if folder else r.file(node, f"{key}.path")
    cfg = folder / "cfg.json" if folder else weights.with_name("cfg.json") if weights.suffix == ".safetensors" else None
    r.need(weights.suffix in (".npz", ".safetensors"), node, f"{key}.path", f"{weights.name}: not an .npz, a .safetensors or an SAELens directory",
           "give an .npz, or a directory with cfg.json and sae_weights.safetensors (SAELens's save_model)")
    for p in (weights, cfg):
        r.need(p is None or p.is_file(), node, f"{key}.path", f"{p and p.name} not found in {p and p.parent}",
               "an SAELens directory holds cfg.json and sae_weights.safetensors")
    r.need(("cfg_sha256" in t) == (cfg is not None), t.get("cfg_sha256", node), f"{key}.cfg_sha256",
           "missing: the SAELens layout pins cfg.json too" if cfg else "an .npz has no cfg.json",
           "write `cfg_sha256:` (run `sha256sum cfg.json`)" if cfg else "remove `cfg_sha256:`")
    features = None
    if "features" in t and r.is_seq(t["features"]):
        features = r.indices(t["features"], f"{key}.features", "feature")
        r.need(features, t["features"], f"{key}.features", "no features", "keep at least one feature, or write `features: all`")
    elif "features" in t:
        r.string(t["features"], f"{key}.features", ("all",))
    model = ModelRef(weights, r.sha(t["sha256"], f"{key}.sha256"), key, line)
    return model, features, None if cfg is None else ModelRef(cfg, r.sha(t["cfg_sha256"], f"{key}.cfg_sha256"), key, line)


def read_sae(r, body, key, line, kind):
    t = r.mapping(body, key, ("site", "path", "sha256"), ("features", "cfg_sha256"))
    model, features, cfg = read_dictionary(r, t, key, line)
    return Sae(r.string(t["site"], f"{key}.site"), model, features, line, cfg)


def read_transcoder(r, body, key, line, kind):
    t = r.mapping(body, key, ("block", "path", "sha256"), ("features", "cfg_sha256"))
    model, features, cfg = read_dictionary(r, t, key, line)
    return Transcoder(r.string(t["block"], f"{key}.block"), model, features, line, cfg)


def read_ablate(r, body, key, line, kind):
    """`ablate: {layer, keep, fill}` is prune (dense MLPs); `ablate: {site, indices, fill}` a graph value's coordinates."""
    if r.is_mapping(body) and any(k.value == "layer" for k, _ in body.value):
        return read_prune(r, body, key, line, kind)
    t = r.mapping(body, key, ("site",), ("indices", "fill"))
    indices = r.indices(t["indices"], f"{key}.indices", "coordinate") if "indices" in t else None
    r.need(indices is None or indices, t.get("indices"), f"{key}.indices", "empty list", "list at least one coordinate, or omit `indices:` (all)")
    site, fill = r.string(t["site"], f"{key}.site"), t.get("fill")
    if fill is None or r.is_scalar(fill):
        return Ablate(site, indices, "zero" if fill is None else r.string(fill, f"{key}.fill", ("zero", "mean", "free")), line=line)
    f = r.mapping(fill, f"{key}.fill", (), ("constant", "mean"))
    r.need(len(f) == 1, fill, f"{key}.fill", "give one fill", "write zero, mean, free, {constant: 0.5} or {mean: {samples: 1000, seed: 0}}")
    if "constant" in f:
        value = r.vector(f["constant"], f"{key}.fill.constant")
        r.need(not isinstance(value, Path), f["constant"], f"{key}.fill.constant", "a file is not accepted here", "write a number or a list of numbers")
        return Ablate(site, indices, "constant", value, line=line)
    samples, seed = r.samples_seed(r.mapping(f["mean"], f"{key}.fill.mean", (), ("samples", "seed")), f"{key}.fill.mean")
    return Ablate(site, indices, "mean", samples=samples, seed=seed, line=line)


def read_attention(r, body, key, line, kind):
    t = r.mapping(body, key, ("head", "pattern"))
    p = t["pattern"]
    if not r.is_seq(p):
        return Attention(r.string(t["head"], f"{key}.head"), r.string(p, f"{key}.pattern", ("uniform", "max_token")), line)
    rows = tuple(r.vector(w, f"{key}.pattern[{j}]") for j, w in enumerate(r.seq(p, f"{key}.pattern")))
    bad = next((j for j, w in enumerate(rows) if not isinstance(w, tuple) or min(w) < 0 or sum(w) != 1), None)
    r.need(rows and bad is None, p, f"{key}.pattern" + ("" if bad is None else f"[{bad}]"), "a row is not a list of weights >= 0 summing to 1",
           "give one list per query row, e.g. [[1], [1/2, 1/2], [0, 1/2, 1/2]]")
    return Attention(r.string(t["head"], f"{key}.head"), rows, line)


def read_circuit_rank(r, body, key, line, kind):
    t = r.mapping(body, key, ("head", "circuit"), ("rank", "keep", "arrays"))
    keep, rank = r.count_or_keep(t, body, key, "rank", 1)
    return CircuitRank(r.string(t["head"], f"{key}.head"), r.string(t["circuit"], f"{key}.circuit", ("qk", "ov")), len(keep), line,
                       None if rank is not None else keep, r.arrays(t, key))


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
    graph: bool | None = False  # True: for graph models (named values); False: for dense/ReLU MLPs (numbered layers); None: both


UNITS: dict[str, Unit] = {
    "prune": Unit(Prune, read_prune, validate_layer, apply_prune),
    "low_rank": Unit(LowRank, read_low_rank, validate_layer, apply_low_rank, ("U", "V"), lambda t: True, graph=None),
    "merge": Unit(Merge, read_merge, validate_layer, apply_merge, ("labels",), lambda t: isinstance(t.groups, int)),
    "pca": Unit(PCA, read_pca, validate_layer, apply_pca, ("P", "mean"), lambda t: True),
    "quantize": Unit(Quantize, read_quantize, validate_layer, apply_quantize),
    "transcoder": Unit(Transcoder, read_transcoder, no_validation, apply_transcoder, graph=True),
    "ablate": Unit(Ablate, read_ablate, no_validation, apply_ablate, graph=True),  # `layer:` form: read as a Prune (its unit)
    "model": Unit(SecondModel, read_model_transform, no_validation, apply_model),
    "replace": Unit(Replace, read_replace, no_validation, apply_replace),
    "sae": Unit(Sae, read_sae, no_validation, apply_sae, graph=True),
    "attention": Unit(Attention, read_attention, no_validation, apply_attention, graph=True),
    "low_rank_circuit": Unit(CircuitRank, read_circuit_rank, no_validation, apply_circuit_rank, ("U", "V"), lambda t: True, graph=True),
}
ALIASES: dict[str, str] = {}  # another name in the spec for a unit (`ablate: {layer, ...}` is read by ablate's reader as a Prune)
FLOAT_ARRAYS = {kind: u.arrays for kind, u in UNITS.items() if u.arrays}  # a pinned file's arrays, per kind
_BY_CLASS = {u.cls: u for u in UNITS.values()}


def unit(t) -> Unit:
    """The registered unit of a transform (KeyError for a type nobody registered: no fallback)."""
    return _BY_CLASS[type(t)]


def is_float(t) -> bool:
    """Does the transform read float arrays (an SVD, principal components, k-means labels)?"""
    return unit(t).floating(t)
