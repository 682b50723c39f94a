"""The report as one self-contained HTML file: inline CSS, figures as base64 PNG, no scripts, no links out.

Every piece of text that comes from a user's files (paths, names, messages) goes through `esc`.
"""

from __future__ import annotations

import base64
import html
import re

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


def esc(x) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def prose(x) -> str:
    """Escaped text in which `backquoted` parts are shown as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", esc(x))


def cls(status: str) -> str:
    return status.replace(" ", "")


def anchor(entry, i: int) -> str:
    return f"spec-{i}"


def img(png: bytes | None, alt: str) -> str:
    if not png:
        return ""
    return f'<div class="fig"><img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}"></div>'


def kv(rows) -> str:
    return '<table class="kv">' + "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def table(head, rows, numeric=()) -> str:
    h = "".join(f'<th class="num">{esc(c)}</th>' if i in numeric else f"<th>{esc(c)}</th>" for i, c in enumerate(head))
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(r)) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def num_with_exact(q, mode) -> str:
    if q is None:
        return "-"
    note = {"up": " (rounded up)", "down": " (rounded down)"}.get(mode, "")
    return f'<b>{esc(fmt.decimal(q, 8, mode))}</b><span class="muted">{note}</span><div class="exact">= {esc(fmt.exact(q))}</div>'


def summary_section(entries, summary_png) -> str:
    rows = []
    for i, e in enumerate(entries):
        rows.append([f'<a href="#{anchor(e, i)}">{esc(e.name)}</a>', f'<span class="pill p-{cls(e.status)}">{esc(e.status)}</span>',
                     esc(fmt.decimal(e.bound, 6, "up")), esc(fmt.decimal(e.lower, 6, "down")),
                     esc("-" if e.tolerance is None else fmt.exact(e.tolerance)), esc(fmt.ratio(e.gap)),
                     esc(e.engine.get("method", "-") if e.accepted else "-")])
    out = ['<section class="card" id="summary"><h2>Summary</h2>',
           table(["spec", "verdict", "certified upper", "attained lower", "tolerance", "gap (upper / lower)", "method"], rows, (2, 3, 5)),
           '<p class="muted">Upper bounds are rounded up and lower bounds down, so every decimal shown is itself a valid bound; '
           "the exact rationals are in each section. The exit code of this report is the worst over all specs "
           "(0 all certified, 1 some violated or unknown, 2 bad input, 3 a certificate rejected or missing).</p>"]
    out.append(img(summary_png, "summary chart: attained lower and certified upper bound of every spec against its tolerance"))
    out.append("</section>")
    return "".join(out)


def claim_rows(e) -> list:
    s = e.spec
    rows = [("spec", f'<span class="mono">{esc(fmt_path(e.spec_path))}</span>')]
    if e.level is not None:
        rows.append(("level", esc(e.level)))
    if s is None:
        return rows
    widths = "" if e.model_widths is None else f' <span class="muted">({esc(" → ".join(map(str, e.model_widths)))})</span>'
    rows.append(("model f", f'<span class="mono">{esc(fmt_path(s.model.path))}</span>{widths}'
                 f'<div class="hash">sha256 {esc(s.model.sha256)}</div>'))
    if e.domain_text:
        rows.append(("input domain D", "<br>".join(esc(t) for t in e.domain_text)))
    if e.transforms:
        rows.append(("explanation g", "<ol style='margin:0;padding-left:20px'>" + "".join(f"<li>{esc(t)}</li>" for t in e.transforms) + "</ol>"))
    p = s.property
    rows.append(("deviation", f"{esc(p.deviation)}: sup over x in D of max<sub>i</sub> |f<sub>i</sub>(x) − g<sub>i</sub>(x)|, "
                 f"over {esc(e.outputs_text)}"))
    rows.append(("tolerance", f"<b>{esc(fmt.exact(p.tolerance))}</b>" + ("" if p.tolerance.denominator == 1 else
                 f' <span class="muted">(≈ {esc(fmt.decimal(p.tolerance))})</span>')))
    for note in e.model_notes:
        rows.append(("model note", f'<span class="warn">{esc(note)}</span>'))
    return rows


def fmt_path(p) -> str:
    from .collect import show_path
    return show_path(p)


def result_section(e) -> str:
    if not e.accepted:
        return ""
    stats = [("certified upper bound", fmt.decimal(e.bound, 6, "up")), ("attained lower bound", fmt.decimal(e.lower, 6, "down")),
             ("tolerance", fmt.exact(e.tolerance) if e.tolerance.denominator < 10**6 else fmt.decimal(e.tolerance)),
             ("gap upper / lower", fmt.ratio(e.gap))]
    out = ['<h3>Result</h3><div class="headline">']
    out += [f'<div class="stat"><div class="label">{esc(k)}</div><div class="value">{esc(v)}</div></div>' for k, v in stats]
    out.append("</div>")
    out.append(kv([
        ("certified upper bound", num_with_exact(e.bound, "up")),
        ("attained lower bound", num_with_exact(e.lower, "down") if e.lower is not None else
         '<span class="muted">no witness in the certificate</span>'),
        ("reading", esc("The true worst-case deviation lies between the attained lower bound (a real input, replayed exactly) "
                        "and the certified upper bound. A gap near 1 means both are tight; a wide gap means the bounding method, "
                        "not the explanation, is the weak part.")),
    ]))
    return "".join(out)


def witness_section(e) -> str:
    if not e.accepted or e.witness is None:
        return ""
    x, (lo, up) = e.witness, e.domain
    free = [i for i in range(len(x)) if lo[i] < up[i]]
    at_lo = sum(1 for i in free if x[i] == lo[i])
    at_up = sum(1 for i in free if x[i] == up[i])
    shown = free[:16] if free else list(range(min(16, len(x))))
    rows = []
    for i in shown:
        where = "at lower" if x[i] == lo[i] else ("at upper" if x[i] == up[i] else "interior")
        if lo[i] == up[i]:
            where = "fixed"
        rows.append([str(i), esc(fmt.decimal(x[i], 6)), esc(fmt.decimal(lo[i], 6)), esc(fmt.decimal(up[i], 6)), esc(where)])
    out = ["<h3>Witness input</h3>",
           f"<p>The input below lies in D (checked exactly) and attains the lower bound. Of its {len(x)} coordinates, "
           f"{len(free)} can vary in D: {at_lo} sit at their lower end, {at_up} at their upper end and "
           f"{len(free) - at_lo - at_up} inside. "
           + (f"The first {len(shown)} that vary are listed. " if len(shown) < len(free) else "")
           + "Every coordinate, as an exact rational, is in the certificate's <code>witness.x</code>.</p>",
           '<div class="split"><div class="grow">',
           table(["input", "witness", "domain lower", "domain upper", "position"], rows, (1, 2, 3)), "</div>"]
    picture = img(e.plots.get("witness"), "the witness as an image and its offset from the domain's centre")
    if picture:
        out.append(f'<div class="side">{picture}</div>')
    out.append("</div>")
    return "".join(out)


def sources_section(e) -> str:
    if not e.accepted:
        return ""
    out = ["<h3>Where the deviation comes from</h3>"]
    if e.outputs:
        out.append("<p>Per output: the certified bound on |f<sub>i</sub> − g<sub>i</sub>| over the whole domain, from the "
                   "certificate's verified bounds of the output layer of the joint network"
                   + (" (the envelope over the leaves of the branch-and-bound tree)" if e.tree else "")
                   + ", and the values at the witness, computed exactly.</p>")
        top = max(r.certified for r in e.outputs)
        rows = []
        for r in e.outputs:
            mark = ' <span class="warn">◀ largest</span>' if r.certified == top else ""
            rows.append([str(r.index), esc(fmt.decimal(r.lower, 6, "down")), esc(fmt.decimal(r.upper, 6, "up")),
                         f"<b>{esc(fmt.decimal(r.certified, 6, 'up'))}</b>{mark}",
                         esc(fmt.decimal(r.f, 6)), esc(fmt.decimal(r.g, 6)), esc(fmt.decimal(r.diff, 6))])
        out.append(table(["output i", "f_i − g_i ≥", "f_i − g_i ≤", "certified |f_i − g_i| ≤", "f_i(witness)", "g_i(witness)",
                          "f_i − g_i (witness)"], rows, (1, 2, 3, 4, 5, 6)))
        out.append(img(e.plots.get("outputs"), "per-output certified bound against the deviation at the witness"))
    if e.layers:
        out.append("<p>Per layer of the joint network (f and g side by side after their shared prefix, ending in one layer "
                   "computing f − g): widths, and ReLU phases from the verified pre-activation bounds"
                   + (" over the whole domain (for a split tree: the envelope over its proved regions)" if e.tree else "")
                   + ". Unstable ReLUs (sign unknown on D) are where relaxation loses precision.</p>")
        rows = []
        for r in e.layers:
            split = "" if r.unstable_f is None else f"{r.unstable_f} / {r.unstable_g}"
            rows.append([str(r.layer), esc(r.role), str(r.width), "-" if r.active is None else str(r.active),
                         "-" if r.inactive is None else str(r.inactive), "-" if r.unstable is None else f"<b>{r.unstable}</b>", split])
        out.append(table(["layer", "role", "width", "active", "inactive", "unstable", "unstable f / g"], rows, (2, 3, 4, 5)))
        out.append(img(e.plots.get("layers"), "ReLU phases per layer"))
    if e.plots.get("flow"):
        out.append("<h3>Scale flow</h3>" + img(e.plots["flow"], "scale-flow plot"))
    return "".join(out)


def method_section(e) -> str:
    if e.check is None:
        return ""
    eng = e.engine
    rows = [("checker", f"{esc(e.check.steps)} steps accepted in {e.check.seconds:.2f} s" if e.accepted else
             f'<span class="warn">REJECTED: {esc(e.message)}</span>')]
    if e.ran_check:
        rows.append(("made now", prose("the certificate was missing; `certify check` made it for this report (--run)")))
    if eng:
        rows.append(("method (engine)", esc(eng.get("method", "-"))))
        extra = {k: v for k, v in eng.items() if k not in ("method",)}
        rows.append(("engine notes", '<span class="mono">' + esc(", ".join(f"{k}: {v}" for k, v in extra.items())) + "</span>"
                     '<div class="muted">written by the untrusted engine; informative only, never read by the checker</div>'))
    if e.tree:
        t = e.tree
        rows.append(("branch and bound", esc(f"{t['leaves']} leaves, {t['nodes']} regions, depth {t['depth']}, "
                                             f"{t['input_splits']} input splits, {t['relu_splits']} ReLU splits")))
    if e.shared is not None:
        rows.append(("shared layers", esc(f"{e.shared} dense layer(s) of f and g are identical and computed once")))
    return "<h3>Method and engine notes</h3>" + kv(rows)


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


def hashes_section(e) -> str:
    if e.spec is None:
        return ""
    c = e.cert_hashes
    m = c.get("materialized") if isinstance(c.get("materialized"), dict) else None

    def row(what, path, bound, now, by="certificate"):
        if bound is None:
            status = '<span class="muted">-</span>'
        else:
            status = f'<span class="ok">matches the {by}</span>' if bound == now else f'<span class="warn">DIFFERENT from the {by}</span>'
        return [esc(what), f'<span class="mono">{esc(path)}</span>', f'<span class="hash">{esc(now or "-")}</span>', status]

    rows = [row("spec", fmt_path(e.spec_path), c.get("spec_sha256"), e.spec_sha256_file),
            row("model f", fmt_path(e.spec.model.path), c.get("model_sha256"), e.model_sha256_file)]
    data = c.get("data_sha256") if isinstance(c.get("data_sha256"), dict) else {}
    for k, v in sorted(e.data_sha256_file.items()):
        path = getattr(e.spec.input, k, "")
        rows.append(row(f"data ({k})", fmt_path(path) if path else "", data.get(k) if c else None, v))
    for path, declared, now in e.second_models:
        rows.append(row("model g", fmt_path(path), declared, now, "spec"))
    for key, path, declared, now in pinned_arrays(e.spec):
        rows.append(row(f"g arrays ({key})", fmt_path(path), declared, now, "spec"))
    if m is not None:
        rows.append([esc("materialised g arrays"), f'<span class="mono">{esc(m.get("path"))}</span>',
                     f'<span class="hash">{esc(m.get("sha256"))}</span>',
                     '<span class="warn">the certificate: NOT PINNED by the spec</span>' if e.accepted else '<span class="muted">-</span>'])
    unpinned = e.check.unpinned if e.check is not None else ()
    note = ("" if not unpinned else f'<p class="warn">g\'s float arrays for {esc(", ".join(unpinned))} are the certificate\'s '
            f'materialised arrays (sha256 above), not fixed by the spec: the bound is about that g. Run '
            f'<span class="mono">certify pin {esc(fmt_path(e.spec_path))}</span> to pin them; <span class="mono">--strict</span> '
            "refuses unpinned arrays.</p>")
    if e.cert_sha256:
        rows.append([esc("certificate"), f'<span class="mono">{esc(fmt_path(e.cert_path))}</span>',
                     f'<span class="hash">{esc(e.cert_sha256)}</span>', ""])
    return ("<h3>Hashes</h3><p class=\"muted\">sha256 of every file the claim depends on, computed now, against the value the "
            "certificate binds (the checker rejects any mismatch).</p>"
            + table(["what", "file", "sha256 (now)", "bound by"], rows) + note)


def spec_section(e, i: int) -> str:
    pill = f'<span class="pill p-{cls(e.status)}">{esc(e.status)}</span>'
    out = [f'<section class="card spec" id="{anchor(e, i)}"><h2>{esc(e.name)} {pill}</h2>',
           f'<div class="verdict v-{cls(e.status)}"><div class="big">{esc(content.VERDICT_TITLE[e.status])}</div>'
           f"<p>{prose(content.verdict_sentence(e))}</p></div>",
           "<h3>What was claimed</h3>", kv(claim_rows(e)),
           result_section(e), witness_section(e), sources_section(e), method_section(e), hashes_section(e)]
    if e.spec is not None and e.cert_path is not None:
        out.append(f'<p class="muted">Re-check independently: <code>certify verify {esc(fmt_path(e.spec_path))} '
                   f"{esc(fmt_path(e.cert_path))}</code></p>")
    out.append("</section>")
    return "".join(out)


def trust_section(entries) -> str:
    out = ['<section class="card" id="trust"><h2>Trust boundary</h2>']
    for head, points in content.trust_paragraphs(any(e.model_notes for e in entries)):
        out.append(f"<h3>{esc(head)}</h3><ul>" + "".join(f"<li>{prose(p)}</li>" for p in points) + "</ul>")
    mats = [(e.name, e.cert_hashes.get("materialized")) for e in entries if isinstance(e.cert_hashes.get("materialized"), dict)]
    if mats:
        out.append("<p>Materialised arrays in this report (each a definition of its g):</p>")
        out.append(table(["spec", "file", "sha256"], [[esc(n), f'<span class="mono">{esc(m.get("path"))}</span>',
                                                       f'<span class="hash">{esc(m.get("sha256"))}</span>'] for n, m in mats]))
    notes = [(e.name, n) for e in entries for n in e.model_notes]
    if notes:
        out.append("<p>Notes from reading the models:</p><ul>" + "".join(f"<li>{esc(n)}: {esc(t)}</li>" for n, t in notes) + "</ul>")
    out.append("</section>")
    return "".join(out)


def provenance_section(prov) -> str:
    rows = [(k, f'<span class="mono">{esc(v)}</span>') for k, v in prov]
    return ('<section class="card" id="provenance"><h2>Provenance</h2>'
            "<p class=\"muted\">The tools that produced this report (the per-file hashes are in each spec's section).</p>"
            + kv(rows) + "</section>")


def render(entries, summary_png, prov, overall: str) -> str:
    info = dict(prov)
    head = (f"<header class=\"top\"><h1>certify audit report</h1><p>{len(entries)} certificate(s) · overall: "
            f"<b>{esc(overall)}</b> · generated {esc(info['date'])} · certify {esc(info['certify'])}</p></header>")
    body = [summary_section(entries, summary_png)]
    body += [spec_section(e, i) for i, e in enumerate(entries)]
    body += [trust_section(entries), provenance_section(prov)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>certify audit report</title><style>{CSS}</style></head><body>{head}<main>{''.join(body)}</main></body></html>\n")


CARD_COLOURS = {"CERTIFIED": ("#f0fff4", "#2f855a"), "VIOLATED": ("#fff5f5", "#c53030"), "UNKNOWN": ("#fffaf0", "#b7791f")}


def card(result: dict) -> str:
    """The summary card of one result (the JSON shape of `status.result_json`): verdict, certified
    upper and attained lower bound (decimals rounded in the safe direction), tolerance, gap, method,
    time and certificate. Inline styles only, so that it renders inside a notebook; every value is escaped."""
    from fractions import Fraction

    q = lambda key: None if result.get(key) is None else Fraction(result[key])  # noqa: E731
    status = result["status"]
    back, edge = CARD_COLOURS.get(status, ("#fed7d7", "#742a2a"))
    checker = result.get("checker") or {}
    seconds = result.get("seconds") or {}
    rows = [("certified upper", f"{esc(fmt.decimal(q('certified_upper'), 6, 'up'))} <span style='color:#4a5568'>(rounded up)</span>"),
            ("attained lower", f"{esc(fmt.decimal(q('attained_lower'), 6, 'down'))} <span style='color:#4a5568'>(rounded down; "
                               "an input replayed exactly)</span>"),
            ("tolerance", esc(fmt.exact(q("tolerance")))), ("gap (upper / lower)", esc(fmt.ratio(result.get("gap_ratio")))),
            ("method", esc(result.get("method") or "-")),
            ("time", esc(f"{seconds['total']:.2f} s" if "total" in seconds else "-")),
            ("certificate", f"<code>{esc(result.get('certificate'))}</code> (checker: "
                            f"{esc('accepted' if status in CARD_COLOURS else status)}, {esc(checker.get('steps', 0))} steps)")]
    if checker.get("reason"):
        rows.append(("checker says", esc(checker["reason"])))
    body = "".join(f"<tr><th style='text-align:left;padding:3px 12px 3px 0;color:#4a5568;font-weight:600'>{k}</th>"
                   f"<td style='padding:3px 0'>{v}</td></tr>" for k, v in rows)
    level = f" (level {esc(result['level'])})" if result.get("level") else ""
    return (f"<div class='certify-card' style='font-family:sans-serif;border-left:8px solid {edge};background:{back};"
            f"padding:10px 16px;border-radius:6px;max-width:720px'>"
            f"<div style='font-size:20px;font-weight:700;color:{edge}'>{esc(status)}</div>"
            f"<div style='color:#4a5568;font-size:13px'>{esc(result.get('spec'))}{level}</div>"
            f"<table style='border-collapse:collapse;font-size:13.5px;margin-top:6px'>{body}</table></div>")
