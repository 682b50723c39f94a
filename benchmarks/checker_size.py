"""How big is the trusted checker? Lines per file of `certify/checker/`, split into the proof kernel
and the input readers, as a table and as JSON.

physical: `wc -l`. code: lines holding a Python token other than a comment, a docstring, a blank
line or indentation (a docstring is the first string statement of a module, class or function).

    python benchmarks/checker_size.py [--json benchmarks/checker-size.json]
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import tokenize
from pathlib import Path

CHECKER = Path(__file__).resolve().parent.parent / "certify" / "checker"
READERS = ("spec.py", "onnx.py", "onnx_graph.py", "onnx_attention.py", "model.py", "vnnlib.py", "safetensors.py")  # strict readers of the input formats
SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}


def code_lines(source: str) -> int:
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                docstrings.update(range(first.lineno, first.end_lineno + 1))
    lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in SKIP:
            lines.update(n for n in range(tok.start[0], tok.end[0] + 1) if n not in docstrings)
    return len(lines)


def measure(directory: Path = CHECKER) -> dict:
    files = {}
    for path in sorted(directory.glob("*.py")):
        text = path.read_text()
        files[path.name] = {"physical": text.count("\n"), "code": code_lines(text)}
    part = lambda names: {k: sum(v[k] for n, v in files.items() if n in names) for k in ("physical", "code")}
    readers = [n for n in files if n in READERS]
    return {"files": files, "total": part(files), "kernel": part([n for n in files if n not in READERS]), "readers": part(readers)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the counts here")
    args = ap.parse_args(argv)
    m = measure()
    print(f"{'file':14} {'physical':>9} {'code':>6}")
    for name, v in m["files"].items():
        print(f"{name:14} {v['physical']:9} {v['code']:6}{'  (reader)' if name in READERS else ''}")
    for name in ("kernel", "readers", "total"):
        print(f"{name:14} {m[name]['physical']:9} {m[name]['code']:6}")
    if args.json:
        Path(args.json).write_text(json.dumps(m, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
