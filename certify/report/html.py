"""The report as one self-contained HTML file: inline CSS, figures as base64 PNG, no scripts, no links out.

The markup is in templates/report.html.j2 (Jinja2, autoescaped: every value from a user's files is
escaped); the notebook card of an outcome is templates/card.html.j2, which the report includes for
each accepted certificate. The content model is the report's `Entry` list (collect.py) and
content.py, shared with the Markdown template; the filters below are the only formatting code.
"""

from __future__ import annotations

import base64
import re
from fractions import Fraction
from functools import lru_cache

from markupsafe import Markup, escape

from ..checker.numbers import rational_str
from . import content, fmt

CSS = """
:root { --ink:#1a202c; --muted:#4a5568; --line:#e2e8f0; --soft:#f7fafc; --blue:#2b6cb0; }
* { box-sizing: border-box; }
body { margin:0; font-family: "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif; color:var(--ink);
       background:#edf2f7; line-height:1.45; font-size:15px; }
header.top { background:#1a365d; color:#fff; padding:22px 40px 18px; }
header.top h1 { margin:0; font-size:26px; font-weight:600; letter-spacing:.2px; }
header.top p { margin:6px 0 0; color:#cbd5e0; font-size:13.5px; }
main { max-width:1120px; margin:0 auto; padding:24px 24px 48px; }
section.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:20px 28px 24px; margin:0 0 24px;
               box-shadow:0 1px 2px rgba(0,0,0,.04); }
h2 { font-size:21px; margin:0 0 14px; padding-bottom:8px; border-bottom:2px solid var(--line); }
h3 { font-size:16px; margin:22px 0 8px; color:#2a4365; }
p { margin:6px 0; }
.muted { color:var(--muted); font-size:13px; }
table { border-collapse:collapse; width:100%; margin:6px 0 10px; font-size:13.5px; }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:var(--soft); color:#2d3748; font-weight:600; }
table.kv th { width:210px; background:transparent; color:var(--muted); font-weight:600; }
td.num, th.num { text-align:right; font-variant-numeric: tabular-nums; }
code, .mono { font-family:"DejaVu Sans Mono", Menlo, Consolas, monospace; font-size:12.5px; }
.exact { font-family:"DejaVu Sans Mono", Menlo, Consolas, monospace; font-size:11.5px; word-break:break-all; color:var(--muted); }
.hash { font-family:"DejaVu Sans Mono", Menlo, Consolas, monospace; font-size:12px; word-break:break-all; }
.verdict { border-radius:6px; padding:14px 18px; margin:4px 0 12px; border-left:10px solid; }
.verdict .big { font-size:24px; font-weight:700; letter-spacing:.5px; }
.verdict p { margin:4px 0 0; }
.v-CERTIFIED { background:#f0fff4; border-color:#2f855a; color:#22543d; }
.v-VIOLATED { background:#fff5f5; border-color:#c53030; color:#742a2a; }
.v-UNKNOWN { background:#fffaf0; border-color:#b7791f; color:#744210; }
.v-REJECTED, .v-MISSING { background:#c53030; border-color:#742a2a; color:#fff; }
.v-REJECTED .big, .v-MISSING .big { font-size:28px; }
.v-BADINPUT { background:#edf2f7; border-color:#4a5568; color:#2d3748; }
.pill { display:inline-block; padding:2px 10px; border-radius:999px; font-size:12.5px; font-weight:700; color:#fff;
        vertical-align:middle; }
.p-CERTIFIED { background:#2f855a; } .p-VIOLATED { background:#c53030; } .p-UNKNOWN { background:#b7791f; }
.p-REJECTED, .p-MISSING { background:#742a2a; } .p-BADINPUT { background:#4a5568; }
.headline { display:flex; gap:14px; flex-wrap:wrap; margin:10px 0 4px; }
.stat { flex:1 1 200px; border:1px solid var(--line); border-radius:6px; padding:10px 14px; background:var(--soft); }
.stat .label { font-size:12px; text-transform:uppercase; letter-spacing:.6px; color:var(--muted); }
.stat .value { font-size:22px; font-weight:700; font-variant-numeric: tabular-nums; }
.fig { margin:8px 0 4px; }
.fig img { max-width:100%; height:auto; border:1px solid var(--line); border-radius:4px; background:#fff; }
ul { margin:4px 0 8px 0; padding-left:22px; }
li { margin:3px 0; }
.warn { color:#9b2c2c; font-weight:600; }
.ok { color:#2f855a; font-weight:600; }
.split { display:flex; gap:20px; align-items:flex-start; flex-wrap:wrap; }
.split .grow { flex:1 1 400px; min-width:0; }
.split .side { flex:0 0 auto; max-width:100%; }
nav.toc a { color:var(--blue); text-decoration:none; }
"""


def prose(x) -> Markup:
    """Escaped text in which `backquoted` parts are shown as code."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape("" if x is None else str(x)))))


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def pinned_arrays(spec) -> list:
    """(transform key, path, sha256 the spec declares, sha256 of the file now) of the spec's pinned float arrays."""
    from ..checker.model import sha256_file
    from ..checker.spec import is_float

    out = []
    for i, t in enumerate(spec.explanation if spec is not None else ()):
        if is_float(t) and t.arrays is not None:
            try:
                now = sha256_file(t.arrays.path)
            except OSError:
                now = None
            out.append((f"{spec.explanation_key}[{i}].{t.kind}", t.arrays.path, t.arrays.sha256, now))
    return out


def witness_view(e) -> dict:
    """The witness table: which coordinates vary in D, where each sits, the first 16 of them."""
    x, (lo, up) = e.witness, e.domain
    free = [i for i in range(len(x)) if lo[i] < up[i]]
    shown = free[:16] if free else list(range(min(16, len(x))))
    rows = [[str(i), fmt.decimal(x[i], 6), fmt.decimal(lo[i], 6), fmt.decimal(up[i], 6),
             "fixed" if lo[i] == up[i] else "at lower" if x[i] == lo[i] else "at upper" if x[i] == up[i] else "interior"]
            for i in shown]
    return {"n": len(x), "free": len(free), "at_lower": sum(x[i] == lo[i] for i in free),
            "at_upper": sum(x[i] == up[i] for i in free), "rows": rows}


def card_result(e) -> dict:
    """An accepted report entry in the shape the card reads (certify.status.result_json's keys)."""
    q = lambda v: None if v is None else rational_str(v)  # noqa: E731
    seconds = e.engine.get("seconds")
    return {"status": str(e.status), "spec": fmt_path(e.spec_path), "level": e.level, "certified_upper": q(e.bound),
            "attained_lower": q(e.lower), "tolerance": q(e.tolerance), "gap_ratio": e.gap, "method": e.engine.get("method"),
            "seconds": {"total": seconds} if isinstance(seconds, (int, float)) else {},
            "certificate": fmt_path(e.cert_path), "checker": {"steps": e.check.steps, "reason": e.check.reason or None}}


def fmt_path(p) -> str:
    from .collect import show_path
    return show_path(p)


@lru_cache(maxsize=1)
def environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("certify.report", "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=False, lstrip_blocks=False)
    env.filters.update(decimal=fmt.decimal, exact=fmt.exact, ratio=fmt.ratio, path=fmt_path, prose=prose,
                       cls=lambda status: str(status).replace(" ", ""), data_uri=data_uri, witness_view=witness_view,
                       rational=lambda v: None if v is None else Fraction(v), card_result=card_result,
                       verdict_sentence=content.verdict_sentence, pinned_arrays=pinned_arrays,
                       input_file=lambda spec, key: getattr(spec.input, key, ""))
    return env


def render(entries, summary_png, prov, overall: str) -> str:
    return environment().get_template("report.html.j2").render(
        entries=entries, summary_png=summary_png, prov=prov, info=dict(prov), overall=str(overall), css=CSS,
        titles=content.VERDICT_TITLE, trust=content.trust_paragraphs(any(e.model_notes for e in entries)),
        model_notes=[(e.name, n) for e in entries for n in e.model_notes]) + "\n"


def card(result: dict) -> str:
    """The summary card of one result (the JSON shape of `status.result_json`): verdict, certified
    upper and attained lower bound (decimals rounded in the safe direction), tolerance, gap, method,
    time and certificate; inline styles only, so that it renders inside a notebook."""
    return environment().get_template("card.html.j2").render(result=result)
