"""Corruption campaign: random tampering of genuine certificates against an exact oracle.

    python benchmarks/corruption.py --family dense --cases 200 --mutants 25 --seed 7 --json corruption-dense.json
    python benchmarks/corruption.py --family transformer --cases 60 --mutants 20 --seed 8

Each case is one of the soundness campaign's (benchmarks/soundness.py: a random network or graph, a
random explanation and domain, one method end to end) together with its oracle value: the exact
maximum (dense: MILP, replayed exactly; transformer: every sequence), or an attained deviation,
replayed at 50 digits (residual). The genuine certificate must be accepted. Then `--mutants` copies
of it are each changed at one random place (`MUTATIONS`: a number nudged by a relative 2^-k either
way, negated, zeroed or swapped with another; an index moved; a list element dropped, duplicated or
swapped; a key dropped or an unknown one added; a value replaced by one of another type; a string
changed), and the trusted checker re-checks each copy against the unchanged spec and weights.

A tampered certificate may be rejected, or accepted if it still proves something true (a loosened
claim is a valid certificate). Counted per mutation kind:
- `rejected`, `accepted`: the checker's verdicts;
- `unsound`: accepted with a bound below the oracle value (the oracle value is a deviation some
  input attains, so this is a false proof) — must be 0;
- `wrong_certified`: CERTIFIED while the oracle value exceeds the tolerance — must be 0;
- `crashed`: an exception out of the checker other than a rejection (the CLI would exit 4, not 3) —
  must be 0;
- `unchanged`: a mutation that gave back the same JSON (not checked).
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import random
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import soundness  # noqa: E402
from jsonwalk import get as _get, sites  # noqa: E402

from certify.checker import Verdict, check_certificate  # noqa: E402
from certify.checker.errors import BadInput  # noqa: E402
from certify.checker.numbers import parse_rational, rational_str  # noqa: E402

# --------------------------------------------------------------------------- where a mutation can land


def _sites(node):
    """Every place in the JSON: (path, value) for containers and leaves alike, except under the top-level
    `engine` block (the engine's notes: how the certificate was found, read by reports, not by the proof)."""
    return sites(node, skip_top=("engine",))


LAST: list = []  # the path of the last change (its top-level key is counted as the mutant's section)


def _set(doc, path, value):
    LAST[:] = [path]
    _get(doc, path[:-1])[path[-1]] = value


def _number(v) -> Fraction | None:
    """A certificate number: a rational string, or an int that is not a bool."""
    if type(v) is int:
        return Fraction(v)
    return parse_rational(v) if isinstance(v, str) else None


def _as(old, q: Fraction):
    """q written as old was: an int stays an int where q is one, else the certificate's rational string."""
    return int(q) if type(old) is int and q.denominator == 1 else rational_str(q)


# --------------------------------------------------------------------------- the mutations: (doc, rng) -> changed doc


def _pick(doc, rng, keep):
    """A random place (path, value) for which keep(path, value) holds; its path becomes the mutant's section (`LAST`).
    LookupError where there is none (the mutation does not apply to this certificate)."""
    places = [(p, v) for p, v in _sites(doc) if keep(p, v)]
    if not places:
        raise LookupError("no such place")
    path, v = rng.choice(places)
    LAST[:] = [path]
    return path, v


def _is_number(path, v) -> bool:
    return bool(path) and _number(v) is not None


def nudge(doc, rng):
    """A number times 1 +- 2^-k, k in 1..60 (tightens or loosens a claim by anything from half to an ulp)."""
    path, v = _pick(doc, rng, _is_number)
    q = _number(v)
    step = abs(q) / 2**rng.randint(1, 60) if q else Fraction(1, 2**rng.randint(1, 60))
    _set(doc, path, _as(v, q + step if rng.random() < 0.5 else q - step))
    return doc


def negate(doc, rng):
    path, v = _pick(doc, rng, lambda p, v: _is_number(p, v) and bool(_number(v)))
    _set(doc, path, _as(v, -_number(v)))
    return doc


def zero(doc, rng):
    path, v = _pick(doc, rng, lambda p, v: _is_number(p, v) and bool(_number(v)))
    _set(doc, path, _as(v, Fraction(0)))
    return doc


def swap_numbers(doc, rng):
    """Two numbers of one list exchanged (slopes, bounds, pairs of neurons...)."""
    _, v = _pick(doc, rng, lambda p, v: isinstance(v, list) and sum(_number(x) is not None for x in v) > 1)
    i, j = rng.sample([i for i, x in enumerate(v) if _number(x) is not None], 2)
    v[i], v[j] = v[j], v[i]
    return doc


def move_index(doc, rng):
    """An integer (a layer, a neuron, an input dimension, a split side) moved by one or to a random place."""
    path, v = _pick(doc, rng, lambda p, v: type(v) is int)
    _set(doc, path, rng.choice([v + 1, v - 1, rng.randint(0, 2 * abs(v) + 2)]))
    return doc


def drop_element(doc, rng):
    _, v = _pick(doc, rng, lambda p, v: isinstance(v, list) and v)
    del v[rng.randrange(len(v))]
    return doc


def duplicate_element(doc, rng):
    _, v = _pick(doc, rng, lambda p, v: isinstance(v, list) and v)
    i = rng.randrange(len(v))
    v.insert(i, copy.deepcopy(v[i]))
    return doc


def swap_elements(doc, rng):
    """Two entries of a list of objects (steps, children, tree nodes) exchanged."""
    _, v = _pick(doc, rng, lambda p, v: isinstance(v, list) and len(v) > 1)
    i, j = rng.sample(range(len(v)), 2)
    v[i], v[j] = v[j], v[i]
    return doc


def drop_key(doc, rng):
    _, v = _pick(doc, rng, lambda p, v: isinstance(v, dict) and v)
    del v[rng.choice(list(v))]
    return doc


def add_key(doc, rng):
    _, v = _pick(doc, rng, lambda p, v: isinstance(v, dict))
    v[rng.choice(["bound", "note", "trusted", "skip", "lower", "steps"]) + "_x"] = rng.choice([0, "1", [], {}])
    return doc


def retype(doc, rng):
    """A value replaced by one of another type: null, a bool, a float, a list, an object, a non-number string."""
    path, _ = _pick(doc, rng, lambda p, v: bool(p))
    _set(doc, path, rng.choice([None, True, 0.5, [], {}, "x", float("nan")]))
    return doc


def change_string(doc, rng):
    """A string that is not a number (a step kind, a split kind, a hash, a node name) changed."""
    strings = [v for _, v in _sites(doc) if isinstance(v, str) and _number(v) is None]
    path, v = _pick(doc, rng, lambda p, v: isinstance(v, str) and _number(v) is None)
    others = sorted(set(strings) - {v})
    if others and rng.random() < 0.5:
        _set(doc, path, rng.choice(others))
    else:
        i = rng.randrange(len(v)) if v else 0
        _set(doc, path, v[:i] + rng.choice("0af_x.") + v[i + 1:])
    return doc


MUTATIONS = {f.__name__: f for f in (nudge, negate, zero, swap_numbers, move_index, drop_element, duplicate_element,
                                     swap_elements, drop_key, add_key, retype, change_string)}
WEIGHTS = {"nudge": 6, "negate": 1, "zero": 1, "swap_numbers": 2, "move_index": 2}  # the rest 1: numbers are most of a certificate


# --------------------------------------------------------------------------- one case


def genuine(family: str, seed: int, i: int, method: str, tmp: Path) -> tuple[dict, Path, Path] | None:
    """A soundness-campaign case: (its record, spec path, certificate path), or None where there is no
    accepted certificate to tamper with (the engine refused, or the oracle)."""
    rng = np.random.default_rng([seed, i])
    if family == "dense":
        rec = soundness.run_case(rng, tmp, i, method)
    elif family == "residual":
        rec = soundness.run_graph_case(rng, tmp, i, method)
    else:
        rec = soundness.run_transformer_case(rng, tmp, i, method)
    if rec.get("bound") is None or rec["verdict"] is Verdict.REJECTED:
        return None
    return rec, tmp / f"case{i}.yaml", tmp / f"case{i}.cert.json"


def tamper_case(family: str, seed: int, i: int, method: str, mutants: int, check=check_certificate) -> list[dict]:
    """`mutants` tampered copies of case i's certificate, each checked: one record per copy."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        made = genuine(family, seed, i, method, tmp)
        if made is None:
            return [{"case": i, "method": method, "kind": None, "outcome": "no_certificate"}]
        rec, spec, cert = made
        original = json.loads(cert.read_text())
        rng = random.Random(f"{seed}/{i}")
        kinds = list(MUTATIONS)
        weights = [WEIGHTS.get(k, 1) for k in kinds]
        for m in range(mutants):
            kind = rng.choices(kinds, weights)[0]
            try:
                doc = MUTATIONS[kind](copy.deepcopy(original), rng)
            except LookupError:  # nothing of that shape in this certificate
                continue
            text = json.dumps(doc)
            row = {"case": i, "method": method, "kind": kind, "mutant": m, "section": str(LAST[0][0]) if LAST and LAST[0] else "(top)"}
            if json.loads(text) == original:
                out.append({**row, "outcome": "unchanged"})
                continue
            path = tmp / f"mutant{m}.cert.json"
            path.write_text(text)
            try:
                result = check(spec, path, 1)
            except BadInput as exc:
                out.append({**row, "outcome": "bad_input", "reason": str(exc)[:300]})
                continue
            except Exception as exc:  # noqa: BLE001 (each is counted: the checker must reject, not crash)
                where = traceback.extract_tb(exc.__traceback__)[-1]
                out.append({**row, "outcome": "crashed",
                            "reason": f"{type(exc).__name__}: {str(exc)[:200]} ({Path(where.filename).name}:{where.lineno})"})
                continue
            if result.verdict is Verdict.REJECTED:
                out.append({**row, "outcome": "rejected"})
                continue
            bad = []
            if result.bound is not None and result.bound < rec["exact"]:
                bad.append("unsound")
            if result.verdict is Verdict.CERTIFIED and rec["exact"] > rec["tolerance"]:
                bad.append("wrong_certified")
            out.append({**row, "outcome": "accepted", "bad": bad, "verdict": result.verdict.value,
                        "bound": str(result.bound), "exact": str(rec["exact"]), "tolerance": str(rec["tolerance"])})
    return out


def _chunk(family, seed, cases, methods, mutants, jax_cache=None):
    if jax_cache is not None:
        import jax

        jax.config.update("jax_compilation_cache_dir", jax_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return [r for i in cases for r in tamper_case(family, seed, i, methods[i % len(methods)], mutants)]


def summarise(records: list[dict]) -> dict:
    by_kind: dict = defaultdict(Counter)
    by_section: dict = defaultdict(Counter)
    for r in records:
        if r["kind"] is not None:
            for table, key in ((by_kind, r["kind"]), (by_section, r["section"])):
                table[key][r["outcome"]] += 1
                for b in r.get("bad", ()):
                    table[key][b] += 1
    total = sum(by_kind.values(), Counter())
    return {"cases": len({r["case"] for r in records}),
            "cases_without_certificate": sum(r["outcome"] == "no_certificate" for r in records),
            "mutants": sum(total[k] for k in ("rejected", "accepted", "crashed", "bad_input")),
            **{k: total[k] for k in ("rejected", "accepted", "unsound", "wrong_certified", "crashed", "bad_input", "unchanged")},
            "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
            "by_section": {k: dict(v) for k, v in sorted(by_section.items())}}


def run(family: str, cases: int, mutants: int, seed: int, first: int = 0, workers: int = 1, methods=None,
        progress: bool = False) -> tuple[dict, list[dict]]:
    methods = methods or soundness.FAMILY_METHODS[family]
    indices = list(range(first, first + cases))
    records: list[dict] = []
    if workers <= 1:
        for i in indices:
            records += _chunk(family, seed, [i], methods, mutants)
            if progress and (i - first + 1) % 10 == 0:
                print(f"{i - first + 1} cases: {json.dumps({k: v for k, v in summarise(records).items() if not k.startswith('by_')})}", flush=True)
    else:  # spawn: JAX is not fork-safe
        chunks = [indices[a:a + 10] for a in range(0, len(indices), 10)]
        with tempfile.TemporaryDirectory() as cache, ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for fut in as_completed([pool.submit(_chunk, family, seed, c, methods, mutants, cache) for c in chunks]):
                records += fut.result()
                if progress:
                    print(f"{len({r['case'] for r in records})} cases: "
                          f"{json.dumps({k: v for k, v in summarise(records).items() if not k.startswith('by_')})}", flush=True)
    return summarise(records), records


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=("dense", "residual", "transformer"), default="dense")
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--mutants", type=int, default=20, help="tampered copies per certificate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--methods", default=None, help="comma-separated; default: the soundness family's")
    ap.add_argument("--kinds", default=None, help=f"comma-separated mutation kinds (default all: {', '.join(MUTATIONS)})")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.kinds:  # (module state: the workers import this module afresh, so only with --workers 1)
        unknown = set(args.kinds.split(",")) - set(MUTATIONS)
        if unknown or args.workers > 1:
            ap.error(f"--kinds: unknown {sorted(unknown)}" if unknown else "--kinds needs --workers 1")
        for k in set(MUTATIONS) - set(args.kinds.split(",")):
            del MUTATIONS[k]
    t = time.perf_counter()
    summary, records = run(args.family, args.cases, args.mutants, args.seed, args.first, args.workers,
                           tuple(args.methods.split(",")) if args.methods else None, progress=True)
    summary.update(family=args.family, seed=args.seed, first=args.first, kinds=sorted(MUTATIONS),
                   seconds=round(time.perf_counter() - t, 1))
    print(json.dumps(summary, indent=1))
    for r in [r for r in records if r["outcome"] in ("crashed", "bad_input") or r.get("bad")][:20]:
        print(f"  case {r['case']} {r['method']} {r['kind']}: {r['outcome']} {r.get('bad', '')} {r.get('reason', '')}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0 if summary["unsound"] == summary["wrong_certified"] == summary["crashed"] == summary["bad_input"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
