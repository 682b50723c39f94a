"""Report fuzz campaign: tampered shipped certificates through `certify report` and `certify verify`.

    python benchmarks/report_fuzz.py --cases 600 --seed 2 --json benchmarks/report-fuzz.json

A safety reviewer reads the audit report, not the checker's exit code. So the report must say what
the checker says, whatever the certificate holds. Each case takes a shipped certificate from
`proofs/` (with its spec in `specs/`; certificates over 1.5 MB are left out to keep a case near a
second), changes it at one random place with benchmarks/corruption.py's mutations (a number nudged,
negated, zeroed or swapped, an index moved, a list element dropped, duplicated or swapped, a key
dropped or added, a value of another type, a string changed), this time including the engine's
notes, which the report reads and the proof does not. Then it runs, in this process,

    certify report SPEC --cert TAMPERED --md scratch/r.md
    certify verify SPEC TAMPERED --jobs 1

and counts the pairs of exit codes. A defect is an exit 4, an exception out of `main` or a
traceback from either, or a report whose exit code differs from verify's (the report's exit code
is its overall verdict: 0 certified, 1 violated or unknown, 3 rejected), which would mean a report
that reads CERTIFIED for a certificate the checker rejects, or the other way round.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import corruption  # noqa: E402
from jsonwalk import sites  # noqa: E402

from certify.cli import main  # noqa: E402


def _run(argv: list[str]) -> tuple[int | None, str, str | None]:
    """(exit code, stderr, the traceback of an exception out of main or None)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return main(argv), err.getvalue(), None
    except BaseException:  # noqa: BLE001 - SystemExit included: main must return
        return None, err.getvalue(), traceback.format_exc(limit=6)


def pairs(max_bytes: int = 1_500_000) -> list[tuple[Path, Path]]:
    """(spec, certificate) for every shipped certificate with a spec of its own name."""
    out = []
    for cert in sorted((ROOT / "proofs").glob("*.cert.json")):
        spec = ROOT / "specs" / (cert.name[: -len(".cert.json")] + ".yaml")
        if spec.is_file() and cert.stat().st_size < max_bytes:
            out.append((spec, cert))
    return out


def tamper(doc: dict, rng: random.Random) -> str | None:
    """One of corruption.py's mutations at a random place, the engine's notes included; its name, or None."""
    kinds = list(corruption.MUTATIONS)
    saved = corruption._sites
    corruption._sites = sites  # every place, the `engine` block too
    try:
        for _ in range(20):
            kind = rng.choice(kinds)
            try:
                corruption.MUTATIONS[kind](doc, rng)
                return kind
            except (LookupError, ValueError):
                continue
        return None
    finally:
        corruption._sites = saved


def run_case(spec: Path, cert: Path, rng: random.Random, scratch: Path) -> dict:
    doc = json.loads(cert.read_text())
    kind = tamper(doc, rng)
    bad = scratch / "tampered.cert.json"
    bad.write_text(json.dumps(doc))
    report = _run(["report", str(spec), "--cert", str(bad), "--md", str(scratch / "r.md")])
    verify = _run(["verify", str(spec), str(bad), "--jobs", "1"])
    problems = []
    for name, (rc, err, exc) in (("report", report), ("verify", verify)):
        if exc:
            problems.append(f"{name}: exception out of main: {exc[-800:]}")
        elif rc == 4:
            problems.append(f"{name}: exit 4: {err.strip()[-400:]}")
        if "Traceback" in err:
            problems.append(f"{name}: traceback on stderr")
    if not problems and report[0] != verify[0]:
        problems.append(f"report exit {report[0]} but verify exit {verify[0]}")
    return {"spec": spec.name, "kind": kind, "where": [str(k) for k in (corruption.LAST[0] if corruption.LAST else ())],
            "report": report[0], "verify": verify[0], "problems": problems}


def campaign(cases: int, seed: int, progress=print) -> dict:
    rng = random.Random(seed)
    todo = pairs()
    scratch = Path(tempfile.mkdtemp(prefix="certify-report-fuzz-"))
    records = []
    t0 = time.time()
    try:
        for n in range(cases):
            spec, cert = rng.choice(todo)
            r = run_case(spec, cert, rng, scratch)
            records.append(r)
            if r["problems"] and progress:
                progress(f"DEFECT {r['spec']} {r['kind']} at {'/'.join(r['where'])}: {r['problems']}")
            elif progress and (n + 1) % 50 == 0:
                progress(f"{n + 1}/{cases} cases, {time.time() - t0:.0f} s")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "cases": cases, "seed": seed, "certificates": len(todo), "seconds": round(time.time() - t0, 1),
        "exit_pairs": {f"report {a} / verify {b}": c for (a, b), c in sorted(Counter((r["report"], r["verify"]) for r in records).items(),
                                                                             key=lambda kv: str(kv[0]))},
        "defects": [r for r in records if r["problems"]],
    }


def main_cli(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    result = campaign(args.cases, args.seed)
    print(f"{result['cases']} tampered certificates (of {result['certificates']} shipped) in {result['seconds']} s: "
          f"{result['exit_pairs']}; defects: {len(result['defects'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str) + "\n")
    return 1 if result["defects"] else 0


if __name__ == "__main__":
    sys.exit(main_cli())
