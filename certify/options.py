"""The spec's `options:` section: how the engine searches (method, time, branch-and-bound leaves,
falsifier). Untrusted: options never change what a certificate means, so the checker's spec reader
leaves this section to the engine, which reads it with the same strict primitives and messages."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import yaml

from .bounds.methods import NAMES as METHODS  # the one registry of methods
from .checker.spec import Spec, _Reader, compose


@dataclass(frozen=True)
class Options:
    """How to search. Never changes what a certificate means."""

    method: str = "auto"
    timeout_s: Fraction = Fraction(600)
    max_leaves: int = 100_000  # the time budget (timeout_s) is what stops branch and bound; the checker takes 200,000 nodes
    starts: int = 64
    steps: int = 100
    seed: int = 0


def read_options(spec: Spec | str | Path) -> Options:
    """The `options:` of a spec file that `read_spec` accepted (defaults where absent); a bad value is
    BadInput at its line."""
    path = Path(spec.path if isinstance(spec, Spec) else spec)
    _, root = compose(path)
    r = _Reader(path.resolve())
    node = next((v for k, v in root.value if k.value == "options"), None) if isinstance(root, yaml.MappingNode) else None
    if node is None:
        return Options()
    m = r.mapping(node, "options", (), ("method", "timeout_s", "max_leaves", "falsifier"))
    kw: dict = {}
    if "method" in m:
        kw["method"] = r.string(m["method"], "options.method", METHODS)
    if "timeout_s" in m:
        kw["timeout_s"] = r.number(m["timeout_s"], "options.timeout_s", positive=True)
    if "max_leaves" in m:
        kw["max_leaves"] = r.integer(m["max_leaves"], "options.max_leaves", 1)
    if "falsifier" in m:
        f = r.mapping(m["falsifier"], "options.falsifier", (), ("starts", "steps", "seed"))
        for name in f:
            kw[name] = r.integer(f[name], f"options.falsifier.{name}", 0 if name != "starts" else 1)
    return Options(**kw)
