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
        "spec": str(o.spec.path), "verdict": c.verdict.value, "exit_code": EXIT[c.verdict],
        "certified_upper": _exact(c.bound), "attained_lower": _exact(o.lower), "tolerance": _exact(c.tolerance),
        "gap_ratio": o.gap, "witness": None if o.witness is None else [rational_str(v) for v in o.witness],
        "method": o.method, "tried": o.tried, "seconds": {k: round(v, 3) for k, v in o.seconds.items()},
        "certificate": str(o.certificate), "checker": {"steps": c.steps, "reason": c.reason or None},
    }


def print_outcome(o) -> None:
    c = o.check
    rel = {Verdict.CERTIFIED: "<=", Verdict.VIOLATED: ">", Verdict.UNKNOWN: ">"}.get(c.verdict, "?")
    head = f"{c.verdict.value}"
    if c.verdict is not Verdict.REJECTED:
        what = "bound" if c.verdict is not Verdict.VIOLATED else "attained"
        value = c.bound if c.verdict is not Verdict.VIOLATED else o.lower
        head += f"  ({what} {_num(value)} {rel} tolerance {rational_str(c.tolerance)})"
    print(f"certify check {o.spec.path}")
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
    print(f"  method           {o.method}  (tried: {tried})")
    s = o.seconds
    print(f"  time             {s['total']:.2f} s  (bound {s['bound']:.2f}, falsify {s['falsify']:.2f}, check {s['check']:.2f})")
    print(f"  certificate      {o.certificate}  (checker: {'accepted' if c.verdict is not Verdict.REJECTED else 'REJECTED'}, {c.steps} steps)")


def cmd_check(args) -> int:
    from .engine import run_check  # JAX is imported only for commands that bound

    outcome = run_check(args.spec, args.out, args.method)
    if args.json:
        print(json.dumps(outcome_json(outcome), indent=1))
    else:
        print_outcome(outcome)
    return EXIT[outcome.verdict]


def cmd_verify(args) -> int:
    from .checker import check_certificate

    if not os.path.isfile(args.certificate):
        raise BadInput(args.certificate, "", "certificate file not found", "give the path of a .cert.json file")
    r = check_certificate(args.spec, args.certificate)
    if args.json:
        print(json.dumps({"verdict": r.verdict.value, "exit_code": EXIT[r.verdict], "certified_upper": _exact(r.bound),
                          "witness_deviation": _exact(r.witness_deviation), "tolerance": _exact(r.tolerance),
                          "steps": r.steps, "seconds": round(r.seconds, 3), "reason": r.reason or None}, indent=1))
    elif r.verdict is Verdict.REJECTED:
        print(f"REJECTED  {args.certificate}: {r.reason}")
    else:
        print(f"{r.verdict.value}  {args.certificate}: certified upper bound {_num(r.bound)} "
              f"(tolerance {rational_str(r.tolerance)}), {r.steps} steps accepted in {r.seconds:.2f} s")
    return EXIT[r.verdict]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="certify", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="bound, falsify, write a certificate and check it")
    c.add_argument("spec")
    c.add_argument("--out", help="certificate path (default proofs/<spec-name>.cert.json)")
    c.add_argument("--method", choices=("auto", "interval", "crown", "alpha", "bab"), help="override options.method")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.set_defaults(func=cmd_check)
    v = sub.add_parser("verify", help="re-check a certificate with the trusted checker only")
    v.add_argument("spec")
    v.add_argument("certificate")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_verify)
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


if __name__ == "__main__":
    sys.exit(main())
