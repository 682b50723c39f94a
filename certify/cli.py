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

from .bounds.methods import NAMES as METHODS
from .checker.check import Verdict
from .checker.errors import BadInput
from .checker.numbers import rational_str
from .status import Status, failed_json, result_json, worst

EXIT_BAD_INPUT, EXIT_INTERNAL = Status.BAD_INPUT.exit_code, Status.INTERNAL_ERROR.exit_code


def _num(q: Fraction | None) -> str:
    return "-" if q is None else f"{float(q):.6g}"


def _exact(q: Fraction | None) -> str | None:
    return None if q is None else rational_str(q)


def outcome_json(o) -> dict:
    """The one JSON shape (docs/result.schema.json; certify/status.py)."""
    return o.to_json()


def unpinned_lines(c, spec_path, pins=()) -> list[str]:
    """What to tell a reader when g's float arrays come from the certificate, not the spec."""
    if not c.unpinned:
        return []
    sha = f"sha256 {c.arrays_sha256[:16]}..." if c.arrays_sha256 else "none given"
    lines = [f"NOT PINNED: {', '.join(c.unpinned)}: g's float arrays are the certificate's ({sha}), not fixed by the spec"]
    spec_dir = os.path.dirname(os.path.abspath(spec_path))
    for p in pins:
        lines.append(f"to pin, add to {p.key}:  {p.entry(spec_dir)}")
    lines.append(f"or run `certify pin {spec_path}`; `--strict` refuses unpinned arrays")
    return lines


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
    for i, line in enumerate(unpinned_lines(c, o.spec.path, o.pins)):
        print(f"  {'g arrays' if i == 0 else '':<16} {line}")


def _exit_code(results) -> int:
    """Worst first: a rejected certificate (3), an internal error (4), bad input (2), then 1, then 0."""
    return worst(r.status for r in results).exit_code


def _junit_case(r) -> dict:
    from .batch import Failed

    if isinstance(r, Failed):
        return {"name": r.spec, "status": r.status, "message": r.message, "seconds": 0.0, "detail": r.message}
    c = r.check
    message = f"{c.verdict.value}: certified upper {_num(c.bound)}, attained lower {_num(r.lower)}, tolerance {rational_str(c.tolerance)}"
    if c.reason:
        message += f" ({c.reason})"
    level = getattr(r.spec, "level", None)
    name = str(r.spec.path) if level is None else f"{r.spec.path} [level {level}]"
    return {"name": name, "status": r.status, "message": message,
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
    refused = _strict_refusals(args.spec) if args.strict else {}
    specs = [p for p in args.spec if p not in refused]
    levels = {p: _level_results(p, args.out, args.method) for p in specs}  # None: no levels
    plain = [p for p in specs if levels[p] is None]
    if len(plain) == 1:  # one spec: --workers and --address distribute its branch and bound over Ray
        results = [run_one(plain[0], args.out, args.method, not args.no_cache, jobs=args.jobs or os.cpu_count(),
                           address=args.address, workers=args.workers if args.workers > 1 or args.address else 0)]
    else:
        results = run_many(plain, method=args.method, use_cache=not args.no_cache, workers=args.workers,
                           address=args.address) if plain else []
    results += [r for p in specs if levels[p] is not None for r in levels[p]] + list(refused.values())
    for r in results:
        if isinstance(r, Failed):
            print(f"error: {r.message}", file=sys.stderr)
    done = [r for r in results if not isinstance(r, Failed)]
    second = [crosscheck.for_certificate(r.spec.path, r.certificate) if args.engine else None for r in done]
    if args.json:  # one object per result, in the shape of docs/result.schema.json (bad input too)
        opinions = dict(zip(map(id, done), second))
        data = [failed_json(r.spec, r.message, r.status) if isinstance(r, Failed) else
                {**outcome_json(r), **({"auto_lirpa": opinions[id(r)]} if opinions[id(r)] else {})} for r in results]
        print(json.dumps(data[0] if len(data) == 1 else data, indent=1))
    else:
        for r, a in zip(done, second):
            print_outcome(r)
            if a:
                print(crosscheck.summary_line(a))
    if args.junit:
        from .junit import write_junit

        write_junit(args.junit, [_junit_case(r) for r in results])
    return _exit_code(results)


def _strict_refusals(spec_paths) -> dict:
    """`--strict`: spec path -> Failed (exit 2) for each spec whose g has float arrays it does not pin."""
    from .batch import Failed
    from .checker.spec import read_spec
    from .pin import refuse_unpinned

    out = {}
    for p in spec_paths:
        try:
            refuse_unpinned(read_spec(p))
        except BadInput as exc:
            out[p] = Failed(str(p), str(exc), 2)
    return out


def cmd_verify(args) -> int:
    from .checker import check_certificate

    if not os.path.isfile(args.certificate):
        raise BadInput(args.certificate, "", "certificate file not found", "give the path of a .cert.json file")
    if args.strict:
        from .checker.spec import read_spec
        from .pin import refuse_unpinned

        refuse_unpinned(read_spec(args.spec))
    r = check_certificate(args.spec, args.certificate, args.jobs or os.cpu_count())
    if args.json:
        print(json.dumps(result_json(r, spec=args.spec, certificate=args.certificate, lower=r.witness_deviation),
                         indent=1))
    elif r.verdict is Verdict.REJECTED:
        print(f"REJECTED  {args.certificate}: {r.reason}")
    else:
        at = "" if r.level is None else f" (level {r.level})"
        print(f"{r.verdict.value}  {args.certificate}{at}: certified upper bound {_num(r.bound)} "
              f"(tolerance {rational_str(r.tolerance)}), {r.steps} steps accepted in {r.seconds:.2f} s")
        for line in unpinned_lines(r, args.spec):
            print(f"  {line}")
    return Status.of(r.verdict).exit_code


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="certify", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="bound, falsify, write a certificate and check it")
    c.add_argument("spec", nargs="+", help="one or more spec files")
    c.add_argument("--out", help="certificate path, for one spec (default proofs/<spec-name>.cert.json)")
    c.add_argument("--method", choices=METHODS, help="override options.method")
    c.add_argument("--json", action="store_true", help="print the result as JSON (a list for several specs)")
    c.add_argument("--junit", metavar="PATH", help="also write a JUnit XML file (one test case per spec)")
    c.add_argument("--no-cache", action="store_true", help="re-bound even if an up-to-date certificate exists")
    c.add_argument("--workers", type=int, default=1, help="run several specs in parallel on Ray (default 1: serial); "
                   "with one spec, bound its branch-and-bound leaves on that many Ray workers")
    c.add_argument("--address", help="Ray cluster address (default: a local Ray instance)")
    c.add_argument("--jobs", type=int, help="processes that check a split tree's leaves (default: the CPU count)")
    c.add_argument("--engine", choices=("auto_lirpa",), help="also print auto_LiRPA's bounds as a second opinion (not certified)")
    c.add_argument("--strict", action="store_true", help="refuse (exit 2) a spec that does not pin g's float arrays (see certify pin)")
    c.set_defaults(func=cmd_check)
    v = sub.add_parser("verify", help="re-check a certificate with the trusted checker only")
    v.add_argument("spec")
    v.add_argument("certificate")
    v.add_argument("--json", action="store_true")
    v.add_argument("--strict", action="store_true", help="refuse (exit 2) a spec that does not pin g's float arrays")
    v.add_argument("--jobs", type=int, help="processes that check a split tree's leaves (default: the CPU count)")
    v.set_defaults(func=cmd_verify)
    from .pin import register as register_pin; register_pin(sub)  # noqa: E702 - `certify pin`
    from .smt import register as register_smt; register_smt(sub)  # noqa: E702 - `certify export-smt`
    from .report import register as register_report; register_report(sub)  # noqa: E702 - `certify report`
    from .flow import register as register_flow; register_flow(sub)  # noqa: E702 - `certify flow`, `scales`, `components`
    from .vnncomp import register as register_vnncomp; register_vnncomp(sub)  # noqa: E702 - `certify vnncomp`
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
