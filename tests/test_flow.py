"""Scale-aware explanations: exact semantics of merge / pca / quantize, level certificates bound to
their level, and `certify flow` / `components` / `scales` finding the scales planted in the toy models.

The flow tests re-verify the shipped certificates (no engine, fast); one runs the engine afresh.
"""

import json
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certify.checker import Verdict, check_certificate
from certify.checker.errors import BadInput
from certify.checker.exact import forward, qmat, qvec
from certify.checker.model import read_model
from certify.checker.network import build_g, exact_layers
from certify.checker.spec import read_spec
from certify.cli import main
from certify.flow import analyse_scales, level_dof, levels_yaml, run_components, run_flow
from certify.model import save_model

from .conftest import ROOT, SPECS, shipped_text
from .test_mutation import change_spec_hash, drop_relaxation_step, tighten_bound_one_ulp

PLANTED = json.loads((ROOT / "models" / "toy_planted.json").read_text())
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ----------------------------------------------------------------------------- exact semantics

def write_net(tmp: Path, w1, b1, w2, b2, explanation: str, name="m") -> Path:
    sha = save_model(tmp / f"{name}.npz", [np.asarray(w1, float), np.asarray(w2, float)],
                     [np.asarray(b1, float), np.asarray(b2, float)])
    spec = tmp / f"{name}.yaml"
    spec.write_text(f'version: 1\nmodel: {{path: {name}.npz, sha256: "{sha}"}}\ninput:\n  box: {{lower: -1, upper: 1}}\n'
                    f"explanation:\n  - {explanation}\nproperty: {{deviation: linf, tolerance: 1}}\n")
    return spec


def g_of(spec_path, materialized=None):
    spec = read_spec(spec_path)
    f = read_model(spec.model.path, spec.model.sha256)
    return exact_layers(f), build_g(spec, f, materialized)


def run(layers, x):
    return forward([(qmat(w), qvec(b)) for w, b in layers], [Fraction(v) for v in x])


floats = st.floats(-2, 2, allow_nan=False, width=32)


@FAST
@given(st.data())
def test_merge_of_identical_neurons_is_exact(tmp_path, data):
    """A block of identical neurons becomes one unit: relu(|B| z) * mean(c) = sum_j c_j relu(z)."""
    n_in, blocks = data.draw(st.integers(1, 3)), data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    rows, bias, groups = [], [], []
    for size in blocks:
        row, b = data.draw(st.lists(floats, min_size=n_in, max_size=n_in)), data.draw(floats)
        groups.append(list(range(len(rows), len(rows) + size)))
        rows += [row] * size
        bias += [b] * size
    w2 = data.draw(st.lists(st.lists(floats, min_size=len(rows), max_size=len(rows)), min_size=1, max_size=2))
    perm = data.draw(st.permutations(range(len(rows))))
    inv = {old: new for new, old in enumerate(perm)}
    w1, b1 = [rows[i] for i in perm], [bias[i] for i in perm]
    w2 = [[r[i] for i in perm] for r in w2]
    groups = [sorted(inv[j] for j in g) for g in groups]
    spec = write_net(tmp_path, w1, b1, w2, [0.0] * len(w2), f"merge: {{layer: 1, groups: {groups}}}")
    f, g = g_of(spec)
    for x in data.draw(st.lists(st.lists(floats, min_size=n_in, max_size=n_in), min_size=1, max_size=4)):
        assert run(f, x) == run(g, x)
    for block in groups:  # the block unit sits at the block's smallest index; the others are zeroed
        for j in block[1:]:
            assert all(v == 0 for v in g[0][0][j]) and g[0][1][j] == 0 and all(row[j] == 0 for row in g[1][0])


def test_merge_semantics_summed_in_averaged_out(tmp_path):
    w1, b1 = [[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]], [0.25, -0.5, 1.0]
    w2 = [[1.0, 3.0, -2.0]]
    spec = write_net(tmp_path, w1, b1, w2, [0.0], "merge: {layer: 1, groups: [[2, 0], [1]]}")
    _, g = g_of(spec)
    assert g[0][0][0] == [Fraction(3, 2), Fraction(5, 2)] and g[0][1][0] == Fraction(5, 4)
    assert g[0][0][2] == [0, 0] and g[0][1][2] == 0
    assert g[1][0][0] == [Fraction(-1, 2), 3, 0]


@FAST
@given(st.lists(st.lists(st.floats(-5, 5, allow_nan=False, allow_subnormal=False), min_size=1, max_size=4), min_size=1, max_size=4),
       st.integers(2, 8))
def test_quantize_is_the_exact_symmetric_grid(tmp_path, rows, bits):
    width = len(rows[0])
    rows = [r[:width] + [0.0] * (width - len(r)) for r in rows]
    spec = write_net(tmp_path, rows, [0.0] * len(rows), [[1.0] * len(rows)], [0.0], f"quantize: {{layer: 1, bits: {bits}}}")
    f, g = g_of(spec)
    top = max(abs(v) for r in f[0][0] for v in r)
    if top == 0:
        assert g[0] == f[0]
        return
    s = top / (2 ** (bits - 1) - 1)
    for rf, rg in zip(f[0][0], g[0][0]):
        for a, b in zip(rf, rg):
            k = b / s
            assert k.denominator == 1 and abs(k) <= 2 ** (bits - 1) - 1  # on the grid, within range
            assert abs(a - b) <= s / 2  # nearest grid point
            if abs(a - b) == s / 2:
                assert k.numerator % 2 == 0  # ties to even
    assert max(abs(v) for r in g[0][0] for v in r) == top
    assert g[1] == f[1]  # only the quantised layer changes


def test_quantize_ties_round_to_even(tmp_path):
    # bits 3: s = 3/3 = 1; 0.5 -> 0, 1.5 -> 2, -2.5 -> -2, 3 -> 3
    spec = write_net(tmp_path, [[0.5, 1.5, -2.5, 3.0]], [0.0], [[1.0]], [0.0], "quantize: {layer: 1, bits: 3}")
    _, g = g_of(spec)
    assert g[0][0][0] == [0, 2, -2, 3]


def test_pca_with_axis_components_is_prune_with_the_mean(tmp_path):
    """P = unit vectors of the kept neurons: W P P^T zeroes the other columns, b + W (mu - P P^T mu) fills them with mu."""
    rng = np.random.default_rng(0)
    w1, b1, w2 = rng.normal(size=(4, 2)), rng.normal(size=4), rng.normal(size=(2, 4))
    pca = write_net(tmp_path, w1, b1, w2, [0.0, 0.0], "pca: {layer: 1, keep: [0, 1]}", "p")
    mu = [0.25, -0.5, 0.125, 2.0]
    p = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]  # width x r, row major: columns e_0, e_1
    _, g_pca = g_of(pca, {"explanation.0.P": ((4, 2), p), "explanation.0.mean": ((4,), mu)})
    prune = write_net(tmp_path, w1, b1, w2, [0.0, 0.0], "prune: {layer: 1, keep: [0, 1], fill: {constant: [0.125, 2]}}", "q")
    _, g_prune = g_of(prune)
    assert g_pca == g_prune
    # all components kept, P = I: g is f exactly
    full = write_net(tmp_path, w1, b1, w2, [0.0, 0.0], "pca: {layer: 1, components: 4}", "r")
    eye = [float(r == c) for r in range(4) for c in range(4)]
    f, g = g_of(full, {"explanation.0.P": ((4, 4), eye), "explanation.0.mean": ((4,), mu)})
    assert g == f


def test_kmeans_labels_are_pinned_and_rebuilt(tmp_path):
    """The shipped clusters spec pins its k-means labels (certify pin): they find the planted clusters,
    and a certificate of a level carries no materialised arrays."""
    from certify.engine import prepare

    p = prepare(SPECS / "toy_clusters.yaml", tmp_path / "c.cert.json", "merge4")
    labels = np.load(SPECS / "pinned" / "toy_clusters.merge4.0.merge.npz")["labels"]
    assert sorted(set(labels.tolist())) == [0, 1, 2, 3]
    planted = PLANTED["clusters"]["cluster_of_unit"]
    found = {tuple(np.flatnonzero(labels == c)) for c in range(4)}
    assert found == {tuple(j for j, c in enumerate(planted) if c == k) for k in range(4)}  # k-means finds the clusters
    assert p.materialized is None and p.pins == ()


def test_dof_per_transform():
    spec = read_spec(SPECS / "toy_features_prune.yaml")
    f = read_model(spec.model.path, spec.model.sha256)
    assert [level_dof(lv.explanation, f) for lv in spec.levels] == [(8, 16), (6, 16), (5, 16), (4, 16), (3, 16), (2, 16)]
    spec = read_spec(SPECS / "toy_clusters.yaml")
    f = read_model(spec.model.path, spec.model.sha256)
    assert level_dof(spec.levels[3].explanation, f) == (4, 24)


# ----------------------------------------------------------------------------- level certificates

@pytest.fixture(scope="module")
def level_certs(tmp_path_factory):
    """Fresh certificates for two levels of the toy clusters spec (merge: k-means labels pinned)."""
    from certify.engine import run_check

    d = tmp_path_factory.mktemp("levels")
    out = {}
    for level in ("merge4", "merge3"):
        o = run_check(SPECS / "toy_clusters.yaml", d / f"toy_clusters.{level}.cert.json", "crown", level)
        assert o.verdict is not Verdict.REJECTED, o.check.reason
        assert o.check.level == level
        out[level] = d / f"toy_clusters.{level}.cert.json"
    return out


def _tampered(path: Path, mutate, name: str) -> Path:
    cert = json.loads(path.read_text())
    mutate(cert)
    out = path.parent / name
    out.write_text(json.dumps(cert))
    return out


@pytest.mark.parametrize("mutate", [
    pytest.param(lambda c: c.update(level="merge3"), id="presented-as-another-level"),
    pytest.param(lambda c: c.pop("level"), id="level-removed"),
    pytest.param(lambda c: c.update(level="merge5"), id="unknown-level"),
    pytest.param(lambda c: c.update(level=["merge4"]), id="level-not-a-string"),
    pytest.param(tighten_bound_one_ulp, id="bound-tightened"),
    pytest.param(change_spec_hash, id="spec-hash"),
    pytest.param(drop_relaxation_step, id="relaxation-dropped"),
    pytest.param(lambda c: c.update(materialized={"path": "labels.g.npz", "sha256": "0" * 64}),  # the labels are pinned:
                 id="materialised-labels-added"),  # arrays in the certificate cannot define g
])
def test_level_certificate_tampering_is_rejected(level_certs, mutate):
    tampered = _tampered(level_certs["merge4"], mutate, "tampered.cert.json")
    result = check_certificate(SPECS / "toy_clusters.yaml", tampered)
    assert result.verdict is Verdict.REJECTED, result
    assert main(["verify", str(SPECS / "toy_clusters.yaml"), str(tampered)]) == 3


def test_coarse_level_certificate_presented_as_fine_is_rejected(level_certs):
    """merge3's certificate claims a bound merge4 also satisfies, but its steps are about merge3's g."""
    tampered = _tampered(level_certs["merge3"], lambda c: c.update(level="merge4"), "as-fine.cert.json")
    assert check_certificate(SPECS / "toy_clusters.yaml", tampered).verdict is Verdict.REJECTED


def test_level_certificate_against_a_spec_without_levels_is_rejected(level_certs, tmp_path):
    """Even re-targeted at a spec that has the level's explanation but no levels (hash updated), a
    certificate that names a level is refused: `level` must name one of the spec's levels, or be absent."""
    text = (SPECS / "toy_clusters.yaml").read_text()
    head, _, tail = text.partition("levels:\n")
    plain = tmp_path / "toy_clusters.yaml"
    merge4 = next(line for line in text.splitlines() if "name: merge4" in line)  # its pinned labels too
    entry = merge4[merge4.index("[{merge:") + 1:merge4.rindex("]")]
    plain.write_text((head + f"explanation: [{entry}]\n" + tail[tail.index("property:"):])
                     .replace("../models/", str(ROOT / "models") + "/").replace("path: pinned/", f"path: {SPECS}/pinned/"))
    cert = json.loads(level_certs["merge4"].read_text())
    cert["spec_sha256"] = read_spec(plain).sha256
    (tmp_path / "c.cert.json").write_text(json.dumps(cert))
    result = check_certificate(plain, tmp_path / "c.cert.json")
    assert result.verdict is Verdict.REJECTED and result.reason.startswith("level")
    del cert["level"]  # the same certificate without its level is a valid certificate for the plain spec
    (tmp_path / "c.cert.json").write_text(json.dumps(cert))
    assert check_certificate(plain, tmp_path / "c.cert.json").verdict is Verdict.CERTIFIED


def test_tampered_merge_labels_are_rejected(level_certs, tmp_path):
    """Labels attached to a certificate of a pinned spec do not redefine g (REJECTED); changed pinned
    labels are bad input (their sha256 is the spec's)."""
    from certify.checker.model import sha256_file

    cert = level_certs["merge4"]
    labels = np.load(SPECS / "pinned" / "toy_clusters.merge4.0.merge.npz")["labels"].copy()
    labels[0] = (labels[0] + 1) % 4  # move one neuron to another block
    (tmp_path / "copy").mkdir()
    gfile = tmp_path / "copy" / "forged.g.npz"
    np.savez(gfile, **{"explanation.0.labels": labels})
    c = json.loads(cert.read_text())
    c["materialized"] = {"path": gfile.name, "sha256": sha256_file(gfile)}
    (tmp_path / "copy" / cert.name).write_text(json.dumps(c))
    result = check_certificate(SPECS / "toy_clusters.yaml", tmp_path / "copy" / cert.name)
    assert result.verdict is Verdict.REJECTED and "materialized" in result.reason
    spec_dir = tmp_path / "tree" / "specs"  # the same spec text (same sha256) beside changed pinned labels
    shutil.copytree(SPECS / "pinned", spec_dir / "pinned")
    (tmp_path / "tree" / "models").symlink_to(ROOT / "models")
    shutil.copy(SPECS / "toy_clusters.yaml", spec_dir)
    np.savez(spec_dir / "pinned" / "toy_clusters.merge4.0.merge.npz", labels=labels)
    with pytest.raises(BadInput, match=r"levels\[3\]\.explanation\[0\]\.merge\.arrays\.sha256"):
        check_certificate(spec_dir / "toy_clusters.yaml", cert)


# ----------------------------------------------------------------------------- flow

TOYS = {"toy_features_s0": ["pca3"], "toy_features_prune": ["keep3"], "toy_clusters": ["merge3"],
        "toy_tiers": ["keep5", "keep1"], "toy_tree": ["pca1"]}  # the coarse side of each planted scale boundary


@pytest.fixture(scope="module")
def shipped_flows():
    return {name: run_flow(SPECS / f"{name}.yaml", out_dir=ROOT / "proofs", log=None) for name in TOYS}


@pytest.mark.parametrize("name", TOYS)
def test_flow_finds_the_planted_scale(shipped_flows, name):
    """The bound jumps by >= 10x exactly at the planted level, and by < 10x everywhere else."""
    fl = shipped_flows[name]
    assert all(lv.reused for lv in fl.levels), "the shipped certificates should re-verify"
    steps = fl.steps()
    flagged = [s["coarse"] for s in steps if s["boundary"]]
    assert flagged == TOYS[name], steps
    for s in steps:
        assert (s["ratio"] >= 10) == (s["coarse"] in TOYS[name])
        if s["coarse"] in TOYS[name]:  # the coarse level's attained deviation exceeds 10x the fine level's certified bound
            assert s["proven_boundary"], s
    uppers = [lv.upper for lv in fl.levels]
    assert all(lv.lower <= lv.upper for lv in fl.levels) and None not in uppers


def test_flow_cli_writes_json_and_plots(tmp_path, capsys):
    code = main(["flow", str(SPECS / "toy_clusters.yaml"), "--json", str(tmp_path / "f.json"), "--plot", str(tmp_path / "flow")])
    assert code == 1  # the worst level is VIOLATED
    out = capsys.readouterr().out
    assert "SCALE BOUNDARY" in out and "between merge4 and merge3" in out
    data = json.loads((tmp_path / "f.json").read_text())
    (flow,) = data["flows"]
    assert [lv["name"] for lv in flow["levels"]] == ["merge12", "merge8", "merge6", "merge4", "merge3", "merge2"]
    assert [s["coarse"] for s in flow["scale_boundaries"]] == ["merge3"]
    assert all(Fraction(lv["attained_lower"]) <= Fraction(lv["certified_upper"]) for lv in flow["levels"])
    for suffix in (".png", ".svg"):
        assert (tmp_path / f"flow{suffix}").stat().st_size > 5000
    assert (tmp_path / "flow.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_flow_afresh_matches_and_certificates_verify(tmp_path):
    fl = run_flow(SPECS / "toy_features_prune.yaml", out_dir=tmp_path, fresh=True, log=None)
    assert not any(lv.reused for lv in fl.levels)
    assert [s["coarse"] for s in fl.steps() if s["boundary"]] == ["keep3"]
    for lv in fl.levels:
        assert main(["verify", str(SPECS / "toy_features_prune.yaml"), str(lv.certificate)]) == (0 if lv.verdict is Verdict.CERTIFIED else 1)
    again = run_flow(SPECS / "toy_features_prune.yaml", out_dir=tmp_path, log=None)
    assert all(lv.reused for lv in again.levels)
    assert [lv.upper for lv in again.levels] == [lv.upper for lv in fl.levels]


def test_flow_does_not_reuse_a_certificate_of_another_level(tmp_path, monkeypatch):
    import certify.engine

    spec = SPECS / "toy_features_prune.yaml"
    shutil.copy(ROOT / "proofs" / "toy_features_prune.keep4.cert.json", tmp_path / "toy_features_prune.keep3.cert.json")
    calls, real = [], certify.engine.run_check
    monkeypatch.setattr(certify.engine, "run_check", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    fl = run_flow(spec, out_dir=tmp_path, log=None)
    assert "keep3" in calls  # re-bounded: the file named keep3 held keep4's certificate
    keep3 = next(lv for lv in fl.levels if lv.name == "keep3")
    assert keep3.upper > 1 and json.loads(keep3.certificate.read_text())["level"] == "keep3"


def test_universality_is_labelled_empirical_and_collapses(tmp_path, capsys):
    specs = [str(SPECS / f"toy_features_{v}.yaml") for v in ("s0", "s1", "w32")]
    assert main(["flow", *specs, "--json", str(tmp_path / "u.json"), "--plot", str(tmp_path / "u")]) == 1
    out = capsys.readouterr().out
    assert "EMPIRICAL comparison" in out
    u = json.loads((tmp_path / "u.json").read_text())["universality"]
    assert u["label"].startswith("EMPIRICAL") and u["matched_by"] == "name"
    assert u["same_boundaries"] and u["boundaries"] == [["pca3"]] * 3
    coarse = [row for row in u["levels"] if row["level"] in ("pca3", "pca2")]
    assert all(row["spread_decades"] < 0.1 for row in coarse)  # the flows collapse past the planted scale
    assert (tmp_path / "u.png").is_file() and (tmp_path / "u.svg").is_file()


# ----------------------------------------------------------------------------- components

def _relevant(results):
    return {r.label for r in results if r.relevance == "relevant"}


def test_relevant_neurons_are_the_planted_strong_units(tmp_path):
    spec, results = run_components(SPECS / "toy_features_prune.yaml", "keep2", out_dir=tmp_path, log=None)
    strong = PLANTED["features"]["s0"]["strong"]
    kept = set(spec.explanation[0].keep)
    assert _relevant(results) == {f"layer 1 neuron {j}" for j in strong if j not in kept}
    assert {r.relevance for r in results if r.label not in _relevant(results)} == {"irrelevant"}
    for r in results:  # each is a certificate the checker accepted, for a spec of its own
        assert r.verdict is not Verdict.REJECTED and r.lower <= r.upper
        assert check_certificate(r.spec_path, r.certificate).bound == r.upper


def test_relevant_principal_components_are_the_planted_directions(tmp_path):
    _, results = run_components(SPECS / "toy_features_s0.yaml", "pca2", out_dir=tmp_path, log=None)
    assert _relevant(results) == {"layer 1 principal component 2", "layer 1 principal component 3"}
    assert len(results) == 14 and sum(r.relevance == "irrelevant" for r in results) == 12


def test_relevant_merge_blocks_are_those_mixing_planted_clusters(tmp_path, capsys):
    planted = PLANTED["clusters"]["cluster_of_unit"]
    spec, results = run_components(SPECS / "toy_clusters.yaml", "merge3", out_dir=tmp_path, threshold=Fraction(1, 20), log=None)
    for r in results:
        block = r.entry["merge"]["groups"][0]
        mixed = len({planted[j] for j in block}) > 1
        assert r.relevance == ("relevant" if mixed else "irrelevant"), r.label
    assert sum(r.relevance == "relevant" for r in results) == 1
    _, results = run_components(SPECS / "toy_clusters.yaml", "merge4", out_dir=tmp_path, threshold=Fraction(1, 20), log=None)
    assert {r.relevance for r in results} == {"irrelevant"} and len(results) == 4
    assert main(["components", str(SPECS / "toy_clusters.yaml"), "--level", "merge3", "--out-dir", str(tmp_path),
                 "--threshold", "1/20", "--json", str(tmp_path / "c.json")]) == 0
    assert "1 relevant, 0 undecided, 2 irrelevant" in capsys.readouterr().out


def test_tree_relevant_components_are_the_coarse_node_directions(tmp_path):
    """Hierarchical (tree) process: the planted level keeps the 2 principal directions of the coarse units
    (one per depth-1 node); past the boundary, the one dropped coarse direction is the only relevant
    component, and the 14 directions of the finer nodes are irrelevant."""
    tree = PLANTED["tree"]
    assert tree["planted_level"] == "pca2" and TOYS["toy_tree"] == ["pca1"]
    coarse = tree["coarse_units"]
    assert len(coarse) == 2 and [tree["tier_of_unit"][j] for j in coarse] == [0, 0]
    spec = read_spec(SPECS / "toy_tree.yaml")
    w1 = np.array(read_model(spec.model.path, spec.model.sha256).dense[0].weight, dtype=float)
    node_means = np.kron(np.eye(2), np.ones(4)) / 2  # orthonormal: the leaf means under the two depth-1 nodes
    for j in coarse:  # each coarse unit reads the depth-1 node means (>= 99.9% of its incoming weight)
        assert np.linalg.norm(node_means @ w1[j]) >= 0.999 * np.linalg.norm(w1[j])
    p = np.load(SPECS / "pinned" / "toy_tree.pca2.0.pca.npz")["P"]
    assert p.shape == (16, 2) and all((p[coarse] ** 2).sum(axis=0) >= 0.99)  # the kept directions are the coarse units'
    _, results = run_components(SPECS / "toy_tree.yaml", "pca1", out_dir=tmp_path, log=None)
    assert _relevant(results) == {"layer 1 principal component 1"}
    assert len(results) == 15 and sum(r.relevance == "irrelevant" for r in results) == 14
    for r in results:
        assert r.verdict is not Verdict.REJECTED and r.lower <= r.upper
    a = analyse_scales(SPECS / "toy_tree.yaml", samples=500)  # the activation spectrum cuts at the planted level
    assert next(s for s in a["suggestions"] if s["transform"] == "pca")["cuts"][0] == 2


# ----------------------------------------------------------------------------- scales

def test_scales_suggests_the_planted_cuts_as_a_ready_levels_block(tmp_path, capsys):
    a = analyse_scales(SPECS / "toy_clusters.yaml", samples=500)
    merge = next(s for s in a["suggestions"] if s["transform"] == "merge")
    assert merge["cuts"][0] == 4 and [lv["name"] for lv in merge["levels"]][:2] == ["merge4", "merge3"]
    a = analyse_scales(SPECS / "toy_features_s0.yaml", samples=500)
    pca = next(s for s in a["suggestions"] if s["transform"] == "pca")
    assert pca["cuts"][0] == 4 and "pca3" in [lv["name"] for lv in pca["levels"]]
    # the printed block is a valid `levels:` section
    text = (SPECS / "toy_features_s0.yaml").read_text()
    head, _, tail = text.partition("levels:\n")
    spec = tmp_path / "suggested.yaml"
    spec.write_text((head + levels_yaml(pca) + "\n" + tail[tail.index("property:"):]).replace("../models/", str(ROOT / "models") + "/"))
    assert [lv.name for lv in read_spec(spec).levels] == [lv["name"] for lv in pca["levels"]]
    assert main(["scales", str(SPECS / "toy_clusters.yaml"), "--samples", "300"]) == 0
    assert "suggested hierarchy" in capsys.readouterr().out


def test_flow_needs_levels(capsys):
    assert main(["flow", str(SPECS / "tiny_prune.yaml")]) == 2
    assert "levels" in capsys.readouterr().err


def test_flow_components_explains_the_boundary(tmp_path, capsys):
    """`flow --components` certifies the components of the level past each boundary: at keep3 the one
    strong unit it prunes (9) is relevant, the 12 weak units are not."""
    for f in (ROOT / "proofs").glob("toy_features_prune.*"):
        shutil.copy(f, tmp_path)
    assert main(["flow", str(SPECS / "toy_features_prune.yaml"), "--out-dir", str(tmp_path), "--components",
                 "--json", str(tmp_path / "f.json")]) == 1
    comps = json.loads((tmp_path / "f.json").read_text())["flows"][0]["components"]
    assert list(comps) == ["keep3"]
    assert {c["component"] for c in comps["keep3"] if c["relevance"] == "relevant"} == {"layer 1 neuron 9"}
    assert sum(c["relevance"] == "irrelevant" for c in comps["keep3"]) == 12
    assert "1 relevant, 0 undecided, 12 irrelevant" in capsys.readouterr().out


def test_three_tiers_relevance_follows_the_threshold(tmp_path):
    """At keep2 the 4 medium units (effect 1e-2) are relevant at threshold 1/1000 and the weak ones not;
    at keep1 only the pruned strong unit is relevant at the default threshold."""
    tier = PLANTED["tiers"]["tier_of_unit"]
    _, results = run_components(SPECS / "toy_tiers.yaml", "keep2", out_dir=tmp_path, threshold=Fraction(1, 1000), log=None)
    assert _relevant(results) == {f"layer 1 neuron {j}" for j, t in enumerate(tier) if t == 1}
    assert all(r.relevance == "irrelevant" for r in results if tier[int(r.label.split()[-1])] == 2)
    _, results = run_components(SPECS / "toy_tiers.yaml", "keep1", out_dir=tmp_path, log=None)
    assert _relevant(results) == {f"layer 1 neuron {j}" for j, t in enumerate(tier) if t == 0 and j != 9}


def test_components_are_bounded_with_the_specs_own_time_budget(tmp_path, monkeypatch):
    """Each component spec is bounded with the budget of the spec it comes from (`options.timeout_s`),
    not the default of the component spec that `flow --components` writes."""
    import certify.engine

    text = shipped_text("toy_tiers")
    spec = tmp_path / "tiers.yaml"
    spec.write_text(text.replace("options: {", "options: {timeout_s: 7, ") if "options: {" in text else text + "options: {timeout_s: 7}\n")
    budgets, real = [], certify.engine.bound_with

    def recorded(p, method, *, time_budget, **kw):
        budgets.append(time_budget)
        return real(p, method, time_budget=time_budget, **kw)

    monkeypatch.setattr(certify.engine, "bound_with", recorded)
    _, results = run_components(spec, "keep1", out_dir=tmp_path, log=None)
    assert results and budgets == [7.0] * len(results)


def test_a_level_naming_a_value_the_graph_lacks_is_one_line_bad_input(tmp_path, capsys):
    """certify flow builds each level's g before it counts the level's degrees of freedom, so a level that
    names a value the graph does not have is the checker's one-line error (exit 2), not a KeyError (exit 4)."""
    text = shipped_text("modadd_levels")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("site: blocks.1.mlp.act,", "site: blocks.1.mlp.actx,", 1))
    assert main(["flow", str(bad), "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "blocks.1.mlp.actx" in err and "no value named" in err, err


@pytest.mark.parametrize("fresh", [True, False])
def test_a_bad_last_level_stops_the_flow_before_any_level_is_bounded(tmp_path, capsys, fresh):
    """Every level that needs bounding is validated first (as `certify check` does): a last level whose
    g cannot be built is one-line bad input with no certificate written and nothing bounded, not a
    failure after the finer levels' certificates were written (found by benchmarks/spec_fuzz.py
    --command flow)."""
    text = shipped_text("toy_tiers")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("keep: [9], fill: mean", "keep: [99], fill: mean", 1))
    out = tmp_path / "proofs"
    assert main(["flow", str(bad), "--out-dir", str(out)] + (["--fresh"] if fresh else [])) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "99" in err, err
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]
