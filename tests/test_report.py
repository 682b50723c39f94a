"""`certify report`: the audit report re-checks every certificate, says what was claimed and proved,
says REJECTED / MISSING loudly (exit 3), escapes user text, and renders in a real headless browser."""

import hashlib
import json
import re
import shutil
import subprocess
from fractions import Fraction
from html.parser import HTMLParser
from pathlib import Path

import pytest

from certify.checker import check_certificate
from certify.checker.numbers import rational_str
from certify.checker.spec import read_spec
from certify.cli import main
from certify.report import fmt
from certify.report.collect import layer_rows, output_bounds, ranges, region_bounds

from .conftest import ROOT, SPECS, shipped_text

SHIPPED = sorted(SPECS.glob("*.yaml"))
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def documented(spec: Path) -> str:
    return re.search(r"Expected verdict: (CERTIFIED|VIOLATED|UNKNOWN)", spec.read_text()).group(1)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory, monkeypatch_module):
    """One report over every shipped spec and its shipped certificate (HTML and Markdown)."""
    out = tmp_path_factory.mktemp("report")
    monkeypatch_module.chdir(ROOT)  # default certificates are proofs/<spec-name>.cert.json
    code = main(["report", *map(str, SHIPPED), "--html", str(out / "r.html"), "--md", str(out / "md" / "r.md")])
    return code, (out / "r.html").read_text(), (out / "md" / "r.md").read_text(), out


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_report_of_the_shipped_specs_says_verdict_bound_hashes_and_trust(shipped):
    code, page, md, _ = shipped
    expected = {documented(s) for s in SHIPPED}
    assert code == (1 if expected & {"VIOLATED", "UNKNOWN"} else 0)
    for spec in SHIPPED:
        if read_spec(spec).levels:  # one certificate per level (proofs/<stem>.<level>.cert.json): see test_flow
            continue
        cert_path = ROOT / "proofs" / f"{spec.stem}.cert.json"
        cert = json.loads(cert_path.read_text())
        bound = Fraction(cert["claim"]["bound"])
        section = page.split(f'<h2>{spec.stem} <span class="pill')[1].split("</section>")[0]
        assert f">{documented(spec)}</span>" in section  # the verdict pill
        assert f'class="verdict v-{documented(spec)}"' in section
        assert fmt.decimal(bound, 6, "up") in section and cert["claim"]["bound"] in section  # decimal and exact
        assert Fraction(fmt.decimal(bound, 8, "up")) >= bound  # the shown decimal is still an upper bound
        lower = Fraction(cert["witness"]["deviation"])
        if read_spec(spec).property.semantics == "float32":  # attained under float32: the real deviation minus the rounding margin
            lower = check_certificate(spec, cert_path).witness_deviation
            assert lower < Fraction(cert["witness"]["deviation"])
        assert rational_str(lower) in section and Fraction(fmt.decimal(lower, 8, "down")) <= lower
        for digest in (sha(spec), cert["model_sha256"], sha(cert_path), *cert["data_sha256"].values()):
            assert digest in section and digest in md
        assert "DIFFERENT" not in section
        assert f"## {spec.stem.replace('_', chr(92) + '_')}: " in md
    for text in ("Trust boundary", "real arithmetic", "z3", "python-flint", "PyYAML", "definitions of g", "Provenance"):
        assert text in page and text in md
    assert 'id="trust"' in page and 'id="provenance"' in page


def test_per_output_bounds_come_from_the_output_layer_and_bracket_the_witness(shipped):
    _, page, _, _ = shipped
    section = page.split("<h2>tiny_prune <span")[1].split("</section>")[0]
    # tiny_prune: the certified bound is output 0's linear upper bound (docs/certificate-format.md, section 8)
    assert "2.47289</b>" in section and "◀ largest" in section
    assert "unstable" in section and "f | g stacked" in section


class Balance(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.tags, self.ids, self.srcs, self.hrefs = [], [], [], set(), [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if "id" in attrs:
            assert attrs["id"] not in self.ids, f"duplicate id {attrs['id']}"
            self.ids.add(attrs["id"])
        if tag == "img":
            self.srcs.append(attrs.get("src", ""))
        if tag == "a":
            self.hrefs.append(attrs.get("href", ""))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()


def test_html_is_well_formed_and_self_contained(shipped):
    _, page, _, _ = shipped
    assert page.startswith("<!DOCTYPE html>")
    p = Balance()
    p.feed(page)
    p.close()
    assert not p.errors and not p.stack, (p.errors[:5], p.stack)
    assert {"summary", "trust", "provenance"} | {f"spec-{i}" for i in range(len(SHIPPED))} <= p.ids
    assert "script" not in p.tags and "link" not in p.tags and "iframe" not in p.tags
    assert p.srcs and all(s.startswith("data:image/png;base64,") for s in p.srcs)
    assert all(h.startswith("#") and h[1:] in p.ids for h in p.hrefs)
    assert "http://" not in page and "https://" not in page
    assert len(p.srcs) >= 1 + 2 * len(SHIPPED)  # summary, and per spec the outputs and layers charts at least


def test_markdown_writes_its_figures_beside_it(shipped):
    _, _, md, out = shipped
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert links
    for name in links:
        png = out / "md" / name
        assert "/" not in name and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def tampered(tmp_path: Path) -> Path:
    cert = json.loads((ROOT / "proofs" / "tiny_prune.cert.json").read_text())
    cert["claim"]["bound"] = "1"  # tighter than anything the steps prove
    path = tmp_path / "tiny_prune.cert.json"
    path.write_text(json.dumps(cert))
    return path


def test_a_tampered_certificate_is_reported_rejected_and_exits_3(tmp_path, capsys):
    out = tmp_path / "r.html"
    code = main(["report", str(SPECS / "tiny_prune.yaml"), "--cert", str(tampered(tmp_path)), "--html", str(out),
                 "--md", str(tmp_path / "r.md")])
    assert code == 3
    assert capsys.readouterr().out.startswith("REJECTED")
    page, md = out.read_text(), (tmp_path / "r.md").read_text()
    assert 'class="verdict v-REJECTED"' in page and "REJECTED: the certificate failed the trusted checker" in page
    assert "Nothing in it is believed" in page and "missing goal" in page
    assert "certified upper bound" not in page.split('id="spec-0"')[1].split("</section>")[0]
    assert "🛑 REJECTED" in md


def test_a_missing_certificate_is_reported_and_exits_3(tmp_path):
    out = tmp_path / "r.html"
    assert main(["report", str(SPECS / "tiny_prune.yaml"), "--cert", str(tmp_path / "none.cert.json"), "--html", str(out)]) == 3
    page = out.read_text()
    assert 'class="verdict v-MISSING"' in page and "no certificate at" in page


def test_run_makes_a_missing_certificate_first(tmp_path, monkeypatch):
    import certify.engine

    calls = []

    def fake_run_check(spec, out, *rest):  # stands in for `certify check` (no JAX in this test)
        calls.append((spec, out))
        shutil.copy(ROOT / "proofs" / "tiny_prune.cert.json", out)

    monkeypatch.setattr(certify.engine, "run_check", fake_run_check)
    cert = tmp_path / "made.cert.json"
    assert main(["report", str(SPECS / "tiny_prune.yaml"), "--cert", str(cert), "--run", "--html", str(tmp_path / "r.html")]) == 0
    assert len(calls) == 1 and "made it for this report" in (tmp_path / "r.html").read_text()


def test_user_text_is_escaped(tmp_path):
    evil = tmp_path / 'x<img src=x onerror="alert(1)">&.yaml'
    evil.write_text(shipped_text())
    out = tmp_path / "r.html"
    assert main(["report", str(evil), "--html", str(out), "--md", str(tmp_path / "r.md")]) == 3  # no certificate
    page, md = out.read_text(), (tmp_path / "r.md").read_text()
    assert "<img src=x" not in page and "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;&amp;" in page  # Jinja2 autoescape
    prose = re.sub(r"`[^`]*`", "", md)  # code spans show their text literally
    assert "img src=x" in prose and not re.search(r"(?<!\\)<img", prose)


def test_bad_input_exits_2(tmp_path):
    assert main(["report", str(tmp_path / "nope.yaml"), "--html", str(tmp_path / "r.html")]) == 2
    assert "BAD INPUT" in (tmp_path / "r.html").read_text()
    assert main(["report", str(SPECS / "tiny_prune.yaml"), str(SPECS / "digits_prune.yaml"), "--cert", "x.cert.json"]) == 2
    (tmp_path / "file").write_text("")
    assert main(["report", str(SPECS / "tiny_prune.yaml"), "--cert", str(tmp_path / "none"), "--html", str(tmp_path / "file" / "r.html")]) == 2


def test_tree_certificates_report_the_envelope_over_their_leaves():
    def step(lo, up):
        return {"kind": "interval", "layer": 2, "lower": lo, "upper": up}

    tree = {"split": "input", "dim": 0, "at": "0", "steps": [step(["-5", "-5"], ["5", "5"])], "children": [
        {"steps": [step(["-1", "-2"], ["3", "1/2"])]},
        {"split": "relu", "layer": 1, "neuron": 0, "steps": [step(["-2", "-1"], ["1", "1"])], "children": [{}, {}]},
    ]}
    # the second child proves the bound 3 itself (max |.| = 2), so its children are never visited
    lo, up = output_bounds({"tree": tree}, 2, Fraction(3))
    assert lo == [-2, -2] and up == [3, 1]
    flat = {"steps": [step(["-1", "0"], ["2", "2"]), {"kind": "linear", "layer": 2, "lower": ["-2", "1"], "upper": ["1", "3"]}]}
    assert output_bounds(flat, 2) == ([-1, 1], [1, 2])  # several output-layer steps intersect


def test_decimals_round_in_the_safe_direction():
    for q in (Fraction(2, 3), Fraction(-2, 3), Fraction(10**40 + 1, 3), Fraction(1, 7 * 10**12), Fraction(99999995, 10**8)):
        assert Fraction(fmt.decimal(q, 6, "up")) >= q >= Fraction(fmt.decimal(q, 6, "down"))
    assert fmt.decimal(Fraction(1, 2)) == "0.5" and fmt.decimal(Fraction(0)) == "0"
    assert ranges([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_html_renders_in_a_headless_browser(shipped, tmp_path):
    from matplotlib.image import imread

    _, _, _, out = shipped
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                    f"--screenshot={shot}", "--window-size=1200,2400", (out / "r.html").as_uri()],
                   capture_output=True, timeout=120, check=False)
    assert shot.is_file() and shot.stat().st_size > 20_000
    pixels = imread(shot)
    assert pixels.shape[:2] == (2400, 1200)
    assert pixels[..., :3].std() > 0.05  # not a blank page
    header = pixels[:60, :, :3].mean(axis=(0, 1))  # the dark-blue title bar rendered with its style sheet
    assert header[2] > header[0] + 0.1


def test_a_levels_spec_reports_every_level_and_its_scale_flow_plot(tmp_path):
    out = tmp_path / "levels.html"
    assert main(["report", str(ROOT / "specs" / "toy_tiers.yaml"), "--html", str(out)]) == 1  # keep1 is VIOLATED
    html = out.read_text()
    assert all(f"keep{k}" in html for k in range(1, 7))
    assert 'alt="scale-flow plot"' in html


def test_tree_layer_bounds_are_the_envelope_over_the_regions():
    """An input split's node carries no steps (its children bound every layer themselves), so the
    report's per-layer phases come from the regions: a neuron is active or inactive on the domain
    only if it is so in every region, and a layer some region leaves unbounded is left out."""
    def step(k, lo, up):
        return {"kind": "interval", "layer": k, "lower": lo, "upper": up}

    tree = {"split": "input", "dim": 0, "at": "0", "steps": [], "children": [
        {"steps": [step(1, ["1", "-2"], ["2", "-1"]), step(3, ["0"], ["1"])]},
        {"steps": [step(1, ["1/2", "-1"], ["3", "1"]), step(2, ["0"], ["1"]), step(3, ["-1"], ["0"])]},
    ]}
    bounds = region_bounds({"tree": tree}, 3, Fraction(1))
    assert bounds[1] == ([Fraction(1, 2), -2], [3, 1]) and bounds[3] == ([-1], [1]) and 2 not in bounds
    rows = layer_rows([2, 1, 1], 0, bounds)
    assert (rows[0].active, rows[0].inactive, rows[0].unstable) == (1, 0, 1) and rows[1].unstable is None


def test_report_of_a_token_domain_shows_the_worst_token_sequence(tmp_path):
    """A transformer over a token domain: the report describes the domain as token sequences and shows
    the witness as the token sequence the checker accepted (one-hot blocks decoded), not 64 coordinates."""
    spec = SPECS / "max_of_k_small.yaml"
    md = tmp_path / "r.md"
    assert main(["report", str(spec), "--md", str(md), "--cert", str(ROOT / "proofs" / "max_of_k_small.cert.json")]) == 0
    text = md.read_text()
    assert "Every token sequence of length 4 over a vocabulary of 16 tokens" in text and "65,536 sequences" in text
    cert = json.loads((ROOT / "proofs" / "max_of_k_small.cert.json").read_text())
    x = [Fraction(v) for v in cert["witness"]["x"]]
    tokens = [x[p * 16:(p + 1) * 16].index(1) for p in range(4)]
    assert f"### Worst-case token sequence\n\n`{' '.join(map(str, tokens))}`" in text
    assert "### Witness input" not in text
