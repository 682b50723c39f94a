"""`certify check`: build f and g, bound their deviation, falsify, write a certificate, check it.

Everything here is untrusted except the final call to the checker, whose result alone decides the
verdict.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from . import __version__
from .bounds.bab import branch_and_bound
from .bounds.falsify import falsify
from .bounds.network import box_floats, from_exact
from .certificate import certificate_json, propose, write_json_atomic
from .checker import exact
from .checker.check import CheckResult, check_certificate
from .checker.model import read_arrays, read_model, sha256_file
from .checker.network import build_g, check_outputs, exact_layers, input_box, joint_network, normalise_box
from .checker.spec import Spec, read_spec
from .explain import materialize
from .model import save_arrays

PLANS = {"interval": ("interval",), "crown": ("crown",), "alpha": ("alpha",), "bab": ("bab",),
         "auto": ("interval", "crown", "alpha", "bab")}
BAB_LEAF_METHOD = "alpha"


@dataclass(frozen=True)
class Outcome:
    spec: Spec
    certificate: Path
    check: CheckResult
    lower: Fraction | None  # exact deviation at the witness: an attained lower bound
    witness: list[Fraction] | None
    method: str
    tried: dict[str, float]  # method -> certified bound it proposed (float, for display)
    seconds: dict[str, float]

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
    return Path("proofs") / f"{spec.name}.cert.json"


def exact_witness(x: np.ndarray, domain) -> list[Fraction]:
    """The float point projected exactly into the (rational) domain box."""
    return [min(max(Fraction(float(v)), lo), up) for v, lo, up in zip(x, *domain)]


def run_check(spec_path: str | Path, out: str | Path | None = None, method: str | None = None) -> Outcome:
    t0 = time.perf_counter()
    spec = read_spec(spec_path)
    cert_path = Path(out) if out is not None else default_certificate_path(spec)
    f = read_model(spec.model.path, spec.model.sha256)
    domain = input_box(spec, f)  # validate the whole spec against the model before writing anything
    check_outputs(spec, f)

    arrays = materialize(spec, f)
    materialized = meta = None
    if arrays:
        gpath = cert_path.with_name(cert_path.name.replace(".cert.json", "") + ".g.npz")
        save_arrays(gpath, arrays)
        materialized = read_arrays(gpath)
        meta = {"path": gpath.name, "sha256": sha256_file(gpath)}
    g = build_g(spec, f, materialized)
    joint, shared = joint_network(exact_layers(f), g, spec.property.outputs)
    nbox = normalise_box(f, *domain)
    net = from_exact(joint)
    t1 = time.perf_counter()

    opts = spec.options
    lo_f, up_f = box_floats(*domain)
    x, _ = falsify(dataclasses.replace(net, input_scale=None if f.input_scale is None else np.array(f.input_scale),
                                       input_shift=None if f.input_shift is None else np.array(f.input_shift)),
                   lo_f, up_f, starts=opts.starts, steps=opts.steps, seed=opts.seed)
    witness = exact_witness(x, domain)
    xn = witness if f.input_scale is None else [v * Fraction(a) + Fraction(c) for v, a, c in zip(witness, f.input_scale, f.input_shift)]
    lower = max(abs(v) for v in exact.forward(joint, xn))
    t2 = time.perf_counter()

    tol, plan = spec.property.tolerance, PLANS[method or opts.method]
    best, tried, extra = None, {}, {}
    for m in plan:
        if m == "bab":
            if len(plan) > 1 and (lower > tol or best[1] <= tol):
                break  # settled: auto only branches when the tolerance lies between lower and upper
            budget = max(1.0, float(opts.timeout_s) - (time.perf_counter() - t0))
            r = branch_and_bound(net, joint, nbox, BAB_LEAF_METHOD, tol, time_budget=budget, max_leaves=opts.max_leaves)
            bound, body = r.bound, {"tree": r.tree}
            extra = {"bab": {"leaves": r.leaves, "splits": r.splits, "seconds": round(r.seconds, 3)}}
        else:
            proposal = propose(net, joint, nbox, m)
            bound, body = proposal.bound, {"steps": proposal.steps}
        tried[m] = float(bound)
        if best is None or bound < best[1]:
            best = (m, bound, body)
        if bound <= tol or time.perf_counter() - t0 > float(opts.timeout_s):
            break
    chosen, bound, body = best
    t3 = time.perf_counter()

    engine = {"certify": __version__, "method": chosen, "shared_layers": shared,
              "joint_widths": [len(joint[0][0][0][0])] + [len(b[0]) for _, b in joint], "seconds": round(t3 - t0, 3), **extra}
    write_json_atomic(cert_path, certificate_json(spec=spec, model_sha256=f.sha256, bound=bound, body=body,
                                                  witness=(witness, lower), materialized=meta, engine=engine))
    result = check_certificate(spec.path, cert_path)
    t4 = time.perf_counter()
    return Outcome(spec, cert_path, result, lower, witness, chosen, tried,
                   {"build": t1 - t0, "falsify": t2 - t1, "bound": t3 - t2, "check": t4 - t3, "total": t4 - t0})
