"""`certify vnncomp ONNX_F ONNX_G VNNLIB --timeout S --result PATH`: the VNN-COMP runner format.

A VNN-COMP instance is a network pair and a query; the harness reads one word from the result file:

    unsat     the checker accepted a certificate that no input of the query's box makes some
              |f_j - g_j| exceed the threshold (for a non-strict query `>= t`: the bound is below t)
    sat       followed by the counterexample: an input in the box, replayed exactly by the checker,
              whose deviation exceeds the threshold, with f's (and g's) outputs there
    unknown   neither (or the checker refused the certificate: then certify exits 3)
    timeout   neither, and the time limit was spent

The threshold and outputs come from a VNN-LIB 2.0 query's deviation property, or from `--tolerance`
for a VNN-LIB 1.0 box (whose output assertions are not read). A network that certify reads only in
part (a trailing Softmax, which `certify check` drops to bound the logits) is refused: the answer
would be about another function than the instance's. certify's own files are written beside
the result: PATH.spec.yaml (the spec it made), PATH.cert.json (the certificate) and any materialised
arrays, so `certify verify PATH.spec.yaml PATH.cert.json` re-checks the answer.

Counterexamples: for a 1.0 query the competition's s-expression, `((X_0 v) ... (Y_0 v) ...)` with f's
outputs as Y; for a 2.0 query the standard's command-line assignment format (VNN-LIB 2.0,
"Command-line assignment format"): each declared variable as `NAME TYPE [SHAPE]`, then its values in
row-major order, inputs and outputs of f, then of g.
"""

from __future__ import annotations

import os
import time
from fractions import Fraction
from pathlib import Path

import yaml

from .bounds.methods import NAMES as METHODS
from .checker.errors import BadInput
from .checker.model import read_model, sha256_file
from .checker.vnnlib import Query, read_query
from .files import atomic_open
from .status import Status

RESULTS = ("unsat", "sat", "unknown", "timeout")


def decimal_text(q: Fraction) -> str:
    """q as an exact VNN-LIB 2.0 number (digits, '-', '.digits'); q's denominator must divide a power of 10."""
    sign, q = ("-" if q < 0 else ""), abs(q)
    digits, scale = 0, 1
    while (q * scale).denominator != 1:
        scale, digits = scale * 10, digits + 1
        if digits > 400:
            raise ValueError(f"{q} has no finite decimal expansion")
    n = (q * scale).numerator
    whole, frac = divmod(n, scale)
    return f"{sign}{whole}.{str(frac).zfill(digits) if digits else '0'}"


def vnnlib2_text(lower: list[Fraction], upper: list[Fraction], *, outputs: int, tolerance: Fraction,
                 indices: list[int] | None = None, strict: bool = True, dtype: str = "Real", comment: str = "") -> str:
    """A VNN-LIB 2.0 query: networks f and g (isomorphic-to f) on inputs [1, n] and outputs [1, m], the
    box, g's inputs tied to f's, and `some j: |f_j - g_j| > tolerance` (`>=` when not strict)."""
    n = len(lower)
    gt, lt = (">", "<") if strict else (">=", "<=")
    lines = ["(vnnlib-version <2.0>)"] + [f"; {c}" for c in comment.splitlines()] + [
        "", "(declare-network f", f"    (declare-input X {dtype} [1,{n}])", f"    (declare-output Y {dtype} [1,{outputs}])", ")",
        "", "(declare-network g", "    (isomorphic-to f)", f"    (declare-input XG {dtype} [1,{n}])",
        f"    (declare-output YG {dtype} [1,{outputs}])", ")", "", "; the box, and g reads the same input as f"]
    for i, (lo, up) in enumerate(zip(lower, upper)):
        lines.append(f"(assert (and (>= X[0,{i}] {decimal_text(lo)}) (<= X[0,{i}] {decimal_text(up)}) (== XG[0,{i}] X[0,{i}])))")
    t = decimal_text(tolerance)
    lines += ["", f"; some output of f and g differ by more than {t}", "(assert (or"]
    for j in (range(outputs) if indices is None else indices):
        lines.append(f"    ({gt} (- Y[0,{j}] YG[0,{j}]) {t}) ({lt} (- Y[0,{j}] YG[0,{j}]) (- {t}))")
    lines.append("))")
    return "\n".join(lines) + "\n"


def _forward(model, x: list[float]) -> list[float]:
    """f(x) in float64 (for the counterexample's outputs; the checker replayed the deviation exactly)."""
    import numpy as np

    v = np.array(x, dtype=np.float64)
    if model.input_scale is not None:
        v = v * np.array(model.input_scale, dtype=np.float64) + np.array(model.input_shift, dtype=np.float64)
    for i, d in enumerate(model.dense):
        v = np.array(d.weight, dtype=np.float64) @ v + np.array(d.bias, dtype=np.float64)
        if i < len(model.dense) - 1:
            v = np.maximum(v, 0)
    return [float(y) for y in v]


def assignment(query: Query, x: list[float], fy: list[float], gy: list[float]) -> str:
    """The counterexample lines after `sat` (see the module docstring for the two formats)."""
    if query.version == "1.0":
        pairs = [f"(X_{i} {v!r})" for i, v in enumerate(x)] + [f"(Y_{j} {v!r})" for j, v in enumerate(fy)]
        return "(" + "\n ".join(pairs) + ")\n"
    out = []
    for net, (xs, ys) in zip(query.networks, ((x, fy), (x, gy))):
        for tensor, values in ((net.of("input")[0], xs), (net.of("output")[0], ys)):
            out.append(f"{tensor.name} {tensor.dtype} [{','.join(map(str, tensor.shape))}]")
            out += [repr(v) for v in values]
    return "\n".join(out) + "\n"


def write_result(path: str | Path, word: str, body: str = "") -> None:
    assert word in RESULTS
    with atomic_open(path) as fh:
        fh.write(word + "\n" + body)


def instance_spec(onnx_f: Path, onnx_g: Path, vnnlib: Path, query: Query, tolerance: Fraction, result: Path,
                  timeout: float) -> Path:
    """The spec certify checks for the instance, written as RESULT.spec.yaml (paths relative to it)."""
    base = result.resolve().parent
    rel = lambda p: os.path.relpath(Path(p).resolve(), base)  # noqa: E731
    prop = {"deviation": "linf", "tolerance": f"{tolerance.numerator}/{tolerance.denominator}"}
    if query.deviation is not None and query.deviation.outputs is not None:
        prop["outputs"] = list(query.deviation.outputs)
    if query.dtype == "float32":
        prop["semantics"] = "float32"
    spec = {"version": 1, "model": {"path": rel(onnx_f), "sha256": sha256_file(onnx_f)}, "input": {"vnnlib": rel(vnnlib)},
            "explanation": [{"model": {"path": rel(onnx_g), "sha256": sha256_file(onnx_g)}}], "property": prop,
            "options": {"timeout_s": max(1, int(timeout))}}
    path = result.with_name(result.name + ".spec.yaml")
    with atomic_open(path) as fh:
        fh.write("# written by `certify vnncomp` for this instance\n" + yaml.safe_dump(spec, sort_keys=False))
    return path


def run_vnncomp(onnx_f, onnx_g, vnnlib, *, timeout: float, result, tolerance: Fraction | None = None,
                method: str | None = None):
    """Answer one instance; returns (result word, Outcome). The word is `unsat` only when the checker
    accepted a certificate for it."""
    from .engine import run_check

    t0 = time.monotonic()
    result = Path(result)
    result.parent.mkdir(parents=True, exist_ok=True)
    write_result(result, "unknown")  # a harness finds an answer even if this run is killed
    if onnx_g is None:
        raise BadInput(str(onnx_f), "", "certify answers deviation queries between two networks", "give ONNX_F ONNX_G VNNLIB")
    query = read_query(vnnlib, "vnnlib")
    stated = None if query.deviation is None else query.deviation.tolerance
    if stated is None and tolerance is None:
        raise BadInput(str(vnnlib), "", "the query states no deviation threshold",
                       "give --tolerance T, or a VNN-LIB 2.0 query with a deviation property")
    if stated is not None and tolerance is not None and stated != tolerance:
        raise BadInput(str(vnnlib), "", f"the query's threshold {stated} differs from --tolerance {tolerance}", "drop --tolerance")
    tol = stated if stated is not None else tolerance
    strict = query.deviation is None or query.deviation.strict
    f, g = (read_model(p, sha256_file(p)) for p in (onnx_f, onnx_g))
    for model in (f, g):  # an answer about a changed network (e.g. its logits) is no answer about the given one
        if model.notes:
            raise BadInput(model.path, "", f"read only in part ({model.notes[0]}), but a VNN-COMP answer is about the "
                           "network's own outputs", "export the networks without a trailing Softmax")
    spec = instance_spec(Path(onnx_f), Path(onnx_g), Path(vnnlib), query, tol, result, timeout)
    cert = result.with_name(result.name + ".cert.json")
    outcome = run_check(spec, cert, method, timeout=timeout)
    status = outcome.status
    if status is Status.CERTIFIED and (strict or outcome.bound < tol):
        write_result(result, "unsat")
        return "unsat", outcome
    if status is Status.VIOLATED:  # the checker replayed the witness exactly: deviation > tolerance
        x = [float(v) for v in outcome.witness]
        write_result(result, "sat", assignment(query, x, _forward(f, x), _forward(g, x)))
        return "sat", outcome
    word = "timeout" if time.monotonic() - t0 >= timeout else "unknown"
    write_result(result, word)
    return word, outcome


def cmd_vnncomp(args) -> int:
    from .checker.numbers import parse_spec_number
    from .cli import print_outcome

    tol = None
    if args.tolerance is not None:
        tol = parse_spec_number(args.tolerance)
        if tol is None or tol < 0:
            raise BadInput("--tolerance", "", f"{args.tolerance!r} is not an exact number >= 0", 'write e.g. 0.05 or "1/20"')
    files = args.files
    if len(files) not in (2, 3):
        raise BadInput("certify vnncomp", "", f"{len(files)} files given", "give ONNX_F ONNX_G VNNLIB")
    onnx_f, onnx_g, vnnlib = (files[0], None, files[1]) if len(files) == 2 else files
    if args.timeout <= 0:
        raise BadInput("--timeout", "", f"{args.timeout} is not positive", "give the time limit in seconds")
    word, outcome = run_vnncomp(onnx_f, onnx_g, vnnlib, timeout=args.timeout, result=args.result, tolerance=tol,
                                method=args.method)
    print(f"{word}  ({args.result})")
    print_outcome(outcome)
    return outcome.status.exit_code


def register(sub) -> None:
    v = sub.add_parser("vnncomp", help="answer a VNN-COMP instance (network pair + VNN-LIB query) in the runner's result format")
    v.add_argument("files", nargs="+", metavar="FILE", help="ONNX_F ONNX_G VNNLIB")
    v.add_argument("--timeout", type=float, required=True, help="time limit in seconds")
    v.add_argument("--result", required=True, metavar="PATH", help="the result file (PATH.spec.yaml and PATH.cert.json go beside it)")
    v.add_argument("--tolerance", help="the deviation threshold for a VNN-LIB 1.0 box (a 2.0 query states its own)")
    v.add_argument("--method", choices=METHODS, help="bounding method (default auto)")
    v.set_defaults(func=cmd_vnncomp)
