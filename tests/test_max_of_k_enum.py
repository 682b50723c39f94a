"""benchmarks/max_of_k_v64.py (issue 17's V = 64 timing target): the table enumeration of
max_i |f_i - g_i| (g: W_pos zero-ablated) equals brute force over every sequence by the reference
forward pass on tiny transformers, and its best sequence, replayed by the checker's exact forward pass
on the spec's joint graph, attains that value."""

from __future__ import annotations

import hashlib
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

from certify.engine_graph import prepare_graph
from certify.model.transformer import attn_only, forward

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import max_of_k_v64 as mk  # noqa: E402


def _params(rng, V, n, d, dh):
    p = {"W_E": rng.normal(size=(V, d)), "W_pos": rng.normal(size=(n, d)), "W_U": rng.normal(size=(d, V))}
    for c in "QKV":
        p[f"blocks.0.attn.W_{c}"] = rng.normal(size=(1, d, dh)) * 2 / np.sqrt(d)  # peaked patterns
    p["blocks.0.attn.W_O"] = rng.normal(size=(1, dh, d)) / np.sqrt(dh)
    return p


def _joint(tmp_path, p, V, n):
    model = tmp_path / "m.npz"
    attn_only(p, vocab=V, length=n, queries=[n - 1], fold=True, softmax="softmax").save(model, output="unembed")
    spec = tmp_path / "s.yaml"
    spec.write_text(f"version: 1\nmodel: {{path: {model}, sha256: {hashlib.sha256(model.read_bytes()).hexdigest()}}}\n"
                    f"input: {{tokens: {{vocab: {V}, length: {n}}}}}\nexplanation:\n  - ablate: {{site: embed.pos, fill: zero}}\n"
                    "property: {deviation: linf, tolerance: 1000}\n")
    return spec, prepare_graph(spec, tmp_path / "c.json", None, False).joint


def _all_values(p, V, n):
    tokens = np.array(list(itertools.product(range(V), repeat=n)))
    d = forward(p, tokens)[:, -1] - forward({**p, "W_pos": np.zeros_like(p["W_pos"])}, tokens)[:, -1]
    return tokens, np.abs(d).max(axis=1)


@pytest.mark.parametrize("seed, V, n, d, dh", [(0, 4, 3, 6, 4), (1, 5, 4, 4, 3), (2, 3, 2, 5, 5)])
def test_enumeration_equals_brute_force_and_its_maximum_replays_exactly(tmp_path, seed, V, n, d, dh):
    p = _params(np.random.default_rng(seed), V, n, d, dh)
    tokens, values = _all_values(p, V, n)
    order = np.sort(values)[::-1]
    for outer in range(1, n + 1):
        r = mk.enumerate_deviation(p, outer=outer, top=5)
        assert r["done"] and r["sequences"] == V ** n
        got = np.array([v for v, _ in r["best"]])
        assert np.abs(got - order[:5]).max() < 1e-12, f"outer={outer}: the top values differ from brute force"
        for v, t in r["best"]:  # each reported sequence has the value reported
            assert abs(values[np.ravel_multi_index(t, (V,) * n)] - v) < 1e-12
    assert mk.brute_force(p)[0] == pytest.approx(order[0], abs=1e-12)
    every = mk.values_at(p, tokens)  # the single-sequence path of the same tables
    assert np.abs(every - values).max() < 1e-12

    spec, joint = _joint(tmp_path, p, V, n)
    best_value, best_tokens = mk.enumerate_deviation(p, outer=2 if n > 1 else 1, top=1)["best"][0]
    lo, hi = mk.replay(joint, best_tokens, V)
    assert lo <= hi and float(hi - lo) < 1e-30
    assert abs(float(lo) - best_value) < 1e-9, "the checker's exact replay of the best sequence differs from the enumeration"
    e = mk.exact_maximum(spec, p, outer=1, top=3)
    assert e["complete"] and e["exact_tokens"] == list(best_tokens) and e["exact_max"] == pytest.approx(order[0], abs=1e-9)
    assert e["float_vs_replay"] < 1e-9


def test_a_fraction_enumerates_fewer_sequences_and_never_more_than_the_maximum():
    V, n = 4, 3
    p = _params(np.random.default_rng(3), V, n, 5, 5)
    full = mk.enumerate_deviation(p, outer=2, top=1)
    part = mk.enumerate_deviation(p, outer=2, top=1, fraction=0.25, seed=1)
    assert not part["done"] and part["iterations"] == 4 and part["sequences"] == 4 * V
    assert part["best"][0][0] <= full["best"][0][0]
