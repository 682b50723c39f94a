"""The `softmax` op (issue 17): one node for an attention pattern's rows, y_j = 1 / sum_{l in G(j)} exp(s_l - s_j).
Its checker row evaluates and bounds it exactly, its relaxation (a line below 1/D per element, lines below and above
exp per pair) is proved with arb, and back-substitution shifts each group's coefficients by their least one (the
group sums to 1). Tampered relaxations are REJECTED; the certified bound is never below the exhaustive maximum."""

import copy
import json
from fractions import Fraction

import numpy as np
import pytest
from flint import arb, fmpq

from certify.bounds.graph import ENGINE, floats
from certify.checker import Verdict
from certify.checker.graph import OPS, Node
from certify.engine import run_check
from certify.model.transformer import attn_only

from .conftest import assert_rejected
from .test_transformer import _spec, params

GROUPS = (0, 0, 0, 1, 1, 2)


def _softmax(s, groups=GROUPS):
    s, out = np.asarray(s, dtype=float), np.zeros(len(groups))
    for g in set(groups):
        idx = [j for j, h in enumerate(groups) if h == g]
        e = np.exp(s[idx] - s[idx].max())
        out[idx] = e / e.sum()
    return out


def test_exact_value_and_interval_contain_the_softmax():
    """The checker's arb value encloses softmax at a point; its exact interval contains sampled values (groups of 3, 2, 1)."""
    node = Node("p", "softmax", ("s",), groups=GROUPS)
    op, rng = OPS["softmax"], np.random.default_rng(0)
    for _ in range(20):
        lo = rng.normal(size=6) * 4
        up = lo + np.abs(rng.normal(size=6)) * 3
        box = ([Fraction(v) for v in lo], [Fraction(v) for v in up])
        ilo, iup = op.interval(node, [box], op.prepare(node))
        for s in rng.uniform(lo, up, size=(200, 6)):
            y = _softmax(s)
            assert all(float(a) <= v * (1 + 1e-12) + 1e-300 and v <= float(b) * (1 + 1e-12) for a, v, b in zip(ilo, y, iup))
        point = [Fraction(v) for v in rng.uniform(lo, up)]
        balls = op.evaluate(node, [[arb(fmpq(v.numerator, v.denominator)) for v in point]])
        assert all(abs(float(b.mid()) - v) <= 1e-12 for b, v in zip(balls, _softmax([float(v) for v in point])))
        assert ilo[5] == iup[5] == 1  # a group of one is exactly 1


def test_engine_back_substitution_is_sound_against_samples():
    """The engine's relaxation and back-substitution (the checker's rule in float64): for random coefficient rows c,
    c . softmax(s) >= the back-substituted bound (a linear function of s) at sampled s in the box."""
    rng = np.random.default_rng(1)
    n = _float_nodes()[0]
    row = ENGINE["softmax"]
    for _ in range(20):
        lo = rng.normal(size=6) * 3
        up = lo + np.abs(rng.normal(size=6)) * 4
        r = row.relax(n, [(lo, up)])
        lam = rng.normal(size=(8, 6))
        (coef,), const = row.back(n, lam, r)
        for s in rng.uniform(lo, up, size=(300, 6)):
            assert np.all(lam @ _softmax(s) >= coef @ s + const - 1e-9), (lo, up, s)


def _float_nodes():
    from certify.checker.graph import make_graph

    g = make_graph(6, [Node("p", "softmax", ("x",), groups=GROUPS)], "p")
    return floats(g)


@pytest.fixture(scope="module")
def softmax_cert(tmp_path_factory):
    """A one-layer attention model on a token domain with the pattern as a softmax node; CROWN's certificate."""
    tmp = tmp_path_factory.mktemp("sm")
    p = params(np.random.default_rng(5), 4, 3, 3, 2, scale=0.7)
    attn_only(p, vocab=4, length=3, queries=[2], softmax="softmax").save(tmp / "m.npz", output="unembed")
    spec = _spec(tmp, tmp / "m.npz")
    out = tmp / "m.cert.json"
    o = run_check(spec, out, "crown")
    assert o.verdict is Verdict.CERTIFIED, o.check.reason
    return spec, out, json.loads(out.read_text())


def _relax(c):
    return next(s for s in c["steps"] if s["kind"] == "relax" and s["node"].endswith(".pattern"))


def _nudge(key, i, delta):
    def apply(c):
        step = _relax(c)
        step[key][i] = str(Fraction(step[key][i]) + delta)
    return apply


SOFTMAX_MUTATIONS = {
    "reciprocal_line_raised": _nudge("lower_intercept", 0, Fraction(1, 10**3)),
    "exp_lower_line_raised": _nudge("exp_lower_intercept", 1, Fraction(1, 10**3)),
    "exp_upper_line_lowered": _nudge("exp_upper_intercept", 0, Fraction(-1, 10**3)),
    "exp_lines_swapped": lambda c: _relax(c).update(exp_lower_slope=_relax(c)["exp_upper_slope"], exp_lower_intercept=_relax(c)["exp_upper_intercept"]),
    "exp_line_missing": lambda c: _relax(c)["exp_upper_slope"].pop(),
    "extra_key": lambda c: _relax(c).__setitem__("upper_slope", _relax(c)["lower_slope"]),
    "relax_dropped": lambda c: c["steps"].remove(_relax(c)),
    "goal_tightened": lambda c: next(s for s in c["steps"][::-1] if s["node"] == "d" and s.get("via") == "linear")["upper"].__setitem__(
        0, str(Fraction(next(s for s in c["steps"][::-1] if s["node"] == "d" and s.get("via") == "linear")["upper"][0]) - Fraction(1, 10**5))),
}


@pytest.mark.parametrize("name", sorted(SOFTMAX_MUTATIONS))
def test_tampered_softmax_relaxations_are_rejected(softmax_cert, tmp_path, name):
    spec, _, cert = softmax_cert
    tampered = copy.deepcopy(cert)
    SOFTMAX_MUTATIONS[name](tampered)
    assert tampered != cert
    assert_rejected(spec, tampered, tmp_path, name)
