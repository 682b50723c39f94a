"""CLI: every exit code is reached; every shipped spec gives its documented verdict."""

import json
import re
import subprocess
import sys

import pytest

import certify.engine
from certify.checker.spec import read_spec
from certify.cli import main

from .conftest import ROOT, SPECS

SPEC_FILES = sorted(SPECS.glob("*.yaml"))
EXPECTED = {"CERTIFIED": 0, "VIOLATED": 1, "UNKNOWN": 1}


def documented(spec):
    m = re.search(r"Expected verdict: (CERTIFIED|VIOLATED|UNKNOWN)", spec.read_text())
    assert m, f"{spec.name} documents no expected verdict"
    return m.group(1)


def shipped_certificates(spec):
    """proofs/<stem>.cert.json, or one proofs/<stem>.<level>.cert.json per level of a spec with `levels:`."""
    levels = read_spec(spec).levels
    return [ROOT / "proofs" / (f"{spec.stem}.{lv.name}.cert.json" if levels else f"{spec.stem}.cert.json")
            for lv in (levels or [None])]


def worst(verdicts):
    """The documented verdict of a spec with levels is its worst level's."""
    return max(verdicts, key=["CERTIFIED", "UNKNOWN", "VIOLATED"].index)


@pytest.mark.parametrize("spec", SPEC_FILES, ids=lambda p: p.stem)
def test_every_example_gives_its_documented_verdict_and_verifies(spec, tmp_path, capsys):
    cert = tmp_path / f"{spec.stem}.cert.json"
    verdict = documented(spec)
    assert main(["check", str(spec), "--out", str(cert), "--json"]) == EXPECTED[verdict]
    result = json.loads(capsys.readouterr().out)
    results = result if isinstance(result, list) else [result]  # a spec with levels: one result per level
    assert len(results) == max(1, len(read_spec(spec).levels))
    assert worst([r["verdict"] for r in results]) == verdict
    from fractions import Fraction
    for r in results:
        assert r["checker"]["reason"] is None
        assert Fraction(r["attained_lower"]) <= Fraction(r["certified_upper"])
        assert main(["verify", str(spec), r["certificate"]]) == EXPECTED[r["verdict"]]
        assert capsys.readouterr().out.startswith(r["verdict"])


def test_shipped_certificates_verify(capsys):
    for spec in SPEC_FILES:
        verdicts = []
        for cert in shipped_certificates(spec):
            assert cert.is_file(), f"no shipped certificate {cert.name} for {spec.name}: run `certify check {spec}`"
            code = main(["verify", str(spec), str(cert)])
            out = capsys.readouterr().out
            verdicts.append(out.split()[0])
            assert verdicts[-1] in EXPECTED and code == EXPECTED[verdicts[-1]], f"{cert.name}: {out}"
        assert worst(verdicts) == documented(spec), spec.name


def test_unknown_verdict_exits_1(tmp_path, capsys):
    text = (SPECS / "tiny_second_model.yaml").read_text().replace('tolerance: "3/2"', 'tolerance: "1/20"')
    spec = tmp_path / "unknown.yaml"
    spec.write_text(text.replace("../models/", str(ROOT / "models") + "/"))
    assert main(["check", str(spec), "--out", str(tmp_path / "u.cert.json"), "--method", "crown"]) == 1
    assert "UNKNOWN" in capsys.readouterr().out


def test_certificate_rejected_by_checker_exits_3_loudly(tmp_path, capsys, monkeypatch):
    real = certify.engine.propose

    def broken(*args, **kw):  # an engine bug: claims a bound it never proved
        p = real(*args, **kw)
        for s in p.steps:
            if s["kind"] == "interval" and s["layer"] == 1:
                s["upper"] = s["lower"]
        return p

    monkeypatch.setattr(certify.engine, "propose", broken)
    assert main(["check", str(SPECS / "tiny_prune.yaml"), "--out", str(tmp_path / "r.cert.json")]) == 3
    out = capsys.readouterr().out
    assert "REJECTED" in out and "bug" in out


def test_internal_error_exits_4_with_one_line(tmp_path, capsys, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(certify.engine, "run_check", boom)
    assert main(["check", str(SPECS / "tiny_prune.yaml"), "--no-cache"]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("internal error: RuntimeError: simulated failure")


def test_usage_error_exits_2():
    with pytest.raises(SystemExit) as exc:
        main(["check"])
    assert exc.value.code == 2


def test_checker_imports_no_jax_or_numpy():
    """The trusted kernel runs with jax, numpy, scipy and torch made unimportable."""
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('jax', 'jaxlib', 'numpy', 'scipy', 'torch'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
from certify.checker import check_certificate, Verdict
r = check_certificate({str(SPECS / 'digits_low_rank.yaml')!r}, {str(ROOT / 'proofs' / 'digits_low_rank.cert.json')!r})
assert r.verdict is Verdict.CERTIFIED, r
from certify.cli import main
assert main(['verify', {str(SPECS / 'tiny_prune.yaml')!r}, {str(ROOT / 'proofs' / 'tiny_prune.cert.json')!r}]) == 0
print('ok', sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'numpy')))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "ok []"


def test_readme_states_the_checker_size():
    """The README's size of the trusted checker is what benchmarks/checker_size.py measures now."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("checker_size", ROOT / "benchmarks" / "checker_size.py")
    size = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(size)
    m = size.measure()
    readme = " ".join((ROOT / "README.md").read_text().split())
    for claim in (f"the checker is {m['total']['physical']:,} lines", f"{m['total']['code']:,} without blank, comment and docstring",
                  f"**proof kernel** is {m['kernel']['code']:,} of those", f"**input readers** are the other {m['readers']['code']:,}"):
        assert claim in readme, f"README.md should say {claim!r} (python benchmarks/checker_size.py)"


def test_console_script_keeps_an_xla_cache_and_runs_without_one(tmp_path):
    """`certify` (the console script, `cli.run`) stores XLA compilations in CERTIFY_XLA_CACHE; where
    that place cannot be made it runs without a cache, with no warning."""
    import os

    code = "import sys; from certify.cli import run; sys.argv = ['certify'] + sys.argv[1:]; sys.exit(run())"
    blocked = tmp_path / "file"
    blocked.write_text("a file, not a directory")
    for cache, filled in ((tmp_path / "xla", True), (blocked / "xla", False)):
        env = {**os.environ, "CERTIFY_XLA_CACHE": str(cache), "JAX_PLATFORMS": "cpu"}
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
        out = subprocess.run([sys.executable, "-c", code, "check", str(SPECS / "tiny_prune.yaml"), "--no-cache",
                              "--out", str(tmp_path / "t.cert.json")], capture_output=True, text=True, cwd=ROOT, env=env)
        assert out.returncode == EXPECTED[documented(SPECS / "tiny_prune.yaml")], out.stderr
        assert "Warning" not in out.stderr, out.stderr
        assert (cache.is_dir() and any(cache.iterdir())) is filled
