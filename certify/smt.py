"""`certify export-smt SPEC CERT [-o OUT.smt2] [--cvc5]`: a certificate's obligations in SMT-LIB2.

The trusted checker is run on the certificate first; a rejected certificate is not exported
(exit 3). While it runs, the checker's own z3 queries (the goals) are recorded (`check.RECORD`, a
few lines in `_holds`) and every `interval`/`linear`/`relu_relaxation` step is observed with the verified state the checker
used for it (its step functions are wrapped here for the duration of the run; the checker itself
is unchanged). Each obligation becomes one `(push 1) ... (check-sat) (pop 1)` block in QF_LRA whose
expected answer is `unsat`; rationals are written exactly as `(/ p q)`, negatives as `(- ...)`.
`HEADER` below says exactly what is and what is not exported. This module is not trusted: it only
states the obligations again for another solver (cvc5: `--cvc5`, or `python -m certify.smt FILE`).
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import z3

from . import __version__
from .checker import check as checker
from .checker.errors import BadInput
from .checker.exact import IntVec
from .checker.numbers import parse_rational, rational_str
from .files import atomic_open

EXIT_OK, EXIT_BAD_INPUT, EXIT_NOT_CONFIRMED = 0, 2, 3

HEADER = """\
; What is exported. Every obligation is a statement about the joint network J (dense layers
; z_k = W_k h_(k-1) + b_k, h_k = relu(z_k), h_0 = x, output z_n = f_i - g_i) built by the checker,
; for the region (input box, and the ReLU-split signs folded into the bounds) of one tree node.
; Each uses only facts that earlier obligations established (verified bounds and relaxation lines):
;  relu_relaxation  no z in a neuron's verified [l, u] lies above the lower line or below the
;                   upper line of relu, one disjunct per piece of relu (the checker decides this
;                   exactly at l, 0 and u, without z3).
;  interval         per claimed bound: no input in the box (layer 1), or no h with
;                   max(l,0) <= h <= max(u,0) from the verified bounds [l, u] of layer k-1, puts
;                   W_k h + b_k beyond the claim (exactly the checker's interval arithmetic).
;  linear           (CROWN, alpha-CROWN, beta-CROWN) per claimed bound, the checker's
;                   back-substitution written out as a chain of one-layer links. With lam_k =
;                   +-e_i on z_k: link j -> j-1 says lam_j.(W_j h + b_j) + c_j >= lam_(j-1).z + c_(j-1)
;                   for every z in the verified bounds of layer j-1 and h between its verified
;                   lines (and above this row's alpha line; beta multipliers are in lam_(j-1) and
;                   need the split's sign, which the bounds carry); the last link says
;                   lam_1.(W_1 x + b_1) + c_1 >= the claim for every x in the box. Chained, they
;                   give +-z_k,i >= +-claim. The forms lam_j, c_j are hints this exporter
;                   recomputes with the checker's algorithm; the other solver re-checks every
;                   link with its own arithmetic, so nothing of the step is taken on trust.
;  alpha            no z in a neuron's verified [l, u] has relu(z) below an alpha line
;                   a*z of a linear step (the checker checks these slopes exactly at both ends
;                   of the interval, without z3).
;  goal             the checker's z3 query, verbatim: no output difference d within the verified
;                   output bounds has |d_i| > bound (one per region the checker proved).
;  empty            a region closed because its verified bounds contradict its split: l > u.
; What is NOT exported (the trusted checker does it in exact arithmetic or by reading files):
;  reading and hashing the spec, models, data and materialised arrays; building g, J and the input
;  box (the weights and boxes written here are the checker's, taken as given); that a split's
;  children cover their parent; folding the split signs and repeated steps into the bounds
;  (intersection); regions closed as empty at a split without a step; under float32 semantics, the
;  rounding-error margins (computed exactly by the checker, they appear in the goal as constants);
;  the witness replay; and the final comparison bound <= tolerance.
"""


def fracs(vec: IntVec) -> list[Fraction]:
    """An integer vector over one denominator as Fractions."""
    nums, den = vec
    return [Fraction(n, den) for n in nums]


def num(q: Fraction) -> str:
    """An exact rational in SMT-LIB2: `p`, `(/ p q)`, negatives as `(- ...)`; literals are non-negative."""
    p, d = abs(q.numerator), q.denominator
    text = str(p) if d == 1 else f"(/ {p} {d})"
    return f"(- {text})" if q < 0 else text


def lin(terms, const: Fraction = Fraction(0)) -> str:
    """sum c*v + const for (c, v) in terms, zero coefficients left out."""
    parts = [v if c == 1 else f"(* {num(c)} {v})" for c, v in terms if c != 0]
    if const != 0 or not parts:
        parts.append(num(const))
    return parts[0] if len(parts) == 1 else f"(+ {' '.join(parts)})"


def _n_ary(op: str, args: list[str]) -> str:
    if not args:
        return {"and": "true", "or": "false"}[op]
    return args[0] if len(args) == 1 else f"({op} {' '.join(args)})"


_OPS = {z3.Z3_OP_AND: "and", z3.Z3_OP_OR: "or", z3.Z3_OP_NOT: "not", z3.Z3_OP_LE: "<=", z3.Z3_OP_LT: "<",
        z3.Z3_OP_GE: ">=", z3.Z3_OP_GT: ">", z3.Z3_OP_EQ: "=", z3.Z3_OP_ADD: "+", z3.Z3_OP_SUB: "-",
        z3.Z3_OP_MUL: "*", z3.Z3_OP_UMINUS: "-", z3.Z3_OP_ITE: "ite"}
_SYMBOL = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def _numeral(expr) -> Fraction | None:
    """The value of a numeral, or of a constant term the checker writes for one ((/ p q), (- ...)); else None."""
    if z3.is_rational_value(expr):
        return expr.as_fraction()
    kind = expr.decl().kind() if z3.is_app(expr) else None
    if kind in (z3.Z3_OP_DIV, z3.Z3_OP_UMINUS):
        args = [_numeral(c) for c in expr.children()]
        if None not in args and (kind == z3.Z3_OP_UMINUS or args[1] != 0):
            return -args[0] if kind == z3.Z3_OP_UMINUS else args[0] / args[1]
    return None


def z3_smt(expr, names: set[str]) -> str:
    """A z3 QF_LRA term as clean SMT-LIB2 (exact rationals); the Real constants it uses go to `names`."""
    value = _numeral(expr)
    if value is not None:
        return num(value)
    if z3.is_true(expr) or z3.is_false(expr):
        return "true" if z3.is_true(expr) else "false"
    kind = expr.decl().kind()
    if z3.is_const(expr) and kind == z3.Z3_OP_UNINTERPRETED:
        name = expr.decl().name()
        if not _SYMBOL.fullmatch(name) or not z3.is_real(expr):
            raise ValueError(f"cannot export the z3 constant {name!r}")
        names.add(name)
        return name
    if kind not in _OPS:
        raise ValueError(f"cannot export the z3 operator {expr.decl().name()!r}")
    args = [z3_smt(c, names) for c in expr.children()]
    op = _OPS[kind]
    return _n_ary(op, args) if op in ("and", "or", "+") else f"({op} {' '.join(args)})"


def relu(v: str) -> str:
    return f"(ite (>= {v} 0) {v} 0)"


@dataclass
class Obligation:
    kind: str  # relu_relaxation | interval | linear | alpha | goal | empty
    where: str  # the checker's name of the step or region
    what: str  # one line: what unsat means
    names: list[str] = field(default_factory=list)  # Real constants
    asserts: list[str] = field(default_factory=list)

    def smt(self, index: int, total: int) -> str:
        lines = [f"; obligation {index} of {total} [{self.kind}] {self.where}", f"; {self.what}", "; expected: unsat",
                 "(push 1)"]
        lines += [f"(declare-const {n} Real)" for n in self.names]
        lines += [f"(assert {a})" for a in self.asserts]
        return "\n".join(lines + ["(check-sat)", "(pop 1)", ""])


@dataclass
class _Seen:
    """An interval or linear step as the checker accepted it, with the verified state it started from."""

    kind: str
    where: str
    step: dict
    joint: list
    box: tuple
    bounds: dict  # before the step
    relax: dict
    assume: dict  # the region's ReLU split signs
    after: dict  # bounds after the step (intersected, split signs folded in)
    emptied: bool  # the step made the region empty


@contextmanager
def recording():
    """Run the checker with its z3 queries recorded and its bounds steps observed (restored after)."""
    records: list = []
    table = checker.STEP_CHECKERS
    originals = {k: table[k] for k in ("interval", "linear", "relu_relaxation")}

    def observe(kind):
        def run(step, state, where):
            before = (state.box, dict(state.bounds), dict(state.relax), state.empty)
            originals[kind](step, state, where)  # raises Rejected unless the step is sound
            records.append(_Seen(kind, where, step, state.joint, before[0], before[1], before[2], dict(state.assume),
                                 dict(state.bounds), state.empty and not before[3]))
        return run

    table.update({k: observe(k) for k in originals})
    checker.RECORD = records
    try:
        yield records
    finally:
        table.update(originals)
        checker.RECORD = None


class _Weights:
    """The joint network's layers as Fractions (converted once, shared by every obligation)."""

    def __init__(self):
        self.cache: dict = {}

    def __call__(self, joint: list, k: int):
        key = (id(joint), k)
        if key not in self.cache:
            (w, wden), (b, bden) = joint[k - 1]
            self.cache[key] = ([[Fraction(x, wden) for x in row] for row in w], [Fraction(x, bden) for x in b])
        return self.cache[key]


def _claims(step: dict) -> tuple[list[Fraction], list[Fraction]]:
    return [parse_rational(v) for v in step["lower"]], [parse_rational(v) for v in step["upper"]]


def _box(names: list[str], lo, up) -> list[str]:
    return [f"(and (<= {num(l)} {v}) (<= {v} {num(u)}))" for v, l, u in zip(names, lo, up)]


def _rows(k: int, width: int, lower, upper):
    """The 2*width bounds of a step as (row, side, sign, claim): row r < width bounds z_r from below,
    row width + r bounds -z_r from below (the checker's order for alpha and beta rows)."""
    return [(r, "lower", 1, lower[r]) for r in range(width)] + [(width + r, "upper", -1, -upper[r]) for r in range(width)]


def interval_obligations(seen: _Seen, weights) -> list[Obligation]:
    """One obligation per claimed bound: sign*(W_k h + b_k)_i < sign*claim has no h in the box."""
    k = seen.step["layer"]
    if k == 1:
        names, (lo, up) = [f"x{m}" for m in range(len(seen.box[0]))], seen.box
        domain = "the input box"
    else:
        names = [f"h{k - 1}_{m}" for m in range(len(seen.bounds[k - 1][0]))]
        lo, up = ([max(v, Fraction(0)) for v in b] for b in seen.bounds[k - 1])
        domain = f"[max(l,0), max(u,0)] of the verified bounds of layer {k - 1}"
    w, b = weights(seen.joint, k)
    out = []
    for r, side, sign, claim in _rows(k, len(b), *_claims(seen.step)):
        i = r % len(b)
        expr = lin([(sign * c, v) for c, v in zip(w[i], names)], sign * b[i])
        out.append(Obligation("interval", seen.where, f"no {names[0][0]} in {domain} puts z{k}_{i} {'below' if sign > 0 else 'above'} "
                              f"its claimed {side} bound", list(names), _box(names, lo, up) + [f"(< {expr} {num(claim)})"]))
    return out


def _alpha_slopes(step: dict) -> dict[int, tuple[list[int], list[list[Fraction]]]]:
    """alpha[j] = (neurons, slopes[row][t]: the slope of neuron neurons[t]) of a linear step, as Fractions."""
    return {int(key): (a["neurons"], [[parse_rational(v) for v in row] for row in a["slopes"]]) for key, a in (step.get("alpha") or {}).items()}


def _betas(step: dict, assume: dict) -> dict[int, dict[int, dict[int, Fraction]]]:
    """beta[j][row][neuron]: the signed split multipliers added to the coefficients of z_j (as the checker does)."""
    out: dict = {}
    for t in step.get("beta") or []:
        j, i = t["layer"], t["neuron"]
        sign = 1 if assume[(j, i)] == "inactive" else -1
        for r, v in enumerate(t["values"]):
            row = out.setdefault(j, {}).setdefault(r, {})
            row[i] = row.get(i, Fraction(0)) + sign * parse_rational(v)
    return out


def _times(lam: list[Fraction], layer) -> tuple[list[Fraction], Fraction]:
    """(lam W, lam . b): a linear form on z_j written on the layer's input."""
    w, b = layer
    nz = [(l, row) for l, row in zip(lam, w) if l]
    return [sum((l * row[m] for l, row in nz), Fraction(0)) for m in range(len(w[0]))], sum((l * v for l, v in zip(lam, b) if l), Fraction(0))


def chain(seen: _Seen, weights, row: int, sign: int, alpha: dict, beta: dict) -> tuple[list, Fraction]:
    """Back-substitution for one row as the checker computes it, every intermediate form kept:
    [(j, lam_j, c_j, mu_j, lam_j . b_j)] for j = k..1, where sign*z_k,i >= lam_j . z_j + c_j on the
    region and mu_j = lam_j W_j, and the value over the box (sign times the derived bound)."""
    k = seen.step["layer"]
    width = len(weights(seen.joint, k)[1])
    lam = [Fraction(0)] * width
    lam[row % width] = Fraction(sign)
    const, links = Fraction(0), []
    for j in range(k, 0, -1):
        mu, lb = _times(lam, weights(seen.joint, j))
        links.append((j, lam, const, mu, lb))
        const += lb
        if j == 1:
            lo, up = seen.box
            return links, const + sum(c * (l if c >= 0 else u) for c, l, u in zip(mu, lo, up))
        a, bl, c, d = (fracs(v) for v in seen.relax[j - 1])
        if j - 1 in alpha:
            neurons, slopes = alpha[j - 1]
            for m, s in zip(neurons, slopes[row]):
                a[m], bl[m] = s, Fraction(0)
        lam = [m * (s if m >= 0 else t) for m, s, t in zip(mu, a, c)]
        const += sum(m * (s if m >= 0 else t) for m, s, t in zip(mu, bl, d))
        for i, v in beta.get(j - 1, {}).get(row, {}).items():
            lam[i] += v
    raise AssertionError("unreachable")


def linear_obligations(seen: _Seen, weights) -> list[Obligation]:
    """A linear step as a chain of one-layer links per claimed bound (the checker's back-substitution
    with its intermediate linear forms made explicit): each link is one obligation, and so is the
    final concretisation over the box; together they give sign*z_k,i >= sign*claim on the region."""
    k = seen.step["layer"]
    width = len(weights(seen.joint, k)[1])
    alpha, beta = _alpha_slopes(seen.step), _betas(seen.step, seen.assume)
    out = []
    for row, side, sign, claim in _rows(k, width, *_claims(seen.step)):
        i = row % width
        links, value = chain(seen, weights, row, sign, alpha, beta)
        if value < claim:  # the checker accepted this claim, so the exporter's replay must reach it
            raise RuntimeError(f"{seen.where}: the exporter's back-substitution gives {float(value)} for row {row}, not the checker's")
        tag = f"{seen.where} {side} bound of z{k}_{i}"
        for (j, lam, c, mu, lb), (_, lam_next, c_next, _, _) in zip(links, links[1:]):  # z_j = W_j h_(j-1) + b_j; relu of j-1
            n = len(mu)
            h, z = [f"h{j - 1}_{m}" for m in range(n)], [f"z{j - 1}_{m}" for m in range(n)]
            lo, up = seen.bounds[j - 1]
            a, bl, cu, d = (fracs(v) for v in seen.relax[j - 1])
            asserts = _box(z, lo, up)
            for m in range(n):
                asserts += [f"(>= {h[m]} {lin([(a[m], z[m])], bl[m])})", f"(<= {h[m]} {lin([(cu[m], z[m])], d[m])})"]
            neurons, slopes = alpha.get(j - 1, ((), ()))
            for m, s in zip(neurons, slopes[row] if neurons else ()):
                asserts.append(f"(>= {h[m]} {lin([(s, z[m])])})")
            asserts.append(f"(< {lin(zip(mu, h), c + lb)} {lin(zip(lam_next, z), c_next)})")
            out.append(Obligation("linear", f"{tag}, link {j} -> {j - 1}", f"lam.z{j} + c >= lam'.z{j - 1} + c' for every z{j - 1} "
                                  "in its verified bounds with relu between its verified lines", z + h, asserts))
        _, _, c, mu, lb = links[-1]
        x = [f"x{m}" for m in range(len(mu))]
        out.append(Obligation("linear", f"{tag}, over the box", "lam.z1 + c reaches the claim for every x in the box", x,
                              _box(x, *seen.box) + [f"(< {lin(zip(mu, x), c + lb)} {num(claim)})"]))
    return out


def alpha_obligation(seen: _Seen) -> Obligation | None:
    alpha = _alpha_slopes(seen.step)
    if not alpha:
        return None
    ob = Obligation("alpha", seen.where, "no alpha line of this step lies above relu on its verified interval")
    cases = []
    for j, (neurons, rows) in sorted(alpha.items()):
        lo, up = seen.bounds[j]
        for n, slopes in zip(neurons, (set(col) for col in zip(*rows))):
            z = f"a{j}_{n}"
            ob.names.append(z)
            above = _n_ary("or", [f"(> {lin([(s, z)])} {relu(z)})" for s in sorted(slopes)])
            cases.append(f"(and (<= {num(lo[n])} {z}) (<= {z} {num(up[n])}) {above})")
    ob.asserts.append(_n_ary("or", cases))
    return ob


def relu_obligation(seen: _Seen) -> Obligation:
    """No z in a neuron's verified [l, u] lies above the lower line or below the upper line of relu
    (one disjunct per piece of relu; the checker decides it exactly at l, 0 and u)."""
    k = seen.step["layer"]
    lo, up = seen.bounds[k]
    lines = [[parse_rational(v) for v in seen.step[name]] for name in ("lower_slope", "lower_intercept", "upper_slope", "upper_intercept")]
    ob = Obligation("relu_relaxation", seen.where, "the relaxation lines hold on every verified interval")
    cases = []
    for i, (l, u, a, b, c, d) in enumerate(zip(lo, up, *lines)):
        if l <= u:
            z = f"z{i}"
            ob.names.append(z)
            below, above, inside = lin([(a, z)], b), lin([(c, z)], d), f"(<= {num(l)} {z}) (<= {z} {num(u)})"
            cases += [f"(and {inside} (<= {z} 0) (or (> {below} 0) (< {above} 0)))",
                      f"(and {inside} (>= {z} 0) (or (> {below} {z}) (< {above} {z})))"]
    ob.asserts.append(_n_ary("or", cases))
    return ob


def empty_obligation(seen: _Seen) -> Obligation:
    k, i = next((k, i) for k, (lo, up) in sorted(seen.after.items()) for i, (l, u) in enumerate(zip(lo, up)) if l > u)
    l, u = seen.after[k][0][i], seen.after[k][1][i]
    return Obligation("empty", seen.where, f"the region is empty: layer {k} neuron {i} has verified bounds "
                      f"{rational_str(l)} > {rational_str(u)}", [f"z{k}_{i}"], [f"(<= {num(l)} z{k}_{i})", f"(<= z{k}_{i} {num(u)})"])


def _from_z3(where: str, negation) -> Obligation:
    names: set[str] = set()
    body = z3_smt(negation, names)
    ob = Obligation("goal", where[: -len(" (goal)")], "no output difference within the verified output bounds exceeds the bound")
    ob.names, ob.asserts = sorted(names, key=lambda s: (s.rstrip("0123456789"), int(re.sub(r"\D", "", s) or 0))), [body]
    return ob


def obligations(records: list) -> list[Obligation]:
    weights, out = _Weights(), []
    for r in records:
        if isinstance(r, _Seen):
            if r.kind == "interval":
                out += interval_obligations(r, weights)
            elif r.kind == "relu_relaxation":
                out.append(relu_obligation(r))
            else:
                extra = alpha_obligation(r)
                out += ([extra] if extra else []) + linear_obligations(r, weights)
            if r.emptied:
                out.append(empty_obligation(r))
        elif r[2]:  # a z3 query the checker answered unsat (a split node's unproved goal is no obligation)
            out.append(_from_z3(r[0], r[1]))
    return out


def _write_atomic(path: Path, chunks) -> None:
    with atomic_open(path) as fh:
        for chunk in chunks:
            fh.write(chunk)


def default_out(cert: Path) -> Path:
    name = cert.name[: -len(".cert.json")] if cert.name.endswith(".cert.json") else cert.name
    return cert.with_name(name + ".smt2")


def export(spec: str | Path, cert: str | Path, out: str | Path | None = None):
    """(check result, out path, obligations). Nothing is written for a rejected certificate."""
    cert = Path(cert)
    if not cert.is_file():
        raise BadInput(cert, "", "certificate file not found", "give the path of a .cert.json file")
    with recording() as records:
        result = checker.check_certificate(spec, cert)
    if result.verdict is checker.Verdict.REJECTED:
        return result, None, []
    obs = obligations(records)
    out = Path(out) if out is not None else default_out(cert)
    counts = {k: sum(o.kind == k for o in obs) for k in ("relu_relaxation", "interval", "linear", "alpha", "goal", "empty")}
    head = [
        f"; certify {__version__} export-smt: the obligations of {cert.name} for {Path(spec).name}, in SMT-LIB2.",
        f"; certificate sha256 {hashlib.sha256(cert.read_bytes()).hexdigest()}",
        f"; the trusted checker accepted it: {result.verdict.value}, certified bound {float(result.bound):.6g}"
        f" (tolerance {rational_str(result.tolerance)}), {result.steps} steps.",
        f"; {len(obs)} obligations, one (push 1) ... (check-sat) (pop 1) block each; every one must be unsat.",
        "; by kind: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v),
        ";", HEADER.rstrip("\n"), "",
        "(set-info :smt-lib-version 2.6)", "(set-logic QF_LRA)", "",
    ]
    try:
        _write_atomic(out, ["\n".join(head) + "\n"] + [o.smt(i, len(obs)) + "\n" for i, o in enumerate(obs, 1)] + ["(exit)\n"])
    except OSError as exc:
        raise BadInput(out, "", f"cannot write the SMT-LIB2 file ({exc.strerror or exc})", "give a writable path with -o") from None
    return result, out, obs


def run_cvc5(path: str | Path, timeout_ms: int = 60_000) -> list[tuple[str, str, float]]:
    """(obligation comment, cvc5's answer, seconds) for every check-sat of an exported file.

    cvc5 from PyPI ships no binary, only its Python API; its SMT-LIB2 parser reads the file."""
    import cvc5

    titles = [line[2:] for line in Path(path).read_text().splitlines() if line.startswith("; obligation ")]
    tm = cvc5.TermManager()
    solver, symbols = cvc5.Solver(tm), cvc5.SymbolManager(tm)
    solver.setOption("incremental", "true")
    solver.setOption("tlimit-per", str(timeout_ms))
    parser = cvc5.InputParser(solver, symbols)
    parser.setFileInput(cvc5.InputLanguage.SMT_LIB_2_6, str(path))
    answers = []
    while True:
        command = parser.nextCommand()
        if command.isNull():
            break
        start = time.perf_counter()
        said = command.invoke(solver, symbols).strip()
        if command.getCommandName() == "check-sat":
            answers.append((titles[len(answers)] if len(answers) < len(titles) else "?", said, time.perf_counter() - start))
    if len(answers) != len(titles):
        raise ValueError(f"{path}: {len(answers)} check-sat commands for {len(titles)} obligations")
    return answers


def confirm(path: Path) -> int:
    try:
        import cvc5  # noqa: F401
    except ImportError:
        raise BadInput("--cvc5", "", "cvc5 is not installed", "install it with `.venv/bin/pip install cvc5`") from None
    start = time.perf_counter()
    answers = run_cvc5(path)
    bad = [(t, a) for t, a, _ in answers if a != "unsat"]
    seconds = time.perf_counter() - start
    if bad:
        for title, answer in bad[:10]:
            print(f"  cvc5 {answer:7} {title}")
        print(f"NOT CONFIRMED  cvc5 answered unsat to {len(answers) - len(bad)} of {len(answers)} obligations ({seconds:.2f} s)")
        return EXIT_NOT_CONFIRMED
    print(f"CONFIRMED  cvc5 answered unsat to all {len(answers)} obligations ({seconds:.2f} s)")
    return EXIT_OK


def cmd_export_smt(args) -> int:
    result, out, obs = export(args.spec, args.certificate, args.out)
    if out is None:
        print(f"REJECTED  {args.certificate}: {result.reason} (a rejected certificate is not exported)")
        return EXIT_NOT_CONFIRMED
    kinds = sorted({o.kind for o in obs})
    print(f"wrote {out}: {len(obs)} obligations ({', '.join(f'{sum(o.kind == k for o in obs)} {k}' for k in kinds)}), "
          "each expected unsat; the file header says what is and is not exported")
    return confirm(out) if args.cvc5 else EXIT_OK


def register(subparsers) -> None:
    e = subparsers.add_parser("export-smt", help="export a certificate's obligations as SMT-LIB2 (QF_LRA) for another solver")
    e.add_argument("spec")
    e.add_argument("certificate")
    e.add_argument("-o", "--out", help="output path (default: the certificate's path with .smt2)")
    e.add_argument("--cvc5", action="store_true", help="then check every obligation with cvc5 (pip install cvc5); exit 3 unless all are unsat")
    e.set_defaults(func=cmd_export_smt)


if __name__ == "__main__":  # python -m certify.smt FILE.smt2: check an exported file with cvc5
    sys.exit(confirm(Path(sys.argv[1])) if len(sys.argv) == 2 else EXIT_BAD_INPUT)
