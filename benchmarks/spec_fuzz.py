"""Spec fuzz campaign: random single changes to the shipped specs, through the real command line.

    python benchmarks/spec_fuzz.py --cases 300 --seed 1 --json benchmarks/spec-fuzz.json
    python benchmarks/spec_fuzz.py --specs resmlp_sae,max_of_k_circuit --cases 40 --method interval

The README promises that every malformed spec, missing file, wrong hash, unsupported layer or shape
mismatch ends in exit 2 with ONE line naming the file and the key, never a traceback, a wrong verdict
or a lost result file. tests/test_bad_input.py checks that for hand-written cases on one small spec;
this campaign checks it where nobody wrote a case: every shipped spec (dense, residual with SAEs and
transcoders, transformers over token domains, ONNX, VNN-LIB, levels), changed at one random place.

Each case takes a shipped spec (round robin over `specs/*.yaml`, shuffled), parses its YAML, applies
one change (`MUTATIONS`: a key dropped, an unknown key added, a value replaced by one of another type
or by NaN, infinity, a negative or a huge number, an unparsable rational, a list emptied or an
element dropped, duplicated or replaced, a path pointing at a missing file, a directory or a file of
the wrong kind, a sha256 changed; a data file the spec names (model, SAE, pinned array, centre)
rewritten with one array given a NaN, another shape, dtype or key, and its sha256 updated so that
the change reaches the readers; or, on the text, a cut at a random place or a duplicated line),
writes it into a scratch copy of the repository's layout (`specs/` copied, `models/` and `tests/`
linked, so the spec's relative paths resolve), and runs `certify check SPEC --method M --no-cache
--jobs 1 --out proofs/x.cert.json` in this process (`certify.cli.main`). Outcomes:

- `result` (exit 0 or 1): the changed spec was still a valid one (a tolerance moved, a feature list
  shortened); nothing to judge here (the soundness campaigns judge verdicts);
- `bad_input` (exit 2): must be exactly one line on stderr starting with `error: `, nothing on stdout
  and no certificate written; `unnamed` counts those whose line names neither the spec nor any file
  the spec names (a weaker message, not a defect by itself);
- `defect`: exit 4 (an internal error), an exception out of `main`, a traceback or more than one
  line on stderr, output on stdout with exit 2, a certificate written with exit 2, or exit 3 (no
  certificate is given to `check`, so nothing may be rejected). Each defect is listed with its spec,
  mutation, place and stderr.

`--command flow` runs `certify flow CHANGED --method M --fresh` (with its JSON and plot) on the specs
that have `levels:`, judged as `check`: a result, or exit 2 with one line and no file written.

`--command verify` runs `certify verify CHANGED_SPEC proofs/<spec>.cert.json --json` instead (the
trusted checker's own reading of the spec, against the shipped certificate): there `rejected`
(exit 3) is an outcome, and CERTIFIED with a bound above the changed spec's tolerance is a defect.

Run it with `nice`: every valid mutant is bounded (with the cheap method given, `interval` by
default) and falsified, so a case takes 1-5 s.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import io
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from fractions import Fraction
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "benchmarks"))

from certify.cli import main  # noqa: E402
from jsonwalk import get as _get, sites  # noqa: E402

SPECS_DIR = ROOT / "specs"  # where a spec's relative paths start (the scratch copy during a campaign)
FILE_SUFFIXES = (".npz", ".npy", ".onnx", ".vnnlib", ".safetensors", ".yaml", ".json")
OTHER_TYPES = [None, True, "text", [], {}, 0, -1, 2.5, "1/0", "nan", float("nan"), float("inf"), 10 ** 400, "0x1p3", [1, [2]]]


# --------------------------------------------------------------------------- where a change can land


def _pick(doc, rng, keep):
    """A random (path, value) with keep(path, value); LookupError where none."""
    places = [(p, v) for p, v in sites(doc) if p and keep(p, v)]
    if not places:
        raise LookupError
    return rng.choice(places)


def _is_path(p, v) -> bool:
    return isinstance(v, str) and (p[-1] in ("path", "center", "vnnlib") or v.endswith(FILE_SUFFIXES))


def drop_key(doc, rng):
    p, _ = _pick(doc, rng, lambda p, v: isinstance(p[-1], str))
    del _get(doc, p[:-1])[p[-1]]
    return p


def add_key(doc, rng):
    p, v = _pick(doc, rng, lambda p, v: isinstance(v, dict))
    v[rng.choice(["colour", "extra", "Path", "tolerence"])] = rng.choice([1, "x", None])
    return p


def retype(doc, rng):
    p, v = _pick(doc, rng, lambda p, v: True)
    _get(doc, p[:-1])[p[-1]] = copy.deepcopy(rng.choice([t for t in OTHER_TYPES if type(t) is not type(v)]))
    return p


def number(doc, rng):
    p, v = _pick(doc, rng, lambda p, v: isinstance(v, (int, float)) and not isinstance(v, bool)
                 or isinstance(v, str) and v.replace("/", "").replace("-", "").replace(".", "").isdigit())
    _get(doc, p[:-1])[p[-1]] = rng.choice([-abs(v) if isinstance(v, (int, float)) else f"-{v}", 0, "0/0", "1/0", float("nan"),
                                           float("-inf"), 10 ** 30, -(10 ** 30), 1e-300, "3/-4", "1e999", 10 ** 400])
    return p


def list_edit(doc, rng):
    p, v = _pick(doc, rng, lambda p, v: isinstance(v, list))
    how = rng.choice(["empty", "drop", "dup", "garbage", "nest"])
    if how == "empty" or not v:
        v.clear()
    elif how == "drop":
        v.pop(rng.randrange(len(v)))
    elif how == "dup":
        i = rng.randrange(len(v))
        v.insert(i, copy.deepcopy(v[i]))
    elif how == "garbage":
        v[rng.randrange(len(v))] = rng.choice(["x", None, {}, [], -7, 10 ** 9])
    else:
        v[:] = [list(v)]
    return p


def bad_path(doc, rng):
    p, v = _pick(doc, rng, _is_path)
    _get(doc, p[:-1])[p[-1]] = rng.choice([
        v + ".missing", "../models", "../specs", "tiny_prune.yaml", "../README.md", "../models/digits_x0.npy",
        "../models/tiny_mlp.npz", "/dev/null", "", "../models/" + "x" * 300 + ".npz"])
    return p


def bad_sha(doc, rng):
    p, v = _pick(doc, rng, lambda p, v: p[-1] == "sha256" and isinstance(v, str))
    _get(doc, p[:-1])[p[-1]] = rng.choice([v[:-1] + ("0" if v[-1] != "0" else "1"), v[:10], v.upper(), "", "z" * 64])
    return p


def bad_word(doc, rng):
    p, v = _pick(doc, rng, lambda p, v: isinstance(v, str) and not _is_path(p, v) and p[-1] != "sha256")
    _get(doc, p[:-1])[p[-1]] = rng.choice([v + "x", v.upper(), "", "all " + v, "-" + v])
    return p


def _array_site(p, v) -> bool:
    return isinstance(v, str) and v.endswith((".npz", ".npy")) and (SPECS_DIR / v).is_file()


def bad_array(doc, rng):
    """A data file the spec names (a model, an SAE, a pinned array, a ball's centre) rewritten with one
    array changed (NaN, infinity, a dimension cut or added, a key dropped or added, another dtype, a
    scalar, an empty array), its sha256 (where the spec pins one) updated to match, so the change gets
    past the hash to the readers behind it."""
    import numpy as np

    p, v = _pick(doc, rng, _array_site)
    source = SPECS_DIR / v
    if v.endswith(".npy"):
        arrays, key = {"": np.load(source, allow_pickle=False)}, ""
    else:
        with np.load(source, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        key = rng.choice(sorted(arrays))
    a = arrays[key]
    how = rng.choice(["nan", "inf", "cut", "grow", "int", "complex", "bool", "scalar", "empty", "transpose"]
                     + (["drop", "extra"] if key else []))
    if how in ("nan", "inf") and a.size and a.dtype.kind == "f":
        a = a.copy()
        a.flat[rng.randrange(a.size)] = np.nan if how == "nan" else -np.inf
    elif how == "cut" and a.ndim and a.shape[-1] > 1:
        a = a[..., :-1]
    elif how == "grow":
        a = np.concatenate([a, a[..., :1]], axis=-1) if a.ndim else np.stack([a, a])
    elif how == "drop" and len(arrays) > 1:
        del arrays[key]
        a = None
    elif how == "extra":
        arrays["extra_" + (key or "x")] = np.zeros(3)
    elif how == "int":
        a = a.astype(np.int64)
    elif how == "complex":
        a = a.astype(np.complex128)
    elif how == "bool":
        a = a.astype(bool)
    elif how == "scalar":
        a = np.asarray(1.0)
    elif how == "transpose" and a.ndim == 2 and a.shape[0] != a.shape[1]:
        a = a.T.copy()
    else:
        a = np.zeros((0,) + a.shape[1:])
    if a is not None:
        arrays[key] = a
    out = SPECS_DIR.parent / "fuzzdata" / (source.stem + "-" + how + source.suffix)
    if v.endswith(".npy"):
        np.save(out, arrays.get("", np.zeros(0)))
    else:
        np.savez(out, **arrays)
    parent = _get(doc, p[:-1])
    parent[p[-1]] = "../fuzzdata/" + out.name
    if isinstance(parent, dict) and isinstance(parent.get("sha256"), str):
        parent["sha256"] = hashlib.sha256(out.read_bytes()).hexdigest()
    return p + (f"{key}:{how}",)


MUTATIONS = {f.__name__: f for f in (drop_key, add_key, retype, number, list_edit, bad_path, bad_sha, bad_word, bad_array)}
TEXT_MUTATIONS = ("cut", "dup_line", "tab")


def _text_mutant(text: str, rng, how: str) -> str:
    lines = text.splitlines(keepends=True)
    body = [i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]
    i = rng.choice(body)
    if how == "cut":
        return text[:rng.randrange(len(text))]
    if how == "dup_line":
        return "".join(lines[:i + 1] + [lines[i]] + lines[i + 1:])
    return "".join(lines[:i] + ["\t" + lines[i]] + lines[i + 1:])


# --------------------------------------------------------------------------- one case


def _scratch() -> Path:
    """specs/ copied, models/ and tests/ linked: every relative path in a shipped spec resolves;
    fuzzdata/ holds bad_array's rewritten files."""
    root = Path(tempfile.mkdtemp(prefix="certify-spec-fuzz-"))
    shutil.copytree(ROOT / "specs", root / "specs")
    (root / "fuzzdata").mkdir()
    global SPECS_DIR
    SPECS_DIR = root / "specs"
    for name in ("models", "tests"):
        (root / name).symlink_to(ROOT / name)
    return root


def _names(doc) -> set[str]:
    return {Path(v).name for p, v in sites(doc) if p and _is_path(p, v) and v}


def run_case(root: Path, spec: str, rng: random.Random, method: str, command: str = "check") -> dict:
    text = (ROOT / "specs" / f"{spec}.yaml").read_text()
    kinds = list(MUTATIONS) + list(TEXT_MUTATIONS)
    doc = yaml.safe_load(text)
    for _ in range(20):  # a kind with no place in this spec: draw another
        kind = rng.choice(kinds)
        mutant = doc
        if kind in TEXT_MUTATIONS:
            new, where = _text_mutant(text, rng, kind), "text"
            break
        mutant = copy.deepcopy(doc)
        try:
            where = "/".join(map(str, MUTATIONS[kind](mutant, rng)))
        except LookupError:
            continue
        new = yaml.safe_dump(mutant, sort_keys=False, width=10 ** 6)
        break
    else:
        return {"spec": spec, "outcome": "skipped"}
    path = root / "specs" / f"fuzz_{spec}.yaml"
    path.write_text(new)
    out_dir = root / "proofs"
    shutil.rmtree(out_dir, ignore_errors=True)
    cert = out_dir / "x.cert.json"
    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if command == "check":
                rc = main(["check", str(path), "--method", method, "--no-cache", "--jobs", "1", "--out", str(cert)])
            elif command == "flow":  # every level, bounded afresh, with the flow's JSON and plot
                rc = main(["flow", str(path), "--method", method, "--fresh", "--out-dir", str(out_dir),
                           "--json", str(out_dir / "flow.json"), "--plot", str(out_dir / "flow")])
            else:  # the shipped certificate against the changed spec: the checker's own spec path
                rc = main(["verify", str(path), str(ROOT / "proofs" / f"{spec}.cert.json"), "--json", "--jobs", "1"])
        raised = None
    except BaseException as exc:  # noqa: BLE001 - SystemExit included: main must return, never raise
        rc, raised = None, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}"
    record = {"spec": spec, "kind": kind, "where": where, "exit": rc, "seconds": round(time.perf_counter() - t0, 2)}
    stderr = err.getvalue()
    lines = stderr.splitlines()
    problems = []
    if raised is not None:
        problems.append("exception out of main: " + raised)
    elif rc == 4:
        problems.append("exit 4 (internal error)")
    elif rc == 3 and command != "verify":
        problems.append("exit 3 without a certificate given")
    elif rc == 0 and command == "verify":
        result = json.loads(out.getvalue())
        if Fraction(result["certified_upper"]) > Fraction(result["tolerance"]):
            problems.append("CERTIFIED with a bound above the changed spec's tolerance")
    elif rc == 2:
        if len(lines) != 1 or not lines[0].startswith("error: "):
            problems.append("not one 'error: ' line")
        if out.getvalue():
            problems.append("stdout not empty")
        if command != "verify" and out_dir.exists() and any(p.is_file() for p in out_dir.rglob("*")):
            problems.append("certificate written")
    elif rc not in (0, 1, 3):
        problems.append(f"exit {rc}")
    if "Traceback" in stderr:
        problems.append("traceback on stderr")
    if problems:
        record.update(outcome="defect", problems=problems, stderr=stderr[-2000:], spec_text=new[:4000])
    elif rc == 2:
        names = _names(doc) | _names(mutant) | {path.name}
        record.update(outcome="bad_input", message=lines[0][:300], named=any(n in lines[0] for n in names))
    elif rc == 3:
        record.update(outcome="rejected", message=lines[-1][:300] if lines else "")
    else:
        record.update(outcome="result")
    return record


def campaign(specs: list[str], cases: int, seed: int, method: str, progress=print, command: str = "check") -> dict:
    rng = random.Random(seed)
    root = _scratch()
    records = []
    t0 = time.time()
    order: list[str] = []
    try:
        for n in range(cases):
            if not order:
                order = list(specs)
                rng.shuffle(order)
            r = run_case(root, order.pop(), rng, method, command)
            records.append(r)
            if r["outcome"] == "defect" and progress:
                progress(f"DEFECT {r['spec']} {r['kind']} at {r['where']}: {r['problems']}\n  {r['stderr'].strip()[:400]}")
            elif progress and (n + 1) % 20 == 0:
                progress(f"{n + 1}/{cases} cases, {time.time() - t0:.0f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    outcomes = Counter(r["outcome"] for r in records)
    by_kind: dict = {}
    for r in records:
        if r["outcome"] != "skipped":
            by_kind.setdefault(r["kind"], Counter())[r["outcome"]] += 1
    bad = [r for r in records if r["outcome"] == "bad_input"]
    return {
        "cases": cases, "seed": seed, "command": command, "method": method, "specs": len(specs), "seconds": round(time.time() - t0, 1),
        "outcomes": dict(outcomes), "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "unnamed": sum(not r["named"] for r in bad),
        "defects": [r for r in records if r["outcome"] == "defect"],
        "unnamed_examples": [{"spec": r["spec"], "kind": r["kind"], "where": r["where"], "message": r["message"]}
                             for r in bad if not r["named"]][:30],
    }


def main_cli(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--method", default="interval", help="the method every valid mutant is bounded with")
    ap.add_argument("--specs", help="comma-separated spec names (default: every specs/*.yaml)")
    ap.add_argument("--command", choices=("check", "verify", "flow"), default="check",
                    help="verify: re-check the shipped proofs/<spec>.cert.json against each changed spec; "
                         "flow: `certify flow --fresh` on the specs with levels")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    os.environ.pop("CERTIFY_DEBUG", None)
    specs = args.specs.split(",") if args.specs else sorted(p.stem for p in (ROOT / "specs").glob("*.yaml"))
    if args.command == "verify":  # the specs with one certificate (a levels spec has one per level)
        specs = [s for s in specs if (ROOT / "proofs" / f"{s}.cert.json").is_file()]
    elif args.command == "flow":
        specs = [s for s in specs if "\nlevels:" in (ROOT / "specs" / f"{s}.yaml").read_text()]
    result = campaign(specs, args.cases, args.seed, args.method, command=args.command)
    print(f"{result['cases']} cases over {result['specs']} specs in {result['seconds']} s: {result['outcomes']}; "
          f"bad-input lines naming no file: {result['unnamed']}")
    for kind, counts in result["by_kind"].items():
        print(f"  {kind:10s} {counts}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str) + "\n")
    return 1 if result["defects"] else 0


if __name__ == "__main__":
    sys.exit(main_cli())
