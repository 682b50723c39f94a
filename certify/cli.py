"""Command line: `certify check SPEC`, `certify verify SPEC CERT`.

Exit codes come from the verdict alone: 0 CERTIFIED, 1 VIOLATED or UNKNOWN, 2 bad input,
3 certificate REJECTED, 4 internal error. No path reaches 0 by default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from fractions import Fraction

from .checker.check import Verdict
from .checker.errors import BadInput
from .checker.numbers import rational_str

EXIT = {Verdict.CERTIFIED: 0, Verdict.VIOLATED: 1, Verdict.UNKNOWN: 1, Verdict.REJECTED: 3}
EXIT_BAD_INPUT, EXIT_INTERNAL = 2, 4


def _num(q: Fraction | None) -> str:
    return "-" if q is None else f"{float(q):.6g}"


def _exact(q: Fraction | None) -> str | None:
    return None if q is None else rational_str(q)


def outcome_json(o) -> dict:
    c = o.check
    return {
        "spec": str(o.spec.path), "level": o.spec.level, "verdict": c.verdict.value, "exit_code": EXIT[c.verdict],
        "certified_upper": _exact(c.bound), "attained_lower": _exact(o.lower), "tolerance": _exact(c.tolerance),
        "gap_ratio": o.gap, "witness": None if o.witness is None else [rational_str(v) for v in o.witness],
        "method": o.method, "tried": o.tried, "seconds": {k: round(v, 3) for k, v in o.seconds.items()},
        "certificate": str(o.certificate), "checker": {"steps": c.steps, "reason": c.reason or None},
        "cached": o.cached, "notes": list(o.notes),
    }


def print_outcome(o) -> None:
    c = o.check
    rel = {Verdict.CERTIFIED: "<=", Verdict.VIOLATED: ">", Verdict.UNKNOWN: ">"}.get(c.verdict, "?")
    head = f"{c.verdict.value}"
    if c.verdict is not Verdict.REJECTED:
        what = "bound" if c.verdict is not Verdict.VIOLATED else "attained"
        value = c.bound if c.verdict is not Verdict.VIOLATED else o.lower
        head += f"  ({what} {_num(value)} {rel} tolerance {rational_str(c.tolerance)})"
    print(f"certify check {o.spec.path}" + ("" if o.spec.level is None else f"  (level {o.spec.level})"))
    print(f"  verdict          {head}")
    if c.verdict is Verdict.REJECTED:
        print(f"  REJECTED         the checker refused the engine's certificate: {c.reason}")
        print("                   this is a bug in certify's engine; please report it with the certificate")
    print(f"  certified upper  {_num(c.bound)}")
    if o.witness is not None:
        shown = ", ".join(f"{float(v):.4g}" for v in o.witness[:6]) + (", ..." if len(o.witness) > 6 else "")
        print(f"  attained lower   {_num(o.lower)}  at x = [{shown}] (exact replay; full input in the certificate)")
    gap = o.gap
    print(f"  gap              {'-' if gap is None else f'{gap:.3g}x'} (upper / lower)")
    tried = ", ".join(f"{m} {b:.4g}" for m, b in o.tried.items())
    print(f"  method           {o.method}" + (f"  (tried: {tried})" if tried else ""))
    s = o.seconds
    print(f"  time             {s['total']:.2f} s  (bound {s['bound']:.2f}, falsify {s['falsify']:.2f}, check {s['check']:.2f})")
    cached = "; cached: unchanged spec and model, re-verified only" if o.cached else ""
    print(f"  certificate      {o.certificate}  (checker: {'accepted' if c.verdict is not Verdict.REJECTED else 'REJECTED'}, {c.steps} steps{cached})")
    for note in o.notes:
        print(f"  note             {note}")


def _exit_code(results) -> int:
    """Worst first: a rejected certificate (3), an internal error (4), bad input (2), then 1, then 0."""
    from .batch import Failed

    codes = {r.exit_code if isinstance(r, Failed) else EXIT[r.verdict] for r in results}
    return next((c for c in (3, 4, 2, 1) if c in codes), 0)


def _junit_case(r) -> dict:
    from .batch import Failed

    if isinstance(r, Failed):
        kind = "BAD_INPUT" if r.exit_code == 2 else "INTERNAL_ERROR"
        return {"name": r.spec, "verdict": kind, "message": r.message, "seconds": 0.0, "detail": r.message}
    c = r.check
    message = f"{c.verdict.value}: certified upper {_num(c.bound)}, attained lower {_num(r.lower)}, tolerance {rational_str(c.tolerance)}"
    if c.reason:
        message += f" ({c.reason})"
    level = getattr(r.spec, "level", None)
    name = str(r.spec.path) if level is None else f"{r.spec.path} [level {level}]"
    return {"name": name, "verdict": c.verdict.value, "message": message,
            "seconds": r.seconds["total"], "detail": json.dumps(outcome_json(r), indent=1)}


def _level_results(spec_path, out, method) -> list:
    """A spec with `levels:`: one Outcome per level (fine to coarse), or [Failed] for bad input."""
    from .batch import Failed
    from .checker.spec import read_spec
    from .engine import run_levels

    try:
        return run_levels(spec_path, out, method) if read_spec(spec_path).levels else None
    except BadInput as exc:
        return [Failed(str(spec_path), str(exc), 2)]


def cmd_check(args) -> int:
    from .batch import Failed, run_many, run_one  # JAX is imported only for commands that bound

    if args.engine:  # a second opinion, never certified: fail before bounding if it is not installed (exit 2)
        from . import crosscheck
        crosscheck.require()
    if args.out and len(args.spec) > 1:
        raise BadInput("--out", "", "names one certificate but several specs were given",
                       "drop --out (each spec writes proofs/<spec-name>.cert.json)")
    levels = {p: _level_results(p, args.out, args.method) for p in args.spec}  # None: no levels
    plain = [p for p in args.spec if levels[p] is None]
    if len(plain) == 1:
        results = [run_one(plain[0], args.out, args.method, not args.no_cache)]
    else:
        results = run_many(plain, method=args.method, use_cache=not args.no_cache, workers=args.workers,
                           address=args.address) if plain else []
    results += [r for p in args.spec if levels[p] is not None for r in levels[p]]
    for r in results:
        if isinstance(r, Failed):
            print(f"error: {r.message}", file=sys.stderr)
    done = [r for r in results if not isinstance(r, Failed)]
    second = [crosscheck.for_certificate(r.spec.path, r.certificate) if args.engine else None for r in done]
    if args.json:
        data = [{**outcome_json(r), **({"auto_lirpa": a} if a else {})} for r, a in zip(done, second)]
        print(json.dumps(data[0] if len(results) == 1 and data else data, indent=1))
    else:
        for r, a in zip(done, second):
            print_outcome(r)
            if a:
                print(crosscheck.summary_line(a))
    if args.junit:
        from .junit import write_junit

        write_junit(args.junit, [_junit_case(r) for r in results])
    return _exit_code(results)


def cmd_verify(args) -> int:
    from .checker import check_certificate

    if not os.path.isfile(args.certificate):
        raise BadInput(args.certificate, "", "certificate file not found", "give the path of a .cert.json file")
    r = check_certificate(args.spec, args.certificate)
    if args.json:
        print(json.dumps({"verdict": r.verdict.value, "exit_code": EXIT[r.verdict], "certified_upper": _exact(r.bound),
                          "witness_deviation": _exact(r.witness_deviation), "tolerance": _exact(r.tolerance),
                          "steps": r.steps, "seconds": round(r.seconds, 3), "reason": r.reason or None,
                          "level": r.level}, indent=1))
    elif r.verdict is Verdict.REJECTED:
        print(f"REJECTED  {args.certificate}: {r.reason}")
    else:
        at = "" if r.level is None else f" (level {r.level})"
        print(f"{r.verdict.value}  {args.certificate}{at}: certified upper bound {_num(r.bound)} "
              f"(tolerance {rational_str(r.tolerance)}), {r.steps} steps accepted in {r.seconds:.2f} s")
    return EXIT[r.verdict]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="certify", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="bound, falsify, write a certificate and check it")
    c.add_argument("spec", nargs="+", help="one or more spec files")
    c.add_argument("--out", help="certificate path, for one spec (default proofs/<spec-name>.cert.json)")
    c.add_argument("--method", choices=("auto", "interval", "crown", "alpha", "lp", "bab"), help="override options.method")
    c.add_argument("--json", action="store_true", help="print the result as JSON (a list for several specs)")
    c.add_argument("--junit", metavar="PATH", help="also write a JUnit XML file (one test case per spec)")
    c.add_argument("--no-cache", action="store_true", help="re-bound even if an up-to-date certificate exists")
    c.add_argument("--workers", type=int, default=1, help="run several specs in parallel on Ray (default 1: serial)")
    c.add_argument("--address", help="Ray cluster address (default: a local Ray instance)")
    c.add_argument("--engine", choices=("auto_lirpa",), help="also print auto_LiRPA's bounds as a second opinion (not certified)")
    c.set_defaults(func=cmd_check)
    v = sub.add_parser("verify", help="re-check a certificate with the trusted checker only")
    v.add_argument("spec")
    v.add_argument("certificate")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_verify)
    from .smt import register as register_smt; register_smt(sub)  # noqa: E702 - `certify export-smt`
    from .report import register as register_report; register_report(sub)  # noqa: E702 - `certify report`
    from .flow import register as register_flow; register_flow(sub)  # noqa: E702 - `certify flow`, `scales`, `components`
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERNAL
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, exit 4
        if os.environ.get("CERTIFY_DEBUG"):
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (set CERTIFY_DEBUG=1 for a traceback; please report)", file=sys.stderr)
        return EXIT_INTERNAL


def run() -> int:
    """The `certify` console script: `main`, with JAX's persistent compilation cache on (later runs
    skip XLA compiles of 0.3-2 s per network shape). It is set through JAX's environment variables,
    so `certify verify` still imports no JAX; CERTIFY_XLA_CACHE="" turns it off."""
    cache = os.environ.get("CERTIFY_XLA_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "certify", "xla"))
    try:
        os.makedirs(cache or ".", exist_ok=True)
    except OSError:  # an unwritable place: run without the cache
        cache = ""
    if cache:
        os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", cache)
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    return main()


if __name__ == "__main__":
    sys.exit(run())
