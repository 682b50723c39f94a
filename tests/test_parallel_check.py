"""Checking split trees in worker processes (issue 19): the same verdict, bound and steps as the
serial check; a bad leaf rejects wherever it lies; a worker process that dies rejects."""

from __future__ import annotations

import copy
import json
import os

import pytest

from certify.checker import check
from certify.checker.check import Verdict, check_certificate
from certify.checker.errors import Rejected
from certify.checker.model import read_model
from certify.checker.network import build_g, exact_layers, input_box, joint_network
from certify.checker.spec import read_spec
from certify.engine import run_check

from .conftest import shipped_copy


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """tiny_prune at a tolerance only branch and bound reaches: a tree of a few dozen nodes."""
    d = tmp_path_factory.mktemp("parallel")
    spec = shipped_copy(d, tolerance="21/20")
    path = d / "t.cert.json"
    outcome = run_check(spec, path, "bab")
    assert outcome.verdict is not Verdict.REJECTED, outcome.check.reason
    cert = json.loads(path.read_text())
    assert check._tree_size(cert["tree"], 10**6) >= 7, "branch and bound made too few splits"
    return spec, path, cert


def _leaves(node, where="tree"):
    if "children" not in node:
        return [(where, node)]
    return [leaf for i, kid in enumerate(node["children"]) for leaf in _leaves(kid, f"{where}.{i}")]


def _spy(monkeypatch) -> list:
    """Small trees go to workers too (the parent decides), and each call of the parallel part is recorded."""
    calls, real = [], check._parallel
    monkeypatch.setattr(check, "PARALLEL_MIN_NODES", 1)
    monkeypatch.setattr(check, "PARALLEL_PARTS", 1)
    monkeypatch.setattr(check, "_parallel", lambda pending, *a: calls.append(len(pending)) or real(pending, *a))
    return calls


def test_workers_give_the_serial_verdict(tree, monkeypatch):
    spec, path, _ = tree
    calls = _spy(monkeypatch)
    serial = check_certificate(spec, path, jobs=1)
    assert not calls
    parallel = check_certificate(spec, path, jobs=2)
    assert calls and calls[0] >= 2, "the tree was not checked in workers"
    assert serial.verdict is not Verdict.REJECTED, serial.reason
    assert (parallel.verdict, parallel.bound, parallel.steps) == (serial.verdict, serial.bound, serial.steps)


def test_a_tampered_leaf_rejects_in_a_worker(tree, tmp_path, monkeypatch):
    """The last leaf (checked in a worker) claims a lower bound above what its steps derive."""
    spec, _, cert = tree
    calls = _spy(monkeypatch)
    bad = copy.deepcopy(cert)
    where, leaf = _leaves(bad["tree"])[-1]
    step = next(s for s in leaf["steps"] if s["kind"] == "interval" and s["layer"] == 1)
    step["lower"] = ["1000"] + step["lower"][1:]
    path = tmp_path / "bad.cert.json"
    path.write_text(json.dumps(bad))
    for jobs in (1, 2):
        result = check_certificate(spec, path, jobs=jobs)
        assert result.verdict is Verdict.REJECTED and result.reason.startswith(f"{where}.steps"), (jobs, result.reason)
    assert calls, "the tree was not checked in workers"


class _DiesWhenUnpickled:
    """A tree node whose unpickling ends the worker process that receives it (os._exit)."""

    def __reduce__(self):
        return os._exit, (3,)


def test_a_worker_that_dies_rejects(tree):
    """Fail closed: a worker process that exits while checking rejects the certificate."""
    spec, _, cert = tree
    s = read_spec(spec)
    f = read_model(s.model.path, s.model.sha256)
    joint, _ = joint_network(exact_layers(f), build_g(s, f, None), None)
    box = input_box(s, f)
    state = check._State(joint, tuple(box), {}, {}, {}, mats=check.weight_mats(joint))
    tree_ = check._Tree(box, {d: d for d in range(len(box[0]))}, check.parse_rational(cert["claim"]["bound"]), None)
    with pytest.raises(Rejected, match="a checking process died"):
        check._parallel([(_DiesWhenUnpickled(), state, "tree.0"), (cert["tree"], state, "tree.1")], tree_, 2, 1000, {})
