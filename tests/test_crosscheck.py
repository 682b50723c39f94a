"""`certify check --engine auto_lirpa`: auto_LiRPA's bounds beside certify's, never certified."""

import importlib.util
import json
import subprocess
import sys
from fractions import Fraction

import pytest

from .conftest import ROOT, SPECS


def run(*args, code=None):
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "certify.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_second_opinion_is_reported_and_changes_nothing(tmp_path):
    # like pytest.importorskip, without importing torch into the test process (its import resets warning filters)
    if importlib.util.find_spec("auto_LiRPA") is None or importlib.util.find_spec("torch") is None:
        pytest.skip("auto_LiRPA is not installed (make bench-deps)")
    cert = tmp_path / "tiny.cert.json"
    out = run("check", str(SPECS / "tiny_prune.yaml"), "--method", "alpha", "--engine", "auto_lirpa", "--json", "--out", str(cert))
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["verdict"] == "CERTIFIED" and r["checker"]["reason"] is None
    lirpa = r["auto_lirpa"]
    assert lirpa["certified"] is False and set(lirpa["bounds"]) == {"IBP", "CROWN", "alpha-CROWN"}
    lower, ours = Fraction(r["attained_lower"]), Fraction(r["certified_upper"])
    assert lirpa["bounds"]["CROWN"] >= float(lower)  # the exact witness deviation is attained: every sound bound is above it
    assert lirpa["bounds"]["alpha-CROWN"] >= float(lower)
    assert float(ours) <= lirpa["bounds"]["alpha-CROWN"] + 1e-9  # certify's alpha is no looser on the joint network

    # the plain output prints it on one line, and the verdict and certificate are what certify alone gives
    text = run("check", str(SPECS / "tiny_prune.yaml"), "--method", "alpha", "--engine", "auto_lirpa", "--out", str(cert))
    assert text.returncode == 0
    line = [l for l in text.stdout.splitlines() if "auto_LiRPA" in l]
    assert len(line) == 1 and line[0].strip().startswith("auto_LiRPA (not certified): IBP ") and ", alpha-CROWN " in line[0]
    alone = run("check", str(SPECS / "tiny_prune.yaml"), "--method", "alpha", "--json", "--out", str(tmp_path / "alone.cert.json"))
    assert json.loads(alone.stdout)["certified_upper"] == r["certified_upper"] and "auto_lirpa" not in json.loads(alone.stdout)


def test_missing_auto_lirpa_is_one_line_exit_2(tmp_path):
    cert = tmp_path / "never.cert.json"
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'auto_LiRPA'):
            raise ImportError('blocked: ' + name, name=name)
sys.meta_path.insert(0, Block())
from certify.cli import main
sys.exit(main(['check', {str(SPECS / 'tiny_prune.yaml')!r}, '--engine', 'auto_lirpa', '--out', {str(cert)!r}]))
"""
    out = run(code=code)
    assert out.returncode == 2, out.stderr
    lines = [l for l in out.stderr.splitlines() if not l.startswith("INFO")]
    assert len(lines) == 1 and "make bench-deps" in lines[0] and lines[0].startswith("error: --engine auto_lirpa")
    assert not cert.exists()  # it stops before bounding
