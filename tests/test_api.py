"""The Python API: in-memory models to a checked verdict, the one JSON shape (validated against
docs/result.schema.json), the Status table, and the bytes `certify verify` re-reads."""

import json
from fractions import Fraction
from types import SimpleNamespace

import jsonschema
import numpy as np
import pytest

import certify
from certify.api import dense_layers, spec_path, write_spec
from certify.checker.model import read_model
from certify.cli import main
from certify.status import Status, worst

from .conftest import ROOT, SPECS, shipped_text

SCHEMA = json.loads((ROOT / "docs" / "result.schema.json").read_text())


def mlp(seed=0, widths=(4, 12, 3)):
    """A small ReLU MLP as (W (out, in), b) pairs, float32 like a trained JAX model's."""
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(o, i)).astype(np.float32) / np.sqrt(i), rng.normal(size=o).astype(np.float32) / 10)
            for i, o in zip(widths, widths[1:])]


def spec_of(model, tolerance=2, keep=range(8)):
    return {"model": model, "input": {"box": {"lower": -1, "upper": 1}},
            "explanation": [{"prune": {"layer": 1, "keep": list(keep), "fill": "zero"}}],
            "property": {"deviation": "linf", "tolerance": tolerance}}


def forward(layers, x):
    for i, (w, b) in enumerate(layers):
        x = np.asarray(w, np.float64) @ x + np.asarray(b, np.float64)
        x = np.maximum(x, 0) if i < len(layers) - 1 else x
    return x


def test_five_lines_from_an_in_memory_jax_mlp_to_a_checked_verdict(tmp_path, monkeypatch, capsys):
    """The notebook path of docs/api.md: a JAX MLP in memory, pruned, checked; then `certify verify`
    re-reads the saved bytes and agrees; tampering with them is caught."""
    import jax
    import jax.numpy as jnp

    monkeypatch.chdir(tmp_path)
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    params = [(jax.random.normal(k1, (12, 4)) / 2, jnp.zeros(12)), (jax.random.normal(k2, (3, 12)) / 4, jnp.zeros(3))]
    outcome = certify.check(spec_of(params, tolerance=3))
    assert outcome.status is Status.CERTIFIED and outcome.verdict is certify.Verdict.CERTIFIED
    assert outcome.lower <= outcome.bound <= 3 and outcome.bound == outcome.check.bound
    assert outcome.witness_float == [float(v) for v in outcome.witness] and len(outcome.witness) == 4
    # the witness's deviation, recomputed in float64 from the in-memory weights, is the exact one
    pruned = [(np.asarray(params[0][0]), np.asarray(params[0][1])), (np.asarray(params[1][0]).copy(), params[1][1])]
    pruned[1][0][:, 8:] = 0
    x = np.array(outcome.witness_float)
    assert abs(np.max(np.abs(forward(params, x) - forward(pruned, x))) - float(outcome.lower)) < 1e-5
    jsonschema.validate(outcome.to_json(), SCHEMA)
    assert "CERTIFIED" in outcome._repr_html_() and "<script" not in outcome._repr_html_()

    # the spec names the saved model by its sha256; the checker alone re-reads those bytes
    spec = certify.read_spec(outcome.spec.path)
    assert spec.model.path.parent == outcome.certificate.resolve().parent
    assert read_model(spec.model.path, spec.model.sha256).widths == (4, 12, 3)
    assert main(["verify", str(outcome.spec.path), str(outcome.certificate), "--json"]) == 0
    verified = json.loads(capsys.readouterr().out)
    jsonschema.validate(verified, SCHEMA)
    assert set(verified) == set(outcome.to_json())  # one shape for check and verify
    assert (verified["certified_upper"], verified["attained_lower"]) == (outcome.to_json()["certified_upper"],
                                                                         outcome.to_json()["attained_lower"])
    assert certify.verify(outcome).verdict is certify.Verdict.CERTIFIED
    data = bytearray(spec.model.path.read_bytes())
    data[-30] ^= 1
    spec.model.path.write_bytes(bytes(data))
    with pytest.raises(certify.BadInput, match="sha256"):
        certify.verify(outcome)


def test_every_in_memory_form_saves_the_same_weights(tmp_path):
    """(W, b) pairs, {weights, biases}, a Flax params pytree (kernels (in, out)), an Equinox-style module
    and an ONNX ModelProto all name one network; the saved file holds exactly its float32 weights."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    layers = mlp(1)
    flax = {"params": {f"Dense_{i}": {"kernel": w.T, "bias": b} for i, (w, b) in reversed(list(enumerate(layers)))}}
    eqx = SimpleNamespace(layers=[SimpleNamespace(weight=w, bias=b) for w, b in layers])
    nodes, inits, prev = [], [], "x"
    for i, (w, b) in enumerate(layers):
        inits += [numpy_helper.from_array(w.T.copy(), f"W{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Gemm", [prev, f"W{i}", f"b{i}"], [f"z{i}"]))
        prev = f"z{i}"
        if i < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [prev], [f"a{i}"]))
            prev = f"a{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 3])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    forms = {"pairs": layers, "dict": {"weights": [w for w, _ in layers], "biases": [b for _, b in layers]},
             "flax": flax, "equinox": eqx, "onnx": proto}
    for name, model in forms.items():
        path = write_spec(spec_of(model), tmp_path / name, name="s")
        spec = certify.read_spec(path)
        f = read_model(spec.model.path, spec.model.sha256)
        got = [(np.array(d.weight, np.float64), np.array(d.bias, np.float64)) for d in f.dense]
        assert len(got) == 2, name
        for (w, b), (gw, gb) in zip(layers, got):
            assert np.array_equal(gw, w.astype(np.float64)) and np.array_equal(gb, b.astype(np.float64)), name


def test_text_dict_and_spec_forms_and_levels(tmp_path, monkeypatch):
    """YAML text and dicts are written as spec files (relative paths: the folder can move); a Spec keeps its level."""
    monkeypatch.chdir(tmp_path)
    text = shipped_text()
    path, level = spec_path(text)
    assert level is None and certify.read_spec(path).model.sha256 == certify.read_spec(SPECS / "tiny_prune.yaml").model.sha256
    assert spec_path(SPECS / "tiny_prune.yaml") == (SPECS / "tiny_prune.yaml", None)
    spec = certify.read_spec(SPECS / "toy_clusters.yaml")
    assert spec_path(spec.at_level("merge4")) == (spec.path, "merge4")
    moved = write_spec(spec_of(mlp(2)), tmp_path / "a", name="m")
    (tmp_path / "a").rename(tmp_path / "b")
    assert certify.read_spec(tmp_path / "b" / "m.yaml").model.path.parent == (tmp_path / "b").resolve()
    with pytest.raises(certify.BadInput, match="not a spec"):
        spec_path(["not", "a", "spec"])


def test_bad_in_memory_models_are_one_line_bad_input(tmp_path):
    w, b = mlp(3)[0]
    with pytest.raises(certify.BadInput, match=r"layer 1: weight \(12, 4\) and bias \(3,\) do not fit"):
        dense_layers([(w, b[:3])])
    with pytest.raises(certify.BadInput, match="layer 2: takes 5 inputs but layer 1 gives 12"):
        dense_layers([(w, b), (np.ones((3, 5)), np.ones(3))])
    assert dense_layers({"path": "m.npz", "sha256": "0" * 64}) is None  # a reference, not a model

    with pytest.raises(certify.BadInput, match="activation: is 'tanh'; certify reads dense layers with ReLU"):
        dense_layers(SimpleNamespace(layers=[SimpleNamespace(weight=w, bias=b)], activation=np.tanh))
    with pytest.raises(certify.BadInput, match="final_activation: is '_relu'"):
        dense_layers(SimpleNamespace(layers=[SimpleNamespace(weight=w, bias=b)], final_activation=_relu))


def _relu(x):
    return np.maximum(x, 0)


def test_real_flax_and_equinox_models_read_as_their_weights(tmp_path):
    """certify[flax] and Equinox: a flax.linen MLP's params and an eqx.nn.MLP (its default anonymous identity
    as final activation) save exactly their weights; an eqx.nn.MLP with tanh is refused."""
    jax = pytest.importorskip("jax")
    nn = pytest.importorskip("flax.linen")
    eqx = pytest.importorskip("equinox")

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Dense(12)(x))
            return nn.Dense(3)(x)

    class Inside(nn.Module):  # Dense(3) is created first, so it is named Dense_0: the names do not follow the data
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(nn.relu(nn.Dense(12)(x)))

    params = MLP().init(jax.random.PRNGKey(0), np.zeros((1, 4), np.float32))
    with pytest.raises(certify.BadInput, match="layer 2: takes 4 inputs but layer 1 gives 3; check the order"):
        dense_layers(Inside().init(jax.random.PRNGKey(0), np.zeros((1, 4), np.float32)))  # refused, never misread
    dense = params["params"]
    flax_layers = [(np.asarray(dense[k]["kernel"]).T, np.asarray(dense[k]["bias"])) for k in ("Dense_0", "Dense_1")]
    mlp = eqx.nn.MLP(4, 3, 12, 1, key=jax.random.PRNGKey(1))
    eqx_layers = [(np.asarray(l.weight), np.asarray(l.bias)) for l in mlp.layers]
    for model, layers in ((params, flax_layers), (mlp, eqx_layers)):
        w, b = dense_layers(model)
        assert all(np.array_equal(x, y) for x, y in zip(w + b, [l[0] for l in layers] + [l[1] for l in layers]))
    with pytest.raises(certify.BadInput, match="activation: is 'tanh'"):
        dense_layers(eqx.nn.MLP(4, 3, 12, 1, activation=jax.numpy.tanh, key=jax.random.PRNGKey(1)))


def test_status_carries_the_exit_code_table():
    assert [(s.value, s.exit_code, s.junit) for s in Status] == [
        ("CERTIFIED", 0, "pass"), ("UNKNOWN", 1, "failure"), ("VIOLATED", 1, "failure"), ("BAD INPUT", 2, "error"),
        ("INTERNAL ERROR", 4, "error"), ("MISSING", 3, "error"), ("REJECTED", 3, "error")]
    assert all(Status.of(v).value == v.value for v in certify.Verdict)
    assert worst([]) is Status.CERTIFIED and worst(["UNKNOWN", "VIOLATED"]) is Status.VIOLATED
    assert worst([Status.INTERNAL_ERROR, Status.REJECTED, Status.BAD_INPUT]).exit_code == 3
    assert Status.BAD_INPUT == "BAD INPUT" and f"{Status.MISSING}" == "MISSING"


def test_cli_json_of_a_shipped_spec_matches_the_schema(tmp_path, capsys):
    """`certify verify --json` of a shipped certificate, and a bad input, in the documented shape."""
    assert main(["verify", str(SPECS / "tiny_prune.yaml"), str(ROOT / "proofs" / "tiny_prune.cert.json"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    jsonschema.validate(out, SCHEMA)
    assert out["status"] == "CERTIFIED" and out["exit_code"] == 0 and Fraction(out["certified_upper"]) <= 3
    from certify.status import failed_json

    jsonschema.validate(failed_json("x.yaml", "x.yaml: bad", Status.BAD_INPUT), SCHEMA)


def test_report_and_verify_take_the_shipped_spec(tmp_path):
    """certify.report writes the audit report of `certify report`; certify.verify takes a path or a Spec."""
    spec = certify.read_spec(SPECS / "tiny_prune.yaml")
    assert certify.verify(spec, ROOT / "proofs" / "tiny_prune.cert.json").verdict is certify.Verdict.CERTIFIED
    written = certify.report(SPECS / "tiny_prune.yaml", html=tmp_path / "r.html", md=tmp_path / "r.md")
    assert written == [tmp_path / "r.html", tmp_path / "r.md"]
    assert "CERTIFIED" in (tmp_path / "r.html").read_text() and "CERTIFIED" in (tmp_path / "r.md").read_text()
    with pytest.raises(certify.BadInput, match="certificate file not found"):
        certify.verify(spec, tmp_path / "none.cert.json")


def test_check_json_lists_bad_input_in_the_same_shape(tmp_path, monkeypatch, capsys):
    """`certify check A B --json` prints one object per spec, a bad one included (status BAD INPUT, its error line)."""
    import shutil

    (tmp_path / "specs").mkdir()
    shutil.copytree(ROOT / "models", tmp_path / "models", ignore=shutil.ignore_patterns("*.py", "toy_*", "digits_*"))
    shutil.copy(SPECS / "tiny_prune.yaml", tmp_path / "specs")
    (tmp_path / "specs" / "bad.yaml").write_text("version: 2\n")
    monkeypatch.chdir(tmp_path)
    assert main(["check", "specs/tiny_prune.yaml", "specs/bad.yaml", "--json", "--method", "crown"]) == 2
    out = json.loads(capsys.readouterr().out)
    for r in out:
        jsonschema.validate(r, SCHEMA)
    assert [(r["spec"], r["status"], r["exit_code"]) for r in out] == [
        ("specs/tiny_prune.yaml", "CERTIFIED", 0), ("specs/bad.yaml", "BAD INPUT", 2)]
    assert out[1]["error"].endswith("bad.yaml:1: model: missing; add `model:`")


def test_from_torch_gives_a_model_certify_reads_exactly(tmp_path, monkeypatch):
    """certify[torch]: a torch MLP exported to ONNX in memory reads as the same float32 weights and is checked."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 12), torch.nn.ReLU(), torch.nn.Linear(12, 3))
    proto = certify.from_torch(net, torch.zeros(1, 4))
    assert net.training  # the export does not leave the module in eval mode
    path = write_spec(spec_of(proto), tmp_path / "t", name="t")
    spec = certify.read_spec(path)
    f = read_model(spec.model.path, spec.model.sha256)
    for d, layer in zip(f.dense, (net[0], net[2])):
        assert np.array_equal(np.array(d.weight, np.float64), layer.weight.detach().numpy().astype(np.float64))
        assert np.array_equal(np.array(d.bias, np.float64), layer.bias.detach().numpy().astype(np.float64))
    assert certify.check(path, method="crown").status in (Status.CERTIFIED, Status.VIOLATED, Status.UNKNOWN)


def test_from_torch_without_torch_is_one_line_bad_input(monkeypatch):
    import builtins

    real = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name=name))
                        if name == "torch" else real(name, *a, **k))
    with pytest.raises(certify.BadInput, match=r"torch is not installed; pip install 'certify\[torch\]'"):
        certify.from_torch(object(), None)


def test_a_rejected_certificate_in_the_json_shape(tmp_path, capsys):
    cert = json.loads((ROOT / "proofs" / "tiny_prune.cert.json").read_text())
    cert["claim"]["bound"] = "1/1000"  # far below anything provable
    (tmp_path / "bad.cert.json").write_text(json.dumps(cert))
    assert main(["verify", str(SPECS / "tiny_prune.yaml"), str(tmp_path / "bad.cert.json"), "--json"]) == 3
    out = json.loads(capsys.readouterr().out)
    jsonschema.validate(out, SCHEMA)
    assert (out["status"], out["verdict"], out["exit_code"], out["certified_upper"]) == ("REJECTED", "REJECTED", 3, None)
    assert out["checker"]["reason"]


def test_report_of_a_levels_spec_with_a_missing_level_bounds_nothing(tmp_path, monkeypatch):
    """Without --run, a missing level certificate is reported MISSING (exit 3): nothing is bounded or written,
    and the scale flow is drawn from the levels already checked, each checked once."""
    import shutil

    import certify.checker.check as checker

    (tmp_path / "specs").mkdir()
    (tmp_path / "proofs").mkdir()
    shutil.copytree(ROOT / "models", tmp_path / "models", ignore=shutil.ignore_patterns("*.py"))
    shutil.copy(SPECS / "toy_tiers.yaml", tmp_path / "specs")
    for level in ("keep6", "keep5", "keep4", "keep2", "keep1"):  # keep3 missing
        shutil.copy(ROOT / "proofs" / f"toy_tiers.{level}.cert.json", tmp_path / "proofs")
    monkeypatch.chdir(tmp_path)
    calls = []
    real = checker.check_certificate
    import sys

    collect = sys.modules["certify.report.collect"]  # (certify.report names the function, not the package)
    monkeypatch.setattr(collect, "check_certificate", lambda *a: calls.append(a) or real(*a))
    before = sorted(p.name for p in (tmp_path / "proofs").iterdir())
    written = certify.report("specs/toy_tiers.yaml", html=tmp_path / "r.html")
    assert sorted(p.name for p in (tmp_path / "proofs").iterdir()) == before
    assert len(calls) == 5  # each present level checked once
    page = written[0].read_text()
    assert 'class="verdict v-MISSING"' in page and 'alt="scale-flow plot"' in page


def _resmlp_sae_spec(sae, tolerance=8, sha256=None):
    """specs/resmlp_sae.yaml as a dict (absolute paths), its SAE given as `sae` (and `sha256`), five features kept."""
    return {"model": {"path": str(ROOT / "models" / "resmlp.npz"),
                      "sha256": "dea5c62348e8fefd8ffbf8543701c12e41ecc7e92eae13006bc880fb25b4be5b"},
            "input": {"linf_ball": {"center": str(ROOT / "models" / "digits_x0.npy"), "radius": "1/255"}, "clip": [0, 1]},
            "explanation": [{"sae": {"site": "block1", "path": sae, "features": [0, 3, 5, 7, 11],
                                     **({"sha256": sha256} if sha256 else {})}}],
            "property": {"deviation": "linf", "tolerance": tolerance}}


def test_an_in_memory_sae_is_written_pinned_and_checked_as_its_file(tmp_path):
    """An SAE held in memory (an SAELens-like object with float32 tensors, or a dict of arrays) is written as
    an .npz pinned by its sha256, reads back as the same exact weights, and gives the bound the file gives."""
    with np.load(ROOT / "models" / "resmlp_sae.npz") as z:
        arrays = {k: z[k] for k in z.files}
    obj = SimpleNamespace(cfg=SimpleNamespace(architecture=lambda: "standard"), **{k: v.astype(np.float32) for k, v in arrays.items()})
    as_obj = certify.check(_resmlp_sae_spec(obj), method="crown", out=tmp_path / "o" / "x.cert.json")
    as_dict = certify.check(_resmlp_sae_spec(arrays), method="crown", out=tmp_path / "d" / "x.cert.json")
    sha = "5f2a67be6d0b090b0a560938a899d019dc42fbfaafdd95fcd28dd783512de1fa"
    as_file = certify.check(_resmlp_sae_spec(str(ROOT / "models" / "resmlp_sae.npz"), sha256=sha), method="crown",
                            out=tmp_path / "f" / "x.cert.json")
    text = as_dict.spec.path.read_text()
    assert "sha256" in text.split("sae:")[1] and "features: [0, 3, 5, 7, 11]" in text
    for outcome, want in ((as_dict, arrays), (as_obj, {k: v.astype(np.float32) for k, v in arrays.items()})):
        written = np.load(outcome.spec.path.parent / yaml_path(outcome.spec.path.read_text()))
        assert {k: written[k].tolist() for k in written.files} == {k: v.astype(np.float64).tolist() for k, v in want.items()}
    assert as_dict.status is as_file.status and as_dict.bound == as_file.bound and as_dict.lower == as_file.lower
    assert as_obj.bound != as_file.bound  # (float32 copies: another dictionary, another bound)
    assert certify.verify(as_obj).verdict == as_obj.verdict


def yaml_path(text):
    import yaml
    return yaml.safe_load(text)["explanation"][0]["sae"]["path"]


def test_in_memory_dictionaries_that_certify_does_not_model_are_refused(tmp_path):
    with np.load(ROOT / "models" / "resmlp_sae.npz") as z:
        arrays = {k: z[k] for k in z.files}
    topk = SimpleNamespace(cfg=SimpleNamespace(architecture="topk"), **arrays)
    with pytest.raises(certify.BadInput, match="architecture 'topk' is not supported"):
        certify.check(_resmlp_sae_spec(topk), method="crown", out=tmp_path / "a" / "x.cert.json")
    logthr = SimpleNamespace(log_threshold=np.zeros(64), **arrays)  # JumpReLU by log thresholds: the reader refuses it
    with pytest.raises(certify.BadInput, match="log_threshold"):
        certify.check(_resmlp_sae_spec(logthr), method="crown", out=tmp_path / "b" / "x.cert.json")
    with pytest.raises(certify.BadInput, match="holds <U1 values|holds"):
        certify.check(_resmlp_sae_spec({**arrays, "b_dec": np.array(["x"] * 32)}), method="crown", out=tmp_path / "c" / "x.cert.json")
