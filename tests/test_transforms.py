"""The transform table: every kind has an exact half (checker: read, validate, rebuild g) and a float
half (explain: materialise, degrees of freedom, components, description), and nothing else in the
package dispatches on a transform's type, so a new kind cannot be half-registered or fall back."""

import re
from dataclasses import dataclass

import numpy as np
import pytest

from certify.checker.model import read_model
from certify.checker.spec import read_spec
from certify.checker.transforms import ALIASES, FLOAT_ARRAYS, UNITS, is_float, unit
from certify.explain import materialize
from certify.explain.transforms import HALVES, half

from .conftest import ROOT

MODELS = ROOT / "models"
TRANSFORM_TYPES = ("Prune", "LowRank", "Merge", "PCA", "Quantize", "SecondModel", "Replace")


def test_every_kind_has_both_halves():
    assert set(UNITS) == set(HALVES), "a transform kind with only one half: add its row to the other table"
    for kind, u in UNITS.items():
        assert all(callable(x) for x in (u.read, u.validate, u.apply, u.floating)), kind
        h = HALVES[kind]
        assert all(callable(x) for x in (h.dof, h.components, h.describe)), kind
        assert (h.materialize is None) == (u.arrays == ()), f"{kind}: float arrays {u.arrays} but materialize {h.materialize}"
    assert set(ALIASES.values()) <= set(UNITS)
    assert FLOAT_ARRAYS == {k: u.arrays for k, u in UNITS.items() if u.arrays}


def test_an_unregistered_transform_is_refused_not_defaulted():
    @dataclass(frozen=True)
    class Rotate:
        kind = "rotate"
        layer: int = 1

    with pytest.raises(KeyError):
        unit(Rotate())
    with pytest.raises(KeyError):
        half(Rotate())


def test_no_module_dispatches_on_transform_types():
    """Outside the two tables (and the spec reader's rules on the order of transforms), no code
    branches on a transform's class: flow, report and engine go through the tables."""
    pattern = re.compile(r"isinstance\([^)]*\b(" + "|".join(TRANSFORM_TYPES) + r")\b")
    allowed = {"checker/transforms.py", "explain/transforms.py", "checker/spec.py"}
    offenders = [f"{p.relative_to(ROOT / 'certify')}:{n}" for p in (ROOT / "certify").rglob("*.py")
                 if str(p.relative_to(ROOT / "certify")) not in allowed
                 for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders


SPEC = """version: 1
model: {{path: {model}, sha256: "{sha}"}}
input:
  box: {{lower: 0, upper: 1}}
explanation:
  - {transform}
property: {{deviation: linf, tolerance: 3}}
"""
ENTRIES = {
    "prune": "ablate: {layer: 1, keep: [0, 2], fill: {mean: {samples: 50}}}",
    "low_rank": "low_rank: {layer: 2, rank: 2}",
    "merge": "merge: {layer: 1, groups: 3}",
    "pca": "pca: {layer: 2, components: 2, samples: 200}",
    "quantize": "quantize: {layer: 1, bits: 4}",
    "model": "model: {{path: {perturbed}, sha256: \"{psha}\"}}",
    "replace": "replace: {{layers: [2, 3], model: {{path: {sub}, sha256: \"{ssha}\"}}}}",
    "sae": "sae: {{site: block1, path: {sae}, sha256: \"{asha}\", features: [0, 3, 5]}}",
    "transcoder": "transcoder: {{block: block1, path: {tc}, sha256: \"{tsha}\", features: [1, 2]}}",
    "ablate": "ablate: {site: block1.gelu, indices: [0, 5], fill: zero}",
    "attention": "attention: {head: blocks.0.attn.h1, pattern: uniform}",
    "low_rank_circuit": "low_rank_circuit: {head: blocks.1.attn.h0, circuit: ov, rank: 3}",
}
GRAPH_MODEL = {"sae": "resmlp.npz", "transcoder": "resmlp.npz", "ablate": "resmlp.npz",  # graph kinds, and the shipped model they run on
               "attention": "modadd.npz", "low_rank_circuit": "modadd.npz"}
KEEPS_NOTHING = {"attention"}  # a fixed pattern keeps 0 of the head's free weights


@pytest.mark.parametrize("kind", sorted(UNITS))
def test_each_half_runs_on_its_kind(kind, tmp_path):
    """A spec of each kind reads, materialises exactly its declared arrays, and has a description,
    degrees of freedom and components from its float half."""
    import hashlib

    def sha(p):
        return hashlib.sha256(p.read_bytes()).hexdigest()

    assert set(ENTRIES) == set(UNITS), "add an example entry for the new kind"
    m, pert = MODELS / GRAPH_MODEL.get(kind, "tiny_mlp.npz"), MODELS / "tiny_mlp_perturbed.npz"
    entry = ENTRIES[kind].format(perturbed=pert, psha=sha(pert), sub=MODELS / "tiny_replace_sub.npz", ssha=sha(MODELS / "tiny_replace_sub.npz"),
                                 sae=MODELS / "resmlp_sae.npz", asha=sha(MODELS / "resmlp_sae.npz"), tc=MODELS / "resmlp_transcoder.npz",
                                 tsha=sha(MODELS / "resmlp_transcoder.npz")) if "path" in ENTRIES[kind] else ENTRIES[kind]
    path = tmp_path / "s.yaml"
    path.write_text(SPEC.format(model=m, sha=sha(m), transform=entry))
    spec = read_spec(path)
    f = read_model(spec.model.path, spec.model.sha256)
    (t,) = spec.explanation
    assert unit(t) is UNITS[kind] and UNITS[kind].graph in ((kind in GRAPH_MODEL), None)  # None: both kinds of model
    arrays = materialize(spec, f)
    assert sorted(arrays) == sorted(f"explanation.0.{n}" for n in UNITS[kind].arrays) if is_float(t) else arrays == {}
    assert all(np.all(np.isfinite(v)) for v in arrays.values())
    kept, full = half(t).dof(t, f)
    assert 0 < kept <= full or (kind in KEEPS_NOTHING and kept == 0 < full), (kept, full)
    text = half(t).describe(t, f.widths)
    assert text and (kind in text or "g is a second model" in text or t.kind in text)
    for label, comp in half(t).components(spec, 0, t, f):
        assert label and len(comp) == 1
