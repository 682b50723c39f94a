"""Many specs at once: JUnit output, the certificate cache, exit codes, and Ray = serial."""

import json
import shutil
import xml.etree.ElementTree as ET

import pytest

from certify.batch import Failed, run_many, same_result
from certify.cli import main

from .conftest import ROOT, SPECS


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A scratch project: copies of two specs and their models, run from its root."""
    (tmp_path / "specs").mkdir()
    shutil.copytree(ROOT / "models", tmp_path / "models")
    for name in ("tiny_prune", "digits_prune_tight", "tiny_second_model"):
        shutil.copy(SPECS / f"{name}.yaml", tmp_path / "specs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_junit_has_one_case_per_spec_and_reports_failures(workdir, capsys):
    (workdir / "specs" / "broken.yaml").write_text("version: 1\n")
    rc = main(["check", "specs/tiny_prune.yaml", "specs/digits_prune_tight.yaml", "specs/broken.yaml",
               "--junit", "ci/junit.xml"])
    assert rc == 2  # bad input outranks a violation; the other specs still ran
    out, err = capsys.readouterr()
    assert "CERTIFIED" in out and "VIOLATED" in out and err.count("\n") == 1 and err.startswith("error: ")
    root = ET.parse(workdir / "ci" / "junit.xml").getroot()
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["specs/tiny_prune.yaml", "specs/digits_prune_tight.yaml", "specs/broken.yaml"]
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "1")
    assert cases[0].find("failure") is None and cases[0].find("error") is None
    assert cases[1].find("failure").get("type") == "VIOLATED"
    assert cases[2].find("error").get("type") == "BAD_INPUT"
    assert all(float(c.get("time")) >= 0 for c in cases)


def test_unchanged_spec_and_model_are_reverified_not_rebounded(workdir, capsys):
    assert main(["check", "specs/tiny_prune.yaml", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["cached"] is False
    assert main(["check", "specs/tiny_prune.yaml", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["cached"] is True
    assert (second["certified_upper"], second["attained_lower"]) == (first["certified_upper"], first["attained_lower"])
    spec = workdir / "specs" / "tiny_prune.yaml"
    spec.write_text(spec.read_text().replace("tolerance: 3", "tolerance: 4"))  # a changed spec is re-bounded
    assert main(["check", "specs/tiny_prune.yaml", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cached"] is False


def test_tampered_cached_certificate_is_rebounded(workdir, capsys):
    assert main(["check", "specs/tiny_prune.yaml"]) == 0
    cert = workdir / "proofs" / "tiny_prune.cert.json"
    data = json.loads(cert.read_text())
    data["claim"]["bound"] = "1/1000"
    cert.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["check", "specs/tiny_prune.yaml", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cached"] is False
    assert main(["verify", "specs/tiny_prune.yaml", str(cert)]) == 0


def test_several_specs_with_out_is_bad_input(workdir, capsys):
    assert main(["check", "specs/tiny_prune.yaml", "specs/digits_prune_tight.yaml", "--out", "x.json"]) == 2


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning", "ignore:os.fork:RuntimeWarning")
def test_ray_gives_the_serial_results(workdir):  # Ray starts its processes with fork+exec: JAX's fork warning is moot
    pytest.importorskip("ray")
    specs = ["specs/tiny_prune.yaml", "specs/tiny_second_model.yaml"]
    serial = run_many(specs, use_cache=False)
    shutil.rmtree(workdir / "proofs")
    parallel = run_many(specs, use_cache=False, workers=2)
    assert not any(isinstance(r, Failed) for r in serial + parallel)
    assert all(same_result(a, b) for a, b in zip(serial, parallel))
    assert (workdir / "proofs" / "tiny_prune.cert.json").is_file()  # written where the caller runs
