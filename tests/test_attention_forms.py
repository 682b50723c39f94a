"""Who makes the softmax-ratio form (certify/checker/attention.py `form`) and how long it lives: a check makes its own
for its ratio leaves and its witness replay reuses that one (passed down by graph._check_graph, freed when the check
returns); the engine makes one for its witness replay and its ratio leaves (engine_graph.ratio_form). No module-level
memo is shared between engine and checker, and no joint graph stays referenced after a run."""

import gc
import weakref

from certify.checker import attention
from certify.checker.check import Verdict, check_certificate
from certify.engine import run_check

from .conftest import shipped_copy


def test_check_and_engine_make_one_form_each_and_keep_none(tmp_path, monkeypatch):
    """specs/max_of_k_small.yaml (V = 16) with a tolerance just above its maximum, so bab writes ratio leaves and a
    witness: the engine makes the form once (its replay and its leaves share it), the check once (its leaves and its
    replay); after a run no form is reachable, and after a check neither is its joint graph (the engine's joint graph
    stays in bounds/graph.py's float cache of the last 4 graphs, engine state). Fails with a memo kept in attention.py,
    or with the replay making its own form (two forms in the check)."""
    made = []
    real = attention.form

    def spy(joint, vocab):
        fm = real(joint, vocab)
        made.append((weakref.ref(fm), weakref.ref(joint)))
        return fm

    monkeypatch.setattr(attention, "form", spy)
    spec = shipped_copy(tmp_path, "max_of_k_small", tolerance="33")
    cert = tmp_path / "c.json"
    o = run_check(spec, cert, "bab", timeout=60, jobs=1)
    assert o.check.verdict is Verdict.CERTIFIED and '"ratio"' in cert.read_text() and o.lower > 0
    assert len(made) == 2, made  # the engine's (set-up: replay and leaves), the check's (leaves and replay)
    del o
    gc.collect()
    assert all(fm() is None for fm, _ in made)
    made.clear()
    assert check_certificate(spec, cert).verdict is Verdict.CERTIFIED
    assert len(made) == 1
    gc.collect()
    assert made[0][0]() is None and made[0][1]() is None
    assert not hasattr(attention, "_LAST") and not hasattr(attention, "form_of")
