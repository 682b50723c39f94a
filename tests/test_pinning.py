"""A certificate never redefines g: a mean fill is re-derived exactly by the checker, and the float
arrays of low_rank, pca and k-means merge are pinned by the spec (or flagged, and refused by --strict).

The forgery of issue 15: a certificate made for a nearby g (fill constants within 2e-4 of the mean,
perturbed SVD factors, other principal components, another clustering) and presented for the spec's
g must never be CERTIFIED, with or without the forged arrays attached.
"""

import hashlib
import json
import math
import os
import re
from fractions import Fraction

import numpy as np
import pytest

from certify.checker import Verdict, check_certificate
from certify.checker.model import read_model
from certify.checker.network import FLOAT_ARRAYS, domain_points, exact_layers, input_box, mean_activations
from certify.checker.spec import read_spec
from certify.cli import main
from certify.engine import run_check
from certify.model import save_arrays
from certify.pin import pin_spec

from .conftest import ROOT

MODELS = ROOT / "models"
DIGITS = "digits_mlp.npz"
TINY = "tiny_mlp.npz"


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_spec(path, transform: str, *, model=TINY, tolerance="3", domain="box: {lower: -1, upper: 1}"):
    m = MODELS / model
    path.write_text(f"version: 1\nmodel: {{path: {m}, sha256: \"{sha(m)}\"}}\ninput:\n  {domain}\n"
                    f"explanation:\n  - {transform}\nproperty:\n  deviation: linf\n  tolerance: \"{tolerance}\"\n")
    return path


DIGITS_BALL = f"linf_ball: {{center: {MODELS / 'digits_x0.npy'}, radius: \"4/255\"}}\n  clip: [0, 1]"


def forge(cert_path, spec_path, tmp_path, arrays: dict | None) -> object:
    """The certificate at cert_path, relabelled as one for spec_path, optionally carrying `arrays` as its
    materialised arrays (what an attacker would attach): the checker's verdict on it."""
    cert = json.loads(cert_path.read_text())
    cert["spec_sha256"] = sha(spec_path)
    cert["materialized"] = None
    if arrays is not None:
        gfile = tmp_path / "forged.g.npz"
        save_arrays(gfile, arrays)
        cert["materialized"] = {"path": gfile.name, "sha256": sha(gfile)}
    out = tmp_path / "forged.cert.json"
    out.write_text(json.dumps(cert))
    return check_certificate(spec_path, out)


# --------------------------------------------------------------------------- mean fill: exact


def test_mean_fill_is_the_exact_mean_over_the_documented_sequence():
    """The checker's mean equals a float64 re-computation over the same points (sequence re-derived here
    from its documented formula, independently of domain_points)."""
    spec = read_spec(ROOT / "specs" / "digits_prune.yaml")
    f = read_model(spec.model.path, spec.model.sha256)
    lo, up = input_box(spec, f)
    n, seed = 200, 3
    primes = [p for p in range(2, 1000) if all(p % q for q in range(2, int(p ** 0.5) + 1))][:len(lo)]
    t = np.array([[(((1 << 31) + i * math.isqrt(p << 64)) % (1 << 32)) / 2.0 ** 32 for p in primes]
                  for i in range(seed * n + 1, seed * n + n + 1)])
    lo_f, up_f = np.array([float(v) for v in lo]), np.array([float(v) for v in up])
    x = lo_f + (up_f - lo_f) * t
    rows, den = domain_points(lo, up, n, seed)
    assert np.allclose(np.array([[v / den for v in r] for r in rows], dtype=float), x, atol=1e-15, rtol=0)
    assert all(l <= Fraction(v, den) <= u for r in rows for v, l, u in zip(r, lo, up))
    (w, b), = exact_layers(f)[:1]
    h = np.maximum(x @ np.array(w, float).T + np.array(b, float), 0)
    exact = mean_activations(f, exact_layers(f)[:1], (lo, up), list(range(len(b))), n, seed)
    assert np.allclose([float(v) for v in exact], h.mean(axis=0), atol=1e-12)
    assert len({p for p in (domain_points(lo, up, n, 0)[0][0][0], domain_points(lo, up, n, 1)[0][0][0])}) == 2  # seeds differ


def test_mean_fill_forgery_is_rejected(tmp_path):
    """Issue 15's forgery: fill constants within 2e-4 of the mean, certified, then relabelled as the mean."""
    keep = list(range(24))
    mean = write_spec(tmp_path / "mean.yaml", f"prune: {{layer: 1, keep: {keep}, fill: mean}}", model=DIGITS,
                      tolerance="1", domain=DIGITS_BALL)
    spec = read_spec(mean)
    f = read_model(spec.model.path, spec.model.sha256)
    true_mean = mean_activations(f, exact_layers(f)[:1], input_box(spec, f), list(range(24, 32)), 1000, 0)
    near = [float(m + Fraction(2, 10000)) for m in true_mean]
    const = write_spec(tmp_path / "const.yaml", f"prune: {{layer: 1, keep: {keep}, fill: {{constant: {near}}}}}",
                       model=DIGITS, tolerance="1", domain=DIGITS_BALL)
    assert run_check(const, tmp_path / "const.cert.json", "crown").verdict is Verdict.CERTIFIED
    for attached in (None, {"explanation.0.fill": np.array(near)}):
        assert forge(tmp_path / "const.cert.json", mean, tmp_path, attached).verdict is Verdict.REJECTED
    honest = run_check(mean, tmp_path / "mean.cert.json", "crown")  # the engine builds the same exact mean
    assert honest.verdict is Verdict.CERTIFIED and honest.check.unpinned == ()
    assert json.loads((tmp_path / "mean.cert.json").read_text())["materialized"] is None


# --------------------------------------------------------------------------- pinned float arrays

TRANSFORMS = {  # kind -> (transform text, forged arrays from the genuine ones: each defines another g)
    "low_rank": ("low_rank: {layer: 2, rank: 3}", lambda a: {"U": a["U"] * 1.01, "V": a["V"]}),
    "pca": ("pca: {layer: 1, components: 3}", lambda a: {"P": a["P"] * 1.01, "mean": a["mean"]}),
    "merge": ("merge: {layer: 1, groups: 3}", lambda a: {"labels": np.roll(a["labels"], 1)}),
    "low_rank_circuit": ("low_rank_circuit: {head: blocks.1.attn.h1, circuit: ov, rank: 3}", lambda a: {"U": a["U"] * 1.01, "V": a["V"]}),
}
TOKENS = "tokens: {vocab: 14, length: 3, allowed: [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [13]]}"
WHERE = {"low_rank_circuit": {"model": "modadd.npz", "domain": TOKENS, "tolerance": "5000"}}  # graph kinds: their model and domain
PINNED_ONLY = {"low_rank_circuit"}  # graph kinds whose arrays the spec must pin (the graph engine materialises none)


def test_every_float_transform_has_a_forgery_test():
    assert set(TRANSFORMS) == set(FLOAT_ARRAYS)


@pytest.fixture(params=sorted(TRANSFORMS))
def pinned(request, tmp_path):
    """(kind, pinned spec, its genuine arrays, an unpinned copy of the spec)."""
    kind = request.param
    text, _ = TRANSFORMS[kind]
    loose = write_spec(tmp_path / "loose.yaml", text, **WHERE.get(kind, {}))
    spec = write_spec(tmp_path / "pinned.yaml", text, **WHERE.get(kind, {}))
    (pin,) = pin_spec(spec)
    assert pin.key == f"explanation[0].{kind}" and read_spec(spec).unpinned() == []
    arrays = dict(np.load(pin.path))
    return kind, spec, arrays, loose


def test_pinned_spec_certifies_without_certificate_arrays(pinned, tmp_path):
    kind, spec, _, _ = pinned
    o = run_check(spec, tmp_path / "p.cert.json", "crown")
    assert o.verdict is not Verdict.REJECTED, o.check.reason
    assert json.loads((tmp_path / "p.cert.json").read_text())["materialized"] is None
    assert o.check.unpinned == () and o.pins == ()
    assert main(["verify", "--strict", str(spec), str(tmp_path / "p.cert.json")]) in (0, 1)


def test_forged_arrays_are_rejected_for_a_pinned_spec(pinned, tmp_path):
    """A certificate made for other arrays (with or without them attached) never certifies the pinned g."""
    kind, spec, arrays, _ = pinned
    forged = TRANSFORMS[kind][1](arrays)
    other = tmp_path / "other" / "spec.yaml"
    other.parent.mkdir()
    other.write_text(spec.read_text())
    (other.parent / "pinned").mkdir()
    name = next((spec.parent / "pinned").iterdir()).name
    save_arrays(other.parent / "pinned" / name, forged)
    other.write_text(spec.read_text().replace(sha(spec.parent / "pinned" / name), sha(other.parent / "pinned" / name)))
    made = run_check(other, tmp_path / "other.cert.json", "crown")
    assert made.verdict is not Verdict.REJECTED
    keys = {f"explanation.0.{n}": v for n, v in forged.items()}
    for attached in (None, keys):
        r = forge(tmp_path / "other.cert.json", spec, tmp_path, attached)
        assert r.verdict is Verdict.REJECTED, (kind, attached is not None)


def test_unpinned_spec_is_flagged_and_refused_under_strict(pinned, tmp_path, capsys):
    """Unpinned, g's arrays are the certificate's: the output says so with their sha256, `--strict`
    refuses the spec (exit 2, one line), and `certify check` writes pin-ready files and the line to add."""
    kind, _, _, loose = pinned
    cert = tmp_path / "loose.cert.json"
    if kind in PINNED_ONLY:
        assert main(["check", str(loose), "--out", str(cert)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"explanation[0].{kind}.arrays" in err[0] and "certify pin" in err[0]
        return
    code = main(["check", str(loose), "--out", str(cert), "--method", "crown", "--no-cache"])
    out = capsys.readouterr().out
    assert code in (0, 1) and "NOT PINNED" in out and f"explanation[0].{kind}" in out
    gsha = json.loads(cert.read_text())["materialized"]["sha256"]
    assert gsha[:16] in out and "arrays: {path:" in out
    ready = tmp_path / f"loose.0.{kind}.npz"
    assert ready.is_file() and sha(ready) in out
    assert main(["verify", str(loose), str(cert), "--json"]) in (0, 1)
    data = json.loads(capsys.readouterr().out)
    assert data["g_arrays"] == {"pinned": False, "unpinned": [f"explanation[0].{kind}"], "certificate_arrays_sha256": gsha}
    for argv in (["verify", "--strict", str(loose), str(cert)], ["check", "--strict", str(loose), "--out", str(tmp_path / "s.cert.json")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "not pinned" in err[0] and f"explanation[0].{kind}" in err[0] and "certify pin" in err[0]
    assert not (tmp_path / "s.cert.json").exists()


def test_pinned_file_tampering_is_bad_input(pinned, tmp_path, capsys):
    kind, spec, arrays, _ = pinned
    cert = tmp_path / "p.cert.json"
    assert run_check(spec, cert, "crown").verdict is not Verdict.REJECTED
    path = next((spec.parent / "pinned").iterdir())
    data = bytearray(path.read_bytes())
    save_arrays(path, {**arrays, **TRANSFORMS[kind][1](arrays)})
    for argv in (["verify", str(spec), str(cert)], ["check", str(spec), "--out", str(tmp_path / "q.cert.json")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"explanation[0].{kind}.arrays.sha256" in err[0] and "sha256 mismatch" in err[0]
    path.write_bytes(bytes(data))
    name = next(iter(arrays))
    save_arrays(path, {k: v for k, v in arrays.items() if k != name})  # a missing array, hash updated
    pinned_sha = re.search(r'arrays: \{path: [^,]+, sha256: "([0-9a-f]{64})"', spec.read_text()).group(1)
    spec.write_text(spec.read_text().replace(pinned_sha, sha(path)))
    assert main(["check", str(spec), "--out", str(tmp_path / "r.cert.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"has no array {name!r}" in err[0] and f"explanation[0].{kind}.arrays.path" in err[0]


def test_certificate_arrays_for_a_pinned_or_exact_transform_are_rejected(tmp_path):
    """Materialised arrays nobody reads (a fill for the exact mean, U for a pinned low_rank) reject."""
    spec = write_spec(tmp_path / "z.yaml", "prune: {layer: 1, keep: [0, 2], fill: zero}")
    cert = tmp_path / "z.cert.json"
    assert run_check(spec, cert, "crown").verdict is Verdict.CERTIFIED
    r = forge(cert, spec, tmp_path, {"explanation.0.fill": np.zeros(6)})
    assert r.verdict is Verdict.REJECTED and "do not define g" in r.reason


def test_pin_rewrites_block_and_flow_style_specs_keeping_comments(tmp_path):
    m = MODELS / TINY
    spec = tmp_path / "block.yaml"
    spec.write_text(f"# a comment that must survive\nversion: 1\nmodel: {{path: {m}, sha256: \"{sha(m)}\"}}\n"
                    "input:\n  box: {lower: -1, upper: 1}\nlevels:\n  - name: a\n    explanation:\n"
                    "      - low_rank:\n          layer: 2\n          rank: 2   # keep two\n"
                    "      - pca: {layer: 1, components: 2}\n"
                    "  - {name: b, explanation: [{merge: {layer: 1, groups: 2}}]}\n"
                    "property: {deviation: linf, tolerance: 3}\n")
    pins = pin_spec(spec, tmp_path / "arrays")
    assert [p.key for p in pins] == ["levels[0].explanation[0].low_rank", "levels[0].explanation[1].pca",
                                     "levels[1].explanation[0].merge"]
    text = spec.read_text()
    assert text.startswith("# a comment that must survive") and "# keep two" in text
    s = read_spec(spec)
    assert s.unpinned() == [] and s.levels[0].explanation[0].arrays.path == (tmp_path / "arrays" / "block.a.0.low_rank.npz")
    assert pin_spec(spec) == []  # nothing left to pin
    for lv in ("a", "b"):
        assert run_check(spec, tmp_path / f"{lv}.cert.json", "crown", lv).verdict is not Verdict.REJECTED


def test_symlink_loop_is_one_line_of_bad_input(tmp_path, capsys):
    loop = tmp_path / "loop.npz"
    os.symlink(loop, loop)
    spec = tmp_path / "s.yaml"
    spec.write_text(f"version: 1\nmodel: {{path: {loop}, sha256: \"{'0' * 64}\"}}\ninput:\n  box: {{lower: -1, upper: 1}}\n"
                    "explanation:\n  - prune: {layer: 1, keep: [0]}\nproperty: {deviation: linf, tolerance: 3}\n")
    cert = tmp_path / "c.cert.json"
    cert.write_text("{}")
    for argv in (["check", str(spec)], ["verify", str(spec), str(cert)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "model.path" in err[0] and "cannot be resolved" in err[0], err


def test_tiny_tolerance_says_too_small(tmp_path, capsys):
    spec = write_spec(tmp_path / "t.yaml", "prune: {layer: 1, keep: [0]}", tolerance="1e-400")
    assert main(["check", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "too small to write exactly" in err and "property.tolerance" in err and "1e300" not in err


def test_report_says_whether_g_arrays_are_pinned(tmp_path):
    loose = write_spec(tmp_path / "loose.yaml", TRANSFORMS["low_rank"][0])
    cert = tmp_path / "loose.cert.json"
    assert run_check(loose, cert, "crown").verdict is Verdict.CERTIFIED
    assert main(["report", str(loose), "--cert", str(cert), "--md", str(tmp_path / "r.md"), "--html", str(tmp_path / "r.html")]) == 0
    gsha = json.loads(cert.read_text())["materialized"]["sha256"]
    for name in ("r.md", "r.html"):
        text = (tmp_path / name).read_text()
        assert "NOT PINNED" in text and "not pinned" in text.lower() and gsha in text and "certify pin" in text, name
    pinned = write_spec(tmp_path / "pinned.yaml", TRANSFORMS["low_rank"][0])
    (pin,) = pin_spec(pinned)
    assert run_check(pinned, tmp_path / "p.cert.json", "crown").verdict is Verdict.CERTIFIED
    assert main(["report", str(pinned), "--cert", str(tmp_path / "p.cert.json"), "--md", str(tmp_path / "p.md")]) == 0
    text = (tmp_path / "p.md").read_text()
    assert "NOT PINNED" not in text and pin.sha256 in text and "g arrays (explanation[0].low_rank)" in text
