"""Branch and bound on Ray workers (issue 19): a run that reaches its target makes the serial tree
(its leaves bounded elsewhere, in another order), and the checker accepts both certificates; the
command line takes --workers for one spec's leaves and --jobs for the checker's processes. The
pipelined search (`bab._ray_search`) is also run on an in-process stand-in for the Ray pool, which
hands results back in another order than Ray would, without Ray's start-up."""

from __future__ import annotations

import gc
import json
import pickle

import pytest

from certify.bounds import bab
from certify.certificate import serialize
from certify.checker.check import Verdict
from certify.cli import main
from certify.engine import attained_lower, bound_with, prepare, write_and_check

from .conftest import ROOT, SPECS



@pytest.fixture(scope="module")
def ray_session():
    """One local Ray instance for the module (branch and bound joins it and leaves it running)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning", "ignore:os.fork:RuntimeWarning")
def test_ray_tree_is_the_serial_tree_and_both_check(ray_session, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text((SPECS / "tiny_prune.yaml").read_text().replace("../models/", str(ROOT / "models") + "/")
                    .replace("tolerance: 3", 'tolerance: "21/20"'))
    p = prepare(spec, tmp_path / "c.cert.json")
    witness, lower = attained_lower(p)
    runs = {}
    for workers in (0, 2):
        bound, body, notes = bound_with(p, "bab", time_budget=300, workers=workers)
        assert bound <= p.spec.property.tolerance, "the run did not reach its target: trees may differ"
        assert notes["bab"]["splits"] >= 2 and notes["bab"]["workers"] == max(workers, 1)
        result = write_and_check(p, "bab", bound, body, witness, lower, notes, tmp_path / f"w{workers}.cert.json", jobs=1)
        assert result.verdict is Verdict.CERTIFIED, result.reason
        runs[workers] = (bound, json.dumps(serialize(body)))
    assert runs[0] == runs[2]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning", "ignore:os.fork:RuntimeWarning")
def test_cli_workers_and_jobs_for_one_spec(ray_session, tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text((SPECS / "tiny_prune.yaml").read_text().replace("../models/", str(ROOT / "models") + "/")
                    .replace("tolerance: 3", 'tolerance: "21/20"'))
    cert = tmp_path / "c.cert.json"
    assert main(["check", str(spec), "--method", "bab", "--workers", "2", "--jobs", "2", "--out", str(cert), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert json.loads(cert.read_text())["engine"]["bab"]["workers"] == 2, out
    assert main(["verify", str(spec), str(cert), "--jobs", "2"]) == 0


def _mnist(tmp_path, tolerance: str):
    """The VeryDiff MNIST pair (input splits, CROWN leaves inside the root's steps: the workers send back light
    proposals and the splits to try on them) at `tolerance`."""
    spec = tmp_path / "mnist.yaml"
    spec.write_text((SPECS / "verydiff_mnist.yaml").read_text().replace("../tests/", str(ROOT / "tests") + "/")
                    .replace("tolerance: 4", f"tolerance: {tolerance}"))
    return prepare(spec, tmp_path / "m.cert.json")


def _tree(r) -> str:
    return json.dumps(serialize(r.tree), sort_keys=True)


class _InProcess:
    """`bab._RayBounders` without Ray: each task runs at once on a copy (pickled there and back, as across processes),
    and finished tasks are handed back newest first, an order the serial search never takes."""

    def __init__(self, workers, address, problem):
        net, joint, _, _ = bab.fold_inputs(*problem)
        self.actors = [bab._Bounder(net, joint) for _ in range(workers)]
        self.done, self.light, self.batched, self.seconds, self.frozen = [], 0, 0, 0.0, 0

    def configure(self, args, plan):
        for a in self.actors:
            a.configure(*args, plan=plan)

    def submit(self, worker, items):
        results = pickle.loads(self.actors[worker].work_pickled(pickle.dumps(items)))
        self.light += sum(not p.relax for r in results for p, _ in (r[1] if isinstance(r[0], int) else [r]))
        self.batched += len(items) > 1
        self.done.append((object(), results))
        return self.done[-1][0]

    def next_done(self, tasks):
        self.frozen = max(self.frozen, gc.get_freeze_count())  # bab.RAY_FREEZE: the driver's tree frozen as it grows
        task, result = self.done.pop()
        assert task in tasks
        return task, result

    def close(self):
        _InProcess.last = self


@pytest.mark.parametrize("which", ["mnist", "tiny_prune"])
def test_pipelined_search_makes_the_serial_tree(which, tmp_path, monkeypatch):
    """The Ray search (`_ray_search`: splits chosen in the workers, several regions a task, results taken as they
    finish) on an in-process stand-in that finishes tasks out of order: the serial tree, on input splits with light
    proposals (MNIST) and on ReLU splits with alpha leaves (tiny_prune)."""
    if which == "mnist":
        p = _mnist(tmp_path, '"7/5"')
    else:
        spec = tmp_path / "spec.yaml"
        spec.write_text((SPECS / "tiny_prune.yaml").read_text().replace("../models/", str(ROOT / "models") + "/")
                        .replace("tolerance: 3", 'tolerance: "21/20"'))
        p = prepare(spec, tmp_path / "c.cert.json")
    args = (p.net, p.joint, p.box, "alpha", p.spec.property.tolerance)
    serial = bab.branch_and_bound(*args, max_leaves=400, time_budget=300, margins=p.margins)
    assert serial.bound <= p.spec.property.tolerance and serial.splits >= 2
    monkeypatch.setattr(bab, "_RayBounders", _InProcess)
    monkeypatch.setattr(bab, "RAY_BATCH_HOT", 1)  # several regions a task whenever the heap has them
    monkeypatch.setattr(bab, "RAY_BATCH", 3)
    monkeypatch.setattr(bab, "RAY_FREEZE", 1)  # the collector frozen after every finished task: the same tree
    ray_like = bab.branch_and_bound(*args, max_leaves=400, time_budget=300, margins=p.margins, workers=2)
    assert (ray_like.bound, ray_like.leaves, _tree(ray_like)) == (serial.bound, serial.leaves, _tree(serial))
    assert _InProcess.last.frozen > 0 and gc.get_freeze_count() == 0  # frozen during the search, unfrozen after
    light, batched = _InProcess.last.light, _InProcess.last.batched
    assert (light > 0) if which == "mnist" else (light == 0), light  # alpha's ReLU-split children need their parent's layers
    assert batched > 0


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning", "ignore:os.fork:RuntimeWarning")
def test_ray_mnist_tree_is_the_serial_tree_and_checks(ray_session, tmp_path):
    """The VeryDiff MNIST pair on 2 Ray workers to 1.4: the serial tree, and the checker accepts it."""
    p = _mnist(tmp_path, '"7/5"')
    witness, lower = attained_lower(p)
    trees = {}
    for workers in (0, 2):
        r = bab.branch_and_bound(p.net, p.joint, p.box, "alpha", p.spec.property.tolerance, max_leaves=400,
                                 time_budget=300, margins=p.margins, workers=workers)
        assert r.bound <= p.spec.property.tolerance and r.leaf_method == "crown" and r.splits >= 4
        trees[workers] = (r.bound, _tree(r))
    assert trees[0] == trees[2]
    result = write_and_check(p, "bab", r.bound, {"tree": r.tree}, witness, lower, {}, tmp_path / "w2.cert.json", jobs=1)
    assert result.verdict is Verdict.CERTIFIED and result.bound == r.bound, result.reason


def test_a_callers_frozen_objects_stay_frozen(tmp_path, monkeypatch):
    """The Ray search unfreezes the collector after its run only if nothing was frozen before it (a caller's
    gc.freeze() is the caller's)."""
    p = _mnist(tmp_path, '"7/5"')
    monkeypatch.setattr(bab, "_RayBounders", _InProcess)
    monkeypatch.setattr(bab, "RAY_FREEZE", 1)
    unfreezes = []  # (the frozen count itself may fall: a frozen object freed by refcounting leaves the permanent
    # generation, e.g. when a module cache is cleared during the search; so the search's unfreeze calls are counted)
    monkeypatch.setattr(gc, "unfreeze", lambda unfreeze=gc.unfreeze: (unfreezes.append(1), unfreeze())[1])
    gc.freeze()
    try:
        assert gc.get_freeze_count() > 0
        bab.branch_and_bound(p.net, p.joint, p.box, "alpha", p.spec.property.tolerance, max_leaves=20, time_budget=300,
                             margins=p.margins, workers=2)
        assert not unfreezes and gc.get_freeze_count() > 0
    finally:
        monkeypatch.undo()
        gc.unfreeze()


def test_pipelined_search_stopped_by_its_leaf_budget_checks(tmp_path, monkeypatch):
    """A Ray search stopped by max_leaves (the MNIST pair at tolerance 1/100, out of reach) finishes the tasks it handed
    out: its tree has exactly max_leaves leaves and the checker verifies its bound (VIOLATED: the witness is above 1/100)."""
    p = _mnist(tmp_path, '"1/100"')
    witness, lower = attained_lower(p)
    monkeypatch.setattr(bab, "_RayBounders", _InProcess)
    r = bab.branch_and_bound(p.net, p.joint, p.box, "alpha", p.spec.property.tolerance, max_leaves=40, time_budget=300,
                             margins=p.margins, workers=2)
    assert r.leaves == 40 and r.bound > p.spec.property.tolerance
    result = write_and_check(p, "bab", r.bound, {"tree": r.tree}, witness, lower, {}, tmp_path / "s.cert.json", jobs=1)
    assert result.verdict is Verdict.VIOLATED and result.bound == r.bound, result.reason
