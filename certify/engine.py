"""`certify check`: build f and g, bound their deviation, falsify, write a certificate, check it.

Everything here is untrusted except the final call to the checker, whose result alone decides the
verdict.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from . import __version__
from .bounds.bab import branch_and_bound
from .bounds.falsify import falsify
from .bounds.lp import LP_MAX_VARIABLES, lp_fits, lp_variables
from .bounds.network import box_floats, from_exact, joint_pairs
from .bounds.driver import propose
from .certificate import certificate_json, write_json_atomic
from .checker import exact
from .checker.check import CheckResult, check_certificate
from .checker.errors import BadInput
from .checker.float32 import float32_margins
from .checker.model import gc_paused, read_arrays, read_model, sha256_file
from .checker.network import build_g, check_outputs, exact_layers, input_box, joint_network, normalise_box, with_free
from .checker.graph import Graph
from .checker.spec import Spec, read_spec
from .options import Options, read_options
from .explain import materialize
from .model import save_arrays
from .files import certificate_path
from .status import OutcomeViews
from .pin import by_transform, refuse_unpinned, write_arrays
from .bounds.methods import METHODS

PLANS = {name: m.dense for name, m in METHODS.items()}
BAB_LEAF_METHOD = "alpha"


@dataclass(frozen=True)
class Outcome(OutcomeViews):
    """What `certify check` (and `certify.check`) found for one spec or level; the verdict is the
    checker's (`.check`). `OutcomeViews` adds .status, .bound, .witness_float, .to_json() and the
    notebook card."""

    spec: Spec
    certificate: Path
    check: CheckResult
    lower: Fraction | None  # exact deviation at the witness: an attained lower bound
    witness: list[Fraction] | None
    method: str
    tried: dict[str, float]  # method -> certified bound it proposed (float, for display)
    seconds: dict[str, float]
    cached: bool = False  # an up-to-date certificate was re-verified instead of re-bounded
    notes: tuple[str, ...] = ()  # what reading the model changed (e.g. an ONNX Softmax dropped)
    pins: tuple = ()  # unpinned float transforms: pin-ready array files written beside the certificate

    @property
    def verdict(self):
        return self.check.verdict

    @property
    def gap(self) -> float | None:
        b, lo = self.check.bound, self.lower
        if b is None or lo is None:
            return None
        return float("inf") if lo == 0 and b > 0 else (1.0 if b == 0 else float(b / lo))


def default_certificate_path(spec: Spec) -> Path:
    return certificate_path(spec)  # proofs/<spec name>.cert.json: the one rule, certify/files.py


def exact_witness(x: np.ndarray, domain) -> list[Fraction]:
    """The float point projected exactly into the (rational) domain box."""
    return [min(max(Fraction(float(v)), lo), up) for v, lo, up in zip(x, *domain)]


@dataclass(frozen=True)
class Problem:
    """Everything the methods share: the spec, f, the exact joint network and its float copy, the box."""

    spec: Spec
    model: object
    certificate: Path
    materialized: dict | None  # {"path", "sha256"} of the materialised arrays, or None
    joint: list
    shared: int
    domain: tuple  # exact box in the spec's input space (then the free values' ranges R, under `fill: free`)
    box: tuple  # exact box in the network's input space
    net: object  # FloatNet of the joint network
    margins: tuple = ()  # float32 semantics: per-output rounding error bounds (else empty)
    options: Options = Options()  # how to search (the spec's `options:`)
    pins: tuple = ()  # unpinned float transforms: their arrays written as pin-ready files (certify.pin.Pinned)


def select_level(spec: Spec, level: str | None) -> Spec:
    """The spec at `level` (required exactly when the spec lists `levels:`)."""
    names = [lv.name for lv in spec.levels]
    if level is None and not names:
        return spec
    if level not in names:
        raise BadInput(str(spec.path), "levels", f"no level {level!r}" if names else "the spec has no levels",
                       f"choose one of {', '.join(names)}" if names else "omit the level")
    return spec.at_level(level)


def load(spec_path: str | Path, out: str | Path | None, level: str | None, strict: bool):
    """(spec at the level, options, certificate path, f, input box), everything validated against the
    model before anything is written. `strict`: unpinned float arrays are bad input."""
    spec = select_level(read_spec(spec_path), level)
    if strict:
        refuse_unpinned(spec)
    options = read_options(spec)
    cert_path = Path(out) if out is not None else default_certificate_path(spec)
    f = read_model(spec.model.path, spec.model.sha256)
    domain = input_box(spec, f)
    check_outputs(spec, f)
    return spec, options, cert_path, f, domain


def prepare(spec_path: str | Path, out: str | Path | None = None, level: str | None = None, strict: bool = False) -> Problem:
    """Read and validate everything, materialise unpinned float transforms, build the joint network."""
    spec, options, cert_path, f, domain = load(spec_path, out, level, strict)
    arrays = materialize(spec, f)
    materialized = meta = None
    pins = ()
    if arrays:
        gpath = cert_path.with_name(cert_path.name.replace(".cert.json", "") + ".g.npz")
        save_arrays(gpath, arrays)
        materialized = read_arrays(gpath)
        meta = {"path": gpath.name, "sha256": sha256_file(gpath)}
        pins = tuple(write_arrays(spec, by_transform(spec, arrays), cert_path.parent))  # ready to pin
    g = build_g(spec, f, materialized)
    joint, shared = joint_network(exact_layers(f), g, spec.property.outputs)
    domain = with_free(g, *domain)  # fill: free: the domain is box x R, the witness (x, v)
    box = normalise_box(f, *domain)
    margins = ()
    if spec.property.semantics == "float32":
        if f.input_scale is not None:
            raise BadInput(str(spec.path), "property.semantics", "float32 semantics needs a model without an input "
                           "affine layer", "fold the normalisation into the first dense layer")
        margins = tuple(float32_margins(exact_layers(f), g, box, spec.property.outputs, str(spec.path)))
    net = from_exact(joint)
    net = dataclasses.replace(net, pairs=joint_pairs(net.widths, f.widths, shared), shared=shared)
    return Problem(spec, f, cert_path, meta, joint, shared, domain, box, net, margins, options, pins)


def float32_inside(v: Fraction, lo: Fraction, up: Fraction) -> Fraction:
    """A float32 value in [lo, up] next to v (v itself if no float32 lies in the interval)."""
    x = np.float32(float(v))
    if Fraction(float(x)) < lo:
        x = np.nextafter(x, np.float32(np.inf))
    elif Fraction(float(x)) > up:
        x = np.nextafter(x, np.float32(-np.inf))
    return Fraction(float(x)) if lo <= Fraction(float(x)) <= up else v


def attained_lower(p: Problem) -> tuple[list[Fraction], Fraction]:
    """The falsifier's best input, projected exactly into the domain, and its exact deviation."""
    f, opts = p.model, p.options
    net = dataclasses.replace(p.net, **float_affine(f, len(p.domain[0])))
    x, _ = falsify(net, *box_floats(*p.domain), starts=opts.starts, steps=opts.steps, seed=opts.seed)
    witness = exact_witness(x, p.domain)
    if p.margins:  # float32 semantics: the witness must be an input a float32 run can take
        witness = [float32_inside(v, lo, up) for v, lo, up in zip(witness, *p.domain)]
    return witness, max(abs(v) for v in exact.forward(p.joint, normalise_box(f, witness, witness)[0]))


def float_affine(f, dim: int) -> dict:
    """f's input normalisation as float arrays over all `dim` domain coordinates (free values v: identity)."""
    if f.input_scale is None:
        return {"input_scale": None, "input_shift": None}
    extra = dim - len(f.input_scale)
    return {"input_scale": np.concatenate([np.array(f.input_scale, float), np.ones(extra)]),
            "input_shift": np.concatenate([np.array(f.input_shift, float), np.zeros(extra)])}


@contextlib.contextmanager
def _progress(total: int):
    """A rich progress bar for branch and bound on an interactive terminal; silent otherwise (CI logs)."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("branch and bound"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                  TimeElapsedColumn(), transient=True, console=None) as bar:
        task = bar.add_task("", total=total)
        yield lambda leaves, bound: bar.update(task, completed=leaves,
                                               description="" if bound is None else f"bound {float(bound):.6g}")


def bound_with(p: Problem, method: str, *, time_budget: float, stop_below: Fraction | None = None,
               workers: int = 0, address: str | None = None):
    """(bound, certificate body, engine notes) for one method. `workers` > 0: branch and bound's
    leaves are bounded by that many Ray workers (local, or the cluster at `address`)."""
    if method == "bab":
        with _progress(p.options.max_leaves) as report:
            r = branch_and_bound(p.net, p.joint, p.box, BAB_LEAF_METHOD, p.spec.property.tolerance,
                                 time_budget=time_budget, max_leaves=p.options.max_leaves, stop_below=stop_below,
                                 margins=p.margins, progress=report, workers=workers, address=address)
        return r.bound, {"tree": r.tree}, {"bab": {"leaves": r.leaves, "splits": r.splits, "seconds": round(r.seconds, 3),
                                                   "leaf_method": r.leaf_method, "workers": max(workers, 1)}}
    if p.net.pairs and method in ("crown", "alpha"):  # differential bounds help most explanations, not all:
        crown = propose(p.net, p.joint, p.box, "crown", margins=p.margins)  # CROWN (cheap) decides, for alpha too
        used = any(s["kind"] == "difference" and s["pairs"] for s in crown.steps)
        plain = propose(p.net, p.joint, p.box, "crown", margins=p.margins, differential=False) if used else crown
        used = used and crown.bound <= plain.bound
        proposal = (crown if used else plain) if method == "crown" else \
            propose(p.net, p.joint, p.box, method, margins=p.margins, differential=used)
        return proposal.bound, {"steps": proposal.steps}, {"differential": used}
    proposal = propose(p.net, p.joint, p.box, method, margins=p.margins)
    notes = {"lp": f"{lp_variables(p.net)} LP variables exceed {LP_MAX_VARIABLES}: output layer bounded with alpha-CROWN"
             } if method == "lp" and not lp_fits(p.net) else {}
    return proposal.bound, {"steps": proposal.steps}, notes


def write_and_check(p: Problem, method: str, bound: Fraction, body: dict, witness, lower, notes: dict,
                    path: Path | None = None, jobs: int | None = None) -> CheckResult:
    """Write the certificate atomically, then let the trusted checker decide."""
    path = path or p.certificate
    engine = {"certify": __version__, "method": method, "shared_layers": p.shared,
              "joint_widths": list(p.net.widths), **notes}
    with gc_paused():  # a split tree's JSON is millions of new objects, none garbage: every full collection walked
        # the engine's heap again (a 1,370-leaf MNIST-7 body: 1.27-1.49 CPU s with the collector on, 0.90-1.00 s paused)
        cert = certificate_json(spec=p.spec, model_sha256=p.model.sha256, bound=bound, body=body,
                                witness=None if witness is None else (witness, lower),
                                materialized=p.materialized, engine=engine)
        if p.spec.level is not None:  # which of the spec's levels g is
            cert = {**cert, "level": p.spec.level}
        write_json_atomic(path, cert)
    del cert
    return check_certificate(p.spec.path, path, jobs)


def level_certificate_path(out: str | Path, level: str) -> Path:
    """`--out X.cert.json` for a spec with levels: X.<level>.cert.json (or `{level}` in the name replaced)."""
    out = Path(out)
    if "{level}" in out.name:
        return out.with_name(out.name.replace("{level}", level))
    stem = out.name[:-len(".cert.json")] if out.name.endswith(".cert.json") else out.name
    return out.with_name(f"{stem}.{level}.cert.json")


def validate_levels(spec_path: str | Path, names=None, strict: bool = False) -> Spec:
    """Every level of a spec with `levels:` (or those in `names`) read, its float transforms materialised in
    memory and its g built, so that a bad level is one-line bad input before the first level is bounded
    or any certificate written (`certify check`, `certify flow`). Returns the spec."""
    spec = read_spec(spec_path)
    if strict:
        refuse_unpinned(spec)
    f = read_model(spec.model.path, spec.model.sha256)
    for lv in spec.levels:
        if names is None or lv.name in names:
            level = spec.at_level(lv.name)
            input_box(level, f)
            arrays = materialize(level, f)
            build_g(level, f, {k: (v.shape, tuple(v.ravel().tolist())) for k, v in arrays.items()})
    return spec


def run_levels(spec_path: str | Path, out: str | Path | None = None, method: str | None = None,
               strict: bool = False) -> list[Outcome]:
    """`certify check` on a spec with `levels:`: one certificate per level, fine to coarse. Every level
    is validated (and its float transforms materialised in memory) before any certificate is written."""
    spec = validate_levels(spec_path, strict=strict)
    return [run_check(spec_path, None if out is None else level_certificate_path(out, lv.name), method, lv.name, strict)
            for lv in spec.levels]


def run_check(spec_path: str | Path, out: str | Path | None = None, method: str | None = None,
              level: str | None = None, strict: bool = False, *, timeout: float | None = None,
              workers: int = 0, address: str | None = None, jobs: int | None = None) -> Outcome:
    """`timeout` (seconds) overrides the spec's options.timeout_s (how long to search; not part of the claim).
    `workers`, `address`: branch and bound on Ray (bound_with); `jobs`: processes that check a split tree."""
    spec = read_spec(spec_path)
    if isinstance(read_model(spec.model.path, spec.model.sha256), Graph):  # named values, typed nodes: engine_graph.py
        from .engine_graph import run_graph_check
        return run_graph_check(spec_path, out, method, level, strict, timeout, jobs)
    t0 = time.perf_counter()
    p = prepare(spec_path, out, level, strict)
    if timeout is not None:
        p = dataclasses.replace(p, options=dataclasses.replace(p.options, timeout_s=Fraction(timeout)))
    t1 = time.perf_counter()
    witness, lower = attained_lower(p)
    t2 = time.perf_counter()

    opts, tol = p.options, p.spec.property.tolerance
    plan = PLANS[method or opts.method]
    best, tried = None, {}
    for m in plan:
        if m == "bab" and len(plan) > 1 and (lower > tol or best[1] <= tol):
            break  # settled: auto only branches when the tolerance lies between lower and upper
        bound, body, notes = bound_with(p, m, time_budget=max(1.0, float(opts.timeout_s) - (time.perf_counter() - t0)),
                                        stop_below=lower * Fraction(101, 100) if lower > tol else None,  # violated:
                                        workers=workers, address=address)
        # branch and bound's budget is time, not leaves; it stops within 1 % of the attained deviation
        tried[m] = float(bound)
        if best is None or bound < best[1]:
            best = (m, bound, body, notes)
        if bound <= tol or time.perf_counter() - t0 > float(opts.timeout_s):
            break
    chosen, bound, body, notes = best
    t3 = time.perf_counter()
    result = write_and_check(p, chosen, bound, body, witness, lower, {**notes, "seconds": round(t3 - t0, 3)}, jobs=jobs)
    t4 = time.perf_counter()
    if p.margins:  # float32: what every float32 run provably attains at the witness (the checker's number)
        lower = result.witness_deviation
    return Outcome(p.spec, p.certificate, result, lower, witness, chosen, tried,
                   {"build": t1 - t0, "falsify": t2 - t1, "bound": t3 - t2, "check": t4 - t3, "total": t4 - t0},
                   notes=tuple(getattr(p.model, "notes", ())), pins=p.pins)
