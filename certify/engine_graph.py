"""`certify check` on a graph model (residual networks, LayerNorm, GELU, SAEs): build f and g as
graphs, falsify, bound d = f - g over the joint graph, write the certificate, check it.

Untrusted, like `certify.engine`; the checker's verdict alone decides. Methods: `interval`, `crown`,
`alpha` (alpha-CROWN: free slopes optimised for every back-substitution bound), `bab` (branch and
bound over input splits, CROWN or alpha-CROWN leaves), `auto` (interval, crown, alpha, then bab where
the tolerance lies between the attained deviation and the bound). `lp` has no graph version: CROWN is
used and the output says so.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from fractions import Fraction

from . import __version__
from .bounds import graph as gb
from .certificate import certificate_json, write_json_atomic
from .checker.check import CheckResult, check_certificate
from .checker.errors import BadInput
from .checker.graph import Graph, deviation_at, free_ranges, joint_graph
from .bounds.methods import METHODS
from .checker.network import build_g

PLANS = {name: m.graph for name, m in METHODS.items()}
ALPHA_PAYS = 0.5  # bab leaves use alpha-CROWN where alpha on the output alone removes this share of CROWN's excess over
# the attained deviation at the root: an alpha leaf costs ~10x a CROWN leaf (resmlp_sae: 40 s of CROWN leaves reach 7.261,
# of alpha leaves 7.281, from 7.407)


@dataclass(frozen=True)
class GraphProblem:
    spec: object
    options: object
    certificate: object
    f: Graph
    joint: Graph
    box: tuple


def prepare_graph(spec_path, out=None, level: str | None = None, strict: bool = False) -> GraphProblem:
    from .engine import load

    spec, opts, cert_path, f, box = load(spec_path, out, level, strict)
    g = build_g(spec, f, None)
    joint = joint_graph(f, g, spec.property.outputs)
    if spec.property.semantics != "real":  # the checker refuses it in the same words
        from .checker.graph import check_graph

        check_graph(spec, f, g, {}, Fraction(0), box)
    return GraphProblem(spec, opts, cert_path, f, joint, box)


def bound_graph(p: GraphProblem, method: str, *, time_budget: float, lower: Fraction = Fraction(0), target: Fraction | None = None,
                form=None):
    """(bound, certificate body, engine notes) for one method on the joint graph. `target` (bab): split until
    every leaf is below it (default: the tolerance, or 1 % above the attained deviation when that exceeds it). `form`
    (token domains): the joint graph's softmax-ratio form if the caller made it (`ratio_form`), else made where needed."""
    if hasattr(p.box, "lowest"):  # a token domain: CROWN with exact concretisation; bab splits tokens (bounds/tokens.py)
        from .bounds.tokens import bound_tokens

        return bound_tokens(p.joint, p.box, method, p.spec.property.tolerance, lower, time_budget, p.options.max_leaves, form=form)
    if method in ("interval", "crown", "alpha"):
        st = gb.crown_state(p.joint, p.box, method)
        if method == "alpha":  # alpha's lines are tuned per node; where CROWN's own pass ends tighter, it is the certificate
            crown = gb.crown_state(p.joint, p.box, "crown")
            st = crown if crown.bound < st.bound else st
        return Fraction(st.bound), {"steps": st.steps}, {}
    if method != "bab":
        raise ValueError(f"no graph method {method!r}")
    tol, low = p.spec.property.tolerance, float(lower)
    # the target: the tolerance, or (violated) within 1 % of the attained deviation, as the dense engine
    target = float(target) if target is not None else float(tol) if lower <= tol else low * 1.01
    start, leaf = time.perf_counter(), "crown"
    st = probe = gb.crown_state(p.joint, p.box, "crown")
    if st.bound > target:  # the probe: alpha on the output only (a full alpha pass costs ~10 CROWN passes)
        probe = gb.Alpha(p.joint, nodes=st.nodes).improve(st)
        leaf = "alpha" if st.bound - probe.bound >= ALPHA_PAYS * (st.bound - low) else "crown"
    r = gb.branch_and_bound(p.joint, p.box, leaf_method=leaf, target=max(target, low),
                            time_budget=max(0.0, time_budget - (time.perf_counter() - start)))
    notes = {"bab": {"leaves": r.leaves, "seconds": round(r.seconds, 3), "leaf_method": leaf}}
    if probe.bound < r.bound:  # the budget ran out before the tree beat the probe: the probe is a one-leaf tree
        return Fraction(probe.bound), {"tree": {"steps": probe.steps}}, {"bab": {**notes["bab"], "leaves": 1, "probe": True}}
    return Fraction(r.bound), {"tree": r.tree}, notes


def ratio_form(p: GraphProblem):
    """The joint graph's softmax-ratio form on a token domain (checker/attention.py), or None: made once by the engine for
    its witness replay and its ratio leaves (the checker makes its own)."""
    if not hasattr(p.box, "lowest"):
        return None
    from .checker.attention import form

    return form(p.joint, p.box.vocab)


def write_and_check_graph(p: GraphProblem, method: str, bound: Fraction, body: dict, witness, lower: Fraction,
                          notes: dict, jobs: int | None = None) -> CheckResult:
    engine = {"certify": __version__, "method": method, "graph_nodes": len(p.joint.nodes), **notes}
    cert = certificate_json(spec=p.spec, model_sha256=p.f.sha256, bound=max(bound, lower), body=body,
                            witness=None if witness is None else (witness, lower), materialized=None, engine=engine)
    if p.spec.level is not None:
        cert = {**cert, "level": p.spec.level}
    write_json_atomic(p.certificate, cert)
    return check_certificate(p.spec.path, p.certificate, jobs)


def run_graph_check(spec_path, out=None, method: str | None = None, level: str | None = None, strict: bool = False,
                    timeout: float | None = None, jobs: int | None = None):
    from .engine import Outcome, exact_witness

    t0 = time.perf_counter()
    p = prepare_graph(spec_path, out, level, strict)
    budget = float(timeout if timeout is not None else p.options.timeout_s)
    t1 = time.perf_counter()

    def overflow(message: str) -> BadInput:  # values beyond float64 on this domain: the engine cannot propose a certificate
        return BadInput(str(p.spec.path), "input", message, "narrow the input domain, or rescale the model")

    try:  # the float copy of the graph: a free range wider than float64 (1.8e308) cannot be searched or bounded
        if hasattr(p.box, "lowest"):  # a token domain: a discrete search; the witness is a one-hot token sequence
            from .bounds.tokens import falsify_tokens, one_hot

            witness = [Fraction(int(v)) for v in one_hot(falsify_tokens(p.joint, p.box, seed=p.options.seed)[None], p.box.vocab)[0]]
        else:
            x = gb.falsify(p.joint, p.box, starts=p.options.starts, steps=p.options.steps, seed=p.options.seed)
            flo, fup = free_ranges(p.joint)  # fill: free: the witness also fixes the free values the search found
            witness = exact_witness(x, (list(p.box[0]) + flo, list(p.box[1]) + fup))
    except OverflowError as exc:
        raise overflow(f"float64 overflows on this domain ({exc})") from None
    fm = ratio_form(p)
    lower = deviation_at(p.joint, witness, fm)
    t2 = time.perf_counter()
    asked = method or p.options.method
    tol = p.spec.property.tolerance
    notes, tried, best = [], {}, None
    if asked == "lp":
        notes.append("method lp has no graph version: CROWN over the joint graph was used")
    for m in PLANS[asked]:
        if m == "bab" and asked == "auto" and (lower > tol or best[1] <= tol):
            break  # settled: auto branches only when the tolerance lies between the attained deviation and the bound
        try:
            bound, body, extra = bound_graph(p, m, time_budget=max(1.0, budget - (time.perf_counter() - t0)), lower=lower, form=fm)
        except OverflowError as exc:
            raise overflow(str(exc)) from None
        if not math.isfinite(float(bound)):  # a token domain's pass whose float64 values overflowed: nothing to certify
            notes.append(f"{m}: no finite bound (float64 overflows on this domain)")
            continue
        tried[m] = float(bound)
        if best is None or bound < best[1]:
            best = (m, bound, body, extra)
        if bound <= tol or time.perf_counter() - t0 > budget:
            break
    if best is None:
        raise overflow("no method gives a finite bound: float64 overflows on this domain")
    chosen, bound, body, extra = best
    t3 = time.perf_counter()
    result = write_and_check_graph(p, chosen, bound, body, witness, lower, {**extra, "seconds": round(t3 - t0, 3)}, jobs)
    t4 = time.perf_counter()
    return Outcome(p.spec, p.certificate, result, result.witness_deviation, witness, chosen, tried,
                   {"build": t1 - t0, "falsify": t2 - t1, "bound": t3 - t2, "check": t4 - t3, "total": t4 - t0},
                   notes=tuple(notes))
