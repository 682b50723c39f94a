"""Checker mutation tests: every tampered copy of a genuine certificate is REJECTED (exit 3)."""

import copy
import hashlib
import json
import math
from fractions import Fraction

import pytest

from certify.checker import Verdict, check_certificate
from certify.checker.numbers import rational_str
from certify.cli import main
from certify.engine import run_check

from .conftest import ROOT, SPECS, shipped_text

EXAMPLES = ["tiny_prune", "digits_low_rank", "digits_prune_tight", "tiny_second_model"]


@pytest.fixture(scope="module")
def genuine(tmp_path_factory):
    out = {}
    for name in EXAMPLES:
        path = tmp_path_factory.mktemp(name) / f"{name}.cert.json"
        outcome = run_check(SPECS / f"{name}.yaml", path, "alpha")
        assert outcome.verdict is not Verdict.REJECTED, outcome.check.reason
        out[name] = (path, json.loads(path.read_text()))
    return out


def _first(steps, kind, layer=None):
    return next(i for i, s in enumerate(steps) if s["kind"] == kind and (layer is None or s["layer"] == layer))


def _unstable(step_bounds):
    lo = [Fraction(v) for v in step_bounds["lower"]]
    up = [Fraction(v) for v in step_bounds["upper"]]
    return next(i for i, (l, u) in enumerate(zip(lo, up)) if l < 0 < u)


def _ulp_below(q: Fraction) -> Fraction:
    x = float(q)
    while Fraction(x) >= q:
        x = math.nextafter(x, -math.inf)
    return Fraction(x)


def tighten_bound_one_ulp(c):
    c["claim"]["bound"] = rational_str(_ulp_below(Fraction(c["claim"]["bound"])))


def tighten_output_lower_one_ulp(c):
    last = max(s["layer"] for s in c["steps"])
    step = c["steps"][_first(c["steps"], "linear", last)]
    v = Fraction(step["lower"][0])
    step["lower"][0] = rational_str(-_ulp_below(-v))  # one ulp above the exact claim


def tighten_intermediate_past_derived(c):
    step = c["steps"][_first(c["steps"], "interval", 1)]
    i = _unstable(step)
    step["lower"][i] = step["upper"][i]


def flip_upper_slope_sign(c):
    k = _first(c["steps"], "relu_relaxation", 1)
    bounds = c["steps"][_first(c["steps"], "interval", 1)]
    i = _unstable(bounds)
    c["steps"][k]["upper_slope"][i] = rational_str(-Fraction(c["steps"][k]["upper_slope"][i]))


def flip_lower_slope_sign(c):
    k = _first(c["steps"], "relu_relaxation", 1)
    i = _unstable(c["steps"][_first(c["steps"], "interval", 1)])
    c["steps"][k]["lower_slope"][i] = "-1/2"


def lower_upper_intercept(c):
    k = _first(c["steps"], "relu_relaxation", 1)
    i = _unstable(c["steps"][_first(c["steps"], "interval", 1)])
    c["steps"][k]["upper_intercept"][i] = rational_str(Fraction(c["steps"][k]["upper_intercept"][i]) * Fraction(99, 100))


def drop_relaxation_step(c):
    del c["steps"][_first(c["steps"], "relu_relaxation", 1)]


def drop_output_steps(c):
    last = max(s["layer"] for s in c["steps"])
    c["steps"] = [s for s in c["steps"] if s["layer"] != last]


def drop_first_layer(c):
    c["steps"] = [s for s in c["steps"] if s["layer"] != 1]


def change_spec_hash(c):
    c["spec_sha256"] = ("0" if c["spec_sha256"][0] != "0" else "1") + c["spec_sha256"][1:]


def change_model_hash(c):
    c["model_sha256"] = c["model_sha256"][::-1]


def add_unknown_step(c):
    c["steps"].insert(1, {"kind": "trust_me", "layer": 1})


def change_tolerance(c):
    c["claim"]["tolerance"] = rational_str(Fraction(c["claim"]["tolerance"]) * 2)


def change_witness_deviation(c):
    c["witness"]["deviation"] = rational_str(Fraction(c["witness"]["deviation"]) + Fraction(1, 10**9))


def move_witness_outside(c):
    c["witness"]["x"][0] = "1000"


def change_layer_index(c):
    k = _first(c["steps"], "relu_relaxation", 1)
    c["steps"][k]["layer"] = 2


def add_unknown_key(c):
    c["trusted"] = True


def truncate_vector(c):
    c["steps"][0]["lower"].pop()


def change_outputs(c):
    c["claim"]["outputs"] = [0]


def non_rational_number(c):
    c["steps"][0]["lower"][0] = "0.5"


def float_number(c):
    c["steps"][0]["upper"][0] = 0.5


def _alpha_step(c):
    return next(s for s in c["steps"] if "alpha" in s)


def alpha_slope_above_one(c):
    step = _alpha_step(c)
    j = min(step["alpha"])
    bounds = c["steps"][_first(c["steps"], "relu_relaxation", int(j)) - 1]
    alpha = step["alpha"][j]
    alpha["slopes"][0][alpha["neurons"].index(_unstable(bounds))] = "2"


def alpha_slope_negative(c):
    step = _alpha_step(c)
    j = min(step["alpha"])
    bounds = c["steps"][_first(c["steps"], "relu_relaxation", int(j)) - 1]
    alpha = step["alpha"][j]
    alpha["slopes"][-1][alpha["neurons"].index(_unstable(bounds))] = "-1/4"


def alpha_row_dropped(c):
    step = _alpha_step(c)
    step["alpha"][min(step["alpha"])]["slopes"].pop()


def alpha_neuron_out_of_range(c):
    alpha = _alpha_step(c)["alpha"]
    alpha[min(alpha)]["neurons"][-1] = 10**6


def alpha_neuron_repeated(c):
    entry = _alpha_step(c)["alpha"]
    entry = entry[min(entry)]
    entry["neurons"].append(entry["neurons"][0])
    for row in entry["slopes"]:
        row.append(row[0])


def alpha_for_unknown_layer(c):
    step = _alpha_step(c)
    step["alpha"]["99"] = step["alpha"][min(step["alpha"])]


# which step kinds (and features) each mutation attacks: a new step kind without one fails a test
ATTACKS = {"interval": ["tighten_intermediate_past_derived", "drop_first_layer", "truncate_vector"],
           "linear": ["tighten_output_lower_one_ulp", "drop_output_steps", "alpha_slope_above_one",
                      "alpha_slope_negative", "alpha_row_dropped", "alpha_for_unknown_layer", "alpha_neuron_out_of_range",
                      "alpha_neuron_repeated", "beta_negative",
                      "beta_for_unsplit_neuron", "beta_on_wrong_layer"],
           "relu_relaxation": ["flip_upper_slope_sign", "flip_lower_slope_sign", "lower_upper_intercept",
                               "drop_relaxation_step", "change_layer_index"]}

MUTATIONS = [alpha_slope_above_one, alpha_slope_negative, alpha_row_dropped, alpha_for_unknown_layer, alpha_neuron_out_of_range,
             alpha_neuron_repeated, tighten_bound_one_ulp, tighten_output_lower_one_ulp, tighten_intermediate_past_derived,
             flip_upper_slope_sign, flip_lower_slope_sign, lower_upper_intercept, drop_relaxation_step,
             drop_output_steps, drop_first_layer, change_spec_hash, change_model_hash, add_unknown_step,
             change_tolerance, change_witness_deviation, move_witness_outside, change_layer_index,
             add_unknown_key, truncate_vector, change_outputs, non_rational_number, float_number]


@pytest.mark.parametrize("name", EXAMPLES)
def test_genuine_certificates_are_accepted(genuine, name):
    path, _ = genuine[name]
    assert check_certificate(SPECS / f"{name}.yaml", path).verdict is not Verdict.REJECTED


@pytest.mark.parametrize("mutate", MUTATIONS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("name", EXAMPLES)
def test_tampered_certificates_are_rejected(genuine, name, mutate, tmp_path, capsys):
    path, cert = genuine[name]
    tampered = copy.deepcopy(cert)
    mutate(tampered)
    assert tampered != cert
    out = path.parent / f"tampered-{mutate.__name__}.cert.json"
    out.write_text(json.dumps(tampered))
    result = check_certificate(SPECS / f"{name}.yaml", out)
    assert result.verdict is Verdict.REJECTED, f"{mutate.__name__} was accepted on {name}"
    assert main(["verify", str(SPECS / f"{name}.yaml"), str(out)]) == 3
    assert capsys.readouterr().out.startswith("REJECTED")


def test_tampered_materialized_weights_are_rejected(tmp_path):
    """An unpinned spec's g is the certificate's materialised arrays: a byte changed in them, or a hash
    that does not match, rejects (a pinned spec's arrays are covered by tests/test_pinning.py)."""
    text = shipped_text("digits_low_rank")
    spec = tmp_path / "loose.yaml"
    spec.write_text(text[:text.index(", arrays:")] + "}\n" + text[text.index("property:"):])
    path = tmp_path / "loose.cert.json"
    assert run_check(spec, path, "crown").verdict is Verdict.CERTIFIED
    cert = json.loads(path.read_text())
    gfile = path.parent / cert["materialized"]["path"]
    data = bytearray(gfile.read_bytes())
    copy_dir = tmp_path / "m"
    copy_dir.mkdir()
    data[len(data) // 2] ^= 1
    (copy_dir / gfile.name).write_bytes(bytes(data))
    (copy_dir / path.name).write_text(json.dumps(cert))
    assert check_certificate(spec, copy_dir / path.name).verdict is Verdict.REJECTED
    cert["materialized"]["sha256"] = hashlib.sha256(bytes(data)).hexdigest()  # the hash follows the tampered file:
    (copy_dir / path.name).write_text(json.dumps(cert))  # a different g, whose bound the steps no longer prove
    assert check_certificate(spec, copy_dir / path.name).verdict is Verdict.REJECTED


def test_changed_spec_tolerance_rejects_the_old_certificate(genuine, tmp_path):
    path, _ = genuine["tiny_prune"]
    text = (SPECS / "tiny_prune.yaml").read_text().replace("tolerance: 3", "tolerance: 4")
    spec = tmp_path / "tiny_prune.yaml"
    spec.write_text(text.replace("../models/", str(SPECS.parent / "models") + "/"))
    assert check_certificate(spec, path).verdict is Verdict.REJECTED


@pytest.fixture(scope="module")
def bab_certificates(tmp_path_factory):
    """Branch-and-bound certificates: input splits (tiny, 4 inputs) and ReLU splits (digits, 64)."""
    out = {}
    for name, old, new in [("tiny_prune", "tolerance: 3", 'tolerance: "21/20"'),
                           ("digits_low_rank", 'tolerance: "1/5"', 'tolerance: "17/200"')]:
        d = tmp_path_factory.mktemp(f"bab-{name}")
        text = (SPECS / f"{name}.yaml").read_text().replace(old, new)
        spec = d / f"{name}.yaml"
        spec.write_text(text.replace("../models/", str(SPECS.parent / "models") + "/").replace("path: pinned/", f"path: {SPECS}/pinned/"))
        path = d / f"{name}.cert.json"
        outcome = run_check(spec, path, "bab")
        assert outcome.verdict is not Verdict.REJECTED, outcome.check.reason
        cert = json.loads(path.read_text())
        assert "tree" in cert and "children" in cert["tree"], "branch and bound made no split"
        out[name] = (spec, path, cert)
    return out


def _split(node, kind):
    stack = [node]
    while stack:
        n = stack.pop()
        if n.get("split") == kind:
            return n
        stack += n.get("children", [])
    return None


def _any_split(c):
    return _split(c["tree"], "input") or _split(c["tree"], "relu")


def _leaf(node):
    while "children" in node:
        node = node["children"][0]
    return node


def split_point_outside_box(c):
    n = _split(c["tree"], "input")
    if n is None:  # relu-split tree: point it at a layer that has no ReLU
        _split(c["tree"], "relu")["layer"] = 99
    else:
        n["at"] = "1000"


def child_dropped(c):
    _any_split(c)["children"].pop()


def relu_split_repeated(c):
    n = _any_split(c)
    if n["split"] == "input":  # input-split tree: duplicating an input split's child is still a cover, so
        n["children"][1] = {"split": "relu", "layer": 1, "neuron": 0,  # split a ReLU twice instead
                            "children": [{"split": "relu", "layer": 1, "neuron": 0, "children": [_leaf(n), _leaf(n)]}, _leaf(n)]}
    else:
        n["children"][0] = {**n, "children": [n["children"][0], n["children"][1]]}


def leaf_goal_dropped(c):
    leaf = _leaf(c["tree"])
    last = max(s["layer"] for s in leaf["steps"])
    leaf["steps"] = [s for s in leaf["steps"] if s["layer"] != last]


def unknown_split_kind(c):
    _any_split(c)["split"] = "magic"


def leaf_swapped_between_phases(c):
    n = _any_split(c)
    n["children"] = [n["children"][1], n["children"][1]]


TREE_MUTATIONS = [split_point_outside_box, child_dropped, relu_split_repeated, leaf_goal_dropped,
                  unknown_split_kind, tighten_bound_one_ulp]


@pytest.mark.parametrize("mutate", TREE_MUTATIONS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("name", ["tiny_prune", "digits_low_rank"])
def test_tampered_split_trees_are_rejected(bab_certificates, name, mutate):
    spec, path, cert = bab_certificates[name]
    assert check_certificate(spec, path).verdict is Verdict.CERTIFIED
    tampered = copy.deepcopy(cert)
    mutate(tampered)
    out = path.parent / f"tampered-{mutate.__name__}.cert.json"
    out.write_text(json.dumps(tampered))
    assert check_certificate(spec, out).verdict is Verdict.REJECTED, f"{mutate.__name__} accepted on {name}"


@pytest.mark.parametrize("name", ["tiny_prune", "digits_low_rank"])
def test_split_nodes_carry_only_the_steps_their_children_inherit(bab_certificates, name):
    """An input split's children re-derive every layer on their own boxes, so the split node carries
    no steps; a ReLU split on layer j carries only layers below j (its children re-derive layers
    >= j). Proved nodes carry their goal (the output layer)."""
    tree, top = bab_certificates[name][2]["tree"], 0  # top: the highest layer any proved node bounds
    stack, splits = [(tree, 1)], 0
    while stack:
        node, first = stack.pop()
        layers = [s["layer"] for s in node.get("steps", [])]
        assert all(layer >= first for layer in layers)
        if "children" not in node:
            top = max([top, *layers])
            continue
        splits += 1
        below = node["layer"] if node["split"] == "relu" else 1
        assert all(layer < below for layer in layers), (node["split"], layers)
        stack += [(kid, below) for kid in node["children"]]
    assert splits and top


def _beta_step(c):
    stack = [c["tree"]]
    while stack:
        node = stack.pop()
        for step in node.get("steps", []):
            if step.get("beta"):
                return step
        stack += node.get("children", [])
    raise AssertionError("no beta multipliers in this tree")


def beta_negative(c):
    _beta_step(c)["beta"][0]["values"][0] = "-1"


def beta_for_unsplit_neuron(c):
    t = _beta_step(c)["beta"][0]
    t["neuron"] = (t["neuron"] + 1) % 32  # a neuron this region never split


def beta_on_wrong_layer(c):  # a multiplier moved to a layer the split is not on
    t = _beta_step(c)["beta"][0]
    t["layer"] = 1 if t["layer"] != 1 else 2


@pytest.mark.parametrize("mutate", [beta_negative, beta_for_unsplit_neuron, beta_on_wrong_layer], ids=lambda m: m.__name__)
def test_tampered_beta_multipliers_are_rejected(bab_certificates, mutate):
    spec, path, cert = bab_certificates["digits_low_rank"]  # ReLU splits: its leaves carry beta
    tampered = copy.deepcopy(cert)
    mutate(tampered)
    out = path.parent / f"tampered-{mutate.__name__}.cert.json"
    out.write_text(json.dumps(tampered))
    assert check_certificate(spec, out).verdict is Verdict.REJECTED, mutate.__name__


def _diff_step(c):
    return c["steps"][_first(c["steps"], "difference")]


def _shift(step, key, i, by):
    step[key][i] = rational_str(Fraction(step[key][i]) + by)


def diff_lower_raised_to_upper(c):  # a narrower range of z_a - z_b than derived
    s = _diff_step(c)
    i = max(range(len(s["pairs"])), key=lambda p: Fraction(s["upper"][p]) - Fraction(s["lower"][p]))
    s["lower"][i] = s["upper"][i]


def diff_upper_lowered(c):
    s = _diff_step(c)
    i = max(range(len(s["pairs"])), key=lambda p: Fraction(s["upper"][p]) - Fraction(s["lower"][p]))
    s["upper"][i] = s["lower"][i]


def diff_lower_line_raised(c):
    _shift(_diff_step(c), "lower_intercept", 0, 1)


def diff_upper_line_lowered(c):
    _shift(_diff_step(c), "upper_intercept", 0, -1)


def diff_lower_slope_steeper(c):  # a line valid at one end only
    s = _diff_step(c)
    i = max(range(len(s["pairs"])), key=lambda p: Fraction(s["upper"][p]) - Fraction(s["lower"][p]))
    _shift(s, "lower_slope", i, Fraction(1, 2))


def diff_neuron_in_two_pairs(c):
    s = _diff_step(c)
    s["pairs"][1] = [s["pairs"][0][0], s["pairs"][1][1]]


def diff_pair_out_of_range(c):
    _diff_step(c)["pairs"][0] = [0, 10**6]


def diff_on_output_layer(c):
    _diff_step(c)["layer"] = max(s["layer"] for s in c["steps"])


def diff_step_dropped(c):  # the later steps' claims were derived with its lines
    c["steps"].pop(_first(c["steps"], "difference"))


def diff_vector_truncated(c):
    _diff_step(c)["upper_slope"].pop()


DIFF_MUTATIONS = [diff_lower_raised_to_upper, diff_upper_lowered, diff_lower_line_raised, diff_upper_line_lowered,
                  diff_lower_slope_steeper, diff_neuron_in_two_pairs, diff_pair_out_of_range, diff_on_output_layer,
                  diff_step_dropped, diff_vector_truncated]
ATTACKS["difference"] = [m.__name__ for m in DIFF_MUTATIONS]


@pytest.mark.parametrize("mutate", DIFF_MUTATIONS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("name", ["tiny_second_model", "digits_low_rank"])  # certificates with difference steps
def test_tampered_difference_steps_are_rejected(genuine, name, mutate, tmp_path):
    path, cert = genuine[name]
    tampered = copy.deepcopy(cert)
    mutate(tampered)
    out = path.parent / f"tampered-{mutate.__name__}.cert.json"
    out.write_text(json.dumps(tampered))
    result = check_certificate(SPECS / f"{name}.yaml", out)
    assert result.verdict is Verdict.REJECTED, f"{mutate.__name__} was accepted on {name}"


def test_every_step_kind_has_tamper_tests():
    from certify.checker import STEP_CHECKERS

    names = {m.__name__ for m in MUTATIONS + DIFF_MUTATIONS} | {"beta_negative", "beta_for_unsplit_neuron", "beta_on_wrong_layer"}
    assert set(STEP_CHECKERS) == set(ATTACKS), "a step kind without tamper tests: add mutations to ATTACKS"
    for kind, attacks in ATTACKS.items():
        assert attacks and set(attacks) <= names, kind


def test_clustered_merge_without_its_labels_is_rejected(tmp_path):
    """A merge by group count is defined by materialised labels. A certificate that omits them must
    not be read as g = f: here the steps of a genuine g = f certificate (bound 0) are replayed."""
    base = shipped_text()
    same = tmp_path / "same.yaml"  # keep every neuron: g = f
    same.write_text(base.replace("keep: [0, 2, 4, 6]", "keep: [0, 1, 2, 3, 4, 5, 6, 7]"))
    assert run_check(same, tmp_path / "same.cert.json", "crown").verdict is Verdict.CERTIFIED
    merge = tmp_path / "merge.yaml"
    merge.write_text(base.replace("  - prune: {layer: 1, keep: [0, 2, 4, 6], fill: zero}", "  - merge: {layer: 1, groups: 2}"))
    cert = json.loads((tmp_path / "same.cert.json").read_text())
    cert["spec_sha256"] = hashlib.sha256(merge.read_bytes()).hexdigest()
    cert["materialized"] = None
    cert["witness"] = None
    forged = tmp_path / "forged.cert.json"
    forged.write_text(json.dumps(cert))
    assert check_certificate(merge, forged).verdict is Verdict.REJECTED


def test_malformed_step_kinds_are_rejected_not_crashes(genuine, tmp_path):
    path, cert = genuine["tiny_prune"]
    for mutate in (lambda c: c["steps"][0].__setitem__("kind", ["interval"]),
                   lambda c: c["steps"][0].__setitem__("kind", {"x": 1})):
        tampered = copy.deepcopy(cert)
        mutate(tampered)
        out = tmp_path / "weird.cert.json"
        out.write_text(json.dumps(tampered))
        assert check_certificate(SPECS / "tiny_prune.yaml", out).verdict is Verdict.REJECTED


def test_unknown_keys_in_a_proved_tree_node_are_rejected(bab_certificates, tmp_path):
    spec, path, cert = bab_certificates["tiny_prune"]
    junk_split = {"split": "relu", "layer": 1, "neuron": 0, "children": [{}, {}], "junk": 1}
    for extra in ({"trusted": True}, {"split": ["input"]}, junk_split):
        tampered = copy.deepcopy(cert)
        _leaf(tampered["tree"]).update(extra)  # a leaf: proved by its own steps
        out = tmp_path / "extra.cert.json"
        out.write_text(json.dumps(tampered))
        assert check_certificate(spec, out).verdict is Verdict.REJECTED, extra


# ----------------------------------------------------------------------------- z3 is the authority on goals


def _shipped(name: str):
    return SPECS / f"{name}.yaml", ROOT / "proofs" / f"{name}.cert.json"


@pytest.mark.parametrize("answer", ["unknown", "sat"])
def test_z3_decides_every_goal_unknown_or_sat_rejects(monkeypatch, answer):
    """Where z3 is still asked the goal (certify export-smt sets check.RECORD), a genuine certificate
    is REJECTED when z3 answers unknown (or times out: also unknown), and when it answers sat."""
    import z3

    from certify.checker import check

    spec, cert = _shipped("tiny_prune")
    assert check_certificate(spec, cert).verdict is Verdict.CERTIFIED
    monkeypatch.setattr(check, "RECORD", [])
    assert check_certificate(spec, cert).verdict is Verdict.CERTIFIED
    monkeypatch.setattr(z3.Solver, "check", lambda self, *a: getattr(z3, answer))
    result = check_certificate(spec, cert)
    assert result.verdict is Verdict.REJECTED
    assert ("z3 could not decide" if answer == "unknown" else "missing goal") in result.reason, result.reason


def test_a_goal_over_its_limit_by_the_smallest_step_is_rejected(tmp_path, monkeypatch):
    """The goal is decided exactly on the verified output box: a claimed bound equal to the box's
    largest end proves it, the same bound less 2^-400 does not (REJECTED, nothing to split)."""
    from certify.checker import check

    spec, path = _shipped("tiny_prune")
    boxes, real = [], check.goal_holds
    monkeypatch.setattr(check, "goal_holds", lambda bound, state, *a: boxes.append(state.bounds[len(state.joint)]) or real(bound, state, *a))
    assert check_certificate(spec, path).verdict is Verdict.CERTIFIED
    (lo, up), = boxes
    edge = max(max(up), -min(lo))
    cert = json.loads(path.read_text())
    for bound, proved in ((edge, True), (edge - Fraction(1, 2**400), False)):
        cert["claim"]["bound"] = rational_str(bound)
        cert["witness"] = None
        tampered = tmp_path / "c.cert.json"
        tampered.write_text(json.dumps(cert))
        result = check_certificate(spec, tampered)
        assert (result.verdict is not Verdict.REJECTED) is proved, result.reason
        assert proved or "missing goal" in result.reason, result.reason


def test_goal_queries_sharing_a_solver_do_not_see_each_other():
    """The checker's z3 solver is shared by the goals of one certificate: each query is asserted in
    its own scope, so an unsatisfiable query cannot make the next one unsat too."""
    from certify.checker.check import _holds, _solver

    solver = _solver()
    assert _holds(["x"], "(and (> x 1) (< x 0))", "first", solver)  # unsat: the claim holds
    assert not _holds(["x"], "(> x 1)", "second", solver)  # sat: it must stay sat
    assert not _holds(["x"], "(< x 0)", "third", solver)
