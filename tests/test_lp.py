"""Method `lp`: the triangle-relaxation LP's dual, written as per-row alpha slopes, is re-derived by
the checker exactly (no float solver trusted), loses nothing against the LP optimum, is no looser
than CROWN, never below the exact MILP maximum, and a tampered copy is rejected."""

import copy
import inspect
import json
import math
from fractions import Fraction

import numpy as np
import pytest

from certify.bounds.lp import lp_alphas, lp_rows_bound
from certify.bounds.milp import milp_max_deviation
from certify.bounds.network import box_floats
from certify.bounds.driver import propose
from certify.checker import Verdict, check_certificate
from certify.checker.errors import BadInput
from certify.checker.numbers import rational_str
from certify.checker.spec import read_spec
from certify.options import read_options
from certify.cli import main
from certify.engine import bound_with, prepare, write_and_check
from certify.model import save_model

from .conftest import SPECS, shipped_text
from .test_mutation import _ulp_below

CASES = [(1, [3, 8, 8, 2], "prune"), (2, [4, 6, 6, 3], "low_rank"), (3, [2, 10, 6, 2], "model"),
         (4, [3, 6, 6, 6, 2], "prune")]


def make_spec(tmp_path, seed: int, widths: list[int], kind: str):
    rng = np.random.default_rng(seed)
    ws = [rng.normal(0, 1 / math.sqrt(a), (b, a)) for a, b in zip(widths[:-1], widths[1:])]
    bs = [rng.normal(0, 0.3, b) for b in widths[1:]]
    sha = save_model(tmp_path / f"m{seed}.npz", ws, bs)
    if kind == "prune":
        expl = f"  - prune: {{layer: 1, keep: {list(range(widths[1] // 2))}, fill: zero}}"
    elif kind == "low_rank":
        expl = "  - low_rank: {layer: 2, rank: 2}"
    else:
        sha2 = save_model(tmp_path / f"g{seed}.npz", [w + rng.normal(0, 0.1, w.shape) for w in ws],
                          [b + rng.normal(0, 0.1, b.shape) for b in bs])
        expl = f'  - model: {{path: g{seed}.npz, sha256: "{sha2}"}}'
    spec = tmp_path / f"case{seed}.yaml"
    spec.write_text("\n".join([
        "version: 1", f'model: {{path: m{seed}.npz, sha256: "{sha}"}}', "input:",
        f"  box: {{lower: {[-1] * widths[0]}, upper: {[1] * widths[0]}}}", "explanation:", expl,
        "property: {deviation: linf, tolerance: 1000}", ""]))
    return spec


def certified(p, method: str, path):
    bound, body, notes = bound_with(p, method, time_budget=30.0)
    result = write_and_check(p, method, bound, body, None, None, notes, path)
    assert result.verdict is Verdict.CERTIFIED, result.reason
    assert result.bound == bound
    return result.bound


@pytest.mark.parametrize("seed,widths,kind", CASES, ids=lambda v: str(v))
def test_lp_certificate_accepted_tight_and_sound(tmp_path, seed, widths, kind):
    p = prepare(make_spec(tmp_path, seed, widths, kind), tmp_path / "c.cert.json")
    lp = certified(p, "lp", tmp_path / "lp.cert.json")
    # no looser than CROWN on the same (triangle) relaxation; CROWN's optional differential lines
    # (NeuroDiff pairs of f and g) are a different relaxation, so they are switched off here
    plain = {"differential": False} if "differential" in inspect.signature(propose).parameters else {}
    crown = propose(p.net, p.joint, p.box, "crown", margins=p.margins, **plain)
    crown_bound = write_and_check(p, "crown", crown.bound, {"steps": crown.steps}, None, None, {}, tmp_path / "crown.cert.json")
    assert crown_bound.verdict is Verdict.CERTIFIED, crown_bound.reason
    assert float(lp) <= float(crown_bound.bound) * (1 + 1e-9), (float(lp), float(crown_bound.bound))
    # the dual conversion loses nothing: the certified bound is the LP optimum
    lo, up = box_floats(*p.box)
    prop = propose(p.net, p.joint, p.box, "lp")
    _, values = lp_alphas(p.net, list(prop.relax), list(prop.claims), lo, up)
    optimum = float(np.max(-values))  # rows bound e_o.z and -e_o.z from below
    assert abs(float(lp) - optimum) <= 1e-6 * max(1.0, abs(optimum)), (float(lp), optimum)
    # sound against the exact maximum
    exact_max, _ = milp_max_deviation(p.net, lo, up)
    assert exact_max is not None
    assert float(lp) >= exact_max - 1e-9 * (1 + abs(exact_max)), (float(lp), exact_max)


def test_tampered_lp_certificate_is_rejected(tmp_path):
    p = prepare(make_spec(tmp_path, 1, [3, 8, 8, 2], "prune"), tmp_path / "c.cert.json")
    path = tmp_path / "lp.cert.json"
    certified(p, "lp", path)
    genuine = json.loads(path.read_text())
    n = len(p.net.weights)
    out_step = next(i for i, s in enumerate(genuine["steps"]) if s["kind"] == "linear" and s["layer"] == n)
    assert "alpha" in genuine["steps"][out_step]

    def verdict(cert):
        bad = tmp_path / "tampered.cert.json"
        bad.write_text(json.dumps(cert))
        return check_certificate(p.spec.path, bad)

    # 1. a claimed bound one ulp below what the slopes prove
    c = copy.deepcopy(genuine)
    c["claim"]["bound"] = rational_str(_ulp_below(Fraction(c["claim"]["bound"])))
    assert verdict(c).verdict is Verdict.REJECTED

    # 2. one slope changed where it matters: the claimed output bounds no longer follow
    lo, up = box_floats(*p.box)
    prop = propose(p.net, p.joint, p.box, "lp")
    width = p.net.widths[-1]
    rows = np.concatenate([np.eye(width), -np.eye(width)])
    alphas = []  # dense slopes: the certificate's for its (unstable) neurons, the relaxation's elsewhere
    for j in range(1, n):
        a = np.tile(np.asarray(prop.relax[j - 1].lower_slope, dtype=float), (rows.shape[0], 1))
        entry = genuine["steps"][out_step]["alpha"].get(str(j), {"neurons": [], "slopes": [[]] * rows.shape[0]})
        a[:, entry["neurons"]] = [[float(Fraction(v)) for v in row] for row in entry["slopes"]] if entry["neurons"] else 0.0
        alphas.append(a)
    base = lp_rows_bound(p.net, list(prop.relax), alphas, lo, up, rows)
    change = None
    for j, a in enumerate(alphas):
        unstable = np.flatnonzero((prop.claims[j][0] < 0) & (prop.claims[j][1] > 0))
        for r in range(rows.shape[0]):
            for i in unstable:
                moved = [x.copy() for x in alphas]
                moved[j][r, i] = 0.0 if a[r, i] >= 0.5 else 1.0
                if lp_rows_bound(p.net, list(prop.relax), moved, lo, up, rows)[r] < base[r] - 1e-6:
                    change = (j + 1, r, i, moved[j][r, i])
                    break
            if change:
                break
        if change:
            break
    assert change is not None, "no slope of the LP certificate matters"
    j, r, i, value = change
    c = copy.deepcopy(genuine)
    entry = c["steps"][out_step]["alpha"][str(j)]
    entry["slopes"][r][entry["neurons"].index(i)] = rational_str(Fraction(value))
    result = verdict(c)
    assert result.verdict is Verdict.REJECTED
    assert f"linear, layer {n}" in result.reason, result.reason

    # 3. a slope outside [0, 1] is not a lower line of relu
    c = copy.deepcopy(genuine)
    entry = c["steps"][out_step]["alpha"][str(j)]
    entry["slopes"][r][entry["neurons"].index(i)] = "3/2"
    assert verdict(c).verdict is Verdict.REJECTED


def test_cli_lp_json_stays_json(tmp_path, capsys):
    """HiGHS's banner must not reach stdout: `--json` output parses."""
    code = main(["check", str(SPECS / "tiny_prune.yaml"), "--method", "lp", "--json", "--no-cache",
                 "--out", str(tmp_path / "t.cert.json")])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["method"] == "lp" and out["verdict"] == "CERTIFIED", out


def test_options_method_lp(tmp_path):
    """`options.method: lp` is a valid spec; a misspelt method is one BadInput line naming lp (exit 2)."""
    text = shipped_text()
    spec = tmp_path / "lp.yaml"
    spec.write_text(text + "options: {method: lp}\n")
    assert main(["check", str(spec), "--no-cache", "--out", str(tmp_path / "lp.cert.json")]) == 0
    assert json.loads((tmp_path / "lp.cert.json").read_text())["engine"]["method"] == "lp"
    spec.write_text(text + "options: {method: LP}\n")
    read_spec(spec)  # the trusted reader leaves `options:` (how to search) to the engine
    with pytest.raises(BadInput, match="'LP' is not one of auto, interval, crown, alpha, lp, bab"):
        read_options(spec)
