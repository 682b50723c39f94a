"""The report as Markdown, with its figures written as PNG files beside the .md file."""

from __future__ import annotations

import re
from pathlib import Path

from . import content, fmt
from .collect import show_path
from .html import pinned_arrays

ICON = {"CERTIFIED": "✅", "VIOLATED": "❌", "UNKNOWN": "⚠️", "REJECTED": "🛑", "MISSING": "🛑", "BAD INPUT": "⛔"}


def md(x) -> str:
    """User text inside Markdown (and its tables): no markup, no table breaks, no raw HTML."""
    text = "" if x is None else str(x)
    text = text.replace("\\", "\\\\").replace("\r", " ").replace("\n", " ")
    text = re.sub(r"([`*_\[\]<>|#])", r"\\\1", text)
    return text


def md_prose(x) -> str:
    """Like md(), but `backquoted` parts stay code spans (their text shown literally)."""
    parts = ("" if x is None else str(x)).replace("\n", " ").split("`")
    if len(parts) % 2 == 0:  # an unpaired backquote: no code spans at all
        return md(x)
    return "".join(md(p) if i % 2 == 0 else f"`{p}`" for i, p in enumerate(parts))


def code(x) -> str:
    text = ("" if x is None else str(x)).replace("\n", " ").replace("|", "¦").replace("`", "'")
    return f"`{text}`"


def table(head, rows) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:80]


def render(entries, summary_png, prov, overall: str, md_path: Path) -> tuple[str, dict[str, bytes]]:
    """(Markdown text, {file name: PNG bytes}) for a report written at md_path."""
    files: dict[str, bytes] = {}
    stem = safe_name(md_path.stem)

    def image(png, tag, alt):
        if not png:
            return []
        name = f"{stem}-{tag}.png"
        files[name] = png
        return [f"![{md(alt)}]({name})", ""]

    info = dict(prov)
    out = ["# certify audit report", "",
           f"{len(entries)} certificate(s) · overall: **{overall}** · generated {info['date']} · certify {info['certify']}", "",
           "## Summary", ""]
    rows = []
    for e in entries:
        rows.append([md(e.name), f"{ICON[e.status]} **{e.status}**", fmt.decimal(e.bound, 6, "up"), fmt.decimal(e.lower, 6, "down"),
                     "-" if e.tolerance is None else fmt.exact(e.tolerance), fmt.ratio(e.gap),
                     md(e.engine.get("method", "-")) if e.accepted else "-"])
    out += table(["spec", "verdict", "certified upper", "attained lower", "tolerance", "gap", "method"], rows)
    out += ["Upper bounds are rounded up and lower bounds down. Exit code: 0 all certified, 1 some violated or unknown, "
            "2 bad input, 3 a certificate rejected or missing.", ""]
    out += image(summary_png, "summary", "summary: attained lower and certified upper of every spec against its tolerance")

    for i, e in enumerate(entries):
        tag = f"{i}-{safe_name(e.name)}"
        out += [f"## {md(e.name)}: {ICON[e.status]} {e.status}", ""]
        loud = e.status in ("REJECTED", "MISSING")
        title = content.VERDICT_TITLE[e.status]
        out += [f"> **{'🛑 ' if loud else ''}{md(title)}**", ">", f"> {md_prose(content.verdict_sentence(e))}", ""]
        out += ["### What was claimed", ""]
        rows = [["spec", code(show_path(e.spec_path))]]
        if e.level is not None:
            rows.append(["level", md(e.level)])
        s = e.spec
        if s is not None:
            widths = "" if e.model_widths is None else " (" + " → ".join(map(str, e.model_widths)) + ")"
            rows.append(["model f", f"{code(show_path(s.model.path))}{widths}, sha256 {code(s.model.sha256)}"])
            rows += [["input domain D", "<br>".join(md(t) for t in e.domain_text)]] if e.domain_text else []
            rows += [["explanation g", "<br>".join(f"{k + 1}. {md(t)}" for k, t in enumerate(e.transforms))]] if e.transforms else []
            rows.append(["deviation", f"{md(s.property.deviation)}: sup over x in D of max_i \\|f_i(x) − g_i(x)\\|, over {md(e.outputs_text)}"])
            rows.append(["tolerance", f"**{fmt.exact(s.property.tolerance)}**"])
            rows += [["model note", md(n)] for n in e.model_notes]
        out += table(["", ""], rows)
        if e.accepted:
            out += ["### Result", ""]
            out += table(["", "decimal", "exact"], [
                ["certified upper bound", f"**{fmt.decimal(e.bound, 8, 'up')}** (rounded up)", code(fmt.exact(e.bound))],
                ["attained lower bound", f"**{fmt.decimal(e.lower, 8, 'down')}** (rounded down)", code(fmt.exact(e.lower))],
                ["gap (upper / lower)", fmt.ratio(e.gap), ""]])
            if e.witness is not None:
                x, (lo, up) = e.witness, e.domain
                free = [k for k in range(len(x)) if lo[k] < up[k]]
                shown = free[:16] if free else list(range(min(16, len(x))))
                out += ["### Witness input", "",
                        f"In D (checked exactly); {len(free)} of {len(x)} coordinates vary in D"
                        + (f", the first {len(shown)} are listed" if len(shown) < len(free) else "")
                        + ". The full input is the certificate's `witness.x`.", ""]
                out += table(["input", "witness", "domain lower", "domain upper"],
                             [[str(k), fmt.decimal(x[k]), fmt.decimal(lo[k]), fmt.decimal(up[k])] for k in shown])
                out += image(e.plots.get("witness"), f"{tag}-witness", "witness image")
            out += ["### Where the deviation comes from", ""]
            if e.outputs:
                out += table(["output i", "f_i − g_i ≥", "f_i − g_i ≤", "certified \\|f_i − g_i\\| ≤", "f_i − g_i at witness"],
                             [[str(r.index), fmt.decimal(r.lower, 6, "down"), fmt.decimal(r.upper, 6, "up"),
                               f"**{fmt.decimal(r.certified, 6, 'up')}**", fmt.decimal(r.diff)] for r in e.outputs])
                out += image(e.plots.get("outputs"), f"{tag}-outputs", "per-output certified bound vs witness deviation")
            if e.layers:
                out += table(["layer", "role", "width", "active", "inactive", "unstable"],
                             [[str(r.layer), md(r.role), str(r.width), *("-" if v is None else str(v) for v in (r.active, r.inactive, r.unstable))]
                              for r in e.layers])
                out += image(e.plots.get("layers"), f"{tag}-layers", "ReLU phases per layer")
            out += image(e.plots.get("flow"), f"{tag}-flow", "scale flow")
        if e.check is not None:
            out += ["### Method and engine notes", ""]
            lines = [f"- checker: {e.check.steps} steps accepted in {e.check.seconds:.2f} s" if e.accepted else f"- checker: {md(e.message)}"]
            if e.ran_check:
                lines.append("- the certificate was missing and was made for this report (`--run`)")
            if e.engine:
                lines.append("- engine notes (untrusted, informative only): " + md(", ".join(f"{k}: {v}" for k, v in e.engine.items())))
            if e.tree:
                t = e.tree
                lines.append(f"- branch and bound: {t['leaves']} leaves, {t['nodes']} regions, depth {t['depth']}, "
                             f"{t['input_splits']} input splits, {t['relu_splits']} ReLU splits")
            out += lines + [""]
        if s is not None:
            out += ["### Hashes", ""]
            c = e.cert_hashes
            rows = [["spec", code(show_path(e.spec_path)), code(e.spec_sha256_file), code(c.get("spec_sha256") or "-")],
                    ["model f", code(show_path(s.model.path)), code(e.model_sha256_file or "-"), code(c.get("model_sha256") or "-")]]
            data = c.get("data_sha256") if isinstance(c.get("data_sha256"), dict) else {}
            rows += [[f"data ({k})", code(show_path(getattr(s.input, k, "")) if getattr(s.input, k, "") else ""), code(v),
                      code(data.get(k) or "-")] for k, v in sorted(e.data_sha256_file.items())]
            rows += [["model g", code(show_path(path)), code(now), f"{code(declared)} (the spec)"] for path, declared, now in e.second_models]
            rows += [[f"g arrays ({key})", code(show_path(path)), code(now or "-"), f"{code(declared)} (the spec)"]
                     for key, path, declared, now in pinned_arrays(s)]
            m = c.get("materialized")
            if isinstance(m, dict):
                rows.append(["materialised g (NOT PINNED by the spec)", code(m.get("path")), "", code(m.get("sha256"))])
            if e.cert_sha256:
                rows.append(["certificate", code(show_path(e.cert_path)), code(e.cert_sha256), ""])
            out += table(["what", "file", "sha256 (now)", "sha256 (certificate)"], rows)
            if e.check is not None and e.check.unpinned:
                out += [f"**g's float arrays are not pinned** for {', '.join(e.check.unpinned)}: they are the certificate's "
                        f"materialised arrays (sha256 above), not fixed by the spec, and the bound is about that g. "
                        f"Run `certify pin {show_path(e.spec_path)}` to pin them; `--strict` refuses unpinned arrays.", ""]
            if e.cert_path is not None:
                out += [f"Re-check independently: `certify verify {show_path(e.spec_path)} {show_path(e.cert_path)}`", ""]

    out += ["## Trust boundary", ""]
    for head, points in content.trust_paragraphs(any(e.model_notes for e in entries)):
        out += [f"### {head}", ""] + [f"- {md_prose(p)}" for p in points] + [""]
    notes = [(e.name, n) for e in entries for n in e.model_notes]
    if notes:
        out += ["Notes from reading the models:", ""] + [f"- {md(n)}: {md(t)}" for n, t in notes] + [""]
    out += ["## Provenance", ""]
    out += table(["", ""], [[k, code(v)] for k, v in prov])
    return "\n".join(out), files
