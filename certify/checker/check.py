"""The trusted checker: re-derive every step of a certificate and decide the verdict.

It re-reads the spec and the weights itself, rebuilds g and the joint network exactly, and trusts
nothing in the certificate but hints: each step's claimed numbers are accepted only after an exact
computation (or a z3 QF_LRA query) shows them sound. Anything unexpected rejects: an unknown key
or step kind, a missing step, a hash mismatch, z3 `unknown` or a timeout.
"""

from __future__ import annotations

import enum
import json
import math
import multiprocessing
import re
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import z3

from .errors import BadInput, Rejected, require
from .float32 import float32_margins, is_float32
from . import exact
from .graph import Graph, check_graph
from .exact import backsubstitute, fold_fixed, forward, interval_dense, qvec, ratio_mat, ratio_vec, weight_mats
from .model import gc_paused, read_arrays, read_model, sha256_file
from .workers import bare_main
from .network import build_g, exact_layers, input_box, joint_network, normalise_box, with_free
from .numbers import parse_ratio, parse_rational, rational_str
from .spec import Spec, read_spec

FORMAT, VERSION = "certify.certificate", 2
Z3_TIMEOUT_MS = 60_000
RECORD: list | None = None  # a list: every z3 query is appended as (where, negation, unsat?) (certify export-smt)
TOP_KEYS = {"format", "version", "spec_sha256", "model_sha256", "data_sha256", "materialized", "claim", "steps", "tree",
            "token_tree", "witness", "engine", "level"}
REQUIRED_TOP = {"format", "version", "spec_sha256", "model_sha256", "data_sha256", "claim"}
MAX_TREE_NODES = 200_000
SPLIT_KEYS = {"input": {"split", "dim", "at", "children"}, "relu": {"split", "layer", "neuron", "children"}}
CLAIM_KEYS = {"deviation", "outputs", "tolerance", "bound"}
BOUND_KEYS = {"kind", "layer", "lower", "upper"}
LINEAR_KEYS = BOUND_KEYS | {"alpha", "beta", "neurons"}
RELAX_KEYS = {"kind", "layer", "lower_slope", "lower_intercept", "upper_slope", "upper_intercept"}
DIFF_KEYS = RELAX_KEYS | {"pairs", "lower", "upper"}
PLANE_KEYS = ("lower_slope_b", "upper_slope_b")  # a difference step's optional z_b slopes: planes, not lines (absent: 0)


class Verdict(enum.Enum):
    CERTIFIED = "CERTIFIED"  # the checker accepted a bound <= tolerance
    VIOLATED = "VIOLATED"  # an exactly replayed input deviates more than the tolerance
    UNKNOWN = "UNKNOWN"  # accepted, but neither proved nor refuted
    REJECTED = "REJECTED"  # some step failed: nothing in the certificate is believed


@dataclass(frozen=True)
class CheckResult:
    verdict: Verdict
    bound: Fraction | None  # the certified upper bound on sup dev (None if rejected)
    tolerance: Fraction
    witness_deviation: Fraction | None  # exact deviation at the replayed witness
    steps: int
    seconds: float
    reason: str = ""  # why it was rejected: "step: reason"
    level: str | None = None  # the spec level the certificate is about (a spec with `levels:`)
    unpinned: tuple[str, ...] = ()  # transforms whose float arrays the spec does not pin: g's are the certificate's
    arrays_sha256: str | None = None  # sha256 of the certificate's materialised arrays (when unpinned)


@dataclass
class _State:
    joint: list
    box: tuple  # exact input box in network space: (lower, upper) as Fraction lists
    bounds: dict  # layer -> (lower, upper) verified pre-activation bounds
    relax: dict  # layer -> four IntVecs (lower slope, lower intercept, upper slope, upper intercept)
    assume: dict  # (layer, neuron) -> "inactive" (z <= 0) | "active" (z >= 0): this leaf's ReLU splits
    empty: bool = False  # the verified bounds and the splits contradict: the leaf's region is empty
    diff: dict = field(default_factory=dict)  # layer -> (pairs, four IntVecs): verified difference lines
    mats: list = field(default_factory=list)  # the joint layers' weights as FLINT matrices (exact.weight_mats)


_COMMON = {"0": (0, 1), "1": (1, 1)}


def _ratios(raw: object, length: int, where: str, key: str) -> list[tuple[int, int]]:
    """A list of `length` certificate rationals as integer pairs (p, q), q > 0. (Called once per row
    of slopes: the messages are built only on failure.)"""
    if not isinstance(raw, list) or len(raw) != length:
        raise Rejected(where, f"{key} must be a list of {length} rationals")
    try:  # "0" and "1" (most alpha slopes, most split multipliers) from a table
        out = [_COMMON.get(v) or parse_ratio(v) for v in raw]
    except TypeError:  # an unhashable value (a list, an object)
        out = [None]
    if None in out:
        raise Rejected(where, f"{key} holds a value that is not a 'p/q' rational string")
    return out


def _vector(step: dict, key: str, length: int, where: str) -> list[Fraction]:
    return [Fraction(p, q) for p, q in _ratios(step.get(key), length, where, key)]


def _keys(obj: object, allowed: set, where: str, required: set | None = None) -> dict:
    require(isinstance(obj, dict), where, "expected a JSON object")
    extra, missing = set(obj) - allowed, (required if required is not None else allowed) - set(obj)
    require(not extra and not missing, where, f"unexpected keys {sorted(extra)}" if extra else f"missing keys {sorted(missing)}")
    return obj


def _layer(step: dict, state: _State, where: str) -> int:
    k = step.get("layer")
    require(type(k) is int and 1 <= k <= len(state.joint), where, f"layer must be an integer in 1..{len(state.joint)}")
    return k


def _neurons(step: dict, width: int, known: bool, what: str, where: str) -> list[int] | None:
    """A step's optional `neurons`: increasing indices of the layer's `width` neurons, allowed only
    where the layer already has verified `what` (`known`) for the neurons the step leaves out."""
    ns = step.get("neurons")
    require(ns is None or (known and isinstance(ns, list) and all(type(i) is int for i in ns) and ns == sorted(set(ns))
                           and (not ns or 0 <= ns[0] <= ns[-1] < width)), where,
            f"neurons must be increasing neuron indices of a layer with verified {what}")
    return ns


def _accept_bounds(step: dict, state: _State, where: str, lower: list[Fraction], upper: list[Fraction],
                   neurons: list[int] | None = None, sides: tuple | None = None) -> None:
    """Claimed bounds are sound iff claimed lower <= derived lower and claimed upper >= derived upper.
    `neurons`: the claims are about these neurons of the layer only (the others keep their verified bounds).
    `sides` (with `neurons`): the claims as `_one_sided` read them, None for a side not claimed (it keeps its verified
    bound); `lower` and `upper` then hold the derived bounds of the claimed sides only, in order."""
    k = step["layer"]
    index = range(len(state.joint[k - 1][1][0])) if neurons is None else neurons
    if sides is None:
        c_lo, c_up = _vector(step, "lower", len(index), where), _vector(step, "upper", len(index), where)
    else:
        c_lo, c_up = sides
        lower, upper = ([None if c is None else next(d) for c in cs] for cs, d in ((c_lo, iter(lower)), (c_up, iter(upper))))
    for i, cl, dl, cu, du in zip(index, c_lo, lower, c_up, upper):  # (_less: Fraction's own comparisons, on its integers)
        if cl is not None and _less(dl, cl):
            raise Rejected(where, f"neuron {i}: claimed lower bound {cl} exceeds the derived {dl}")
        if cu is not None and _less(cu, du):
            raise Rejected(where, f"neuron {i}: claimed upper bound {cu} is below the derived {du}")
    if k in state.bounds:  # a second step for the same layer intersects
        lo, up = (list(v) for v in state.bounds[k])
        for i, cl, cu in zip(index, c_lo, c_up):
            if cl is not None and _less(lo[i], cl):
                lo[i] = cl
            if cu is not None and _less(cu, up[i]):
                up[i] = cu
        c_lo, c_up = lo, up
    _set_bounds(state, k, c_lo, c_up)


def _one_sided(step: dict, count: int, where: str) -> tuple[list, list] | None:
    """A linear step's `lower` and `upper` as Fractions, None where a side is not claimed (JSON null), or None if
    every side is claimed (the plain rule then reads them)."""
    raw = [step.get(key) for key in ("lower", "upper")]
    if not any(isinstance(r, list) and None in r for r in raw):
        return None
    out = []
    for key, r in zip(("lower", "upper"), raw):
        require(isinstance(r, list) and len(r) == count, where, f"{key} must be a list of {count} rationals or nulls")
        given = iter(_vector({key: [v for v in r if v is not None]}, key, count - r.count(None), where))
        out.append([None if v is None else next(given) for v in r])
    return tuple(out)


def _less(a: Fraction, b: Fraction) -> bool:
    """a < b, exactly (denominators are positive), without Fraction's type dispatch."""
    return a.numerator * b.denominator < b.numerator * a.denominator


def _set_bounds(state: _State, k: int, lo: list[Fraction], up: list[Fraction]) -> None:
    """Record verified bounds of layer k, clamped by the region's ReLU splits on that layer (a split
    region only holds inputs in its phase); contradictory bounds mark the region empty."""
    lo, up = list(lo), list(up)
    for (layer, i), phase in state.assume.items():
        if layer == k:
            lo[i], up[i] = (lo[i], min(up[i], Fraction(0))) if phase == "inactive" else (max(lo[i], Fraction(0)), up[i])
    state.empty = state.empty or any(_less(u, l) for l, u in zip(lo, up))
    state.bounds[k] = (lo, up)


def check_interval(step: dict, state: _State, where: str) -> None:
    """Interval arithmetic through dense layer k from the verified bounds of layer k-1 (or the box)."""
    _keys(step, BOUND_KEYS, where)
    k = _layer(step, state, where)
    if k == 1:
        lo, up = state.box
    else:
        require(k - 1 in state.bounds, where, f"needs verified bounds of layer {k - 1} first")
        lo, up = ([max(v, Fraction(0)) for v in b] for b in state.bounds[k - 1])
    _accept_bounds(step, state, where, *interval_dense(state.joint[k - 1], lo, up, state.mats[k - 1]))


def _alpha(step: dict, state: _State, k: int, sides: tuple[int, int], where: str) -> tuple[dict, dict]:
    """Per-row lower slopes {relu layer j: (neurons, rows)} for `sides` = (n, m) bounds from below and above (rows < n:
    the lower bounds, then the upper): alpha[j] = {"neurons": [m, ...] (increasing), "slopes": one row of len(neurons) per
    bound}.

    Row r's line alpha*z (intercept 0) must lie below relu on the verified interval of each listed
    neuron: relu is linear on each side of 0, so checking the interval's ends suffices (alpha*l <=
    relu(l), alpha*u <= relu(u); at 0 both sides are 0). An end below 0 makes that alpha >= 0, an end
    above 0 makes it alpha <= 1: tested on the integer numerators (one positive denominator)."""
    raw = step.get("alpha", {})
    require(isinstance(raw, dict), where, "alpha must map relu layers to slope matrices")
    low, up = {}, {}
    for key, entry in raw.items():
        j = int(key) if isinstance(key, str) and re.fullmatch("[0-9]{1,6}", key) else 0
        rows, ns = (entry.get("slopes"), entry.get("neurons")) if isinstance(entry, dict) and len(entry) == 2 else (None, None)
        require(1 <= j < k and j in state.bounds and isinstance(rows, list) and len(rows) == sum(sides), where,
                f"alpha[{key!r}] must be a verified relu layer below {k} with neurons and {sum(sides)} rows of slopes")
        lo, hi = state.bounds[j]
        require(isinstance(ns, list) and all(type(m) is int for m in ns) and ns == sorted(set(ns)) and (not ns or 0 <= ns[0] <= ns[-1] < len(lo)),
                where, f"alpha[{key}].neurons must be increasing neuron indices of layer {j}")
        nums, den = ratio_mat([_ratios(row, len(ns), where, f"alpha[{key}].slopes[{r}]") for r, row in enumerate(rows)])
        for col, m in zip(zip(*nums), ns):  # a column: one neuron's slopes, one per row
            l, u = lo[m], hi[m]
            bad = [a for a in (min(col), max(col)) if (a < 0 and (l < 0 or u < 0)) or (a > den and (l > 0 or u > 0))]
            if bad:  # an end below 0 needs alpha >= 0, an end above 0 needs alpha <= 1
                raise Rejected(where, f"alpha[{key}]: slope {Fraction(bad[0], den)} is not a lower line of relu on [{l}, {u}] (neuron {m})")
        low[j], up[j] = (ns, (nums[:sides[0]], den)), (ns, (nums[sides[0]:], den))
    return low, up


def _beta(step: dict, state: _State, k: int, width: int, where: str) -> tuple[dict, dict]:
    """Split multipliers [{"layer": j, "neuron": i, "values": 2*width rationals >= 0}] for this
    region's own ReLU splits (j <= k): the coefficient of z_ji gets +beta (z_ji <= 0) or -beta (>= 0).
    Per layer j, rows of integers over one denominator (most multipliers are 0 and cost nothing)."""
    raw = step.get("beta", [])
    require(isinstance(raw, list), where, "beta must be a list")
    terms: dict = {}  # layer -> [(neuron, sign, values as (p, q))]
    for t in raw:
        _keys(t, {"layer", "neuron", "values"}, where)
        j, i = t["layer"], t["neuron"]
        require(type(j) is int and type(i) is int and (j, i) in state.assume and 1 <= j <= k, where,
                f"beta for ({j}, {i}): not a ReLU split of this region on layers 1..{k}")
        values = _ratios(t["values"], 2 * width, where, "values")
        require(all(p >= 0 for p, _ in values), where, f"beta for ({j}, {i}) must be >= 0")
        terms.setdefault(j, []).append((i, 1 if state.assume[(j, i)] == "inactive" else -1, values))
    low, up = {}, {}
    for j, split in terms.items():
        den = math.lcm(*{q for _, _, values in split for _, q in values})
        rows = [[0] * len(state.joint[j - 1][1][0]) for _ in range(2 * width)]
        for i, sign, values in split:
            for row, (p, q) in zip(rows, values):
                if p:
                    row[i] += sign * p * (den // q)
        low[j], up[j] = (rows[:width], den), (rows[width:], den)
    return low, up


def check_linear(step: dict, state: _State, where: str) -> None:
    """Back-substitution (CROWN, or alpha-CROWN with per-row slopes) through layers k..1. With
    `neurons` (increasing indices; the layer already has verified bounds, e.g. inherited from the
    parent region), only those neurons are bounded: their rows of `lower`, `upper`, alpha and beta."""
    _keys(step, LINEAR_KEYS, where, BOUND_KEYS)
    k = _layer(step, state, where)
    missing = [j for j in range(1, k) if j not in state.relax]
    require(not missing, where, f"needs verified ReLU relaxations of layers {missing} first")
    width = len(state.joint[k - 1][1][0])
    ns = _neurons(step, width, k in state.bounds, "bounds", where)
    rows = None if ns is None else [{i: 1} for i in ns]
    sides = None if ns is None else _one_sided(step, len(ns), where)
    if sides is not None:  # one-sided claims: rows (and rows of alpha slopes) only for the claimed sides, no multipliers
        require("beta" not in step, where, "a step with null claims takes no beta")
        low, up = ([{i: 1} for i, c in zip(ns, cs) if c is not None] for cs in sides)
        alpha = _alpha(step, state, k, (len(low), len(up)), where)
        return _accept_bounds(step, state, where, *_bounds_of(low, state, k, alpha, upper_rows=up), neurons=ns, sides=sides)
    alpha = _alpha(step, state, k, (width, width) if ns is None else (len(ns), len(ns)), where)
    beta = _beta(step, state, k, width if ns is None else len(ns), where)
    _accept_bounds(step, state, where, *_bounds_of(rows, state, k, alpha, beta), neurons=ns)


def _bounds_of(rows: list | None, state: _State, k: int, alpha=(None, None), beta=(None, None),
               upper_rows: list | None = None) -> tuple[list, list]:
    """(lower, upper) bounds of rows @ z_k (rows {neuron: coefficient}; None: z_k itself) by back-substitution through the
    verified relaxations and difference lines of layers 1..k-1 (the upper side negates the rows; `upper_rows`: its
    own rows instead of `rows`)."""
    up_rows = rows if upper_rows is None else upper_rows
    low, up = (1, -1) if rows is None else (rows, [{i: -c for i, c in row.items()} for row in up_rows])
    box, relax = (qvec(state.box[0]), qvec(state.box[1])), [state.relax[j] for j in range(1, k)]
    if rows is not None and not (beta[0] or beta[1]) and exact.TRACE is None:  # one back-substitution for both sides (its
        # rows are independent: the same numbers), alpha's rows of slopes in the same order
        al = alpha[0] and {j: (ns, (lows + alpha[1][j][1][0], den)) for j, (ns, (lows, den)) in alpha[0].items()}
        both = backsubstitute(low + up, state.joint[:k], relax, box, al, None, state.diff, state.mats[:k]) if low or up else []
        return both[:len(low)], [-v for v in both[len(low):]]
    out = []
    for sign, lam, al, be in ((1, low, alpha[0], beta[0]), (-1, up, alpha[1], beta[1])):
        if lam == []:
            out.append([])
        elif be and k in be:  # multipliers on layer k's own splits: row r is (e_r * den + their numerators) / den on z_k,
            # and the lower layers' multipliers (added, not multiplied, on the way down) are scaled by den with it
            extra, den = be[k]
            be = {j: ([[x * den for x in row] for row in rows], d) for j, (rows, d) in be.items() if j != k}
            lam = [{i: c * den for i, c in r.items()} for r in (lam if isinstance(lam, list) else [{i: sign} for i in range(len(extra))])]
            for r, row in zip(lam, extra):
                for i, e in enumerate(row):
                    r[i] = r.get(i, 0) + e
            out.append([v / den for v in backsubstitute(lam, state.joint[:k], relax, box, al, be, state.diff, state.mats[:k])])
            if exact.TRACE is not None:  # certify export-smt: the rows it recorded are den times the bounded rows
                exact.TRACE[-1]["scale"] = den
        else:
            out.append(backsubstitute(lam, state.joint[:k], relax, box, al, be, state.diff, state.mats[:k]))
    return out[0], [-v for v in out[1]]


def check_difference(step: dict, state: _State, where: str) -> None:
    """Differential bounds (NeuroDiff, VeryDiff) for neuron pairs (a, b) of hidden layer k, typically
    f's neuron and g's copy of it: bounds on delta = z_a - z_b (back-substitution of the rows
    e_a - e_b, or the verified intervals), and lines s*delta + t below and above D = relu(z_a) -
    relu(z_b) on them, which later back-substitutions use (see exact.backsubstitute).

    D lies between L and U: relu is monotone and 1-Lipschitz, so min(delta, 0) <= D <= max(delta, 0);
    z_b >= 0 gives D >= delta, z_b <= 0 gives D >= 0, z_a >= 0 gives D <= delta, z_a <= 0 gives D <= 0.
    L is concave and U convex in delta, so a line is below L (above U) on [lower, upper] iff it is
    at both ends.

    `inherit: true`: the enclosing region's verified pairs and lines of layer k (valid on a region containing this one)
    are kept, except those of the listed pairs, which replace them, and those in `drop` (forgotten: the rewrite then
    leaves their neurons to their own lines); a listed pair sharing a neuron with another kept pair rejects, as does
    `inherit` where layer k has no verified difference lines, and `drop` naming a pair not verified or without inherit."""
    _keys(step, DIFF_KEYS | {"inherit", "drop", *PLANE_KEYS}, where, DIFF_KEYS)
    k = _layer(step, state, where)
    require(k < len(state.joint) and k in state.bounds and all(j in state.relax for j in range(1, k)), where,
            f"needs verified bounds of hidden layer {k} and relaxations of the layers below")
    inherit = step.get("inherit", False)
    require((inherit is False and "drop" not in step) or (inherit is True and k in state.diff), where, "inherit must be "
            f"false (without drop), or true where layer {k} has verified difference lines")
    lo, up = state.bounds[k]
    pairs = step["pairs"]
    if (not isinstance(pairs, list) or any(not isinstance(p, list) or len(p) != 2 or any(
            type(i) is not int or not 0 <= i < len(lo) for i in p) for p in pairs) or len({i for p in pairs for i in p}) != 2 * len(pairs)):
        raise Rejected(where, "pairs must be [a, b] neuron pairs of the layer, each neuron in at most one pair")
    if inherit:  # the inherited pairs not listed (merged below, after the listed ones are checked)
        old, old_lines = state.diff[k]
        drop = step.get("drop", [])
        require(isinstance(drop, list) and all(isinstance(p, list) and list(map(type, p)) == [int, int] and tuple(p) in old
                                               for p in drop), where, "drop must list verified pairs")
        listed = {tuple(p) for p in pairs} | {tuple(p) for p in drop}
        kept = [t for t, p in enumerate(old) if p not in listed]
        require(not {i for t in kept for i in old[t]} & {i for p in pairs for i in p}, where,
                "a listed pair shares a neuron with another inherited pair")
    rows = [{a: 1, b: -1} for a, b in pairs]
    d_lo, d_up = _bounds_of(rows, state, k)
    c_lo, c_up = (_vector(step, name, len(pairs), where) for name in ("lower", "upper"))
    lines = [_ratios(step.get(name), len(pairs), where, name) for name in sorted(RELAX_KEYS - BOUND_KEYS)]
    planes = any(key in step for key in PLANE_KEYS)  # z_b slopes r: s*delta + r*z_b + t, checked at P's cell vertices
    lines += [_ratios(step.get(key, ["0"] * len(pairs)), len(pairs), where, key) for key in PLANE_KEYS]
    for p, ((a, b), cl, cu, dl, du, (tl, tld), (sl, sld), (tu, tud), (su, sud), rl, ru) in enumerate(zip(pairs, c_lo, c_up, d_lo, d_up, *lines)):
        if cl > max(dl, lo[a] - up[b]) or cu < min(du, up[a] - lo[b]):
            raise Rejected(where, f"pair {p}: claimed bounds [{cl}, {cu}] of z_{a} - z_{b} are not implied")
        state.empty = state.empty or cl > cu
        (la, ua), (lb, ub) = ((lo[i].numerator, up[i].numerator) for i in (a, b))  # their signs
        bad_lo = bad_up = False
        for x in (cl, cu):  # x = n/d: low (high) = x, 0 or min(x, 0) (max(x, 0)), as n/d with the same d
            n, d = x.numerator, x.denominator
            low = n if lb >= 0 or (ub > 0 and n < 0) else 0
            high = n if la >= 0 or (ua > 0 and n > 0) else 0
            # s*x + t > low/d  <=>  s_n*n*t_d + t_n*s_d*d > low*s_d*t_d  (times d*s_d*t_d/d > 0)
            bad_lo = bad_lo or sl * n * tld + tl * sld * d > low * sld * tld
            bad_up = bad_up or su * n * tud + tu * sud * d < high * sud * tud
        if planes:  # a plane (r != 0), or a line the test above refutes: the exact test on P
            ends = (lo[a], up[a], lo[b], up[b], cl, cu)
            bad_lo = (bad_lo or rl[0] != 0) and not _plane_holds(ends, (sl, sld), rl, (tl, tld), False)
            bad_up = (bad_up or ru[0] != 0) and not _plane_holds(ends, (su, sud), ru, (tu, tud), True)
        if bad_lo or bad_up:
            raise Rejected(where, f"pair {p}: a {'plane' if planes else 'line'} is not below/above relu(z_{a}) - relu(z_{b}) "
                           f"on its verified ranges ({'lower' if bad_lo else 'upper'})")
    pairs, lines = [tuple(p) for p in pairs], [ratio_vec(lines[i]) for i in (1, 0, 3, 2, *((4, 5) if planes else ()))]
    if inherit:  # the inherited pairs not listed, then the listed ones, each line vector on a common denominator
        if len(old_lines) != len(lines):  # planes on one side only: the other's z_b slopes are 0
            old_lines, lines = (list(v) + [([0] * len(v[0][0]), 1)] * (6 - len(v)) for v in (old_lines, lines))
        for v, ((nums, den), (new, q)) in enumerate(zip(old_lines, lines)):
            common = math.lcm(den, q)
            lines[v] = ([nums[t] * (common // den) for t in kept] + [x * (common // q) for x in new], common)
        pairs = [old[t] for t in kept] + pairs
    state.diff[k] = (pairs, tuple(lines))


def _plane_holds(ends: tuple, slope: tuple, r: tuple, t: tuple, upper: bool) -> bool:
    """Is s*delta + r*z_b + t below (`upper`: above) D = relu(z_a) - relu(z_b) on P = {la <= z_a <= ua, lb <= z_b <= ub,
    cl <= delta <= cu} (delta = z_a - z_b; `ends` = (la, ua, lb, ub, cl, cu), Fractions; slope, r, t: (p, q) integer
    pairs)? D is linear on each cell of P cut by z_a = 0 and z_b = 0, and so is the plane: it holds on P iff it holds at
    every cell vertex, each a point of P where two of the lines z_a in {la, ua, 0}, z_b in {lb, ub, 0}, delta in {cl, cu}
    meet. Exact: every number times the ends' common denominator `m` is an integer, the test times q*t_q*m."""
    m = math.lcm(*(x.denominator for x in ends))
    la, ua, lb, ub, cl, cu = (x.numerator * (m // x.denominator) for x in ends)
    (sn, sd), (rn, rd), (tn, td) = slope, r, t
    q = math.lcm(sd, rd)
    s, r, t = sn * (q // sd) * td, rn * (q // rd) * td, tn * q * m
    sign = -1 if upper else 1  # below: plane - D <= 0 at every vertex; above: D - plane <= 0
    points = ([(za, zb) for za in (la, ua, 0) for zb in (lb, ub, 0)] + [(za, za - c) for za in (la, ua, 0) for c in (cl, cu)]
              + [(zb + c, zb) for zb in (lb, ub, 0) for c in (cl, cu)])
    return all(sign * (s * (za - zb) + r * zb + t - (max(za, 0) - max(zb, 0)) * q * td) <= 0 for za, zb in points
               if la <= za <= ua and lb <= zb <= ub and cl <= za - zb <= cu)


def _q(v: Fraction) -> str:
    """An exact rational as an SMT-LIB2 real term (decimal literals are exact)."""
    term = f"(/ {abs(v.numerator)}.0 {v.denominator}.0)"
    return term if v >= 0 else f"(- {term})"


def _solver() -> z3.Solver:
    solver = z3.Solver()
    solver.set("timeout", Z3_TIMEOUT_MS)
    return solver


def _holds(names: list[str], negation: str, where: str, solver: z3.Solver | None = None) -> bool:
    """True iff z3 answers unsat for the negation of an obligation, an SMT-LIB2 (QF_LRA) formula over
    the Real constants `names`; unknown or a timeout rejects. (Parsed from text: one C call instead
    of thousands of Python-built terms.) A `solver` shared by the queries of one certificate gets
    each negation in its own scope (push, check, pop), so no query sees another's assertions."""
    claim_negation, = z3.parse_smt2_string("".join(f"(declare-const {n} Real)" for n in names) + f"(assert {negation})")
    solver = solver or _solver()
    solver.push()
    try:
        solver.add(claim_negation)
        answer = solver.check()
        reason = solver.reason_unknown() if answer not in (z3.sat, z3.unsat) else ""
    finally:
        solver.pop()
    if answer not in (z3.sat, z3.unsat):
        raise Rejected(where, f"z3 could not decide the obligation ({reason})")
    if RECORD is not None:
        RECORD.append((where, claim_negation, answer == z3.unsat))
    return answer == z3.unsat


def check_relu_relaxation(step: dict, state: _State, where: str) -> None:
    """Lines a_lo*z + b_lo <= relu(z) <= a_up*z + b_up for every z in the verified bounds [l, u] of
    layer k. relu and both lines are linear on [l, min(u, 0)] and on [max(l, 0), u], so the lines
    hold on [l, u] iff they hold at l, u and (l < 0 < u) at 0: an exact check, and a complete one."""
    _keys(step, RELAX_KEYS | {"neurons"}, where, RELAX_KEYS)
    k = _layer(step, state, where)
    require(k < len(state.joint), where, "the output layer has no ReLU")
    require(k in state.bounds, where, f"needs verified bounds of layer {k} first")
    lo, up = state.bounds[k]
    ns = _neurons(step, len(lo), k in state.relax, "lines", where)  # the others keep the lines verified for a region containing this one
    index = range(len(lo)) if ns is None else ns
    lines = [_ratios(step.get(name), len(index), where, name) for name in ("lower_slope", "lower_intercept", "upper_slope", "upper_intercept")]
    for i, (a, ad), (b, bd), (c, cd), (d, dd) in zip(index, *lines):
        l, u = lo[i], up[i]
        for z in ((l, u, 0) if l < 0 < u else (l, u) if l <= u else ()):
            zn, zd, r = z.numerator, z.denominator, max(z.numerator, 0)  # a/ad * zn/zd + b/bd > r/zd, times ad*bd*zd > 0:
            if a * zn * bd + b * ad * zd > r * ad * bd or c * zn * dd + d * cd * zd < r * cd * dd:
                raise Rejected(where, f"neuron {i}: a line is not below/above relu on the verified interval [{l}, {u}]")
    if ns is None:
        state.relax[k] = tuple(map(ratio_vec, lines))
        return
    merged = []  # into the inherited lines, on the lcm of their denominator and the listed lines' (powers of two, mostly)
    for (nums, den), new in zip(state.relax[k], lines):
        common = math.lcm(den, *(q for _, q in new))
        out = [x * (common // den) for x in nums]
        for i, (p, q) in zip(ns, new):
            out[i] = p * (common // q)
        merged.append((out, common))
    state.relax[k] = tuple(merged)


STEP_CHECKERS = {
    "interval": check_interval,
    "linear": check_linear,
    "relu_relaxation": check_relu_relaxation,
    "difference": check_difference,
}


def goal_holds(bound: Fraction, state: _State, where: str, margins: list[Fraction] | None = None,
               solver: z3.Solver | None = None) -> bool:
    """Does every output difference d with verified bounds satisfy |d_i| <= bound - margin_i?
    (margins: float32 rounding errors under float32 semantics, else zero.) The verified bounds are a
    box (nothing else is known about d here), so it does iff both ends of every row are within the
    limit: an exact comparison per row, complete. Where RECORD is set (certify export-smt), z3 is
    also asked the same question as a QF_LRA query (recorded) and must answer unsat; unknown or a
    timeout rejects."""
    n = len(state.joint)
    if n not in state.bounds:
        return False
    lo, up = state.bounds[n]
    limits = [bound - m for m in (margins or [Fraction(0)] * len(lo))]
    if any(u > t or -l > t for l, u, t in zip(lo, up, limits)):
        return False
    if RECORD is None:  # every d in the verified box has |d_i| <= limit_i (the negation below is unsat)
        return True
    d = [f"d{i}" for i in range(len(lo))]
    return _holds(d, f"(and {' '.join(f'(<= {_q(l)} {x}) (<= {x} {_q(u)})' for x, l, u in zip(d, lo, up))} "
                     f"(or {' '.join(f'(> {x} {_q(t)}) (> (- {x}) {_q(t)})' for x, t in zip(d, limits))}))", where, solver)


def _run_steps(steps: object, state: _State, where: str) -> int:
    require(isinstance(steps, list), where, "steps must be a list")
    for i, step in enumerate(steps):
        at = f"{where}[{i}]"
        kind = step.get("kind") if isinstance(step, dict) else None
        require(isinstance(kind, str) and kind in STEP_CHECKERS, at, f"unknown step kind {kind!r}")
        STEP_CHECKERS[kind](step, state, f"{at} ({kind}, layer {step.get('layer')})")
    return len(steps)


def _child(parent: _State, box: tuple, assume: dict, split_layer: int | None = None) -> _State:
    """A child region inherits everything verified for its parent (the parent's region contains
    it); a new ReLU split clamps the inherited bounds of its neuron at once."""
    state = _State(parent.joint, box, dict(parent.bounds), dict(parent.relax), assume, parent.empty, dict(parent.diff), parent.mats)
    if split_layer in state.bounds:
        _set_bounds(state, split_layer, *state.bounds[split_layer])
    return state


@dataclass(frozen=True)
class _Tree:
    """What every node of one tree is checked against: the whole box's dimension and fixed values,
    the free inputs' positions, the claimed bound, float32 margins, and a z3 solver."""

    box: tuple  # the whole box (fixed inputs included)
    position: dict  # whole-box input -> position among the free inputs
    bound: Fraction
    margins: list | None
    solver: object = field(default_factory=lambda: _solver(), compare=False)


def _visit(node: object, state: _State, where: str, tree: _Tree) -> tuple[int, list]:
    """Check one node: run its steps; if its region is empty or proves the goal, it is done; else
    it must be split, and its children (node, state, where) are returned. (Steps run, children.)"""
    require(isinstance(node, dict), where, "not a tree node")
    optional = {"steps"} if "steps" in node else set()
    split = node.get("split")
    _keys(node, optional | (SPLIT_KEYS.get(split, set()) if isinstance(split, str) else set()), where)  # every node
    steps = _run_steps(node["steps"], state, f"{where}.steps") if "steps" in node else 0
    if state.empty or goal_holds(tree.bound, state, f"{where} (goal)", tree.margins, tree.solver):
        return steps, []
    require(split is not None, where, "missing goal: the region's bounds do not prove the claimed bound, and it is not split")
    kids = node.get("children")
    require(isinstance(kids, list) and len(kids) == 2, where, "a split needs exactly two children")
    (lo, up), assume = state.box, state.assume
    if split == "input":
        d, at = node["dim"], parse_rational(node["at"])
        require(type(d) is int and 0 <= d < len(tree.box[0]) and at is not None, where,
                "input split needs a dimension and a point inside the parent box")
        if d not in tree.position:  # a fixed input: `at` must be its value, and both children are the parent
            require(at == tree.box[0][d], where, "input split needs a point inside the parent box")
            return steps, [(kids[0], _child(state, (lo, up), assume), f"{where}.0"),
                           (kids[1], _child(state, (lo, up), assume), f"{where}.1")]
        d = tree.position[d]
        require(lo[d] <= at <= up[d], where, "input split needs a point inside the parent box")
        left_up, right_lo = list(up), list(lo)
        left_up[d], right_lo[d] = at, at
        return steps, [(kids[0], _child(state, (lo, left_up), assume), f"{where}.0"),
                       (kids[1], _child(state, (right_lo, up), assume), f"{where}.1")]
    j, i = node["layer"], node["neuron"]
    if (not isinstance(j, int) or not isinstance(i, int) or not 1 <= j < len(state.joint)
            or not 0 <= i < len(state.joint[j - 1][1][0]) or (j, i) in assume):
        raise Rejected(where, "relu split needs a new (hidden layer, neuron)")
    return steps, [(kids[0], _child(state, state.box, {**assume, (j, i): "inactive"}, j), f"{where}.0"),
                   (kids[1], _child(state, state.box, {**assume, (j, i): "active"}, j), f"{where}.1")]


def _walk(pending: list, tree: _Tree, limit: int) -> tuple[int, int]:
    """Check the subtrees (node, state, where) in `pending`, depth first: (nodes, steps)."""
    count = steps = 0
    while pending:
        node, state, where = pending.pop()
        count += 1
        require(count <= limit, where, f"more than {MAX_TREE_NODES:,} tree nodes")
        done, kids = _visit(node, state, where, tree)
        steps += done
        pending += kids
    return count, steps


PARALLEL_MIN_NODES = 64  # a smaller tree is checked in this process (a worker takes ~1 s to start)
PARALLEL_PARTS = 32  # at most this many open subtrees per worker before the workers start
PARALLEL_SHARE = 8  # the top of the tree is opened until no subtree holds more than 1/(this * jobs) of its nodes
_WORKER: dict = {}  # in a worker process: the (folded) joint network and its FLINT matrices


def _start_worker(joint: list) -> None:
    _WORKER.update(joint=joint, mats=weight_mats(joint))


def _check_part(part: list, box: tuple, position: dict, bound: Fraction, margins, limit: int) -> tuple:
    """In a worker: check subtrees (node, (box, bounds, relax, assume, empty, diff), where) against the
    worker's joint network. ("ok", nodes, steps), or ("rejected", step, reason)."""
    tree = _Tree(box, position, bound, margins)
    pending = [(node, _State(_WORKER["joint"], *fields, _WORKER["mats"]), where) for node, fields, where in part]
    try:
        return ("ok", *_walk(pending, tree, limit))
    except Rejected as exc:  # (Rejected itself does not pickle)
        return ("rejected", exc.step, exc.reason)


def _tree_size(node: object, limit: int) -> int:
    """Nodes of a JSON tree, counted up to `limit` (cheap: no checking)."""
    count, stack = 0, [node]
    while stack and count < limit:
        n = stack.pop()
        count += 1
        if isinstance(n, dict) and isinstance(n.get("children"), list):
            stack += n["children"]
    return count


def _subtree_sizes(root: object, limit: int) -> dict:
    """id(node) -> the nodes of its subtree, over the first `limit` nodes of a JSON tree (cheap: no checking; it
    only orders the work)."""
    order, stack = [], [root]
    while stack and len(order) < limit:
        node = stack.pop()
        order.append(node)
        if isinstance(node, dict) and isinstance(node.get("children"), list):
            stack += node["children"]
    size: dict = {}
    for node in reversed(order):
        kids = node.get("children") if isinstance(node, dict) else None
        size[id(node)] = 1 + (sum(size.get(id(k), 0) for k in kids) if isinstance(kids, list) else 0)
    return size


def _parallel(pending: list, tree: _Tree, jobs: int, limit: int, size: dict) -> tuple[int, int]:
    """Check the subtrees in `pending` in `jobs` worker processes (independent: each starts from its
    parent's verified state, and nothing flows between them). Every part must come back "ok": a
    rejection in any part rejects, and a worker that dies rejects the certificate. `size`: id(node) ->
    its subtree's nodes (`_subtree_sizes`), which only orders the work."""
    joint = pending[0][1].joint
    parts = sorted(pending, key=lambda part: -size.get(id(part[0]), 1))  # largest first: the last to finish are small
    count = steps = 0
    context = multiprocessing.get_context("spawn")  # not fork: the caller may run threads (JAX, z3)
    try:
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker, initargs=(joint,)) as pool:
            with bare_main():  # the workers start while the parts are submitted
                futures = [pool.submit(_check_part, [(n, (s.box, s.bounds, s.relax, s.assume, s.empty, s.diff), w)],
                                       tree.box, tree.position, tree.bound, tree.margins, limit) for n, s, w in parts]
            for fut in futures:
                result = fut.result()
                if result[0] != "ok":
                    for other in futures:
                        other.cancel()
                    raise Rejected(*result[1:])
                count, steps = count + result[1], steps + result[2]
    except BrokenProcessPool as exc:
        raise Rejected("tree", f"a checking process died ({exc}): nothing it checked is believed") from None
    require(count <= limit, "tree", f"more than {MAX_TREE_NODES:,} tree nodes")
    return count, steps


def check_tree(root: object, joint: list, box: tuple, bound: Fraction, margins: list[Fraction] | None = None,
               jobs: int | None = None) -> int:
    """Every region is proved by what is verified for it, or by both children of its split.

    A node may carry {"steps": [...]} and/or a split with two children. An input split
    {"split": "input", "dim": d, "at": c} gives the first child the box with x_d <= c, the second
    the box with x_d >= c (network input space). A ReLU split {"split": "relu", "layer": j,
    "neuron": i} gives the first child the inputs with z_ji <= 0, the second those with z_ji >= 0.
    Children cover their parent by construction and inherit its verified bounds and relaxations,
    so their steps need only re-derive what the split changes. A node whose verified bounds
    contradict its splits has an empty region. A node neither proved nor split rejects.

    Inputs the box fixes (lower = upper) are folded into the first layer's bias (exact.fold_fixed):
    every bound is the same exact number, computed on the free inputs only. Boxes below hold the
    free coordinates; an input split names a coordinate of the whole box, and one on a fixed input
    (`at` its value) leaves both children the parent's box.

    `jobs` > 1 (default 1; the command line's default is the CPU count): once the top of the tree is checked here, breadth
    first, its open subtrees are checked in that many worker processes (`_parallel`). A subtree
    depends only on its parent's verified state, which it receives, so the verdict is the serial one.
    """
    first, free, *folded = fold_fixed(joint[0], *box)
    joint = [first, *joint[1:]]
    tree = _Tree(box, {d: i for i, d in enumerate(free)}, bound, margins)
    pending = deque([(root, _State(joint, tuple(folded), {}, {}, {}, mats=weight_mats(joint)), "tree")])
    jobs = jobs or 1
    serial = jobs <= 1 or RECORD is not None or exact.TRACE is not None or _tree_size(root, PARALLEL_MIN_NODES) < PARALLEL_MIN_NODES
    count = steps = 0
    size = {} if serial else _subtree_sizes(root, MAX_TREE_NODES)
    share = size.get(id(root), 0) // (PARALLEL_SHARE * jobs)
    while pending and not serial and len(pending) < PARALLEL_PARTS * jobs:  # the top of the tree: its largest subtree first
        sizes = [size.get(id(node), 1) for node, _, _ in pending]
        if max(sizes) <= share:
            break
        node, state, where = pending[sizes.index(max(sizes))]
        del pending[sizes.index(max(sizes))]
        count += 1
        require(count <= MAX_TREE_NODES, where, f"more than {MAX_TREE_NODES:,} tree nodes")
        done, kids = _visit(node, state, where, tree)
        steps += done
        pending += kids
    if serial or len(pending) < 2:
        return steps + _walk(list(pending), tree, MAX_TREE_NODES - count)[1]
    return steps + _parallel(list(pending), tree, jobs, MAX_TREE_NODES - count, size)[1]


def data_hashes(spec: Spec) -> dict[str, str]:
    """sha256 of every data file the spec's input domain reads (centres, corners, VNN-LIB files):
    the spec names them by path only, so the certificate binds their contents."""
    return {name: sha256_file(value) for name, value in sorted(vars(spec.input).items()) if isinstance(value, Path)}


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate key in {sorted(keys)}")
    return dict(pairs)


def _check(spec: Spec, cert_path: Path, jobs: int | None = None) -> tuple[Fraction, Fraction | None, int, str | None, str | None]:
    try:
        cert = json.loads(Path(cert_path).read_text(), object_pairs_hook=_no_duplicates)
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise Rejected("certificate", f"not readable JSON ({str(exc)[:200]})") from None
    cert = _keys(cert, TOP_KEYS, "certificate", REQUIRED_TOP)
    require(cert["format"] == FORMAT and type(cert["version"]) is int and cert["version"] == VERSION, "certificate",
            f"not a {FORMAT} version {VERSION} file")
    require(cert["data_sha256"] == data_hashes(spec), "data_sha256", "the input data files differ from those the certificate was made for")
    require(cert["spec_sha256"] == spec.sha256, "spec_sha256", "the certificate was made for another spec (hash mismatch)")
    level = cert.get("level")  # a spec with levels: g is the named level's explanation
    require(level in ([lv.name for lv in spec.levels] or [None]), "level",
            f"{level!r} is not one of the spec's levels" if spec.levels else "the spec has no levels")
    spec = spec.at_level(level) if spec.levels else spec
    f = read_model(spec.model.path, spec.model.sha256)
    require(cert["model_sha256"] == f.sha256, "model_sha256", "the certificate was made for another model (hash mismatch)")
    materialized = None
    if cert.get("materialized") is not None:
        m = _keys(cert["materialized"], {"path", "sha256"}, "materialized")
        mpath = Path(cert_path).parent / str(m["path"])
        require(mpath.is_file() and sha256_file(mpath) == m["sha256"], "materialized", f"{mpath} is missing or does not match its sha256")
        try:
            materialized = read_arrays(mpath)
        except BadInput as exc:
            raise Rejected("materialized", str(exc)) from None
    try:
        g = build_g(spec, f, materialized)
    except (KeyError, ValueError) as exc:
        raise Rejected("materialized", f"g cannot be rebuilt: {exc}") from None
    unused = sorted(set(materialized or {}) - getattr(g, "used", frozenset()))  # a mean fill is derived, pinned arrays are the spec's
    require(not unused and (materialized is None or g.used), "materialized",
            f"arrays {unused[:4]} do not define g (a mean fill is computed by the checker, pinned arrays come from the spec)"
            if unused else "an empty materialised file")

    claim = _keys(cert["claim"], CLAIM_KEYS | {"semantics"}, "claim", CLAIM_KEYS)
    if claim["deviation"] != spec.property.deviation or claim["outputs"] != (
            None if spec.property.outputs is None else list(spec.property.outputs)):
        raise Rejected("claim", "the claimed property differs from the spec's")
    require(claim.get("semantics", "real") == spec.property.semantics, "claim.semantics", "differs from the spec's semantics")
    require(parse_rational(claim["tolerance"]) == spec.property.tolerance, "claim.tolerance", "differs from the spec's tolerance")
    bound = parse_rational(claim["bound"])
    require(bound is not None, "claim.bound", "must be a 'p/q' rational string")
    require(("steps" in cert) + ("tree" in cert) + ("token_tree" in cert) == 1, "certificate",
            "needs exactly one of steps (one region), tree or token_tree (branch and bound)")
    if isinstance(f, Graph):  # a graph model: its own steps over the joint graph (checker/graph.py)
        return (bound, *check_graph(spec, f, g, cert, bound, input_box(spec, f), jobs), level, None)
    joint, _ = joint_network(exact_layers(f), g, spec.property.outputs)
    domain = with_free(g, *input_box(spec, f))  # x, then any free values v (fill: free)
    box = normalise_box(f, *domain)
    margins = None
    if spec.property.semantics == "float32":
        if f.input_scale is not None:
            raise BadInput(str(spec.path), "property.semantics", "float32 semantics needs a model without an input "
                           "affine layer", "fold the normalisation into the first dense layer")
        margins = float32_margins(exact_layers(f), g, box, spec.property.outputs, str(spec.path))
    steps = check_tree(cert.get("tree", {"steps": cert.get("steps")}), joint, box, bound, margins, jobs)

    witness_dev = None
    if cert.get("witness") is not None:
        w = _keys(cert["witness"], {"x", "deviation"}, "witness")
        x = _vector(w, "x", len(domain[0]), "witness")
        require(all(l <= v <= u for v, l, u in zip(x, *domain)), "witness", "the input lies outside the spec's domain")
        x = normalise_box(f, x, x)[0]
        diffs = [abs(v) for v in forward(joint, x)]
        witness_dev = max(diffs)
        require(parse_rational(w["deviation"]) == witness_dev, "witness",
                f"claimed deviation differs from the exact replay {rational_str(witness_dev)}")
        require(witness_dev <= bound, "witness", "the replayed deviation exceeds the certified bound: the bound is unsound")
        if margins is not None:  # a float32 run at a float32 input deviates at least this much, in any order
            witness_dev = max(Fraction(0), *(v - m for v, m in zip(diffs, margins))) if all(map(is_float32, x)) else None
    return bound, witness_dev, steps, level, cert.get("materialized") and cert["materialized"]["sha256"]


def check_certificate(spec_path: str | Path, cert_path: str | Path, jobs: int | None = None) -> CheckResult:
    """Re-check a certificate against its spec. Bad spec/model input raises BadInput (exit 2).
    `jobs` > 1: processes that check a split tree's leaves (default: this one). They start with
    multiprocessing's spawn method, which imports the caller's main script again in each worker:
    a script that passes jobs > 1 keeps its top level under `if __name__ == "__main__":`."""
    start = time.perf_counter()
    spec = read_spec(spec_path)
    tol = spec.property.tolerance
    try:
        with gc_paused():  # exact arithmetic makes no reference cycles; a full collection walks the certificate and the caller's heap
            bound, wdev, steps, level, arrays = _check(spec, Path(cert_path), jobs)
    except Rejected as exc:
        return CheckResult(Verdict.REJECTED, None, tol, None, 0, time.perf_counter() - start, str(exc))
    if bound <= tol:
        verdict = Verdict.CERTIFIED
    elif wdev is not None and wdev > tol:
        verdict = Verdict.VIOLATED
    else:
        verdict = Verdict.UNKNOWN
    unpinned = tuple(key for key, _ in (spec.at_level(level) if level is not None else spec).unpinned())
    return CheckResult(verdict, bound, tol, wdev, steps, time.perf_counter() - start, level=level,
                       unpinned=unpinned, arrays_sha256=arrays)
