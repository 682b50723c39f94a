"""The words of a report that do not depend on one spec: verdict sentences, the trust boundary, provenance."""

from __future__ import annotations

import datetime
import platform
import sys
from importlib import metadata
from pathlib import Path

from .. import __version__
from . import fmt

VERDICT_TITLE = {
    "CERTIFIED": "CERTIFIED",
    "VIOLATED": "VIOLATED",
    "UNKNOWN": "UNKNOWN",
    "REJECTED": "REJECTED: the certificate failed the trusted checker",
    "MISSING": "MISSING: no certificate",
    "BAD INPUT": "BAD INPUT: the spec or its files could not be read",
}


def verdict_sentence(e) -> str:
    tol = "-" if e.tolerance is None else fmt.exact(e.tolerance)
    if e.status == "CERTIFIED":
        return (f"For every input x in the domain, max_i |f_i(x) - g_i(x)| <= {fmt.decimal(e.bound, mode='up')} <= tolerance {tol}. "
                "The trusted checker re-derived every step of the certificate exactly.")
    if e.status == "VIOLATED":
        return (f"The property is false: the witness input lies in the domain and, replayed in exact arithmetic, deviates by "
                f"{fmt.decimal(e.lower, mode='down')} > tolerance {tol}.")
    if e.status == "UNKNOWN":
        return (f"Neither proved nor refuted: the checker accepted the bound {fmt.decimal(e.bound, mode='up')}, which exceeds the "
                f"tolerance {tol}, and no input found so far deviates by more than the tolerance"
                + (f" (best: {fmt.decimal(e.lower, mode='down')})." if e.lower is not None else "."))
    if e.status == "REJECTED":
        return ("The trusted checker REJECTED this certificate. Nothing in it is believed and no bound is claimed for this spec. "
                f"Checker: {e.message}")
    if e.status == "MISSING":
        return e.message
    return f"Nothing is claimed for this spec. {e.message}"


def checker_lines() -> int:
    root = Path(__file__).resolve().parent.parent / "checker"
    return sum(len(p.read_text().splitlines()) for p in sorted(root.glob("*.py")))


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def provenance(argv: list[str] | None) -> list[tuple[str, str]]:
    return [
        ("certify", __version__),
        ("z3 (z3-solver)", _version("z3-solver")),
        ("python-flint", _version("python-flint")),
        ("PyYAML", _version("PyYAML")),
        ("jax", _version("jax")),
        ("numpy", _version("numpy")),
        ("matplotlib", _version("matplotlib")),
        ("Python", f"{platform.python_implementation()} {sys.version.split()[0]}"),
        ("platform", platform.platform()),
        ("date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("command", "certify report " + " ".join(argv or [])),
    ]


def trust_paragraphs(softmax_notes: bool = False) -> list[tuple[str, list[str]]]:
    """(heading, bullet points) of the trust boundary: the same for every spec of a report."""
    return [
        ("Semantics", [
            "Every bound is about real arithmetic on the exact rational numbers denoted by the weights in the model files "
            "(each float32/float64 value read as the dyadic rational it is). Floating-point rounding during inference is not covered.",
            "A trailing Softmax in an ONNX model is dropped when the model is read: the bounds are then on the pre-softmax logits "
            + ("(the notes below say where this happened)." if softmax_notes else "(no model in this report had one)."),
            "The input domain is the exact box described by the spec and its data files, read at check time.",
        ]),
        ("What the checker trusts", [
            f"The checker's own code, certify/checker/ ({checker_lines()} lines), run by the Python interpreter with its standard "
            "library (fractions, math, hashlib, json, re, zipfile, zlib, struct).",
            "z3 (z3-solver): its unsat answers for small linear-real-arithmetic queries (ReLU relaxation lines, the final goal); "
            "an unknown answer or a timeout rejects the certificate.",
            "python-flint: FLINT's exact integer matrix products (fmpz_mat) in back-substitution.",
            "PyYAML: only its composer, which turns the spec's text into nodes; every number is read from its text, exactly.",
        ]),
        ("What is not trusted", [
            "The bounding engine (JAX interval, CROWN, alpha-CROWN, branch and bound), the falsifier, the optimisers and the "
            "certificate writer: they only propose; every number they propose is re-derived by the checker or the certificate is rejected.",
            "The engine notes in a certificate (method, timings, leaves): informative only, never read by the checker.",
            "This report generator: it displays; the verdict is the checker's. Re-run `certify verify SPEC CERT` to confirm any of it.",
        ]),
        ("Materialised arrays are definitions of g", [
            "Transforms that need floating point (a truncated SVD, mean fills, k-means labels, principal components) are computed once "
            "by the untrusted engine and written beside the certificate. The certificate is about f against g built from exactly "
            "those arrays, bound by their sha256. The checker does not check that they are an SVD, a mean or a clustering: "
            "they define g.",
            "Exact transforms (prune with zero or given constants, merges with given groups, quantisation, a second model) are "
            "rebuilt by the checker itself from the spec.",
        ]),
    ]
