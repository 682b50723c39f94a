"""The trusted checker: re-derive every step of a certificate and decide the verdict.

It re-reads the spec and the weights itself, rebuilds g and the joint network exactly, and trusts
nothing in the certificate but hints: each step's claimed numbers are accepted only after an exact
computation (or a z3 QF_LRA query) shows them sound. Anything unexpected rejects: an unknown key
or step kind, a missing step, a hash mismatch, z3 `unknown` or a timeout.
"""

from __future__ import annotations

import enum
import json
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import z3

from .errors import Rejected
from .exact import backsubstitute, forward, interval_dense, qmat, qvec
from .model import read_arrays, read_model, sha256_file
from .network import build_g, exact_layers, input_box, joint_network, normalise_box
from .numbers import parse_rational, rational_str
from .spec import Spec, read_spec

FORMAT, VERSION = "certify.certificate", 1
Z3_TIMEOUT_MS = 60_000
TOP_KEYS = {"format", "version", "spec_sha256", "model_sha256", "materialized", "claim", "steps", "witness", "engine"}
REQUIRED_TOP = {"format", "version", "spec_sha256", "model_sha256", "claim", "steps"}
CLAIM_KEYS = {"deviation", "outputs", "tolerance", "bound"}
BOUND_KEYS = {"kind", "layer", "lower", "upper"}
LINEAR_KEYS = BOUND_KEYS | {"alpha"}
RELAX_KEYS = {"kind", "layer", "lower_slope", "lower_intercept", "upper_slope", "upper_intercept"}


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


@dataclass
class _State:
    joint: list
    box: tuple  # exact input box in network space: (lower, upper) as Fraction lists
    bounds: dict  # layer -> (lower, upper) verified pre-activation bounds
    relax: dict  # layer -> four IntVecs (lower slope, lower intercept, upper slope, upper intercept)


def _vector(step: dict, key: str, length: int, where: str) -> list[Fraction]:
    raw = step.get(key)
    if not isinstance(raw, list) or len(raw) != length:
        raise Rejected(where, f"{key} must be a list of {length} rationals")
    out = [parse_rational(v) for v in raw]
    if any(v is None for v in out):
        raise Rejected(where, f"{key} holds a value that is not a 'p/q' rational string")
    return out


def _keys(obj: object, allowed: set, where: str, required: set | None = None) -> dict:
    if not isinstance(obj, dict):
        raise Rejected(where, "expected a JSON object")
    extra, missing = set(obj) - allowed, (required if required is not None else allowed) - set(obj)
    if extra or missing:
        raise Rejected(where, f"unexpected keys {sorted(extra)}" if extra else f"missing keys {sorted(missing)}")
    return obj


def _layer(step: dict, state: _State, where: str) -> int:
    k = step.get("layer")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= len(state.joint):
        raise Rejected(where, f"layer must be an integer in 1..{len(state.joint)}")
    return k


def _accept_bounds(step: dict, state: _State, where: str, lower: list[Fraction], upper: list[Fraction]) -> None:
    """Claimed bounds are sound iff claimed lower <= derived lower and claimed upper >= derived upper."""
    k = step["layer"]
    width = len(state.joint[k - 1][1][0])
    c_lo, c_up = _vector(step, "lower", width, where), _vector(step, "upper", width, where)
    for i, (cl, dl, cu, du) in enumerate(zip(c_lo, lower, c_up, upper)):
        if cl > dl:
            raise Rejected(where, f"neuron {i}: claimed lower bound {cl} exceeds the derived {dl}")
        if cu < du:
            raise Rejected(where, f"neuron {i}: claimed upper bound {cu} is below the derived {du}")
    if k in state.bounds:  # a second step for the same layer intersects
        o_lo, o_up = state.bounds[k]
        c_lo, c_up = [max(a, b) for a, b in zip(c_lo, o_lo)], [min(a, b) for a, b in zip(c_up, o_up)]
    state.bounds[k] = (c_lo, c_up)


def check_interval(step: dict, state: _State, where: str) -> None:
    """Interval arithmetic through dense layer k from the verified bounds of layer k-1 (or the box)."""
    _keys(step, BOUND_KEYS, where)
    k = _layer(step, state, where)
    if k == 1:
        lo, up = state.box
    else:
        if k - 1 not in state.bounds:
            raise Rejected(where, f"needs verified bounds of layer {k - 1} first")
        lo, up = ([max(v, Fraction(0)) for v in b] for b in state.bounds[k - 1])
    _accept_bounds(step, state, where, *interval_dense(state.joint[k - 1], lo, up))


def _alpha(step: dict, state: _State, k: int, width: int, where: str) -> tuple[dict, dict]:
    """Per-row lower slopes {relu layer j: 2*width rows} (rows < width: lower bounds, then upper).

    Row r's line alpha*z (intercept 0) must lie below relu on the verified interval of each neuron:
    relu is linear on each side of 0, so checking the interval's ends suffices (alpha*l <= relu(l),
    alpha*u <= relu(u); at 0 both sides are 0)."""
    raw = step.get("alpha", {})
    if not isinstance(raw, dict):
        raise Rejected(where, "alpha must map relu layers to slope matrices")
    low, up = {}, {}
    for key, rows in raw.items():
        j = int(key) if isinstance(key, str) and key.isdigit() else 0
        if not 1 <= j < k or j not in state.bounds or not isinstance(rows, list) or len(rows) != 2 * width:
            raise Rejected(where, f"alpha[{key!r}] must be a verified relu layer below {k} with {2 * width} rows")
        lo, hi = state.bounds[j]
        mat = [_vector({"r": row}, "r", len(lo), f"{where} alpha[{key}]") for row in rows]
        for row in mat:
            for a, l, u in zip(row, lo, hi):
                if a * l > max(l, 0) or a * u > max(u, 0):
                    raise Rejected(where, f"alpha[{key}]: slope {a} is not a lower line of relu on [{l}, {u}]")
        (nums, den) = qmat(mat)
        low[j], up[j] = (nums[:width], den), (nums[width:], den)
    return low, up


def check_linear(step: dict, state: _State, where: str) -> None:
    """Back-substitution (CROWN, or alpha-CROWN with per-row slopes) through layers k..1."""
    _keys(step, LINEAR_KEYS, where, BOUND_KEYS)
    k = _layer(step, state, where)
    missing = [j for j in range(1, k) if j not in state.relax]
    if missing:
        raise Rejected(where, f"needs verified ReLU relaxations of layers {missing} first")
    width = len(state.joint[k - 1][1][0])
    alpha_low, alpha_up = _alpha(step, state, k, width, where)
    eye = [[1 if r == c else 0 for c in range(width)] for r in range(width)]
    neg = [[-x for x in row] for row in eye]
    box = (qvec(state.box[0]), qvec(state.box[1]))
    relax = [state.relax[j] for j in range(1, k)]
    lower = backsubstitute((eye, 1), state.joint[:k], relax, box, alpha_low)
    upper = [-v for v in backsubstitute((neg, 1), state.joint[:k], relax, box, alpha_up)]
    _accept_bounds(step, state, where, lower, upper)


def _relu(z):
    return z3.If(z >= 0, z, z3.RealVal(0))


def _q(v: Fraction):
    return z3.Q(v.numerator, v.denominator)


def _prove(claim_negation, where: str) -> None:
    """z3 must answer unsat for the negation of an obligation; sat, unknown or a timeout rejects."""
    solver = z3.Solver()
    solver.set("timeout", Z3_TIMEOUT_MS)
    solver.add(claim_negation)
    answer = solver.check()
    if answer != z3.unsat:
        raise Rejected(where, "z3 found a counterexample to the obligation" if answer == z3.sat
                       else f"z3 could not decide the obligation ({solver.reason_unknown()})")


def check_relu_relaxation(step: dict, state: _State, where: str) -> None:
    """Lines a_lo*z + b_lo <= relu(z) <= a_up*z + b_up for every z in the verified bounds of layer k (z3)."""
    _keys(step, RELAX_KEYS, where)
    k = _layer(step, state, where)
    if k == len(state.joint):
        raise Rejected(where, "the output layer has no ReLU")
    if k not in state.bounds:
        raise Rejected(where, f"needs verified bounds of layer {k} first")
    lo, up = state.bounds[k]
    lines = [_vector(step, name, len(lo), where) for name in ("lower_slope", "lower_intercept", "upper_slope", "upper_intercept")]
    violations = []
    for i, (l, u, a, b, c, d) in enumerate(zip(lo, up, *lines)):
        z = z3.Real(f"z{i}")
        violations.append(z3.And(_q(l) <= z, z <= _q(u),
                                 z3.Or(_q(a) * z + _q(b) > _relu(z), _q(c) * z + _q(d) < _relu(z))))
    _prove(z3.Or(violations), where)
    state.relax[k] = tuple(qvec(v) for v in lines)


STEP_CHECKERS = {
    "interval": check_interval,
    "linear": check_linear,
    "relu_relaxation": check_relu_relaxation,
}


def check_goal(claim: dict, state: _State, spec: Spec, where: str = "claim") -> Fraction:
    """z3: every output difference d with verified bounds satisfies |d_i| <= bound."""
    n = len(state.joint)
    if n not in state.bounds:
        raise Rejected(where, f"missing goal: no verified bounds for the output layer {n}")
    bound = parse_rational(claim.get("bound"))
    if bound is None:
        raise Rejected(where, "bound must be a 'p/q' rational string")
    lo, up = state.bounds[n]
    d = [z3.Real(f"d{i}") for i in range(len(lo))]
    _prove(z3.And(*[z3.And(_q(l) <= x, x <= _q(u)) for x, l, u in zip(d, lo, up)],
                  z3.Or(*[z3.Or(x > _q(bound), -x > _q(bound)) for x in d])), where)
    return bound


def _check(spec: Spec, cert_path: Path) -> tuple[Fraction, Fraction | None, int]:
    try:
        cert = json.loads(Path(cert_path).read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise Rejected("certificate", f"not readable JSON ({exc})") from None
    cert = _keys(cert, TOP_KEYS, "certificate", REQUIRED_TOP)
    if cert["format"] != FORMAT or cert["version"] != VERSION:
        raise Rejected("certificate", f"not a {FORMAT} version {VERSION} file")
    if cert["spec_sha256"] != spec.sha256:
        raise Rejected("spec_sha256", "the certificate was made for another spec (hash mismatch)")
    f = read_model(spec.model.path, spec.model.sha256)
    if cert["model_sha256"] != f.sha256:
        raise Rejected("model_sha256", "the certificate was made for another model (hash mismatch)")
    materialized = None
    if cert.get("materialized") is not None:
        m = _keys(cert["materialized"], {"path", "sha256"}, "materialized")
        mpath = Path(cert_path).parent / str(m["path"])
        if not mpath.is_file() or sha256_file(mpath) != m["sha256"]:
            raise Rejected("materialized", f"{mpath} is missing or does not match its sha256")
        materialized = read_arrays(mpath)
    try:
        g = build_g(spec, f, materialized)
    except (KeyError, ValueError) as exc:
        raise Rejected("materialized", f"g cannot be rebuilt: {exc}") from None
    joint, _ = joint_network(exact_layers(f), g, spec.property.outputs)
    domain = input_box(spec, f)
    state = _State(joint, normalise_box(f, *domain), {}, {})

    claim = _keys(cert["claim"], CLAIM_KEYS, "claim")
    if claim["deviation"] != spec.property.deviation or claim["outputs"] != (
            None if spec.property.outputs is None else list(spec.property.outputs)):
        raise Rejected("claim", "the claimed property differs from the spec's")
    if parse_rational(claim["tolerance"]) != spec.property.tolerance:
        raise Rejected("claim.tolerance", "differs from the spec's tolerance")
    if not isinstance(cert["steps"], list):
        raise Rejected("steps", "must be a list")
    for i, step in enumerate(cert["steps"]):
        where = f"steps[{i}]"
        kind = step.get("kind") if isinstance(step, dict) else None
        if kind not in STEP_CHECKERS:
            raise Rejected(where, f"unknown step kind {kind!r}")
        STEP_CHECKERS[kind](step, state, f"{where} ({kind}, layer {step.get('layer')})")
    bound = check_goal(claim, state, spec)

    witness_dev = None
    if cert.get("witness") is not None:
        w = _keys(cert["witness"], {"x", "deviation"}, "witness")
        x = _vector(w, "x", f.in_dim, "witness")
        if any(not l <= v <= u for v, l, u in zip(x, *domain)):
            raise Rejected("witness", "the input lies outside the spec's domain")
        if f.input_scale is not None:
            x = [v * Fraction(a) + Fraction(c) for v, a, c in zip(x, f.input_scale, f.input_shift)]
        witness_dev = max(abs(v) for v in forward(joint, x))
        if parse_rational(w["deviation"]) != witness_dev:
            raise Rejected("witness", f"claimed deviation differs from the exact replay {rational_str(witness_dev)}")
        if witness_dev > bound:
            raise Rejected("witness", "the replayed deviation exceeds the certified bound: the bound is unsound")
    return bound, witness_dev, len(cert["steps"])


def check_certificate(spec_path: str | Path, cert_path: str | Path) -> CheckResult:
    """Re-check a certificate against its spec. Bad spec/model input raises BadInput (exit 2)."""
    start = time.perf_counter()
    spec = read_spec(spec_path)
    tol = spec.property.tolerance
    try:
        bound, wdev, steps = _check(spec, Path(cert_path))
    except Rejected as exc:
        return CheckResult(Verdict.REJECTED, None, tol, None, 0, time.perf_counter() - start, str(exc))
    if bound <= tol:
        verdict = Verdict.CERTIFIED
    elif wdev is not None and wdev > tol:
        verdict = Verdict.VIOLATED
    else:
        verdict = Verdict.UNKNOWN
    return CheckResult(verdict, bound, tol, wdev, steps, time.perf_counter() - start)
