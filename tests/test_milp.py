"""The MILP oracle guided by a proposal (certify.bounds.milp.milp_rows: alpha-CROWN's intermediate bounds as big-M,
its difference lines as cuts, rows pruned by their bounds) finds the same maximum as the plain interval big-M MILP,
and its maximiser replays exactly to it. (An estimate for benchmarks, never a certificate.)"""

from fractions import Fraction

import pytest

from certify.bounds.driver import propose
from certify.bounds.milp import difference_cuts, milp_max_deviation, milp_rows
from certify.bounds.network import box_floats
from certify.checker import exact
from certify.engine import prepare

from .test_lp import CASES, make_spec


@pytest.mark.parametrize("seed,widths,kind", [CASES[0], CASES[2]], ids=lambda v: str(v))
def test_guided_milp_finds_the_plain_milp_maximum(tmp_path, seed, widths, kind):
    p = prepare(make_spec(tmp_path, seed, widths, kind), tmp_path / "c.cert.json")
    lo, up = box_floats(*p.box)
    plain, _ = milp_max_deviation(p.net, lo, up)
    prop = propose(p.net, p.joint, p.box, "alpha")
    diffs = difference_cuts(prop.steps)
    rows = milp_rows(p.net, lo, up, (prop.output_lower, prop.output_upper), layer_bounds=prop.claims, differences=diffs)
    assert rows and all(r["status"] == 0 for r in rows), rows
    best = max(r["incumbent"] for r in rows)
    assert best == pytest.approx(plain, rel=1e-6, abs=1e-9)
    top = max(rows, key=lambda r: r["incumbent"])
    replay = max(abs(v) for v in exact.forward(p.joint, [Fraction(float(v)) for v in top["x"]]))
    assert float(replay) == pytest.approx(plain, rel=1e-6, abs=1e-9)
    assert all(r["bound"] >= r["incumbent"] - 1e-9 for r in rows)  # each row's proposal bound is above its optimum
    if kind == "model":
        assert diffs  # the second-model case exercises the difference cuts


@pytest.mark.parametrize("seed,widths,kind", [CASES[0], CASES[2]], ids=lambda v: str(v))
def test_milp_with_a_cutoff_finds_the_same_maximum(tmp_path, seed, widths, kind):
    """Rows solved with the best known value as a floor: the same maximum from below it, rows that cannot reach it
    come back `below`, and a floor above the maximum is returned as it is (every row infeasible)."""
    p = prepare(make_spec(tmp_path, seed, widths, kind), tmp_path / "c.cert.json")
    lo, up = box_floats(*p.box)
    plain, _ = milp_max_deviation(p.net, lo, up)
    prop = propose(p.net, p.joint, p.box, "crown")
    guide = dict(output_bounds=(prop.output_lower, prop.output_upper), layer_bounds=prop.claims,
                 differences=difference_cuts(prop.steps))
    value, arg = milp_max_deviation(p.net, lo, up, above=0.5 * plain, **guide)
    assert value == pytest.approx(plain, rel=1e-6, abs=1e-9)
    replay = max(abs(v) for v in exact.forward(p.joint, [Fraction(float(v)) for v in arg]))
    assert float(replay) == pytest.approx(plain, rel=1e-6, abs=1e-9)
    rows = milp_rows(p.net, lo, up, guide["output_bounds"], above=0.5 * plain, cutoff=True)
    assert any(r["below"] for r in rows) or len(rows) == 1
    assert all(r["below"] == (r["status"] == 2) for r in rows)
    assert milp_max_deviation(p.net, lo, up, above=1.5 * plain, **guide) == (1.5 * plain, None)


def test_milp_info_records_rows_and_an_upper_estimate(tmp_path):
    p = prepare(make_spec(tmp_path, *CASES[0]), tmp_path / "c.cert.json")
    lo, up = box_floats(*p.box)
    info: dict = {}
    value, _ = milp_max_deviation(p.net, lo, up, info=info)
    assert info["rows"] and all(r["status"] == 0 for r in info["rows"])
    assert info["upper"] == pytest.approx(value)  # every row finished: the largest incumbent
    replay = max(abs(v) for v in exact.forward(p.joint, [Fraction(float(v)) for v in info["x"]]))
    assert float(replay) == pytest.approx(value, rel=1e-6, abs=1e-9)  # the best incumbent's maximiser
