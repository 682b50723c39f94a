"""Branch and bound on Ray workers (issue 19): a run that reaches its target makes the serial tree
(its leaves bounded elsewhere, in another order), and the checker accepts both certificates; the
command line takes --workers for one spec's leaves and --jobs for the checker's processes."""

from __future__ import annotations

import json

import pytest

from certify.certificate import serialize
from certify.checker.check import Verdict
from certify.cli import main
from certify.engine import attained_lower, bound_with, prepare, write_and_check

from .conftest import ROOT, SPECS

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray instance for the module (branch and bound joins it and leaves it running)."""
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
