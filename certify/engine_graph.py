"""`certify check` on a graph model (residual networks, LayerNorm, GELU, SAEs): build f and g as
graphs, falsify, bound d = f - g with CROWN over the joint graph, write the certificate, check it.

Untrusted, like `certify.engine`; the checker's verdict alone decides. Methods: `interval`, and
`crown` (also used for `auto`, `alpha`, `lp` and `bab`, which have no graph version yet: the output
says so).
"""

from __future__ import annotations

import time
from fractions import Fraction

from . import __version__
from .bounds import graph as gb
from .certificate import certificate_json, write_json_atomic
from .checker.check import check_certificate
from .checker.graph import deviation_at, joint_graph
from .checker.network import build_g


def run_graph_check(spec_path, out=None, method: str | None = None, level: str | None = None, strict: bool = False,
                    timeout: float | None = None):
    from .engine import Outcome, exact_witness, load

    t0 = time.perf_counter()
    spec, opts, cert_path, f, box = load(spec_path, out, level, strict)
    g = build_g(spec, f, None)
    joint = joint_graph(f, g, spec.property.outputs)
    if spec.property.semantics != "real":  # the checker refuses it in the same words
        from .checker.graph import check_graph

        check_graph(spec, f, g, {}, Fraction(0), box)
    t1 = time.perf_counter()
    x = gb.falsify(joint, box, starts=opts.starts, steps=opts.steps, seed=opts.seed)
    witness = exact_witness(x, box)
    lower = deviation_at(joint, witness)
    t2 = time.perf_counter()
    asked = method or opts.method
    plan = ("interval", "crown") if asked == "auto" else (asked if asked == "interval" else "crown",)
    notes, tried, best = [], {}, None
    if asked not in ("auto", "interval", "crown"):
        notes.append(f"method {asked} has no graph version yet: CROWN over the joint graph was used")
    for m in plan:
        bound, steps = gb.crown(joint, box, m)
        tried[m] = bound
        if best is None or bound < best[1]:
            best = (m, bound, steps)
        if Fraction(bound) <= spec.property.tolerance:
            break
    chosen, bound, steps = best
    t3 = time.perf_counter()
    engine = {"certify": __version__, "method": chosen, "graph_nodes": len(joint.nodes), "seconds": round(t3 - t0, 3)}
    cert = certificate_json(spec=spec, model_sha256=f.sha256, bound=max(Fraction(bound), lower), body={"steps": steps},
                            witness=(witness, lower), materialized=None, engine=engine)
    if spec.level is not None:
        cert = {**cert, "level": spec.level}
    write_json_atomic(cert_path, cert)
    result = check_certificate(spec.path, cert_path)
    t4 = time.perf_counter()
    return Outcome(spec, cert_path, result, result.witness_deviation, witness, chosen, tried,
                   {"build": t1 - t0, "falsify": t2 - t1, "bound": t3 - t2, "check": t4 - t3, "total": t4 - t0},
                   notes=tuple(notes))
