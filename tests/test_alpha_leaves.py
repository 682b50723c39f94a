"""Alpha-CROWN leaves inside the root's steps (issue 19, fourteenth session): an input-split tree on alpha-CROWN leaves
writes its root's hidden-layer and output steps once, and each leaf's linear steps bound only the root's unstable
neurons, one side where the leaf makes a neuron stable (or where the root's bound already keeps an output row's side),
with one row of alpha slopes per claimed side. The checker against the plain rule (each claimed side's bound equals
that side's row of a two-sided step with the same slopes; rejected exactly when a claimed side is outside it), its
refusals (a slope row count other than the claimed sides', multipliers beside nulls, a slope that is no lower line),
and an engine tree with five tampered copies, all REJECTED; `certify export-smt` on that tree, confirmed by cvc5."""

from __future__ import annotations

import copy
import json
import random
from fractions import Fraction

import pytest

from certify.checker import check, exact
from certify.checker.check import Verdict, check_certificate
from certify.checker.errors import Rejected
from certify.checker.numbers import rational_str
from certify.engine import run_check
from tests.conftest import shipped_copy
from tests.test_check_fast_paths import _near, _problem
from tests.test_check_rows import _relu_lines, _step

SLOPES = [Fraction(0), Fraction(1, 4), Fraction(1, 2), Fraction(3, 4), Fraction(1), Fraction(5, 7)]


def _alpha(rng, state, n_rows: int) -> dict:
    """Random alpha slopes on layer 1's unstable neurons (valid lower lines), `n_rows` rows."""
    lo, up = state.bounds[1]
    ns = [m for m, (l, u) in enumerate(zip(lo, up)) if l < 0 < u]
    return {"1": {"neurons": ns, "slopes": [[rational_str(rng.choice(SLOPES)) for _ in ns] for _ in range(n_rows)]}}


def _layer2(rng):
    """A random net [3, 5, 4, 2] whose layer 1 has verified bounds and lines, and layer 2 verified bounds (CROWN)."""
    while True:
        layers, box, state = _problem(rng, [3, 5, 4, 2])
        lo1, up1 = exact.interval_dense(layers[0], *box)
        if any(l < 0 < u for l, u in zip(lo1, up1)):
            break
    state.bounds[1] = (lo1, up1)
    state.relax[1] = _relu_lines(lo1, up1)
    state.bounds[2] = check._bounds_of(None, state, 2)
    return state


def test_one_sided_alpha_rows_follow_the_plain_rule():
    rng = random.Random(2101)
    outcomes = set()
    for _ in range(200):
        state = _layer2(rng)
        width = len(state.bounds[2][0])
        ns = sorted(rng.sample(range(width), rng.randrange(1, width + 1)))
        full = _alpha(rng, state, 2 * len(ns))  # a two-sided step's slopes: every lower row, then every upper row
        plain = {**_step(2, ns, [0] * len(ns), [0] * len(ns)), "alpha": full}
        derived = check._bounds_of([{i: 1} for i in ns], state, 2, check._alpha(plain, state, 2, (len(ns),) * 2, "test"))
        lows = [t for t in range(len(ns)) if rng.random() < 0.6]
        ups = [t for t in range(len(ns)) if rng.random() < 0.6 and t not in lows] or ([] if lows else [0])
        claim_lo = [_near(rng, derived[0][t]) if t in lows else None for t in range(len(ns))]
        claim_up = [_near(rng, derived[1][t]) if t in ups else None for t in range(len(ns))]
        slopes = full["1"]["slopes"]
        step = {**_step(2, ns, claim_lo, claim_up),  # the claimed sides' own rows of the same slopes
                "alpha": {"1": {"neurons": full["1"]["neurons"], "slopes": [slopes[t] for t in lows] + [slopes[len(ns) + t] for t in ups]}}}
        bad = any(c is not None and c > d for c, d in zip(claim_lo, derived[0])) or \
            any(c is not None and c < d for c, d in zip(claim_up, derived[1]))
        before = tuple(list(v) for v in state.bounds[2])
        try:
            check.check_linear(step, state, "test")
        except Rejected:
            assert bad
            outcomes.add("rejected")
            continue
        assert not bad
        outcomes.add("accepted")
        lo, up = before
        for i, cl, cu in zip(ns, claim_lo, claim_up):
            lo[i] = lo[i] if cl is None else max(lo[i], cl)
            up[i] = up[i] if cu is None else min(up[i], cu)
        assert state.bounds[2] == (lo, up)
    assert outcomes == {"accepted", "rejected"}


def test_alpha_rows_must_match_the_claimed_sides():
    fresh = lambda: _layer2(random.Random(2102))  # noqa: E731  (the same state for every case)
    state = fresh()
    width = len(state.bounds[2][0])
    ns = list(range(width))
    derived = check._bounds_of([{i: 1} for i in ns], state, 2)  # CROWN's lines: slopes 0 and 1 as the lines have them
    claim_lo, claim_up = list(derived[0]), [None] * width
    claim_up[0], claim_lo[0] = derived[1][0], None  # width - 1 lower sides and one upper side claimed
    step = _step(2, ns, claim_lo, claim_up)
    lo, up = state.bounds[1]
    stable = [m for m, (l, u) in enumerate(zip(lo, up)) if not l < 0 < u]
    good = {"1": {"neurons": stable, "slopes": [["1" if lo[m] >= 0 else "0" for m in stable]] * width}}  # the exact lines
    check.check_linear(copy.deepcopy({**step, "alpha": good}), fresh(), "test")
    unstable = [m for m in range(len(lo)) if lo[m] < 0 < up[m]]
    broken = [
        {"1": {**good["1"], "slopes": good["1"]["slopes"] * 2}},  # 2M rows: as if every side were claimed
        {"1": {**good["1"], "slopes": good["1"]["slopes"][1:]}},  # one row short
        {"1": {"neurons": unstable, "slopes": [["3/2"] * len(unstable)] * width}},  # a slope above 1 on an unstable neuron
        {"1": {"neurons": unstable, "slopes": [["-1/8"] * len(unstable)] * width}},  # below 0
    ]
    for alpha in broken:
        with pytest.raises(Rejected):
            check.check_linear(copy.deepcopy({**step, "alpha": alpha}), fresh(), "test")
    with pytest.raises(Rejected, match="no beta"):
        check.check_linear(copy.deepcopy({**step, "alpha": good, "beta": []}), fresh(), "test")


def _leaves(node):
    return [node] if "children" not in node else [leaf for c in node["children"] for leaf in _leaves(c)]


@pytest.fixture(scope="module")
def alpha_tree(tmp_path_factory):
    """tiny_prune on its box at 6/5 (attained 1.01, alpha-CROWN 1.33) by input splits on alpha-CROWN leaves."""
    d = tmp_path_factory.mktemp("alpha-leaves")
    spec = shipped_copy(d, tolerance="6/5")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("certify.bounds.bab.SHARED_FIRST", 2.0)  # input splits
        mp.setattr("certify.bounds.bab.ALPHA_PAYS", -1.0)  # alpha-CROWN leaves
        outcome = run_check(spec, d / "t.cert.json", "bab")
    assert outcome.verdict is Verdict.CERTIFIED, outcome.check.reason
    return spec, json.loads((d / "t.cert.json").read_text())


def test_alpha_leaves_bound_only_the_roots_unstable_neurons(alpha_tree):
    spec, cert = alpha_tree
    root = cert["tree"]
    n = max(s["layer"] for s in root["steps"])
    assert {s["layer"] for s in root["steps"]} == set(range(1, n + 1))  # the root's hidden and output steps, once
    root_bounds = {}
    for s in root["steps"]:
        if s["kind"] in ("interval", "linear"):
            lo, up = ([Fraction(v) for v in s[key]] for key in ("lower", "upper"))
            old = root_bounds.get(s["layer"], (lo, up))
            root_bounds[s["layer"]] = ([max(a, b) for a, b in zip(old[0], lo)], [min(a, b) for a, b in zip(old[1], up)])
    nulls = 0
    leaves = _leaves(root)
    assert len(leaves) >= 2
    stack = [root]  # input splits only (SHARED_FIRST off), and every leaf bounded with alpha-CROWN
    while stack:
        node = stack.pop()
        assert node.get("split", "input") == "input"
        stack += node.get("children", [])
    for leaf in leaves:
        linear = [s for s in leaf["steps"] if s["kind"] == "linear" and s["layer"] > 1]
        assert linear and all("neurons" in s and "alpha" in s for s in linear)
        for s in linear:
            lo, up = root_bounds[s["layer"]]
            if s["layer"] < n:  # the root's unstable neurons only
                assert s["neurons"] == [i for i, (a, b) in enumerate(zip(lo, up)) if a < 0 < b]
            sides = sum(v is not None for v in s["lower"] + s["upper"])
            assert all(len(e["slopes"]) == sides for e in s["alpha"].values())  # a row of slopes per claimed side
            nulls += 2 * len(s["neurons"]) - sides
    assert nulls > 0


def _tamper(spec, cert, tmp_path, change) -> str:
    bad = copy.deepcopy(cert)
    step = next(s for leaf in _leaves(bad["tree"]) for s in leaf["steps"]
                if s["kind"] == "linear" and "alpha" in s and s["layer"] == 2 and None in s["upper"])
    change(step, step["upper"].index(None))  # an active neuron: its lower claimed (>= 0), its upper null
    out = tmp_path / "bad.cert.json"
    out.write_text(json.dumps(bad))
    result = check_certificate(spec, out, jobs=1)
    assert result.verdict is Verdict.REJECTED
    return result.reason


def test_a_null_side_beside_alpha_filled_too_tight_is_rejected(alpha_tree, tmp_path):
    spec, cert = alpha_tree

    def fill(step, t):  # the upper side claimed at the lower claim, with its own row of slopes: below what it derives
        step["upper"][t] = step["lower"][t]
        lows = sum(v is not None for v in step["lower"])
        place = lows + sum(v is not None for v in step["upper"][:t])
        for entry in step["alpha"].values():
            entry["slopes"].insert(place, entry["slopes"][0])

    assert "claimed upper bound" in _tamper(spec, cert, tmp_path, fill)


def test_a_claimed_side_without_its_row_of_slopes_is_rejected(alpha_tree, tmp_path):
    spec, cert = alpha_tree

    def unpaired(step, t):  # the null upper side claimed (loosely) but no row of slopes added for it
        step["upper"][t] = "1000"

    assert "rows of slopes" in _tamper(spec, cert, tmp_path, unpaired)


def test_a_row_of_slopes_for_a_null_side_is_rejected(alpha_tree, tmp_path):
    spec, cert = alpha_tree

    def extra(step, t):  # a row of slopes written for the null upper side (not claimed): one row more than the claims
        for entry in step["alpha"].values():
            entry["slopes"].append(entry["slopes"][-1])

    assert "rows of slopes" in _tamper(spec, cert, tmp_path, extra)


def test_a_null_on_the_deciding_side_beside_alpha_is_rejected(alpha_tree, tmp_path):
    spec, cert = alpha_tree

    def drop(step, t):  # the lower side (what makes the neuron active) null too, its row of slopes removed: it keeps the
        step["lower"][t] = None  # root's unstable interval, on which its lines (z, z) are not above relu
        for entry in step["alpha"].values():
            del entry["slopes"][sum(v is not None for v in step["lower"][:t])]

    assert "not below/above relu" in _tamper(spec, cert, tmp_path, drop)


def test_a_slope_above_one_beside_nulls_is_rejected(alpha_tree, tmp_path):
    spec, cert = alpha_tree

    def steep(step, t):
        entry = next(iter(step["alpha"].values()))
        entry["slopes"][0][0] = "3/2"  # on a neuron unstable in the leaf (alpha lists only those)

    assert "not a lower line" in _tamper(spec, cert, tmp_path, steep)


def test_export_smt_reads_alpha_rows_beside_nulls(alpha_tree, tmp_path):
    """`certify export-smt` pairs the checker's back-substitutions with the claimed sides only, and each claimed side's
    chain uses its own row of slopes: every obligation of the tree is unsat under cvc5."""
    pytest.importorskip("cvc5")
    from certify.cli import main
    from tests.test_smt_export import check_syntax, confirmed, kinds

    spec, cert = alpha_tree
    path, out = tmp_path / "t.cert.json", tmp_path / "t.smt2"
    path.write_text(json.dumps(cert))
    assert main(["export-smt", str(spec), str(path), "-o", str(out)]) == 0
    assert {"linear", "alpha", "goal"} <= kinds(out)
    confirmed(out, check_syntax(out))
