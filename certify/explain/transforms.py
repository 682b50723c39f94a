"""Explanation transforms, float half: one row per kind (`HALVES`), beside the exact half of the same
kind in certify/checker/transforms.py (`UNITS`). tests/test_transforms.py fails when a kind has one
half without the other, and flow, report and the engine look a kind up here: nothing falls back.

A row says how the engine materialises the transform's float arrays (None for an exact transform),
its degrees of freedom (kept, full), the components it discards (each as a spec entry that neglects
only that component, for `certify components`), and the sentence that reports and flows show.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import numpy as np

from ..checker.numbers import rational_str
from ..checker.transforms import PCA, LowRank, Merge, Prune, Quantize, Replace, Sae, SecondModel, merge_blocks, unit
from ..checker.transforms import Ablate, Attention, CircuitRank, Transcoder


# --------------------------------------------------------------------------- float numerics


def kmeans_labels(points: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means labels, renumbered in order of first appearance (so the same partition gives the same labels)."""
    from sklearn.cluster import KMeans

    distinct = len(np.unique(points, axis=0))
    if k > distinct:
        raise ValueError(f"only {distinct} distinct neurons")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(points).labels_
    order = {c: i for i, c in enumerate(dict.fromkeys(raw.tolist()))}
    return np.array([order[c] for c in raw.tolist()], dtype=np.float64)


def principal_components(acts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, eigenvalues descending, eigenvectors as columns) of the activations' covariance."""
    mu = acts.mean(axis=0)
    cov = np.cov(acts, rowvar=False, bias=True).reshape(acts.shape[1], acts.shape[1])
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1]
    return mu, np.maximum(vals[order], 0.0), vecs[:, order]


def _low_rank_weight(t: LowRank, g):
    """The weight the SVD factors: dense layer `layer`'s, or a graph's current linear node named `layer`."""
    if isinstance(t.layer, str):
        from ..checker.transforms import current

        return g.by_name[current(g, t.layer)].weight
    return g[t.layer - 1][0]


def materialize_low_rank(ctx, i: int, t: LowRank, g) -> dict:
    w = np.array([[float(x) for x in row] for row in _low_rank_weight(t, g)])
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    keep = list(t.keep if t.keep is not None else range(t.rank))
    return {"U": np.ascontiguousarray(u[:, keep] * s[keep]), "V": np.ascontiguousarray(vt[keep])}


def materialize_merge(ctx, i: int, t: Merge, g) -> dict:
    """Cluster the layer's neurons on their incoming weights and bias."""
    w, b = g[t.layer - 1]
    points = np.array([[float(x) for x in row] + [float(c)] for row, c in zip(w, b)])
    try:
        return {"labels": kmeans_labels(points, t.groups, t.seed)}
    except ValueError as exc:
        raise ctx.spec.error(f"{ctx.spec.explanation_key}[{i}].merge.groups", f"cannot form {t.groups} groups: {exc}",
                             "use fewer groups", t.line) from None


def materialize_pca(ctx, i: int, t: PCA, g) -> dict:
    from . import hidden_activations, sample_domain

    acts = hidden_activations(g, t.layer, sample_domain(ctx.spec, ctx.f, t.samples, t.seed))
    mu, _, vecs = principal_components(acts)
    return {"P": np.ascontiguousarray(vecs[:, list(t.keep)]), "mean": mu}


def materialize_circuit(ctx, i: int, t: CircuitRank, g) -> dict:
    """The truncated SVD of the head's QK circuit (q block^T k block, d x d) or OV block, as the checker reads them."""
    from ..checker.transforms import circuit_blocks, current

    names = ("q", "k") if t.circuit == "qk" else ("ov",)
    w = [np.array([[float(x) for x in row] for row in circuit_blocks(g.by_name[current(g, f"{t.head}.{n}")].weight)[1]]) for n in names]
    u, s, vt = np.linalg.svd(w[0].T @ w[1] if t.circuit == "qk" else w[0], full_matrices=False)
    keep = list(t.keep if t.keep is not None else range(t.rank))
    return {"U": np.ascontiguousarray(u[:, keep] * s[keep]), "V": np.ascontiguousarray(vt[keep])}


# --------------------------------------------------------------------------- degrees of freedom


def dof_attention(t: Attention, f) -> tuple[int, int]:
    """A fixed pattern keeps none of the head's free pattern weights (each query row: its keys less one)."""
    from ..checker.transforms import current, softmax_rows

    site = current(f, f"{t.head}.pattern")
    return 0, f.dims[site] - len(softmax_rows(f, site))


def dof_circuit(t: CircuitRank, f) -> tuple[int, int]:
    """Kept rank of the circuit (of the head's width, or the OV block's smaller side)."""
    from ..checker.transforms import circuit_blocks, current

    blocks = [circuit_blocks(f.by_name[current(f, f"{t.head}.{n}")].weight)[1] for n in (("q", "k") if t.circuit == "qk" else ("ov",))]
    return t.rank, min(len(blocks[0]), len(blocks[0][0]), len(blocks[-1]))


def dof_replace(t: Replace, f) -> tuple[int, int]:
    from ..checker.model import read_model

    k, m = t.layers
    return sum(read_model(t.model.path, t.model.sha256).widths[1:-1]), sum(f.widths[k:m])


def dof_model(t: SecondModel, f) -> tuple[int, int]:
    hidden = sum(f.widths[1:-1])
    return hidden, hidden


# --------------------------------------------------------------------------- discarded components


def _fill_entry(t: Prune, position: int):
    if t.fill in ("zero", "free"):
        return t.fill
    if t.fill == "mean":
        return {"mean": {"samples": t.samples, "seed": t.seed}}
    c = t.constant[position] if isinstance(t.constant, tuple) else t.constant
    return {"constant": rational_str(c)}


def components_prune(spec, i: int, t: Prune, f) -> list:
    widths = f.widths
    pruned = [j for j in range(widths[t.layer]) if j not in set(t.keep)]
    return [(f"layer {t.layer} neuron {j}", {t.kind: {"layer": t.layer, "keep": [k for k in range(widths[t.layer]) if k != j],
                                                      "fill": _fill_entry(t, pos)}}) for pos, j in enumerate(pruned)]


def components_merge(spec, i: int, t: Merge, f) -> list:
    """The blocks of more than one neuron (k-means labels: pinned, or computed here as the engine would)."""
    from dataclasses import replace

    from . import materialize

    width, materialized = f.widths[t.layer], None
    if isinstance(t.groups, int) and t.arrays is None:
        arrays = materialize(replace(spec, explanation=(t,), levels=(), level=None), f)
        materialized = {k.replace("explanation.0.", f"explanation.{i}."): (v.shape, tuple(v.ravel().tolist())) for k, v in arrays.items()}
    return [(f"layer {t.layer} block {block}", {"merge": {"layer": t.layer, "groups": [block] + [[j] for j in range(width) if j not in block]}})
            for block in merge_blocks(spec, i, t, width, materialized) if len(block) > 1]


def components_pca(spec, i: int, t: PCA, f) -> list:
    width = f.widths[t.layer]
    return [(f"layer {t.layer} principal component {c}", {"pca": {"layer": t.layer, "keep": [k for k in range(width) if k != c],
                                                                  "samples": t.samples, "seed": t.seed}})
            for c in range(width) if c not in t.keep]


def _low_rank_limit(t: LowRank, f) -> int:
    if not isinstance(t.layer, str):
        return min(f.widths[t.layer - 1], f.widths[t.layer])
    w = _low_rank_weight(t, f)
    return min(len(w), len(w[0]))


def components_low_rank(spec, i: int, t: LowRank, f) -> list:
    """Each singular direction dropped; none on a graph model (there the factors are pinned, so a
    component spec would need its own pinned file)."""
    if isinstance(t.layer, str):
        return []
    limit = _low_rank_limit(t, f)
    kept = t.keep if t.keep is not None else range(t.rank)
    return [(f"layer {t.layer} singular direction {c}", {"low_rank": {"layer": t.layer, "keep": [k for k in range(limit) if k != c]}})
            for c in range(limit) if c not in kept]


def _dictionary_arrays(t) -> dict:
    from ..checker.model import read_arrays
    from ..checker.safetensors import read_safetensors

    return read_safetensors(t.model.path) if t.model.path.suffix == ".safetensors" else read_arrays(t.model.path)


def _sae_width(t) -> int:
    """The dictionary size of an SAE or transcoder (its b_enc's length; 0 for a file without one)."""
    arrays = _dictionary_arrays(t)
    return arrays["b_enc"][0][0] if "b_enc" in arrays else 0


def _dictionary_dof(t, f) -> tuple[int, int]:
    m = _sae_width(t)
    return (len(t.features) if t.features is not None else m), m


def _dictionary_source(t) -> str:
    from ..report.collect import show_path

    jump = "threshold" in _dictionary_arrays(t)
    layout = "an .npz" if t.cfg is None else f"SAELens layout, cfg.json sha256 {t.cfg.sha256}"
    return f"{'JumpReLU' if jump else 'ReLU'} {'SAE' if t.kind == 'sae' else t.kind} {show_path(t.model.path)} (sha256 {t.model.sha256}; {layout})"


def components_ablate(spec, i: int, t: Ablate, f) -> list:
    """Each ablated coordinate alone."""
    width = f.dims[t.site]
    fill = t.fill if t.fill in ("zero", "free") else {"mean": {"samples": t.samples, "seed": t.seed}} if t.fill == "mean" else None
    out = []
    for pos, j in enumerate(t.indices if t.indices is not None else range(width)):
        c = t.constant[pos] if isinstance(t.constant, tuple) else t.constant
        entry = {"site": t.site, "indices": [j], "fill": fill if fill is not None else {"constant": rational_str(c)}}
        out.append((f"{t.site} coordinate {j}", {"ablate": entry}))
    return out


def components_sae(spec, i: int, t: Sae, f) -> list:
    """None yet: a dropped SAE feature's influence is relative to the SAE (g with and without it), and a
    component spec compares f with g alone, so every feature would carry the SAE's own reconstruction
    error. Levels over features (`certify flow`) show what dropping features costs."""
    return []


def no_components(spec, i: int, t, f) -> list:
    """Quantize, a second model and replace have no discrete components."""
    return []


# --------------------------------------------------------------------------- descriptions


def _ranges(idx) -> str:
    from ..report.collect import ranges

    return ranges(idx)


def _num(q) -> str:
    from ..report.collect import _num

    return _num(q)


def _source(t) -> str:
    return "pinned by the spec" if t.arrays is not None else "NOT PINNED: the certificate's arrays"


def describe_prune(t: Prune, widths) -> str:
    width = widths[t.layer] if t.layer < len(widths) else None
    dropped = "the others" if width is None else f"the other {width - len(t.keep)}"
    fills = {"zero": "0", "free": "free values v_j, each ranging over an interval R_j (computed by the checker) that contains the neuron's range over the domain",
             "mean": f"their exact mean activation over {t.samples} points of the domain's fixed rational sequence (seed {t.seed}; computed by the checker)"}
    fill = fills.get(t.fill)
    if fill is None:
        c = t.constant
        fill = f"the constant {_num(c)}" if isinstance(c, Fraction) else f"the constants [{', '.join(_num(v) for v in c)}]"
    of = "" if width is None else f" of {width}"
    return f"{t.kind} hidden layer {t.layer}: keep {len(t.keep)}{of} neurons ({_ranges(sorted(t.keep))}); {dropped} replaced by {fill}."


def describe_low_rank(t: LowRank, widths) -> str:
    which = f"rank-{t.rank} truncated SVD" if t.keep is None else f"singular directions {_ranges(t.keep)} of its SVD"
    where = f"linear node {t.layer}" if isinstance(t.layer, str) else f"dense layer {t.layer}"
    return f"low_rank {where}: its weight replaced by its {which} (factors U, V {_source(t)})."


def describe_merge(t: Merge, widths) -> str:
    if isinstance(t.groups, int):
        return (f"merge hidden layer {t.layer} into {t.groups} blocks found by k-means (seed {t.seed}; labels {_source(t)}): "
                "each block becomes one unit.")
    return f"merge hidden layer {t.layer} into {len(t.groups)} given blocks: each block becomes one unit (summed in, averaged out)."


def describe_pca(t: PCA, widths) -> str:
    return (f"pca hidden layer {t.layer}: its activations read through principal components {_ranges(t.keep)} "
            f"over {t.samples} samples (seed {t.seed}; components and mean {_source(t)}).")


def describe_quantize(t: Quantize, widths) -> str:
    return f"quantize dense layer {t.layer}: weight rounded to a symmetric {t.bits}-bit grid (exact)."


def describe_model(t: SecondModel, widths) -> str:
    from ..report.collect import show_path

    return f"g is a second model: {show_path(t.model.path)} (sha256 {t.model.sha256}); transforms listed before it are discarded."


def describe_replace(t: Replace, widths) -> str:
    from ..report.collect import show_path

    k, m = t.layers
    return (f"replace dense layers {k}..{m} of g by the sub-network {show_path(t.model.path)} (sha256 {t.model.sha256}); "
            "g then continues with f's later layers.")


def describe_sae(t: Sae, widths) -> str:
    m = _sae_width(t)
    kept = "all" if t.features is None else f"{len(t.features)} ({_ranges(sorted(t.features))})"
    return f"sae at {t.site}: the value is replaced by the reconstruction of the {_dictionary_source(t)} keeping {kept} of its {m} features."


def describe_transcoder(t: Transcoder, widths) -> str:
    m = _sae_width(t)
    kept = "all" if t.features is None else f"{len(t.features)} ({_ranges(sorted(t.features))})"
    return (f"transcoder at block {t.block}: its MLP branch is replaced by the {_dictionary_source(t)} reading the block's input, "
            f"keeping {kept} of its {m} features.")


def describe_ablate(t: Ablate, widths) -> str:
    which = "all coordinates" if t.indices is None else f"coordinates {_ranges(sorted(t.indices))}"
    fills = {"zero": "0", "free": "free values v_j, each ranging over an interval R_j (exact interval bounds of the coordinate over "
             "the domain, computed by the checker)", "mean": f"their exact mean over {t.samples} points of the domain's fixed "
             f"rational sequence (seed {t.seed}; computed by the checker)"}
    c = t.constant
    fill = fills.get(t.fill) or (f"the constant {_num(c)}" if isinstance(c, Fraction) else f"the constants [{', '.join(_num(v) for v in c)}]")
    return f"ablate {which} of the value at {t.site}: replaced by {fill}."


def describe_attention(t: Attention, widths) -> str:
    fixed = ("uniform weights (1/n on each of a query's n keys)" if t.pattern == "uniform" else
             "all weight on the key holding the largest token (the last such key on ties)" if t.pattern == "max_token" else
             "the given weights [" + "; ".join(", ".join(_num(v) for v in row) for row in t.pattern) + "]")
    return f"attention head {t.head}: its pattern replaced by {fixed}, whatever the scores."


def describe_circuit(t: CircuitRank, widths) -> str:
    which = f"rank-{t.rank} truncated SVD" if t.keep is None else f"singular directions {_ranges(t.keep)} of its SVD"
    circuit = "QK circuit W_Q W_K^T" if t.circuit == "qk" else "OV circuit W_V W_O"
    return f"low_rank_circuit head {t.head}: its {circuit} replaced by its {which} (factors U, V {_source(t)})."


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Half:
    """One transform's float half. `materialize` is None exactly when the transform is exact."""

    materialize: Callable | None  # (ctx with .spec, .f; index, t, g so far) -> {name: array}
    dof: Callable  # (t, f) -> (kept, full) degrees of freedom
    components: Callable  # (spec, index, t, f) -> [(label, explanation entry neglecting only that component)]
    describe: Callable  # (t, f's widths) -> one sentence


HALVES: dict[str, Half] = {
    # prune/ablate: kept neurons; merge: blocks; pca: components; low_rank: rank (of min(out, in)); quantize: grid levels
    # 2^bits - 1 (of 2^53 for float64); model: hidden units; replace k..m: the sub-model's hidden units (of f's in the range)
    "prune": Half(None, lambda t, f: (len(t.keep), f.widths[t.layer]), components_prune, describe_prune),
    "low_rank": Half(materialize_low_rank, lambda t, f: (t.rank, _low_rank_limit(t, f)), components_low_rank,
                     describe_low_rank),
    "merge": Half(materialize_merge, lambda t, f: (t.groups if isinstance(t.groups, int) else len(t.groups), f.widths[t.layer]),
                  components_merge, describe_merge),
    "pca": Half(materialize_pca, lambda t, f: (len(t.keep), f.widths[t.layer]), components_pca, describe_pca),
    "quantize": Half(None, lambda t, f: (2 ** t.bits - 1, 2 ** 53), no_components, describe_quantize),
    "model": Half(None, dof_model, no_components, describe_model),
    "replace": Half(None, dof_replace, no_components, describe_replace),
    "sae": Half(None, _dictionary_dof, components_sae, describe_sae),
    # transcoder: kept features (of the dictionary); ablate: the site's coordinates not ablated (of its width)
    "transcoder": Half(None, _dictionary_dof, components_sae, describe_transcoder),
    "ablate": Half(None, lambda t, f: (f.dims[t.site] - len(t.indices or range(f.dims[t.site])), f.dims[t.site]), components_ablate,
                   describe_ablate),
    # attention: a fixed pattern keeps 0 of the head's free pattern weights; low_rank_circuit: the kept rank
    "attention": Half(None, dof_attention, no_components, describe_attention),
    "low_rank_circuit": Half(materialize_circuit, dof_circuit, no_components, describe_circuit),
}
_BY_CLASS = {}


def half(t) -> Half:
    """The float half of a transform, by its registered exact unit (KeyError if either is missing)."""
    u = unit(t)
    if u.cls not in _BY_CLASS:
        from ..checker.transforms import UNITS

        _BY_CLASS.update({UNITS[kind].cls: h for kind, h in HALVES.items()})
    return _BY_CLASS[u.cls]
