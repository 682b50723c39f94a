"""Gather what an audit report says about one certificate: the trusted checker's verdict first,
then the claim (from the spec and the files), and what the accepted certificate's own verified
numbers say about where the deviation comes from.

Nothing here decides a verdict: `check_certificate` (the trusted checker) does. Numbers read from a
certificate are shown only when the checker accepted it, because then every one of them was
re-derived exactly; the `engine` block is labelled as the untrusted engine's own notes.
"""

from __future__ import annotations

import math

import json
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from ..checker.check import CheckResult, Verdict, check_certificate, data_hashes
from ..checker.errors import BadInput
from ..checker.exact import forward, qmat, qvec
from ..checker.model import read_arrays, read_model, sha256_file
from ..checker.network import build_g, exact_layers, input_box, joint_network, normalise_box, with_free
from ..checker.numbers import parse_rational
from ..checker.spec import Spec, read_spec
from ..status import Status



@dataclass
class OutputRow:
    index: int  # the model's output index i
    lower: Fraction  # verified lower bound of f_i - g_i on the whole domain
    upper: Fraction  # verified upper bound
    f: Fraction | None = None  # f_i, g_i and f_i - g_i at the witness (exact)
    g: Fraction | None = None
    diff: Fraction | None = None

    @property
    def certified(self) -> Fraction:
        """The certified bound on |f_i - g_i| over the domain."""
        return max(self.upper, -self.lower)


@dataclass
class LayerRow:
    layer: int  # dense layer of the joint network (1-based)
    width: int
    role: str
    active: int | None = None  # ReLU phases from the verified bounds (None: no bounds at the root)
    inactive: int | None = None
    unstable: int | None = None
    unstable_f: int | None = None  # split by branch, for the layers where f and g run side by side
    unstable_g: int | None = None


@dataclass
class Entry:
    spec_path: str
    name: str
    status: Status  # CERTIFIED | VIOLATED | UNKNOWN | REJECTED | MISSING | BAD INPUT
    message: str = ""  # why REJECTED / MISSING / BAD INPUT
    spec: Spec | None = None
    level: str | None = None
    cert_path: Path | None = None
    cert_sha256: str | None = None
    check: CheckResult | None = None
    ran_check: bool = False  # the certificate was missing and `--run` made it
    model_widths: tuple | None = None
    model_notes: tuple = ()
    model_sha256_file: str | None = None  # the model file's hash, computed now
    spec_sha256_file: str | None = None
    data_sha256_file: dict = field(default_factory=dict)
    second_models: list = field(default_factory=list)  # (path, sha256 the spec declares, sha256 of the file now)
    cert_hashes: dict = field(default_factory=dict)  # spec/model/data sha256 and materialised file, as the certificate states them
    domain: tuple | None = None  # exact box (lower, upper) in raw input space
    domain_text: list = field(default_factory=list)
    transforms: list = field(default_factory=list)
    outputs_text: str = ""
    witness: list | None = None
    tokens: list | None = None  # a token domain's witness as its token sequence
    outputs: list = field(default_factory=list)  # OutputRow
    layers: list = field(default_factory=list)  # LayerRow
    shared: int | None = None
    engine: dict = field(default_factory=dict)  # the certificate's engine block (untrusted notes)
    tree: dict | None = None  # summary of a branch-and-bound tree
    plots: dict = field(default_factory=dict)  # name -> PNG bytes, filled by plots.py

    @property
    def exit_code(self) -> int:
        return Status(self.status).exit_code

    @property
    def accepted(self) -> bool:
        return Status(self.status).accepted

    @property
    def bound(self) -> Fraction | None:
        return self.check.bound if self.check is not None and self.accepted else None

    @property
    def lower(self) -> Fraction | None:
        return self.check.witness_deviation if self.check is not None and self.accepted else None

    @property
    def tolerance(self) -> Fraction | None:
        return None if self.spec is None else self.spec.property.tolerance

    @property
    def gap(self) -> float | None:
        b, lo = self.bound, self.lower
        if b is None or lo is None:
            return None
        return float("inf") if lo == 0 and b > 0 else (1.0 if b == 0 else float(b / lo))


def show_path(p: str | Path) -> str:
    """A path as a reader would type it: relative to the working directory when that is short."""
    p = Path(p)
    try:
        rel = os.path.relpath(p)
    except ValueError:
        return str(p)
    return rel if not rel.startswith("../../") else str(p)


def ranges(indices) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8'."""
    out, run = [], []
    for i in list(indices) + [None]:
        if run and (i is None or i != run[-1] + 1):
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
            run = []
        if i is not None:
            run.append(i)
    return ", ".join(out)


def _num(q) -> str:
    q = Fraction(q)
    return str(q.numerator) if q.denominator == 1 else (f"{q.numerator}/{q.denominator}" if q.denominator < 10**6 else f"{float(q):.6g}")


def _vector_text(value, what: str, width: int) -> str:
    if isinstance(value, Path):
        return f"{what} from {show_path(value)} (sha256 {sha256_file(value)})"
    if isinstance(value, Fraction):
        return f"{what} {_num(value)} for every input"
    return f"{what} given as a list of {len(value)} numbers" + (f": [{', '.join(_num(v) for v in value)}]" if len(value) <= 8 else "")


def describe_domain(spec: Spec, lo: list, up: list) -> list[str]:
    inp, n = spec.input, len(lo)
    lines = []
    if inp.kind == "tokens":
        vocab, length, allowed = inp.tokens
        sizes = [len(a) for a in allowed]
        per = ", ".join("all" if k == vocab else f"{k} tokens" for k in sizes)
        lines.append(f"Every token sequence of length {length} over a vocabulary of {vocab} tokens (allowed per position: {per}): "
                     f"{math.prod(sizes):,} sequences, each the concatenation of its one-hot vectors ({n} inputs).")
        return lines
    if inp.kind == "box":
        lines.append(f"Box over {n} inputs: " + _vector_text(inp.lower, "lower bound", n) + "; " + _vector_text(inp.upper, "upper bound", n) + ".")
    elif inp.kind == "linf_ball":
        lines.append(f"L-infinity ball of radius {_num(inp.radius)} (about {float(inp.radius):.4g}) around a point of {n} inputs: "
                     + _vector_text(inp.center, "centre", n) + ".")
    else:
        lines.append(f"VNN-LIB region {show_path(inp.vnnlib)} (sha256 {sha256_file(inp.vnnlib)}): box constraints on {n} inputs.")
    if inp.clip is not None:
        lines.append(f"Intersected with [{_num(inp.clip[0])}, {_num(inp.clip[1])}] in every input (clip).")
    free = [i for i in range(n) if lo[i] < up[i]]
    widths = [up[i] - lo[i] for i in free]
    text = f"Exact domain: {len(free)} of {n} inputs vary"
    if free:
        text += f" (widths {float(min(widths)):.4g} to {float(max(widths)):.4g})"
    text += f"; {n - len(free)} fixed. Overall range [{float(min(lo)):.4g}, {float(max(up)):.4g}]."
    lines.append(text)
    return lines


def describe_transform(t, widths: tuple) -> str:
    """The transform's sentence, from its float half (explain/transforms.py; no fallback)."""
    from ..explain.transforms import half

    return half(t).describe(t, widths)


def _intersect(bounds: dict, step: dict) -> None:
    """A bound step's claims intersected into `bounds` (a step with `neurons` bounds only those, as the checker reads it)."""
    lo = [parse_rational(v) for v in step["lower"]]
    up = [parse_rational(v) for v in step["upper"]]
    k = step["layer"]
    if k in bounds:
        olo, oup = (list(v) for v in bounds[k])
        for i, a, b in zip(step.get("neurons", range(len(lo))), lo, up):
            olo[i], oup[i] = max(a, olo[i]), min(b, oup[i])
        lo, up = olo, oup
    bounds[k] = (lo, up)


def step_bounds(steps: list) -> dict:
    """layer -> (lower, upper): every bound step of a list, intersected per layer (as the checker does)."""
    bounds: dict = {}
    for s in steps or []:
        if isinstance(s, dict) and s.get("kind") in ("interval", "linear"):
            _intersect(bounds, s)
    return bounds


def region_bounds(cert: dict, n: int, bound: Fraction | None = None) -> dict:
    """layer -> (lower, upper): verified bounds of every layer over the whole domain, from an
    accepted certificate (layer n: the output, f - g).

    Flat certificates: each layer's steps, intersected. Trees: along each path from the root, a
    layer's steps are intersected (a child inherits its parent's bounds); a region is done where
    its output bounds prove the claimed bound (the checker stops there) or where it is not split;
    each layer's envelope over those regions is returned (a layer that some region leaves
    unbounded is left out). Regions with no output bounds are empty ones (the checker accepted
    them as such) and add nothing. A split node need not bound any layer itself (an input split's
    children bound every layer on their own boxes), so the root's steps alone do not describe the
    domain.
    """
    if "tree" not in cert:
        return step_bounds(cert.get("steps"))
    env: dict | None = None  # layer -> envelope so far, for the layers every region so far bounds
    stack = [(cert["tree"], {})]
    while stack:
        node, inherited = stack.pop()
        bounds = dict(inherited)
        for s in node.get("steps", []):
            if isinstance(s, dict) and s.get("kind") in ("interval", "linear"):
                _intersect(bounds, s)
        here = bounds.get(n)
        proved = here is not None and bound is not None and all(max(u, -l) <= bound for l, u in zip(*here))
        if "split" in node and not proved:
            stack += [(kid, bounds) for kid in node.get("children", [])]
            continue
        if here is None:
            continue
        if env is None:
            env = dict(bounds)
            continue
        for k in list(env):
            if k not in bounds:
                del env[k]
            else:
                (lo, up), (l2, u2) = env[k], bounds[k]
                env[k] = ([min(a, c) for a, c in zip(lo, l2)], [max(a, c) for a, c in zip(up, u2)])
    return env or {}


def output_bounds(cert: dict, n: int, bound: Fraction | None = None) -> tuple[list, list] | None:
    """The verified bounds of f - g over the whole domain (see `region_bounds`)."""
    return region_bounds(cert, n, bound).get(n)


def tree_summary(tree: dict) -> dict:
    nodes = leaves = depth = 0
    kinds = {"input": 0, "relu": 0}
    stack = [(tree, 0)]
    while stack:
        node, d = stack.pop()
        nodes, depth = nodes + 1, max(depth, d)
        if "split" in node:
            kinds[node["split"]] = kinds.get(node["split"], 0) + 1
            stack += [(kid, d + 1) for kid in node.get("children", [])]
        else:
            leaves += 1
    return {"nodes": nodes, "leaves": leaves, "depth": depth, "input_splits": kinds.get("input", 0), "relu_splits": kinds.get("relu", 0)}


def layer_rows(widths: list[int], shared: int, hidden_bounds: dict) -> list[LayerRow]:
    n = len(widths)
    rows = []
    for k, w in enumerate(widths, 1):
        if k == n:
            role = "output: f - g" if n > 1 else "output"
        elif k <= shared:
            role = "shared (f = g)"
        elif k == shared + 1:
            role = "f | g stacked"
        else:
            role = "f | g block-diagonal"
        row = LayerRow(k, w, role)
        if k < n and k in hidden_bounds:
            lo, up = hidden_bounds[k]
            phase = ["u" if l < 0 < u else ("a" if l >= 0 else "i") for l, u in zip(lo, up)]
            row.active, row.inactive, row.unstable = phase.count("a"), phase.count("i"), phase.count("u")
            if k > shared:
                half = w // 2
                row.unstable_f, row.unstable_g = phase[:half].count("u"), phase[half:].count("u")
        rows.append(row)
    return rows


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _claim(entry: Entry, spec: Spec) -> None:
    """What is claimed, from the spec and the files themselves (never from the certificate)."""
    f = read_model(spec.model.path, spec.model.sha256)
    entry.model_widths, entry.model_notes, entry.model_sha256_file = f.widths, tuple(getattr(f, "notes", ())), f.sha256
    entry.spec_sha256_file = spec.sha256
    entry.data_sha256_file = data_hashes(spec)
    lo, up = input_box(spec, f)
    entry.domain = (lo, up)
    entry.domain_text = describe_domain(spec, lo, up)
    entry.transforms = [describe_transform(t, f.widths) for t in spec.explanation]
    for t in spec.explanation:
        if getattr(t, "kind", "") == "model":
            g = read_model(t.model.path, t.model.sha256)
            entry.second_models.append((t.model.path, t.model.sha256, g.sha256))
            entry.model_notes += tuple(getattr(g, "notes", ()))
    outs = spec.property.outputs
    entry.outputs_text = (f"all {f.out_dim} outputs" if outs is None else f"outputs {', '.join(map(str, outs))} of {f.out_dim}")
    return f


def _evidence(entry: Entry, spec: Spec, f, cert: dict) -> None:
    """Per-output and per-layer numbers of an accepted certificate, and the witness replayed exactly."""
    from ..checker.graph import Graph

    if isinstance(f, Graph):
        return _graph_evidence(entry, spec, f, cert)
    materialized = None
    if cert.get("materialized") is not None:
        materialized = read_arrays(entry.cert_path.parent / str(cert["materialized"]["path"]))
    fl = exact_layers(f)
    g = build_g(spec, f, materialized)
    entry.domain = with_free(g, *entry.domain)  # fill: free: the witness is (x, v), v in R
    outs = list(range(f.out_dim)) if spec.property.outputs is None else list(spec.property.outputs)
    joint, shared = joint_network(fl, g, spec.property.outputs)
    entry.shared = shared
    n = len(joint)
    widths = [len(b[0]) for _, b in joint]
    bounds = region_bounds(cert, n, entry.check.bound)
    entry.layers = layer_rows(widths, shared, bounds)
    env = bounds.get(n)
    if env is not None:
        entry.outputs = [OutputRow(i, l, u) for i, l, u in zip(outs, *env)]
    w = cert.get("witness")
    if isinstance(w, dict) and entry.check.witness_deviation is not None:
        x = [parse_rational(v) for v in w["x"]]
        entry.witness = x
        x = normalise_box(f, x, x)[0]  # a `fill: free` witness: x, then the free values v
        diff = forward(joint, x)  # f_i - g_i, exactly, as the checker replays it
        fo = forward([(qmat(d.weight), qvec(d.bias)) for d in f.dense], x[:f.in_dim])  # f exactly (floats are exact rationals)
        for row, d in zip(entry.outputs, diff):
            row.f, row.g, row.diff = fo[row.index], fo[row.index] - d, d
    if "tree" in cert:
        entry.tree = tree_summary(cert["tree"])


def _graph_evidence(entry: Entry, spec: Spec, f, cert: dict) -> None:
    """A graph model's per-output bounds (the verified bounds of the joint graph's output d, intersected
    over its steps as the checker does) and the witness's values (midpoints of the checker's balls)."""
    from ..checker import curves
    from ..checker.graph import evaluate, free_ranges, joint_graph

    joint = joint_graph(f, build_g(spec, f, None), spec.property.outputs)
    flo, fup = free_ranges(joint)  # fill: free: a witness may list the free values after x
    entry.domain = (list(entry.domain[0]) + flo, list(entry.domain[1]) + fup)
    outs = list(range(f.out_dim)) if spec.property.outputs is None else list(spec.property.outputs)
    lo = up = None
    for step in cert.get("steps", []):
        if step.get("kind") == "bounds" and step.get("node") == "d":
            sl, su = [parse_rational(v) for v in step["lower"]], [parse_rational(v) for v in step["upper"]]
            lo = sl if lo is None else [max(a, b) for a, b in zip(lo, sl)]
            up = su if up is None else [min(a, b) for a, b in zip(up, su)]
    if lo is not None:
        entry.outputs = [OutputRow(i, a, b) for i, a, b in zip(outs, lo, up)]
    w = cert.get("witness")
    if isinstance(w, dict) and entry.check.witness_deviation is not None:
        x = [parse_rational(v) for v in w["x"]]
        entry.witness = x
        if spec.input.kind == "tokens":  # the checker accepted it as one-hot blocks of allowed tokens
            vocab = spec.input.tokens[0]
            entry.tokens = [x[p * vocab:(p + 1) * vocab].index(1) for p in range(f.in_dim // vocab)]
        values = evaluate(joint, x)
        fo = [curves.exact(v.mid()) for v in values[f.output]]
        for row, d in zip(entry.outputs, values["d"]):
            row.f, row.diff = fo[row.index], curves.exact(d.mid())
            row.g = row.f - row.diff


def collect(spec_path: str | Path, cert_path: Path, *, level: str | None = None, run: bool = False) -> Entry:
    """One report entry: the certificate re-checked, and everything shown about it."""
    name = Path(spec_path).stem if level is None else f"{Path(spec_path).stem}.{level}"
    entry = Entry(str(spec_path), name, Status.BAD_INPUT, cert_path=Path(cert_path), level=level)
    try:
        spec = read_spec(spec_path)
        if level is not None:
            spec = spec.at_level(level)
        entry.spec = spec
        if not entry.cert_path.is_file() and run:
            from ..engine import run_check  # JAX only when asked to bound
            run_check(spec_path, entry.cert_path, None, level) if level is not None else run_check(spec_path, entry.cert_path)
            entry.ran_check = True
        if not entry.cert_path.is_file():
            entry.status = Status.MISSING
            entry.message = (f"no certificate at {show_path(entry.cert_path)}: nothing about this spec is certified. "
                             f"Run `certify check {show_path(spec_path)} --out {show_path(entry.cert_path)}` (or `certify report --run`).")
            _claim(entry, spec)
            return entry
        entry.cert_sha256 = sha256_file(entry.cert_path)
        result = check_certificate(spec_path, entry.cert_path)
        entry.check = result
        cert = _read_json(entry.cert_path) or {}
        if result.verdict is not Verdict.REJECTED and getattr(result, "level", None) and level is None:
            spec = entry.spec = spec.at_level(result.level)  # a --cert for one level of a spec with levels
            entry.level, entry.name = result.level, f"{entry.name}.{result.level}"
        elif level is None and isinstance(cert.get("level"), str) and getattr(spec, "levels", ()):
            names = [lv.name for lv in spec.levels]
            if cert["level"] in names:  # only to describe the claim; the checker's verdict stands
                spec = entry.spec = spec.at_level(cert["level"])
        entry.status = Status.of(result.verdict)
        entry.message = result.reason
        f = _claim(entry, spec)
        entry.cert_hashes = {k: cert.get(k) for k in ("spec_sha256", "model_sha256", "data_sha256", "materialized")}
        if isinstance(cert.get("engine"), dict):
            entry.engine = cert["engine"]
        if entry.accepted:
            _evidence(entry, spec, f, cert)
    except BadInput as exc:
        entry.status, entry.message = Status.BAD_INPUT, str(exc)
    return entry
