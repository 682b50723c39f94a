"""`certify report SPEC... [--html PATH] [--md PATH]`: an audit report a safety reviewer can read
without the tool.

For each spec the trusted checker re-checks its certificate (default `proofs/<spec-name>.cert.json`,
one per level for a spec with `levels:`); the report then shows what was claimed, the verdict, the
certified upper and attained lower bounds, the witness, where the deviation comes from, the method,
the trust boundary and the provenance. A missing or rejected certificate is reported loudly and
exits 3. Exit code: the worst over all specs (0 all certified, 1 some violated or unknown, 2 bad
input, 3 a certificate rejected or missing).
"""

from __future__ import annotations

from pathlib import Path

from ..checker.errors import BadInput
from ..checker.spec import read_spec
from . import content, fmt
from ..files import certificate_path
from ..status import Status, worst
from .collect import Entry, collect, show_path

DEFAULT_HTML = "certify-report.html"


def register(subparsers) -> None:
    r = subparsers.add_parser("report", help="write an audit report (HTML and/or Markdown) for specs and their certificates",
                              description=__doc__.split("\n\n")[0])
    r.add_argument("specs", nargs="+", metavar="SPEC")
    r.add_argument("--html", metavar="PATH", help=f"write a self-contained HTML report (default {DEFAULT_HTML} when --md is not given)")
    r.add_argument("--md", metavar="PATH", help="write a Markdown report; its figures go beside it as PNG files")
    r.add_argument("--cert", metavar="CERT", help="the certificate (only with one spec; default proofs/<spec-name>.cert.json)")
    r.add_argument("--run", action="store_true", help="run `certify check` first for a spec whose certificate is missing")
    r.set_defaults(func=cmd_report)


def _certificate_paths(spec_path: str, cert: str | None) -> list[tuple[str | None, Path]]:
    """(level, certificate) pairs to check for one spec."""
    if cert is not None:
        return [(None, Path(cert))]
    try:
        spec = read_spec(spec_path)
    except BadInput:
        return [(None, Path("proofs") / f"{Path(spec_path).stem}.cert.json")]  # collect() reports the bad input
    if spec.levels:
        return [(lv.name, certificate_path(spec.at_level(lv.name))) for lv in spec.levels]
    return [(None, certificate_path(spec))]


def build(specs: list[str], cert: str | None = None, run: bool = False) -> list[Entry]:
    if cert is not None and len(specs) != 1:
        raise BadInput("--cert", "", f"--cert names one certificate but {len(specs)} specs were given",
                       "give --cert with exactly one spec, or leave it out to use proofs/<spec-name>.cert.json")
    entries = []
    for spec_path in specs:
        group = [collect(spec_path, path, level=level, run=run) for level, path in _certificate_paths(spec_path, cert)]
        if len(group) > 1 or (group and group[0].level is not None):
            from .plots import flow_chart
            png = flow_chart(spec_path, group)
            if png:
                group[-1].plots["flow"] = png
        entries += group
    return entries


def overall(entries: list[Entry]) -> Status:
    return worst(e.status for e in entries)


def write(entries: list[Entry], html_path: str | None, md_path: str | None, argv: list[str] | None) -> list[Path]:
    from . import plots

    summary = plots.attach(entries)
    prov = content.provenance(argv)
    verdict = overall(entries)
    written = []
    try:
        _write(entries, html_path, md_path, summary, prov, verdict, written)
    except OSError as exc:
        raise BadInput(str(exc.filename or html_path or md_path), "", f"cannot write the report ({exc.strerror or exc})",
                       "give --html/--md a path in a writable directory") from None
    return written


def _write(entries, html_path, md_path, summary, prov, verdict, written) -> None:
    from . import html, markdown

    if html_path:
        path = Path(html_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html.render(entries, summary.get("summary"), prov, verdict), encoding="utf-8")
        written.append(path)
    if md_path:
        path = Path(md_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text, files = markdown.render(entries, summary.get("summary"), prov, verdict, path)
        for name, data in files.items():
            (path.parent / name).write_bytes(data)
        path.write_text(text, encoding="utf-8")
        written.append(path)


def cmd_report(args) -> int:
    html_path = args.html if args.html or args.md else DEFAULT_HTML
    entries = build(args.specs, args.cert, args.run)
    argv = list(args.specs) + [f"--{k} {v}" for k, v in (("cert", args.cert), ("html", html_path), ("md", args.md)) if v]
    argv += ["--run"] if args.run else []
    written = write(entries, html_path, args.md, argv)
    for e in entries:
        line = f"{e.status:<10} {e.name}"
        if e.accepted:
            line += f"  certified upper {fmt.decimal(e.bound, 6, 'up')}, attained lower {fmt.decimal(e.lower, 6, 'down')}, tolerance {fmt.exact(e.tolerance)}"
        else:
            line += f"  {e.message}"
        print(line)
    for path in written:
        print(f"report written: {show_path(path)}")
    return overall(entries).exit_code
