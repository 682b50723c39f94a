"""`certify export-smt` on every shipped certificate: obligations, file size, export time, and
cvc5's time to answer all of them (unsat expected), as a table and as JSON.

    python benchmarks/smt_export.py [--cvc5-limit 300] [--only NAME ...] [--json benchmarks/smt-export.json]

Each certificate `proofs/<spec>[.<level>].cert.json` is exported against `specs/<spec>.yaml`. cvc5
runs in a child process (`python -m certify.smt FILE`) with a wall-clock limit; a run past it is
reported as `timeout`, never as a confirmation. Its CPU seconds are reported beside the wall-clock
ones (on a shared machine the wall clock also counts the other processes).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from certify import smt  # noqa: E402
from certify.checker.errors import BadInput  # noqa: E402


def shipped() -> list[tuple[Path, Path]]:
    """(spec, certificate) for every certificate in proofs/."""
    return [(ROOT / "specs" / (cert.name.split(".")[0] + ".yaml"), cert) for cert in sorted((ROOT / "proofs").glob("*.cert.json"))]


def measure(spec: Path, cert: Path, directory: Path, cvc5_limit: float) -> dict:
    out = directory / (cert.name[: -len(".cert.json")] + ".smt2")
    row: dict = {"certificate": cert.name}
    start = time.perf_counter()
    try:
        result, path, obs = smt.export(spec, cert, out)
    except (BadInput, getattr(smt, "Refused", BadInput)) as exc:  # (Refused: older versions have none)
        row.update(export="refused (exit 2)", reason=str(exc))
        return row
    except Exception as exc:  # the exporter's internal error (exit 4)
        row.update(export="internal error (exit 4)", reason=str(exc)[:200])
        return row
    row["export_s"] = round(time.perf_counter() - start, 2)
    if path is None:
        row.update(export="rejected (exit 3)", reason=result.reason)
        return row
    row.update(export="ok", obligations=len(obs), bytes=path.stat().st_size)
    if cvc5_limit > 0:
        start, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            run = subprocess.run([sys.executable, "-m", "certify.smt", str(path)], cwd=ROOT, capture_output=True, text=True,
                                 timeout=cvc5_limit)
            row["cvc5"] = "confirmed" if run.returncode == 0 else f"NOT confirmed (exit {run.returncode})"
        except subprocess.TimeoutExpired:
            row["cvc5"] = f"timeout ({cvc5_limit:g} s)"
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        row["cvc5_s"] = round(time.perf_counter() - start, 2)
        row["cvc5_cpu_s"] = round(used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime, 2)
    path.unlink()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cvc5-limit", type=float, default=300, help="seconds per certificate for cvc5 (0: skip cvc5)")
    parser.add_argument("--only", nargs="*", help="certificate names (without .cert.json) to run")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    args = parser.parse_args()
    rows = []
    print(f"{'certificate':40} {'export':10} {'obligations':>11} {'MB':>7} {'export s':>8} {'cvc5':>24} {'cvc5 s':>7} {'cpu s':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for spec, cert in shipped():
            if args.only and cert.name[: -len(".cert.json")] not in args.only:
                continue
            row = measure(spec, cert, Path(tmp), args.cvc5_limit)
            rows.append(row)
            mb = f"{row['bytes'] / 1e6:.2f}" if "bytes" in row else "-"
            print(f"{row['certificate']:40} {row['export'][:10]:10} {row.get('obligations', '-'):>11} {mb:>7} "
                  f"{row.get('export_s', '-'):>8} {row.get('cvc5', '-'):>24} {row.get('cvc5_s', '-'):>7} {row.get('cvc5_cpu_s', '-'):>7}", flush=True)
            if "reason" in row:
                print(f"    {row['reason']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
