"""SAEs, JumpReLU, transcoders and ablations on graph models (issue 16, explanations).

Each kind: g is what the spec says (compared with a direct numpy formula), CROWN's bound contains
sampled deviations, the certificate is accepted, a tampered one is REJECTED (exit 3), and bad input
is one line (exit 2). The SAELens layout (cfg.json + sae_weights.safetensors) gives the same g as the
.npz of the same weights."""

import copy
import hashlib
import json
from fractions import Fraction

import numpy as np
import pytest
from safetensors.numpy import save_file

from certify.bounds.graph import ENGINE, crown, floats
from certify.checker import Verdict, check_certificate
from certify.checker.graph import _jump_interval, _jump_side, evaluate as exact_evaluate, joint_graph, Node
from certify.checker.model import read_model
from certify.checker.network import build_g, input_box
from certify.checker.spec import read_spec
from certify.checker.transforms import domain_points
from certify.cli import main
from certify.engine import run_check
from certify.model.graph import GraphBuilder

from .conftest import ROOT, shipped_text

D, M = 4, 5


def sha(p) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def model(tmp_path, seed=0):
    """x (3) -> embed (4) -> block = embed + down(gelu(up(LN(embed)))) -> out (2): a residual block."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder(3)
    h = b.linear("embed", "x", rng.normal(size=(D, 3)), rng.normal(size=D) * 0.3)
    u = b.unary("mlp.gelu", "gelu", b.linear("mlp.up", b.layernorm("mlp.ln", h, np.ones(D), np.zeros(D)), rng.normal(size=(6, D)), rng.normal(size=6) * 0.2))
    blk = b.add("block", h, b.linear("mlp.down", u, rng.normal(size=(D, 6)) * 0.5))
    out = b.linear("out", blk, rng.normal(size=(2, D)))
    path = tmp_path / f"m{seed}.npz"
    b.save(path, out)
    return path


def weights(seed=0, jump=False):
    rng = np.random.default_rng(seed + 10)
    w = {"W_enc": rng.normal(size=(D, M)), "b_enc": rng.normal(size=M) * 0.2, "W_dec": rng.normal(size=(M, D)) * 0.5,
         "b_dec": rng.normal(size=D) * 0.1}
    if jump:
        w["threshold"] = np.array([0.3, 0.0, -0.2, 0.6, 0.1])  # a negative threshold acts as 0 (relu first)
    return w


def saelens(folder, w, **cfg):
    folder.mkdir(exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in w.items()}, str(folder / "sae_weights.safetensors"))
    base = {"d_in": D, "d_sae": M, "architecture": "jumprelu" if "threshold" in w else "standard", "apply_b_dec_to_input": True,
            "normalize_activations": "none", "dtype": "float64", "device": "cpu"}
    (folder / "cfg.json").write_text(json.dumps({**base, **cfg}))
    return folder


def spec(tmp_path, m, entry, name="s.yaml", tolerance="1000", radius="0.4"):
    p = tmp_path / name
    p.write_text(f"version: 1\nmodel: {{path: {m}, sha256: \"{sha(m)}\"}}\ninput:\n  box: {{lower: -{radius}, upper: {radius}}}\n"
                 f"explanation:\n  - {entry}\nproperty:\n  deviation: linf\n  tolerance: \"{tolerance}\"\n")
    return p


def sae_entry(folder):
    return (f"sae: {{site: block, path: {folder}, sha256: \"{sha(folder / 'sae_weights.safetensors')}\", "
            f"cfg_sha256: \"{sha(folder / 'cfg.json')}\"}}")


def npz_entry(kind, where, path):
    return f"{kind}: {{{where}, path: {path}, sha256: \"{sha(path)}\"}}"


def values(graph, xs, free=None):
    """Every node's float64 value at the rows xs; a `free` node takes free(node) (default: its lower end)."""
    out = {"x": xs}
    for n in floats(graph):
        ins = [out[s] for s in n.inputs]
        if n.op == "free":
            out[n.name] = np.broadcast_to(free(n) if free else n.lower, (len(xs), len(n.lower)))
        elif n.op == "linear":
            out[n.name] = ins[0] @ n.weight.T + n.bias
        else:  # elementwise ops broadcast over the rows
            out[n.name] = ENGINE[n.op].eval(n, ins)
    return out


def built(path):
    s = read_spec(path)
    f = read_model(s.model.path, s.model.sha256)
    g = build_g(s, f, None)
    return s, f, g, joint_graph(f, g, None), input_box(s, f)


def sound(joint, box, n=2000, seed=0, free=None):
    """CROWN's bound contains |d| at sampled inputs (and corners of the box's first coordinates)."""
    bound, _ = crown(joint, box)
    lo, up = (np.array([float(v) for v in b]) for b in box)
    xs = np.random.default_rng(seed).uniform(lo, up, size=(n, len(lo)))
    worst = float(np.abs(values(joint, xs, free)["d"]).max())
    assert worst <= bound * (1 + 1e-9) + 1e-9, (worst, bound)
    return bound, worst


def encode(w, v, centre=True):
    pre = ((v - w["b_dec"]) if centre else v) @ w["W_enc"] + w["b_enc"]
    return np.maximum(pre, 0) * (pre > w.get("threshold", -np.inf))


# --------------------------------------------------------------------------- the jumprelu op


def test_jumprelu_lines_are_checked_exactly_at_the_jump():
    t, l, u = Fraction(1, 2), Fraction(-1), Fraction(2)
    tiny = Fraction(1, 10**12)
    assert _jump_side(t)(Fraction(2, 3), Fraction(2, 3), l, u, -1)  # chord (-1, 0)-(2, 2): above
    assert not _jump_side(t)(Fraction(2, 3), Fraction(2, 3) - tiny, l, u, -1)
    assert _jump_side(t)(Fraction(1), -t, l, u, 1)  # z - t: below, touching 0 at the jump
    assert not _jump_side(t)(Fraction(1), -t + tiny, l, u, 1)
    assert _jump_side(t)(Fraction(0), Fraction(0), l, u, 1) and not _jump_side(t)(Fraction(0), tiny, l, u, 1)
    # the right-hand limit t (value t, not attained) still binds a line from above: y = t/2 + z/2 misses it by 0
    assert _jump_side(t)(Fraction(0), u, l, u, -1) and not _jump_side(t)(Fraction(0), t - tiny, Fraction(0), Fraction(3, 4), -1)
    assert not _jump_side(t)(Fraction(0), Fraction(0), u, l, 1)  # an empty interval is refused


@pytest.mark.parametrize("seed", range(3))
def test_jumprelu_interval_and_ball_contain_the_function(seed):
    rng = np.random.default_rng(seed)
    t = [Fraction(float(v)) for v in rng.normal(size=20) * 0.5]
    lo = [Fraction(float(v)) for v in rng.normal(size=20)]
    up = [a + Fraction(float(abs(v))) for a, v in zip(lo, rng.normal(size=20))]
    node = Node("j", "jumprelu", ("x",), threshold=tuple(t))
    ilo, iup = _jump_interval(node, [(lo, up)])
    for k in range(20):
        zs = [lo[k] + (up[k] - lo[k]) * Fraction(i, 50) for i in range(51)] + [t[k]]
        ys = [z if z > t[k] else Fraction(0) for z in zs if lo[k] <= z <= up[k]]
        assert ilo[k] <= min(ys) and max(ys) <= iup[k]
    from flint import arb

    from certify.checker.graph import OPS
    for z, th in zip(lo, t):
        ball = OPS["jumprelu"].evaluate(Node("j", "jumprelu", ("x",), threshold=(th,)), [[arb(z.numerator) / z.denominator]])[0]
        assert ball.contains(arb((z if z > th else 0).numerator) / (z if z > th else Fraction(0)).denominator)


# --------------------------------------------------------------------------- SAEs: layouts, JumpReLU


def test_saelens_layout_builds_the_same_g_as_the_npz(tmp_path):
    m, w = model(tmp_path), weights()
    np.savez(tmp_path / "sae.npz", **w)
    folder = saelens(tmp_path / "sae", w)
    graphs = [built(spec(tmp_path, m, e, f"{i}.yaml"))[2] for i, e in enumerate(
        (npz_entry("sae", "site: block", tmp_path / "sae.npz"), sae_entry(folder),
         sae_entry(folder).replace(f"path: {folder}", f"path: {folder / 'sae_weights.safetensors'}")))]
    assert graphs[0].nodes == graphs[1].nodes == graphs[2].nodes


@pytest.mark.parametrize("layout", ["npz", "saelens"])
def test_jumprelu_sae_is_what_saelens_computes_and_sound(tmp_path, layout):
    m, w = model(tmp_path), weights(jump=True)
    if layout == "npz":
        np.savez(tmp_path / "sae.npz", **w)
        entry = npz_entry("sae", "site: block", tmp_path / "sae.npz")
    else:
        entry = sae_entry(saelens(tmp_path / "sae", w))
    path = spec(tmp_path, m, entry)
    s, f, g, joint, box = built(path)
    assert any(n.op == "jumprelu" for n in g.nodes)
    xs = np.random.default_rng(1).uniform(-0.4, 0.4, size=(500, 3))
    vals = values(joint, xs)
    feats = encode(w, vals["block"])  # SAELens: relu(pre) * (pre > threshold)
    assert np.allclose(vals["g0.sae.out"], feats @ w["W_dec"] + w["b_dec"], atol=1e-12)
    assert (feats > 0).any(axis=0).sum() >= 3 and (feats == 0).any()  # the jump is exercised
    sound(joint, box)
    o = run_check(path, tmp_path / "j.cert.json", "crown")
    assert o.verdict is Verdict.CERTIFIED, o.check.reason


def test_a_forged_sae_certificate_is_rejected(tmp_path):
    """A certificate made for another SAE file (a smaller bound than the spec's SAE attains) never
    certifies the spec's SAE: it is REJECTED."""
    m, w = model(tmp_path), weights(jump=True)
    a, b = saelens(tmp_path / "a", w), saelens(tmp_path / "b", {**w, "W_dec": w["W_dec"] * 0.2})
    runs = {}
    for name, folder in (("a", a), ("b", b)):
        p = spec(tmp_path, m, sae_entry(folder), f"{name}.yaml", radius="0.01")
        runs[name] = (p, run_check(p, tmp_path / f"{name}.cert.json", "crown"))
    (made, om), (target, ot) = sorted(runs.values(), key=lambda r: r[1].check.bound)
    assert om.check.bound < ot.lower, "the forgery needs a bound below what the target SAE attains"
    cert = json.loads(om.certificate.read_text())
    cert["spec_sha256"] = sha(target)
    (tmp_path / "forged.cert.json").write_text(json.dumps(cert))
    assert check_certificate(target, tmp_path / "forged.cert.json").verdict is Verdict.REJECTED


# --------------------------------------------------------------------------- transcoders


@pytest.mark.parametrize("jump", [False, True])
def test_transcoder_replaces_the_mlp_branch_and_is_sound(tmp_path, jump):
    m, w = model(tmp_path), weights(jump=jump)
    np.savez(tmp_path / "tc.npz", **w)
    path = spec(tmp_path, m, npz_entry("transcoder", "block: block", tmp_path / "tc.npz")[:-1] + ", features: [0, 2, 3]}")
    s, f, g, joint, box = built(path)
    xs = np.random.default_rng(2).uniform(-0.4, 0.4, size=(300, 3))
    vals = values(joint, xs)
    kept = np.isin(np.arange(M), [0, 2, 3])
    expect = vals["embed"] + (encode(w, vals["embed"], centre=False) * kept) @ w["W_dec"] + w["b_dec"]
    assert np.allclose(vals["g0.tc.block"], expect, atol=1e-12)
    assert "mlp.down" not in {s for n in g.nodes if n.name.startswith("g0.") for s in n.inputs}
    sound(joint, box)
    assert run_check(path, tmp_path / "t.cert.json", "crown").verdict is Verdict.CERTIFIED


def test_transcoder_levels_keep_features(tmp_path):
    m, w = model(tmp_path), weights()
    np.savez(tmp_path / "tc.npz", **w)
    entry = npz_entry("transcoder", "block: block", tmp_path / "tc.npz")
    p = tmp_path / "levels.yaml"
    levels = "\n".join(f"  - {{name: top{k}, explanation: [{{{entry[:-1]}, features: {list(range(k))}}}}}]}}" for k in (5, 3, 1))
    p.write_text(spec(tmp_path, m, entry).read_text().split("explanation:")[0] + "levels:\n" + levels
                 + "\nproperty: {deviation: linf, tolerance: 1000}\noptions: {method: crown, falsifier: {starts: 8, steps: 20}}\n")
    assert main(["flow", str(p), "--json", str(tmp_path / "f.json"), "--out-dir", str(tmp_path / "certs")]) == 0
    assert len(list((tmp_path / "certs").glob("*.cert.json"))) == 3
    flow = json.loads((tmp_path / "f.json").read_text())["flows"][0]
    assert [lv["name"] for lv in flow["levels"]] == ["top5", "top3", "top1"]
    assert all(Fraction(lv["attained_lower"]) <= Fraction(lv["certified_upper"]) for lv in flow["levels"])


# --------------------------------------------------------------------------- ablations at named values


def test_ablate_zero_constant_and_mean_fills(tmp_path):
    m = model(tmp_path)
    xs = np.random.default_rng(3).uniform(-0.4, 0.4, size=(200, 3))
    for entry, check in [
        ("ablate: {site: embed, indices: [1, 3]}", lambda v: np.allclose(v[:, [1, 3]], 0) and np.allclose(v[:, [0, 2]], vals["embed"][:, [0, 2]])),
        ("ablate: {site: embed, indices: [0, 2], fill: {constant: [0.5, -1]}}", lambda v: np.allclose(v[:, [0, 2]], [0.5, -1])),
        ("ablate: {site: embed, fill: {constant: 0.25}}", lambda v: np.allclose(v, 0.25)),
    ]:
        s, f, g, joint, box = built(spec(tmp_path, m, entry))
        vals = values(joint, xs)
        assert check(vals["g0.ablate"]), entry
        sound(joint, box)
    s, f, g, joint, box = built(spec(tmp_path, m, "ablate: {site: embed, indices: [0, 1], fill: {mean: {samples: 64, seed: 2}}}"))
    rows, den = domain_points(*box, 64, 2)
    pts = np.array([[v / den for v in r] for r in rows])
    mean = values(joint, pts)["embed"].mean(0)
    node = g.by_name["g0.ablate"]
    assert np.allclose([float(v) for v in node.shift[:2]], mean[:2], atol=1e-12) and node.shift[2:] == (0, 0)


def test_ablate_free_is_sound_over_the_free_values(tmp_path):
    m = model(tmp_path)
    path = spec(tmp_path, m, "ablate: {site: embed, indices: [0, 2], fill: free}", tolerance="1000000000")
    s, f, g, joint, box = built(path)
    free = g.by_name["g0.ablate.free"]
    lo, up = np.array([float(v) for v in free.lower]), np.array([float(v) for v in free.upper])
    xs = np.random.default_rng(4).uniform(-0.4, 0.4, size=(2000, 3))
    reach = values(joint, xs)["embed"]
    assert (reach >= lo - 1e-9).all() and (reach <= up + 1e-9).all()  # R contains the coordinate's range
    rng = np.random.default_rng(5)
    for _ in range(5):
        sound(joint, box, 400, free=lambda n: rng.uniform(n.lower, n.upper))
    o = run_check(path, tmp_path / "a.cert.json", "crown")
    assert o.verdict is Verdict.CERTIFIED and o.lower <= o.check.bound


def test_free_values_in_the_witness_are_replayed_and_range_checked(tmp_path):
    """With `fill: free` the falsifier searches the free values too; the witness lists them after x, the
    checker replays them exactly (a larger attained deviation than with every free value at its lower end)
    and rejects a free value outside its range or a witness of any other length."""
    from certify.checker.graph import deviation_at, free_ranges

    m = model(tmp_path)
    path = spec(tmp_path, m, "ablate: {site: embed, indices: [0, 2], fill: free}", tolerance="1000000000")
    s, f, g, joint, box = built(path)
    flo, fup = free_ranges(joint)
    assert len(flo) == 4 and all(a <= b for a, b in zip(flo, fup))
    o = run_check(path, tmp_path / "a.cert.json", "crown")
    assert o.verdict is Verdict.CERTIFIED
    cert = json.loads((tmp_path / "a.cert.json").read_text())
    x = [Fraction(v) for v in cert["witness"]["x"]]
    assert len(x) == f.in_dim + len(flo) and o.lower == deviation_at(joint, x) >= deviation_at(joint, x[:f.in_dim])
    for bad in ([*x[:f.in_dim], fup[0] + 1, *x[f.in_dim + 1:]], x[:-1]):  # a free value out of range; a short witness
        forged = {**cert, "witness": {"x": [str(v) for v in bad], "deviation": cert["witness"]["deviation"]}}
        (tmp_path / "b.cert.json").write_text(json.dumps(forged))
        assert check_certificate(path, tmp_path / "b.cert.json").verdict is Verdict.REJECTED


def test_a_free_range_beyond_the_checkers_range_is_one_line_bad_input(tmp_path, capsys):
    """exp(exp(1e4 x)) on [-1, 1] reaches about e^(2^14426): no ball encloses it, so the checker cannot bound the site's
    range, and `fill: free` there is refused in one line (exit 2; it was exit 4). The message prints the huge
    interval end as ~2^k (Python will not print an integer of more than 4,300 digits)."""
    b = GraphBuilder(1)
    e = b.unary("e2", "exp", b.unary("e1", "exp", b.linear("in", "x", np.array([[1e4]]), np.zeros(1))))
    b.save(tmp_path / "m.npz", b.linear("out", e, np.ones((1, 1))))
    path = spec(tmp_path, tmp_path / "m.npz", "ablate: {site: e2, indices: [0], fill: free}", radius="1")
    assert main(["check", str(path), "--out", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "ablate.fill" in err and "no exact interval bound" in err and "~2^14426" in err, err


def test_a_later_transform_reads_the_earlier_ones_copy(tmp_path):
    """ablate at embed copies everything downstream; an SAE at block then applies to g's copy of block."""
    m, w = model(tmp_path), weights()
    np.savez(tmp_path / "sae.npz", **w)
    p = spec(tmp_path, m, "ablate: {site: embed, indices: [0]}\n  - " + npz_entry("sae", "site: block", tmp_path / "sae.npz"))
    s, f, g, joint, box = built(p)
    assert g.by_name["g1.sae.pre"].inputs == ("g0.block",)
    vals = values(joint, np.zeros((1, 3)))
    assert np.allclose(vals[g.output], (encode(w, vals["g0.block"]) @ w["W_dec"] + w["b_dec"]) @ floats(g)[-1].weight.T + floats(g)[-1].bias)


# --------------------------------------------------------------------------- low_rank at a named linear node


def test_low_rank_on_a_graph_node_is_pinned_checked_and_forgery_rejected(tmp_path):
    from certify.model import save_arrays
    from certify.pin import pin_spec

    m = model(tmp_path)
    p = spec(tmp_path, m, "low_rank: {layer: mlp.up, rank: 2}", tolerance="1000")
    assert main(["check", str(p), "--out", str(tmp_path / "x.cert.json")]) == 2  # unpinned: refused in one line
    (pin,) = pin_spec(p)
    arrays = dict(np.load(pin.path))
    s, f, g, joint, box = built(p)
    w = f.by_name["mlp.up"].weight
    u, sv, vt = np.linalg.svd(np.array(w, dtype=float))
    new = np.array(g.by_name["g0.mlp.up"].weight, dtype=float)
    assert np.allclose(new, (u[:, :2] * sv[:2]) @ vt[:2], atol=1e-12) and np.allclose(new, arrays["U"] @ arrays["V"])
    sound(joint, box)
    o = run_check(p, tmp_path / "p.cert.json", "crown")
    assert o.verdict is Verdict.CERTIFIED and o.check.unpinned == ()
    other = tmp_path / "other"  # the same spec with other pinned factors: its certificate never certifies the real one
    other.mkdir()
    (other / "pinned").mkdir()
    save_arrays(other / "pinned" / pin.path.name, {"U": arrays["U"] * 0.5, "V": arrays["V"]})
    (other / "s.yaml").write_text(p.read_text().replace(sha(pin.path), sha(other / "pinned" / pin.path.name)))
    made = run_check(other / "s.yaml", tmp_path / "o.cert.json", "crown")
    assert made.verdict is not Verdict.REJECTED
    cert = json.loads((tmp_path / "o.cert.json").read_text())
    cert["spec_sha256"] = sha(p)
    (tmp_path / "forged.cert.json").write_text(json.dumps(cert))
    assert check_certificate(p, tmp_path / "forged.cert.json").verdict is Verdict.REJECTED


# --------------------------------------------------------------------------- tampering and bad input


@pytest.fixture(scope="module")
def mixed_cert(tmp_path_factory):
    """A certificate over a JumpReLU SAE after a free ablation."""
    d = tmp_path_factory.mktemp("mixed")
    m, w = model(d), weights(jump=True)
    np.savez(d / "sae.npz", **w)
    p = spec(d, m, "ablate: {site: embed, indices: [1], fill: free}\n  - " + npz_entry("sae", "site: block", d / "sae.npz"), tolerance="1000000000")
    o = run_check(p, d / "c.cert.json", "crown")
    assert o.verdict is Verdict.CERTIFIED, o.check.reason
    return p, json.loads((d / "c.cert.json").read_text())


def _step(c, kind, node, via=None):
    return next(s for s in c["steps"] if s["kind"] == kind and s["node"] == node and (via is None or s.get("via") == via))


def _nudge(values, i, delta):
    values[i] = str(Fraction(values[i]) + delta)


TAMPER = {
    "jumprelu_lower_raised": lambda c: _nudge(_step(c, "relax", "g1.sae.act")["lower_intercept"], 0, Fraction(1, 10**6)),
    "jumprelu_upper_lowered": lambda c: _nudge(_step(c, "relax", "g1.sae.act")["upper_intercept"], 1, Fraction(-1, 10**6)),
    "jumprelu_relax_dropped": lambda c: c["steps"].remove(_step(c, "relax", "g1.sae.act")),
    "free_interval_tightened": lambda c: _nudge(_step(c, "bounds", "g0.ablate.free", "interval")["upper"], 1, Fraction(-1, 10**6)),
    "goal_tightened": lambda c: _nudge(_step(c, "bounds", "d", "linear")["upper"], 0, Fraction(-1, 10**6)),
    "jumprelu_interval_tightened": lambda c: _nudge(_step(c, "bounds", "g1.sae.act", "interval")["upper"], 2, Fraction(-1, 10**3)),
    "jumprelu_interval_lower_raised": lambda c: _nudge(_step(c, "bounds", "g1.sae.act", "interval")["lower"], 0, Fraction(1, 10**6)),
}


@pytest.mark.parametrize("name", sorted(TAMPER))
def test_tampered_certificates_are_rejected(mixed_cert, name, tmp_path):
    p, cert = mixed_cert
    bad = copy.deepcopy(cert)
    TAMPER[name](bad)
    (tmp_path / "t.cert.json").write_text(json.dumps(bad))
    assert check_certificate(p, tmp_path / "t.cert.json").verdict is Verdict.REJECTED, name
    assert main(["verify", str(p), str(tmp_path / "t.cert.json")]) == 3


def _one_line(capsys, path, tmp_path, *words):
    assert main(["check", str(path), "--out", str(tmp_path / "x.cert.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert all(w in err[0] for w in words), (words, err[0])


def test_bad_inputs_are_one_line(tmp_path, capsys):
    m, w = model(tmp_path), weights()
    np.savez(tmp_path / "sae.npz", **w)
    np.savez(tmp_path / "log.npz", **w, log_threshold=np.zeros(M))
    good = sae_entry(saelens(tmp_path / "good", w))
    cases = [
        (sae_entry(saelens(tmp_path / "topk", w, architecture="topk")), "sae.path", "architecture 'topk'"),
        (sae_entry(saelens(tmp_path / "norm", w, normalize_activations="expected_average_only_in")), "sae.path", "normalize_activations"),
        (sae_entry(saelens(tmp_path / "act", w, activation_fn_str="topk")), "sae.path", "activation 'topk'"),
        (sae_entry(saelens(tmp_path / "size", w, d_sae=7)), "sae.path", "d_sae = 7"),
        (sae_entry(saelens(tmp_path / "nothr", w, architecture="jumprelu")), "sae.path", "threshold"),
        (good.replace(sha(tmp_path / "good" / "cfg.json"), "0" * 64), "sae.cfg_sha256", "mismatch"),
        (good.replace(sha(tmp_path / "good" / "sae_weights.safetensors"), "1" * 64), "sae.sha256", "mismatch"),
        (good.split(", cfg_sha256")[0] + "}", "sae.cfg_sha256", "missing"),
        (npz_entry("sae", "site: block", tmp_path / "sae.npz")[:-1] + ", cfg_sha256: \"" + "0" * 64 + "\"}", "sae.cfg_sha256", "no cfg.json"),
        (npz_entry("sae", "site: block", tmp_path / "log.npz"), "sae.path", "log_threshold"),
        (npz_entry("sae", "site: embed", tmp_path / "sae.npz")[:-1] + ", features: [0, 9]}", "sae.features", "[9]"),
        (npz_entry("transcoder", "block: mlp.down", tmp_path / "sae.npz"), "transcoder.block", "residual block"),
        (npz_entry("transcoder", "block: nowhere", tmp_path / "sae.npz"), "transcoder.block", "nowhere"),
        (sae_entry(saelens(tmp_path / "tcb", w, architecture="transcoder", apply_b_dec_to_input=True)).replace("sae: {site: block",
                                                                                                          "transcoder: {block: block"),
         "transcoder.path", "apply_b_dec_to_input"),
        ("ablate: {site: embed, indices: [0, 7]}", "ablate.indices", "[7]"),
        ("ablate: {site: block, fill: mean}", "ablate.fill", "gelu"),
        ("ablate: {site: embed, indices: [0, 1], fill: {constant: [1, 2, 3]}}", "ablate.fill.constant", "3 values"),
        ("ablate: {site: embed, indices: [0], fill: median}", "ablate.fill", "median"),
        ("ablate: {site: nowhere}", "ablate.site", "nowhere"),
        ("low_rank: {layer: 1, rank: 2}", "low_rank.layer", "no numbered layers"),
        ("low_rank: {layer: mlp.gelu, rank: 2}", "low_rank.layer", "gelu node"),
        ("low_rank: {layer: mlp.up, rank: 5}", "low_rank.rank", "min(out, in) = 4"),
        ("low_rank: {layer: mlp.up, rank: 2}", "low_rank.arrays", "pinned"),
        ("prune: {layer: 1, keep: [0]}", "explanation[0].prune", "dense/ReLU MLPs"),
    ]
    for entry, key, word in cases:
        _one_line(capsys, spec(tmp_path, m, entry), tmp_path, key, word)
    (tmp_path / "good" / "sae_weights.safetensors").write_bytes((tmp_path / "good" / "sae_weights.safetensors").read_bytes() + b"\0")
    _one_line(capsys, spec(tmp_path, m, good), tmp_path, "sae.sha256")  # the hash is checked before the file is parsed
    corrupt = sae_entry(tmp_path / "good")
    _one_line(capsys, spec(tmp_path, m, corrupt), tmp_path, "sae_weights.safetensors", "after the last tensor")
    mlp = shipped_text()
    p = tmp_path / "mlp.yaml"
    p.write_text(mlp.split("explanation:")[0] + "explanation:\n  - ablate: {site: embed}\nproperty:" + mlp.split("property:")[1])
    _one_line(capsys, p, tmp_path, "explanation[0].ablate", "graph models")
    p.write_text(mlp.split("explanation:")[0] + "explanation:\n  - low_rank: {layer: fc1, rank: 1}\nproperty:" + mlp.split("property:")[1])
    _one_line(capsys, p, tmp_path, "explanation[0].low_rank.layer", "numbered")


# --------------------------------------------------------------------------- the shipped specs


@pytest.mark.parametrize("name", ["resmlp_sae_saelens", "resmlp_sae_jumprelu", "resmlp_transcoder", "resmlp_ablate", "resmlp_low_rank"])
def test_shipped_certificates_verify(name):
    assert main(["verify", str(ROOT / "specs" / f"{name}.yaml"), str(ROOT / "proofs" / f"{name}.cert.json")]) == 0


def test_shipped_explanations_quality_is_recorded():
    q = json.loads((ROOT / "models" / "resmlp_explanations.json").read_text())
    assert {"sae", "sae_jumprelu", "transcoder"} <= set(q)
    assert all(0 <= q[k]["fvu"] < 0.2 and q[k]["l0"] > 0 for k in ("sae", "sae_jumprelu", "transcoder"))
    assert q["sae_jumprelu"]["l0"] < q["sae"]["l0"]  # the thresholds make it sparser
