"""The report as Markdown, with its figures written as PNG files beside the .md file."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from . import content

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


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:80]


def render(entries, summary_png, prov, overall: str, md_path: Path) -> tuple[str, dict[str, bytes]]:
    """(Markdown text, {file name: PNG bytes}) for a report written at md_path (templates/report.md.j2)."""
    from markupsafe import Markup

    files: dict[str, bytes] = {}
    stem = safe_name(md_path.stem)

    def image(png, tag, alt):
        if not png:
            return Markup("")
        name = f"{stem}-{tag}.png"
        files[name] = png
        return Markup(f"![{md(alt)}]({name})\n")

    text = environment().get_template("report.md.j2").render(
        entries=entries, summary_png=summary_png, prov=prov, info=dict(prov), overall=str(overall), image=image,
        icons=ICON, titles=content.VERDICT_TITLE, trust=content.trust_paragraphs(any(e.model_notes for e in entries)),
        model_notes=[(e.name, n) for e in entries for n in e.model_notes])
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n", files


@lru_cache(maxsize=1)
def environment():
    """Jinja2 for Markdown: every value is escaped by `md` unless a filter returned Markdown (Markup)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined
    from markupsafe import Markup

    from .html import environment as html_environment

    env = Environment(loader=PackageLoader("certify.report", "templates"), autoescape=False, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                      finalize=lambda v: v if isinstance(v, Markup) else md(v))
    env.filters.update(html_environment().filters)
    env.filters.update(code=lambda x: Markup(code(x)), prose=lambda x: Markup(md_prose(x)), safe_name=safe_name,
                       engine_notes=lambda eng: ", ".join(f"{k}: {v}" for k, v in eng.items()),
                       ours=lambda text: Markup(str(text).replace("|", "¦").replace("\n", " ")))  # certify's own keys
    return env
