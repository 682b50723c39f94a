"""float32 semantics under flush-to-zero / denormals-are-zero, and the width limit of the analysis.

The margins must cover any binary32 evaluation, with gradual underflow (numpy) or FTZ/DAZ (XLA on
CPU, JAX's default, and a software FTZ/DAZ loop), in any summation order, with f and g evaluated by
different runtimes. Each observed deviation is computed exactly (Fraction) from the float32
outputs and compared with the exact real difference plus the certified margins.
"""

from __future__ import annotations

import itertools
import json
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from certify.checker import float32
from certify.checker.errors import BadInput
from certify.checker.exact import forward, qmat, qvec
from certify.checker.float32 import _gamma, check_widths, float32_margins, output_errors
from certify.cli import main
from certify.model import save_model

CPU = jax.devices("cpu")[0]
SMALLEST_NORMAL = np.float32(2.0**-126)


# --- the width limit: gamma is defined, non-negative and at most 1, or the spec is refused ---------

def test_gamma_is_refused_outside_the_analysis():
    assert _gamma(0) == 0 and _gamma(1) == Fraction(1, 2**24 - 1)
    assert _gamma(2**23) == 1  # the cap: (n + 1) u = 1/2
    for k in (2**23 + 1, 2**24 - 1, 2**24, 2**24 + 1, 2**25, -1):  # 2^24: was a division by zero; 2^24+1: -16,777,217
        with pytest.raises(ValueError, match="outside the float32 error analysis"):
            _gamma(k)


@pytest.mark.parametrize("n, ok", [(2**23 - 1, True), (2**23, False), (2**24 - 1, False), (2**24, False)])
def test_width_check_refuses_layers_beyond_the_cap(n, ok):
    hidden = [([], range(n)), ([], [0])]  # a hidden layer of n neurons feeds dense layer 2 (lazy: len only)
    for layers, in_dim, layer in (([([], [0])], n, 1), (hidden, 4, 2)):
        if ok:
            check_widths(layers, in_dim, "s.yaml", "g")
            continue
        with pytest.raises(BadInput) as exc:
            check_widths(layers, in_dim, "s.yaml", "g")
        line = str(exc.value)
        assert line.startswith("s.yaml: property.semantics: ") and "\n" not in line
        assert f"dense layer {layer} of g has {n:,} inputs" in line and "use semantics: real" in line


def test_the_issues_wide_sum_is_refused_before_any_margin():
    """f(x) = sum of 2^-24 x_j over 2^24 inputs: the old gamma was negative and certified bound 0.
    A lazy box (range) and lazy rows: the refusal comes before anything 2^24 wide is built."""
    n = 2**24
    box = (range(n), range(n))
    layers = [(range(1), [Fraction(0)])]
    with pytest.raises(BadInput, match=r"dense layer 1 of f has 16,777,216 inputs"):
        output_errors(layers, box)
    with pytest.raises(BadInput) as exc:
        float32_margins(layers, layers, box, None, "wide.yaml")
    assert str(exc.value).startswith("wide.yaml: property.semantics: dense layer 1 of f has 16,777,216 inputs")


# --- runtimes: gradual underflow (numpy), FTZ/DAZ (XLA on CPU; software), several summation orders ---

def _ftz(v):
    v = np.asarray(v, dtype=np.float32)
    return np.where(np.abs(v) < SMALLEST_NORMAL, np.float32(0), v).astype(np.float32)


def np_blas(w, b, h):
    return w @ h + b


def np_pairwise(w, b, h):
    return np.sum(w * h, axis=1, dtype=np.float32) + b


def np_sequential_reversed(w, b, h):
    out = np.empty(w.shape[0], dtype=np.float32)
    for i in range(w.shape[0]):
        acc = b[i]  # the bias first, then the products from the last to the first
        for j in reversed(range(w.shape[1])):
            acc = np.float32(acc + np.float32(w[i, j] * h[j]))
        out[i] = acc
    return out


def soft_ftz_daz(w, b, h):
    """Every operand read with DAZ and every result flushed (FTZ), sequential from the first product."""
    w, b, h = _ftz(w), _ftz(b), _ftz(h)
    out = np.empty(w.shape[0], dtype=np.float32)
    for i in range(w.shape[0]):
        acc = np.float32(0)
        for j in range(w.shape[1]):
            acc = _ftz(acc + _ftz(w[i, j] * h[j]))
        out[i] = _ftz(acc + b[i])
    return out


@jax.jit
def _jax_dot(w, b, h):
    return w @ h + b


@jax.jit
def _jax_sum_reversed(w, b, h):
    return jnp.sum(w[:, ::-1] * h[::-1], axis=1) + b


@jax.jit
def _jax_scan(w, b, h):
    def step(acc, col):
        return acc + col[0] * col[1], None
    acc, _ = jax.lax.scan(step, b, (w.T, h))
    return acc


def _on_cpu(fn):
    def run(w, b, h):
        with jax.default_device(CPU):
            return np.asarray(fn(jnp.asarray(w), jnp.asarray(b), jnp.asarray(h)), dtype=np.float32)
    run.__name__ = fn.__name__
    return run


RUNTIMES = {"numpy": np_blas, "numpy-pairwise": np_pairwise, "numpy-seq-reversed": np_sequential_reversed,
            "soft-ftz-daz": soft_ftz_daz, "jax-dot": _on_cpu(_jax_dot), "jax-sum-reversed": _on_cpu(_jax_sum_reversed),
            "jax-scan": _on_cpu(_jax_scan)}


def evaluate(runtime, ws, bs, x):
    """A float32 forward pass: weights rounded to float32 once, ReLU between dense layers."""
    h = np.asarray(x, dtype=np.float32)
    for k, (w, b) in enumerate(zip(ws, bs)):
        h = RUNTIMES[runtime](np.asarray(w, dtype=np.float32), np.asarray(b, dtype=np.float32), h)
        h = np.maximum(h, np.float32(0)) if k < len(ws) - 1 else h
    return [Fraction(float(v)) for v in h]


def exact_layers_of(ws, bs):
    return [([[Fraction(float(v)) for v in row] for row in w], [Fraction(float(v)) for v in b]) for w, b in zip(ws, bs)]


def worst_mixed(fw, fb, gw, gb, xs, margins):
    """max over inputs, runtime pairs (f in one, g in another) and outputs of
    |(f^ - g^) - (f - g)| / m_i, asserting each is <= 1; also the largest observed |f^ - g^|."""
    f_net = [(qmat(w), qvec(b)) for w, b in exact_layers_of(fw, fb)]
    g_net = [(qmat(w), qvec(b)) for w, b in exact_layers_of(gw, gb)]
    worst, largest = Fraction(0), Fraction(0)
    for x in xs:
        xq = [Fraction(float(v)) for v in x]
        real = [a - c for a, c in zip(forward(f_net, xq), forward(g_net, xq))]
        fs = {r: evaluate(r, fw, fb, x) for r in RUNTIMES}
        gs = {r: evaluate(r, gw, gb, x) for r in RUNTIMES}
        for rf, rg in itertools.product(RUNTIMES, RUNTIMES):
            for i, (fv, gv, d, m) in enumerate(zip(fs[rf], gs[rg], real, margins)):
                off = abs((fv - gv) - d)
                assert off <= m, f"f in {rf}, g in {rg}, output {i}: |(f^-g^)-(f-g)| = {float(off):.3e} > margin {float(m):.3e}"
                worst, largest = max(worst, off / m), max(largest, abs(fv - gv))
    return worst, largest


def issue_layer(seed=0, n=1024):
    """One dense layer whose products with x = 2^-10 are subnormal: weights about 7.5 * 2^10 * 2^-149."""
    w = np.random.default_rng(seed).uniform(7, 8, (1, n)) * 2.0**10 * 2.0**-149
    return w, np.zeros(1)


def test_issue_case_ftz_deviation_is_within_the_margin(monkeypatch):
    w, b = issue_layer()
    x = np.full(w.shape[1], 2.0**-10, dtype=np.float32)
    assert evaluate("jax-dot", [w], [b], x) == [0]  # XLA on CPU flushes: this test really exercises FTZ
    assert evaluate("numpy", [w], [b], x)[0] > Fraction(1, 10**41)  # numpy keeps the subnormal sum
    box = ([Fraction(0)] * len(x), [Fraction(2**-10)] * len(x))
    layers = exact_layers_of([w], [b])
    margins = float32_margins(layers, layers, box, None)
    worst, largest = worst_mixed([w], [b], [w], [b], [x], margins)
    assert largest > Fraction(1, 10**41) and 0 < worst <= 1  # f = g in reals; f in numpy, g in JAX: ~1.1e-41
    # A gradual-underflow-only analysis (2^-150 per operation, as before) does not cover this run.
    monkeypatch.setattr(float32, "TINY", Fraction(1, 2**150))
    gradual = float32_margins(layers, layers, box, None)
    assert largest > gradual[0], (float(largest), float(gradual[0]))


def subnormal_model(seed, widths):
    """Weights of mixed magnitude (some subnormal in float32), tiny biases, inputs near 2^-126:
    hidden activations cross the subnormal range, so DAZ and FTZ change values at every layer."""
    rng = np.random.default_rng(seed)
    ws = [rng.normal(0, 1, (o, i)) * 2.0 ** rng.integers(-150, 3, (o, i)).astype(float) for i, o in zip(widths, widths[1:])]
    bs = [rng.choice([0.0, 1.0], o) * rng.normal(0, 1, o) * 2.0**-130 for o in widths[1:]]
    return ws, bs


@pytest.mark.parametrize("seed", [1, 2])
def test_mixed_runtimes_on_subnormal_heavy_models(seed):
    widths = (24, 12, 8, 3)
    fw, fb = subnormal_model(seed, widths)
    gw, gb = [w.copy() for w in fw], [b.copy() for b in fb]
    gw[1][:, 0] = 0  # g: hidden neuron 0 of layer 1 pruned (fill zero)
    top = 2.0**-118
    box = ([Fraction(0)] * widths[0], [Fraction(top)] * widths[0])
    margins = float32_margins(exact_layers_of(fw, fb), exact_layers_of(gw, gb), box, None)
    rng = np.random.default_rng(seed + 100)
    xs = [np.float32(top) * rng.uniform(0, 1, widths[0]).astype(np.float32) * np.float32(2.0) ** rng.integers(-30, 1, widths[0]).astype(np.float32)
          for _ in range(4)]
    xs.append(np.full(widths[0], top, dtype=np.float32))
    assert all(0 <= v <= top for x in xs for v in x) and any(0 < v < 2.0**-126 for x in xs for v in x)
    worst, _ = worst_mixed(fw, fb, gw, gb, xs, margins)
    assert worst > 0  # rounding and flushing really happen: the comparison is not vacuous


def test_certificate_bound_covers_a_numpy_f_and_a_jax_g(tmp_path, capsys):
    """The issue's pair through `certify check`: a 1,024-input model whose hidden neuron 0 sums 1,024
    subnormal products; g prunes neuron 1 (outgoing weight 0), so f = g in reals. f in numpy and g
    in JAX on CPU differ by ~1.1e-41; the certificate's bound must cover it."""
    w1, _ = issue_layer(n=1024)
    ws, bs = [np.vstack([w1, w1]), np.array([[1.0, 0.0]])], [np.zeros(2), np.zeros(1)]
    sha = save_model(tmp_path / "sub.npz", ws, bs)
    (tmp_path / "sub.yaml").write_text(
        f'version: 1\nmodel: {{path: sub.npz, sha256: "{sha}"}}\ninput:\n  box: {{lower: "0", upper: "1/1024"}}\n'
        "explanation:\n  - prune: {layer: 1, keep: [0], fill: zero}\n"
        'property: {deviation: linf, tolerance: "1e-30", semantics: float32}\n')
    assert main(["check", str(tmp_path / "sub.yaml"), "--out", str(tmp_path / "sub.cert.json"), "--json", "--no-cache"]) == 0
    certified = Fraction(json.loads(capsys.readouterr().out)["certified_upper"])
    assert main(["verify", str(tmp_path / "sub.yaml"), str(tmp_path / "sub.cert.json")]) == 0
    capsys.readouterr()
    gw = [ws[0], ws[1].copy()]
    gw[1][:, 1] = 0
    x = np.full(1024, 2.0**-10, dtype=np.float32)
    observed = max(abs(a - c) for rf, rg in (("numpy", "jax-dot"), ("jax-dot", "numpy"))
                   for a, c in zip(evaluate(rf, ws, bs, x), evaluate(rg, gw, bs, x)))
    assert Fraction(1, 10**41) < observed <= certified
