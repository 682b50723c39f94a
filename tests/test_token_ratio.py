"""Softmax-ratio leaves (certify/checker/attention.py, certify/bounds/tokens.py::ratio_tree): on tiny
one-layer attention transformers the checked bound contains the enumerated maximum of max_i |f_i - g_i|
(g: W_pos ablated), is exact where every position holds one token, and tampered claims are REJECTED."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from fractions import Fraction

import numpy as np
import pytest

from certify.bounds.tokens import FloatTokens, ratio_tree
from certify.checker.attention import form
from certify.checker.errors import Rejected
from certify.checker.graph import TokenBox, check_token_tree
from certify.engine_graph import prepare_graph
from certify.model.transformer import attn_only, forward


def _params(rng, V, n, d, dh):
    p = {"W_E": rng.normal(size=(V, d)), "W_pos": rng.normal(size=(n, d)), "W_U": rng.normal(size=(d, V))}
    for c in "QKV":
        p[f"blocks.0.attn.W_{c}"] = rng.normal(size=(1, d, dh)) * 2 / np.sqrt(d)
    p["blocks.0.attn.W_O"] = rng.normal(size=(1, dh, d)) / np.sqrt(dh)
    return p


def _spec(tmp_path, p, V, n, fold=True, softmax="softmax", tol="1000", method=""):
    model = tmp_path / "m.npz"
    attn_only(p, vocab=V, length=n, queries=[n - 1], fold=fold, softmax=softmax).save(model, output="unembed")
    spec = tmp_path / "s.yaml"
    spec.write_text(f"version: 1\nmodel: {{path: {model}, sha256: {hashlib.sha256(model.read_bytes()).hexdigest()}}}\n"
                    f"input: {{tokens: {{vocab: {V}, length: {n}}}}}\nexplanation:\n  - ablate: {{site: embed.pos, fill: zero}}\n"
                    f"property: {{deviation: linf, tolerance: {tol}}}\n{method}")
    return spec


def _joint(tmp_path, p, V, n, **kw):
    return prepare_graph(_spec(tmp_path, p, V, n, **kw), tmp_path / "c.json", None, False).joint


def _values(p, V, n):
    """max_i |f_i - g_i| at every sequence, by the reference forward pass (numpy, float64)."""
    tokens = np.array(list(itertools.product(range(V), repeat=n)))
    d = forward(p, tokens)[:, -1] - forward({**p, "W_pos": np.zeros_like(p["W_pos"])}, tokens)[:, -1]
    return tokens, np.abs(d).max(axis=1)


CASES = [(0, 4, 3, 6, 4), (1, 3, 4, 4, 3), (2, 5, 2, 5, 5)]


@pytest.mark.parametrize("seed, V, n, d, dh", CASES)
def test_checked_ratio_bound_contains_the_enumerated_maximum_and_is_exact_at_single_tokens(tmp_path, seed, V, n, d, dh):
    p = _params(np.random.default_rng(seed), V, n, d, dh)
    joint = _joint(tmp_path, p, V, n)
    tokens, values = _values(p, V, n)
    allowed = (tuple(range(V)),) * n
    bound, tree, leaves, notes = ratio_tree(joint, FloatTokens(V, allowed))
    assert leaves == V and notes["leaf"] == "ratio"
    assert check_token_tree(joint, TokenBox(V, allowed), tree, bound, "tree") == 2 * V * V
    assert float(bound) >= values.max() - 1e-12, "the checked bound is below the enumerated maximum"
    if n <= 3:  # at most two free positions: the pair relaxation is exact, so the bound is the maximum
        assert float(bound) <= values.max() * (1 + 1e-8) + 1e-8
    for k in np.random.default_rng(seed).choice(len(tokens), size=4, replace=False):  # one sequence: exact
        one = tuple((int(t),) for t in tokens[k])
        b, t, _, _ = ratio_tree(joint, FloatTokens(V, one))
        assert abs(float(b) - values[k]) <= 1e-8 * (1 + values[k])
        check_token_tree(joint, TokenBox(V, one), t, b, "one")
        below = Fraction(values[k]) * (1 - Fraction(1, 10**6))  # the checker itself is exact there: a bound below is refused
        with pytest.raises(Rejected, match="not proved"):
            check_token_tree(joint, TokenBox(V, one), t, below, "one")


@pytest.fixture(scope="module")
def certified(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ratio")
    V, n = 4, 3
    p = _params(np.random.default_rng(7), V, n, 5, 4)
    joint = _joint(tmp, p, V, n)
    allowed = (tuple(range(V)),) * n
    bound, tree, _, _ = ratio_tree(joint, FloatTokens(V, allowed))
    from certify.checker import attention

    attention.TRACE = []
    try:
        check_token_tree(joint, TokenBox(V, allowed), tree, bound, "tree")
        hull = [v for _, _, g, v in attention.TRACE if g == 3][:len(_lambda(tree))]  # leaf 0's rows, by the hull
    finally:
        attention.TRACE = None
    split = next(k for k, v in enumerate(_lambda(tree)) if v is not None and hull[k] > 0)  # its lambda is read
    return joint, TokenBox(V, allowed), tree, bound, _values(p, V, n)[1].max(), split


def _lambda(tree, i=0):
    return tree["children"][i]["ratio"]["lambda"]


MUTATIONS = {  # (tree, bound, the maximum, a split row of leaf 0 whose lambda the check reads (the hull does not prove it))
    "bound_below_the_maximum": lambda t, b, m, k: (t, Fraction(m) * (1 - Fraction(1, 10**4))),
    "lambda_moved": lambda t, b, m, k: (_set(t, k, str(Fraction(_lambda(t)[k]) + 1000)), b),
    "lambda_moved_down": lambda t, b, m, k: (_set(t, k, str(Fraction(_lambda(t)[k]) - 1000)), b),
    "lambda_not_rational": lambda t, b, m, k: (_set(t, k, "0.5"), b),
    "lambda_entry_dropped": lambda t, b, m, k: (_pop(t), b),
    "query_not_one_token": lambda t, b, m, k: ({"ratio": t["children"][0]["ratio"]}, b),
    "query_out_of_range": lambda t, b, m, k: (_query(t, 7), b),
    "query_not_an_int": lambda t, b, m, k: (_query(t, "2"), b),
    "extra_key": lambda t, b, m, k: (_extra(t), b),
    "leaf_dropped": lambda t, b, m, k: (_drop(t), b),
}


def _set(t, k, v):
    _lambda(t)[k] = v
    return t


def _pop(t):
    _lambda(t).pop()
    return t


def _query(t, q):
    t["children"][0]["ratio"]["query"] = q
    return t


def _extra(t):
    t["children"][0]["ratio"]["bound"] = "0"
    return t


def _drop(t):
    t["children"].pop()
    t["parts"].pop()
    return t


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_tampered_ratio_claims_are_rejected(certified, name):
    joint, box, tree, bound, exact, split = certified
    forged, b = MUTATIONS[name](copy.deepcopy(tree), bound, exact, split)
    assert (forged, b) != (tree, bound)
    with pytest.raises(Rejected):
        check_token_tree(joint, box, forged, b, "tree")


def test_every_row_joint_is_accepted_and_a_graph_without_the_form_is_refused(certified, tmp_path):
    joint, box, tree, bound, _, _ = certified
    every = copy.deepcopy(tree)
    for kid in every["children"]:
        kid["ratio"]["lambda"] = [None] * len(kid["ratio"]["lambda"])
    check_token_tree(joint, box, every, bound, "tree")  # joint rows are the exact (pair) check: no hint needed
    p = _params(np.random.default_rng(3), 4, 3, 5, 4)
    other = _joint(tmp_path, p, 4, 3, softmax="difference")  # softmax written with exp and reciprocal nodes
    assert form(other, 4) is None and ratio_tree(other, FloatTokens(4, box.allowed)) is None
    with pytest.raises(Rejected, match="no softmax-ratio form"):
        check_token_tree(other, box, tree, bound * 100, "tree")


def test_bab_on_a_token_spec_writes_ratio_leaves_that_verify_and_tampering_rejects(tmp_path):
    from certify.checker.check import Verdict, check_certificate
    from certify.cli import main

    p = _params(np.random.default_rng(11), 4, 3, 5, 4)
    _, values = _values(p, 4, 3)
    spec = _spec(tmp_path, p, 4, 3, tol=f'"{Fraction(values.max() * 1.05).limit_denominator(10**6)}"')
    out = tmp_path / "r.cert.json"
    assert main(["check", str(spec), "--out", str(out), "--method", "bab"]) == 0
    cert = json.loads(out.read_text())
    assert "ratio" in cert["token_tree"]["children"][0]
    r = check_certificate(spec, out)
    assert r.verdict is Verdict.CERTIFIED and values.max() - 1e-12 <= float(r.bound) <= values.max() * (1 + 1e-8) + 1e-8
    from certify.checker import attention

    attention.TRACE = []
    try:
        check_certificate(spec, out)
        hull = [v for _, _, g, v in attention.TRACE if g == 3]  # every leaf's rows in turn, by the hull
    finally:
        attention.TRACE = None
    m2 = len(cert["token_tree"]["children"][0]["ratio"]["lambda"])
    leaf, k = next((n // m2, n % m2) for n, v in enumerate(hull) if v > 0 and cert["token_tree"]["children"][n // m2]["ratio"]["lambda"][n % m2] is not None)
    lam = cert["token_tree"]["children"][leaf]["ratio"]["lambda"]  # a split row whose lambda the check reads
    lam[k] = str(Fraction(lam[k]) + 50)
    out.write_text(json.dumps(cert))
    assert check_certificate(spec, out).verdict is Verdict.REJECTED


def test_one_shared_softmax_group(tmp_path):
    """An explanation after the pattern (the head's values zeroed) shares f's softmax with g: one group, the second
    the constant 1 with coefficient 0; the bound is the exact maximum (two free positions)."""
    V, n = 4, 3
    p = _params(np.random.default_rng(4), V, n, 5, 4)
    spec = _spec(tmp_path, p, V, n)
    spec.write_text(spec.read_text().replace("site: embed.pos", "site: blocks.0.attn.h0.ov"))
    joint = prepare_graph(spec, tmp_path / "c.json", None, False).joint
    assert len(form(joint, V).groups) == 1
    allowed = (tuple(range(V)),) * n
    bound, tree, _, _ = ratio_tree(joint, FloatTokens(V, allowed))
    check_token_tree(joint, TokenBox(V, allowed), tree, bound, "tree")
    tokens = np.array(list(itertools.product(range(V), repeat=n)))
    pg = {**p, "blocks.0.attn.W_V": np.zeros_like(p["blocks.0.attn.W_V"])}  # g: the head's values zeroed
    exact = np.abs(forward(p, tokens)[:, -1] - forward(pg, tokens)[:, -1]).max()
    assert exact - 1e-12 <= float(bound) <= exact * (1 + 1e-8) + 1e-8
    with pytest.raises(Rejected, match="not proved"):
        check_token_tree(joint, TokenBox(V, allowed), tree, Fraction(exact) * (1 - Fraction(1, 10**6)), "tree")


def test_a_member_whose_score_reads_no_token_but_whose_coefficient_does(tmp_path):
    """g's score products ablated to a constant at one element: that member's score reads no token while its
    coefficient reads its key position. The checker reads every product of a term over all its members' positions,
    as the engine buckets them (it once split such a term over two buckets and REJECTED a correct joint row)."""
    from certify.bounds.tokens import exhaustive

    V, n = 4, 4
    p = _params(np.random.default_rng(21), V, n, 4, 1)  # d_head 1: element 1 of qk is member 1's whole score
    spec = _spec(tmp_path, p, V, n, fold=False)
    spec.write_text(spec.read_text().replace("  - ablate: {site: embed.pos, fill: zero}",
                                             "  - ablate: {site: blocks.0.attn.h0.qk, indices: [1], fill: {constant: 2}}"))
    joint = prepare_graph(spec, tmp_path / "c.json", None, False).joint
    allowed = ((0, 1, 2, 3), (0, 1, 2, 3), (0, 3), (0, 1, 2, 3))
    fm = form(joint, V)
    exps, coef, _ = fm.tables(n - 1, 0, "t")
    assert any(e[0] is None and any(coef[i][g][k][0] is not None for i in range(len(coef)))
               for g in range(2) for k, e in enumerate(exps[g])), "the case is gone: no member with a token-free score"
    bound, tree, _, notes = ratio_tree(joint, FloatTokens(V, allowed))
    assert notes["joint_rows"] > 0
    check_token_tree(joint, TokenBox(V, allowed), tree, bound, "tree")
    assert float(bound) >= exhaustive(joint, FloatTokens(V, allowed))[0] * (1 - 1e-6) - 1e-9


def test_the_pytorch_export_has_the_form_once_unread_query_rows_are_dropped(tmp_path):
    """models/maxofk.onnx computes every query row's softmax (four groups per side); only the last row's reach d,
    so the others are dropped (their coefficients are 0 at every input) and the ratio leaf applies. One query
    token (62) of the V = 64 model: the bound is its maximum, attained at (15, 15, 15, 62)."""
    from pathlib import Path

    from certify.checker.graph import deviation_at

    root = Path(__file__).resolve().parent.parent
    joint = prepare_graph(root / "benchmarks/max_of_k_onnx_v64.yaml", tmp_path / "c.json", None, False).joint
    assert len([n for n in joint.nodes if n.op == "softmax"]) == 2 and len(form(joint, 64).groups) == 2
    allowed = (tuple(range(64)),) * 3 + ((62,),)
    bound, tree, _, _ = ratio_tree(joint, FloatTokens(64, allowed))
    check_token_tree(joint, TokenBox(64, allowed), tree, bound, "tree")
    x = [Fraction(int(c % 64 == (62 if c // 64 == 3 else 15))) for c in range(256)]
    attained = deviation_at(joint, x)
    assert attained <= bound <= attained * (1 + Fraction(1, 10**7))


@pytest.mark.parametrize("seed, V, n, d, dh", CASES[:2])
def test_rows_bucketed_once_give_the_generic_checks_values(tmp_path, monkeypatch, seed, V, n, d, dh):
    """Differential: the rows' check bucketed once for every row (attention._split_sums; split rows `_split_value`,
    joint rows `_joint_value`) gives exactly `_upper`'s value (each row's products built and bucketed one by one, the
    check before it) on every row, on the whole domain and on a box with a restricted and a fixed position."""
    from certify.checker import attention

    p = _params(np.random.default_rng(seed), V, n, d, dh)
    joint = _joint(tmp_path, p, V, n)
    monkeypatch.setattr(attention, "HULL", False)  # every row by its hint, exactly (the hull and rounding: tests below)
    monkeypatch.setattr(attention, "ROUND", False)
    for allowed in ((tuple(range(V)),) * n, ((0, 2), (1,)) + (tuple(range(V)),) * (n - 2)):
        bound, tree, _, _ = ratio_tree(joint, FloatTokens(V, allowed))
        every = copy.deepcopy(tree)  # and every row joint
        for kid in every["children"]:
            kid["ratio"]["lambda"] = [None] * len(kid["ratio"]["lambda"])
        for t, kind in ((tree, 0), (every, 2)):
            traces = {}
            for fast in (True, False):
                monkeypatch.setattr(attention, "FAST", fast)
                monkeypatch.setattr(attention, "TRACE", [])
                check_token_tree(joint, TokenBox(V, allowed), t, bound, "tree")
                traces[fast] = attention.TRACE
            assert sum(g == kind for _, _, g, _ in traces[True]) >= V * joint.out_dim // 2, "too few rows to compare"
            assert traces[True] == traces[False]


def test_the_integer_tables_rebuild_d_at_every_sequence(tmp_path):
    """The exact tables (one integer evaluation per query token; rows that cannot read the query reused from the
    previous token's) rebuild d at a sequence as r_i + sum_groups sum_k E_k c_ik / sum_k E_k (E: the proven exp
    roundings) within float noise of the checker's forward pass (graph.evaluate, arb balls), at every sequence."""
    from flint import ctx

    from certify.checker.graph import evaluate

    V, n = 3, 4
    p = _params(np.random.default_rng(5), V, n, 4, 3)
    joint = _joint(tmp_path, p, V, n)
    fm = form(joint, V)
    for tokens in itertools.product(range(V), repeat=n):  # the query token changes at every step
        exps, coef, rest = fm.tables(n - 1, tokens[-1], "t")

        def at(table):
            return Fraction(int(table[1][0 if table[0] is None else tokens[table[0]]]), table[2])

        d = [at(rest[i]) + sum(sum(at(e) * at(c) for e, c in zip(exps[g], coef[i][g])) / sum(map(at, exps[g])) for g in range(2))
             for i in range(joint.out_dim)]
        with ctx.workprec(256):
            ref = evaluate(joint, [Fraction(int(c % V == tokens[c // V])) for c in range(V * n)])["d"]
        assert all(abs(float(u) - float(v.mid())) <= 1e-9 * (1 + abs(float(u))) for u, v in zip(d, ref)), tokens


@pytest.mark.parametrize("seed, V, n, d, dh", CASES[:2])
def test_the_hull_and_the_rounded_joint_rows_bound_the_exact_values(tmp_path, monkeypatch, seed, V, n, d, dh):
    """The two cheaper checks in front of the exact ones (attention.HULL, attention.ROUND): the hull value of every row
    (sigma r_i + sum_groups max_k max sigma c_ik) is at least the enumerated max of sigma d_i over the leaf's sequences;
    every joint row's rounded bound (`_joint_value` with bits) is at least its exact value and within 2^-40 of it."""
    from certify.checker import attention

    p = _params(np.random.default_rng(seed), V, n, d, dh)
    joint = _joint(tmp_path, p, V, n)
    tokens = np.array(list(itertools.product(range(V), repeat=n)))
    dev = forward(p, tokens)[:, -1] - forward({**p, "W_pos": np.zeros_like(p["W_pos"])}, tokens)[:, -1]
    for allowed in ((tuple(range(V)),) * n, ((0, 2), (1,)) + (tuple(range(V)),) * (n - 2)):
        bound, tree, _, _ = ratio_tree(joint, FloatTokens(V, allowed))
        assert tree["position"] == n - 1
        every = copy.deepcopy(tree)
        for kid in every["children"]:
            kid["ratio"]["lambda"] = [None] * len(kid["ratio"]["lambda"])
        traces = {}
        for hull, rounded in ((True, False), (False, False), (False, True)):
            monkeypatch.setattr(attention, "HULL", hull)
            monkeypatch.setattr(attention, "ROUND", rounded)
            monkeypatch.setattr(attention, "TRACE", [])
            check_token_tree(joint, TokenBox(V, allowed), every, bound, "tree")
            traces[hull, rounded] = attention.TRACE
        inside = np.all([np.isin(tokens[:, j], allowed[j]) for j in range(n)], axis=0)
        hulls = [v for _, _, g, v in traces[True, False] if g == 3]
        assert len(hulls) == 2 * joint.out_dim * len(allowed[-1])
        for leaf, a in enumerate(allowed[-1]):
            rows = dev[inside & (tokens[:, -1] == a)]
            for i in range(joint.out_dim):
                for s, sigma in enumerate((1, -1)):
                    assert float(hulls[(leaf * joint.out_dim + i) * 2 + s] + bound) >= (sigma * rows[:, i]).max() - 1e-9, (leaf, i, s)
        exact = [v for _, _, g, v in traces[False, False] if g == 2]
        quick = [v for _, _, g, v in traces[False, True] if g == 4]
        assert len(exact) == len(quick) == 2 * joint.out_dim * len(allowed[-1])
        assert all(e <= q <= e + Fraction(1, 1 << 40) for e, q in zip(exact, quick))


def test_the_rounded_joint_value_is_an_upper_bound_of_the_exact_one():
    """`_joint_value` with bits (X and W rounded up, gamma rounded up) against the exact one on random integer sums
    whose c denominator makes every rounding inexact; gamma of either kind (dyadic: its rounding exact)."""
    from flint import fmpz

    from certify.checker.attention import _joint_value

    rng = np.random.default_rng(3)
    for trial in range(60):
        V = 3
        allowed = [list(range(V))] * 3
        dens = ((int(rng.integers(1, 1 << 20)), (1 << 70) + int(rng.integers(1, 1 << 30))), (int(rng.integers(1, 1 << 20)), 0))
        dens = (dens[0], (dens[1][0], dens[0][1]))
        sums = []
        for g in range(2):
            d = {p: ([fmpz(int(x)) for x in rng.integers(0, 1 << 20, size=1 if p is None else V)],
                     [[fmpz(int(x)) for x in rng.integers(-(1 << 62), 1 << 62, size=1 if p is None else V)] for _ in range(2)])
                 for p in (None, 0, 1, 2)}
            sums.append((d, None, None))
        gamma = Fraction(int(rng.integers(-(1 << 40), 1 << 40)), 1 << 10) if trial % 2 else Fraction(int(rng.integers(-(1 << 40), 1 << 40)), 3 ** 20)
        for i in range(2):
            for sigma in (1, -1):
                exact = _joint_value(sums, i, sigma, gamma, dens, allowed)
                for bits in (0, 8, 64):
                    assert exact <= _joint_value(sums, i, sigma, gamma, dens, allowed, bits), (trial, i, sigma, bits)


@pytest.mark.parametrize("seed, V, n, d, dh, fold", [c + (True,) for c in CASES[:2]] + [CASES[2] + (False,)])
def test_the_witness_replay_through_the_form_encloses_the_forward_pass(tmp_path, seed, V, n, d, dh, fold):
    """attention.replay (d at an integer x through the ratio form: exact r, c_k, s_k, one exp ball per member) is an
    enclosure of the same value as graph.evaluate's dense arb forward pass at every sequence, about 1e-70 wide, and
    deviation_at (engine and checker: a certificate's witness deviation) is its lower end. A non-integer x, or a graph
    without the form (softmax written with exp and reciprocal nodes), falls back to the forward pass."""
    from flint import ctx

    from certify.checker import curves
    from certify.checker.attention import replay
    from certify.checker.graph import deviation_at, evaluate

    p = _params(np.random.default_rng(seed), V, n, d, dh)
    joint = _joint(tmp_path, p, V, n, fold=fold)
    for tokens in itertools.product(range(V), repeat=n):
        x = [Fraction(int(c % V == tokens[c // V])) for c in range(V * n)]
        with ctx.workprec(256):
            fast, dense = replay(joint, x), evaluate(joint, x)["d"]
            assert len(fast) == len(dense) == joint.out_dim
            assert all(a.overlaps(b) and a.rad() < 1e-70 for a, b in zip(fast, dense)), tokens
            assert deviation_at(joint, x) == max(curves.exact(abs(v).lower(), -1) for v in fast)
    assert replay(joint, [Fraction(1, 2)] + x[1:]) is None
    other = _joint(tmp_path, p, V, n, softmax="difference")
    assert form(other, V) is None and replay(other, x) is None


def _joint_relaxed_plain(g1, g2, sign, r, mu):
    """The reference for tokens._joint_relaxed: the engine's code before adb84e0 (7c96fa4, verbatim but for the parts it
    always returns), kept here on purpose. It forms every pair's matrix elementwise ((t1, t2, m) arrays summed term by
    term, the mirror transposed), an independent computation of what the engine now forms by batched products of the
    factors; its unary and constant branches are the engine's own (unchanged by adb84e0), so they are compared only
    through the pairs' maxima and the total they enter."""
    const, unary, pairs = 0.0, {}, {}
    for p1, E1, C1 in g1:
        for p2, E2, C2 in g2:
            a = E1[:, None] * (sign * C1 + sign * r - mu)
            if p1 is not None and p1 == p2:
                unary[p1] = unary.get(p1, 0) + a * E2[:, None] + E1[:, None] * E2[:, None] * sign * C2
            elif p1 is not None and p2 is not None:
                key, t = ((p1, p2), False) if p1 < p2 else ((p2, p1), True)
                mat = a[:, None, :] * E2[None, :, None] + E1[:, None, None] * (E2[:, None] * sign * C2)[None, :, :]
                pairs[key] = pairs.get(key, 0) + (mat.transpose(1, 0, 2) if t else mat)
            elif p1 is not None or p2 is not None:
                p = p1 if p1 is not None else p2
                v = (a * E2[0] + E1[:, None] * E2[0] * sign * C2[0]) if p1 is not None else (a[0] * E2[:, None] + E1[0] * E2[:, None] * sign * C2)
                unary[p] = unary.get(p, 0) + v
            else:
                const = const + a[0] * E2[0] + E1[0] * E2[0] * sign * C2[0]
    share = {p: sum(p in k for k in pairs) for p in unary}
    total, each = const + sum(u.max(0) for p, u in unary.items() if share[p] == 0), []
    for (j, k), mat in sorted(pairs.items()):
        if share.get(j):
            mat = mat + unary[j][:, None, :] / share[j]
        if share.get(k):
            mat = mat + unary[k][None, :, :] / share[k]
        each.append(mat.reshape(-1, mat.shape[-1]).max(0))
        total = total + each[-1]
    return total + np.zeros_like(mu), each


@pytest.mark.parametrize("seed", range(6))
def test_the_engines_batched_joint_relaxation_gives_the_plain_ones_values(seed):
    """tokens._joint_relaxed (each pair's matrix by one batched product of its factors) against the plain one: the same
    value and pair maxima, to float noise, with members on free positions in both orders, on the same position, fixed
    (None), and a position of group 1 with no partner in group 2 (its own terms not shared)."""
    from certify.bounds.tokens import _joint_relaxed

    rng = np.random.default_rng(seed)
    m, sizes = 5, {0: 4, 1: 3, 2: 5, 3: 2, None: 1}
    members = [[0, 1, 2, None], [2, 0, 1, None], [0, 3, None], [1, 1, 2]][seed % 4], [[1, 2, 0, None], [0, 1, None], [2, 0, 1], [2, None]][seed % 4]
    g1, g2 = ([(p, rng.uniform(0.1, 2, sizes[p]), rng.normal(size=(sizes[p], m)) * 10) for p in ps] for ps in members)
    for sign in (1.0, -1.0):
        r, mu = rng.normal(size=m), rng.normal(size=m) * 5
        value, each = _joint_relaxed(g1, g2, sign, r, mu, parts=True)
        want, want_each = _joint_relaxed_plain(g1, g2, sign, r, mu)
        assert np.allclose(value, want, rtol=1e-12, atol=1e-9) and len(each) == len(want_each) >= 1
        assert all(np.allclose(u, v, rtol=1e-12, atol=1e-9) for u, v in zip(each, want_each))
        assert np.array_equal(_joint_relaxed(g1, g2, sign, r, mu), value)
