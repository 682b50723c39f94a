"""Strict reader of spec files (YAML) into a frozen `Spec`. Shared by the engine and the checker.

Every number is exact (`0.1` is 1/10, `"2/255"` is 2/255); unknown keys, duplicate keys, wrong
types and impossible values are `BadInput` with `file:line: key.path: what; fix`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import yaml

from .errors import BadInput
from .numbers import parse_spec_number, spec_number_problem
from .transforms import ALIASES, PCA, UNITS, LowRank, Merge, ModelRef, Prune, Quantize, Replace, SecondModel, is_float  # noqa: F401

DEVIATIONS = ("linf",)
SEMANTICS = ("real", "float32")


@dataclass(frozen=True)
class InputSpec:
    """A box (lower, upper), an L-inf ball (center, radius) or a VNN-LIB file's input box, then an optional clip;
    or every token sequence (`tokens`: vocab, length, allowed token ids per position) for a graph model."""

    kind: str  # "box" | "linf_ball" | "vnnlib" | "tokens"
    lower: object = None  # Fraction | tuple[Fraction] | Path(.npy)
    upper: object = None
    center: object = None
    radius: Fraction | None = None
    clip: tuple[Fraction, Fraction] | None = None
    line: int | None = field(default=None, compare=False)
    vnnlib: Path | None = None
    tokens: tuple | None = None  # (vocab, length, per position a sorted tuple of allowed token ids)


@dataclass(frozen=True)
class Property:
    deviation: str
    tolerance: Fraction
    outputs: tuple[int, ...] | None = None
    line: int | None = field(default=None, compare=False)
    semantics: str = "real"  # "real": exact arithmetic on the weights; "float32": plus float32 rounding


@dataclass(frozen=True)
class Level:
    """One named coarse-graining of a hierarchy (`levels:`, listed from fine to coarse)."""

    name: str
    explanation: tuple[object, ...]
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Spec:
    path: Path
    sha256: str
    model: ModelRef
    input: InputSpec
    explanation: tuple[object, ...]  # empty for a spec with levels until a level is chosen
    property: Property
    levels: tuple[Level, ...] = ()
    level: str | None = None  # the chosen level's name

    @property
    def name(self) -> str:
        return self.path.stem if self.level is None else f"{self.path.stem}.{self.level}"

    @property
    def explanation_key(self) -> str:
        names = [lv.name for lv in self.levels]
        return "explanation" if self.level is None else f"levels[{names.index(self.level)}].explanation"

    def at_level(self, name: str) -> "Spec":
        """This spec with the explanation of its level `name` (KeyError if there is none)."""
        level = {lv.name: lv for lv in self.levels}[name]
        return replace(self, explanation=level.explanation, level=name)

    def unpinned(self) -> list[tuple[str, object]]:
        """(key, transform) of every transform whose float arrays the spec does not pin (low_rank, pca,
        merge with `groups: N` and no `arrays:`): for those, g is defined by the certificate's
        materialised arrays. All levels, unless a level is chosen."""
        if self.levels and self.level is None:
            chosen = [(f"levels[{i}].explanation", lv.explanation) for i, lv in enumerate(self.levels)]
        else:
            chosen = [(self.explanation_key, self.explanation)]
        return [(f"{key}[{i}].{t.kind}", t) for key, e in chosen for i, t in enumerate(e) if is_float(t) and t.arrays is None]

    def error(self, key: str, what: str, fix: str, line: int | None = None) -> BadInput:
        return BadInput(str(self.path), key, what, fix, line)

    def need(self, ok: object, key: str, what: str, fix: str, line: int | None = None) -> None:
        """A precondition of this spec (with its model): unless `ok`, the error at `key`."""
        if not ok:
            raise self.error(key, what, fix, line)


class _Reader:
    def __init__(self, path: Path):
        self.path, self.base = path, path.parent

    def bad(self, node, key, what, fix):
        line = node.start_mark.line + 1 if node is not None else None
        return BadInput(str(self.path), key, what, fix, line)

    def need(self, ok, node, key, what, fix):
        """A precondition of the spec: unless `ok`, the one-line error `file:line: key: what; fix`."""
        if not ok:
            raise self.bad(node, key, what, fix)

    def mapping(self, node, key, required=(), optional=()):
        if not isinstance(node, yaml.MappingNode):
            where = f"write `{key}:` with" if key else "the spec is a mapping of"
            raise self.bad(node, key, "expected a mapping", f"{where} keys {', '.join(required + optional)}")
        out = {}
        for knode, vnode in node.value:
            name = knode.value if isinstance(knode, yaml.ScalarNode) else None
            sub = f"{key}.{name}" if key else str(name)
            self.need(name in required + optional, knode, sub, "unknown key", f"allowed keys here: {', '.join(required + optional)}")
            self.need(name not in out, knode, sub, "duplicate key", "write each key once")
            out[name] = vnode
        for name in required:
            self.need(name in out, node, f"{key}.{name}" if key else name, "missing", f"add `{name}:`")
        return out

    def scalar(self, node, key, what):
        self.need(isinstance(node, yaml.ScalarNode), node, key, f"expected {what}", f"write {what}")
        return node.value

    def number(self, node, key, positive=False):
        text = self.scalar(node, key, "a number")
        value = None if node.tag.endswith(("bool", "null")) else parse_spec_number(text)
        if value is None:
            raise self.bad(node, key, *spec_number_problem(text))
        self.need(not positive or value > 0, node, key, f"{text} is not positive", "write a number > 0")
        return value

    def integer(self, node, key, minimum=0):
        text = self.scalar(node, key, "an integer")
        ok = node.tag.endswith(":int") and text.lstrip("-").isdigit() and len(text) <= 18
        self.need(ok, node, key, f"{text[:40]!r} is not an integer (at most 18 digits)", "write a whole number like 3")
        self.need(int(text) >= minimum, node, key, f"{text} is below {minimum}", f"write an integer >= {minimum}")
        return int(text)

    def string(self, node, key, choices=None):
        text = self.scalar(node, key, "a string")
        self.need(not choices or text in choices, node, key, f"{text!r} is not one of {', '.join(choices or ())}",
                  f"write one of {', '.join(choices or ())}")
        return text

    def seq(self, node, key):
        self.need(isinstance(node, yaml.SequenceNode), node, key, "expected a list", f"write `{key}: [...]`")
        return node.value

    def sha(self, node, key):
        text = self.string(node, key)
        self.need(re.fullmatch("[0-9a-f]{64}", text), node, key, "not a sha256 (64 lowercase hex digits)",
                  "run `sha256sum FILE` and paste the hash")
        return text

    def file(self, node, key):
        rel = self.string(node, key)
        try:
            path = (self.base / rel).resolve()
            found = path.is_file()
        except (OSError, RuntimeError) as exc:  # a symlink loop (RuntimeError before Python 3.13), a name too long, ...
            raise self.bad(node, key, f"path {rel[:80]!r} cannot be resolved ({type(exc).__name__}: {str(exc)[:80]})",
                           "name a regular file (paths are relative to the spec file)") from None
        self.need(found, node, key, f"file {rel!r} not found (looked in {path.parent})",
                  "paths are relative to the spec file; check the name")
        return path

    def model_ref(self, node, key):
        m = self.mapping(node, key, ("path", "sha256"))
        return ModelRef(self.file(m["path"], f"{key}.path"), self.sha(m["sha256"], f"{key}.sha256"), key, node.start_mark.line + 1)

    def arrays(self, t, key):
        """`arrays: {path: FILE.npz, sha256: ...}`: a transform's float arrays, pinned by the spec."""
        return self.model_ref(t["arrays"], f"{key}.arrays") if "arrays" in t else None

    def vector(self, node, key):
        """A number, a list of numbers, or a .npy path."""
        if isinstance(node, yaml.SequenceNode):
            items = self.seq(node, key)
            self.need(items, node, key, "empty list", "give one number per input or a single number")
            return tuple(self.number(n, f"{key}[{i}]") for i, n in enumerate(items))
        if isinstance(node, yaml.ScalarNode) and node.value.endswith(".npy"):
            return self.file(node, key)
        return self.number(node, key)

    def input(self, node):
        m = self.mapping(node, "input", (), ("box", "linf_ball", "vnnlib", "tokens", "clip"))
        self.need(sum(k in m for k in ("box", "linf_ball", "vnnlib", "tokens")) == 1, node, "input",
                  "give exactly one of box, linf_ball, vnnlib or tokens", "write `box: {lower: .., upper: ..}`, "
                  "`linf_ball: {center: .., radius: ..}`, `vnnlib: FILE.vnnlib` or `tokens: {vocab: V, length: n}`")
        if "tokens" in m:
            self.need("clip" not in m, m.get("clip"), "input.clip", "a token domain has no clip", "remove `clip:`")
            return self.tokens(m["tokens"], node.start_mark.line + 1)
        clip = None
        if "clip" in m:
            items = self.seq(m["clip"], "input.clip")
            self.need(len(items) == 2, m["clip"], "input.clip", "expected [low, high]", "write `clip: [0, 1]`")
            clip = (self.number(items[0], "input.clip[0]"), self.number(items[1], "input.clip[1]"))
            self.need(clip[0] <= clip[1], m["clip"], "input.clip", "low > high", "write the smaller number first")
        line = node.start_mark.line + 1
        if "vnnlib" in m:
            return InputSpec("vnnlib", vnnlib=self.file(m["vnnlib"], "input.vnnlib"), clip=clip, line=line)
        if "box" in m:
            b = self.mapping(m["box"], "input.box", ("lower", "upper"))
            return InputSpec("box", lower=self.vector(b["lower"], "input.box.lower"),
                             upper=self.vector(b["upper"], "input.box.upper"), clip=clip, line=line)
        b = self.mapping(m["linf_ball"], "input.linf_ball", ("center", "radius"))
        radius = self.number(b["radius"], "input.linf_ball.radius")
        self.need(radius >= 0, b["radius"], "input.linf_ball.radius", "negative radius", "write a radius >= 0")
        return InputSpec("linf_ball", center=self.vector(b["center"], "input.linf_ball.center"),
                         radius=radius, clip=clip, line=line)

    def tokens(self, node, line):
        """`tokens: {vocab: V, length: n, allowed: [all | [ids], ...]}`: sequences of n tokens in 0..V-1."""
        t = self.mapping(node, "input.tokens", ("vocab", "length"), ("allowed",))
        vocab, length = self.integer(t["vocab"], "input.tokens.vocab", 1), self.integer(t["length"], "input.tokens.length", 1)
        self.need(vocab * length <= 1 << 20, node, "input.tokens", f"vocab * length = {vocab * length} inputs", "use at most 2^20")
        allowed = [tuple(range(vocab))] * length
        items = self.seq(t["allowed"], "input.tokens.allowed") if "allowed" in t else [None] * length
        self.need(len(items) == length, t.get("allowed"), "input.tokens.allowed", f"lists {len(items)} positions, length is {length}",
                  "give one entry per position: `all` or a list of token ids")
        for p, item in enumerate(items):
            key = f"input.tokens.allowed[{p}]"
            if item is not None and self.is_scalar(item):
                self.string(item, key, ("all",))
            if item is None or self.is_scalar(item):
                continue
            ids = self.indices(item, key, "token")
            bad = [i for i in ids if i >= vocab]
            self.need(ids and not bad, item, key, f"tokens {bad[:5]} are not in the vocabulary 0..{vocab - 1}" if bad else "no tokens",
                      f"list token ids in 0..{vocab - 1} (at least one), or write `all`")
            allowed[p] = tuple(sorted(ids))
        return InputSpec("tokens", tokens=(vocab, length, tuple(allowed)), line=line)

    def indices(self, node, key, what="index"):
        out = tuple(self.integer(n, f"{key}[{i}]") for i, n in enumerate(self.seq(node, key)))
        self.need(len(set(out)) == len(out), node, key, f"lists a {what} twice", f"list each {what} once")
        return out

    def count_or_keep(self, t, node, key, count, minimum):
        """`count: r` (keep 0..r-1) or `keep: [..]`: exactly one. Returns (keep, r or None)."""
        self.need((count in t) != ("keep" in t), node, key, f"give exactly one of {count} or keep",
                  f"write `{count}: 4` or `keep: [0, 1, 2, 3]`")
        if count in t:
            r = self.integer(t[count], f"{key}.{count}", minimum)
            return tuple(range(r)), r
        keep = self.indices(t["keep"], f"{key}.keep")
        self.need(len(keep) >= minimum, t["keep"], f"{key}.keep", "empty list", "keep at least one component")
        return keep, None

    def samples_seed(self, t, key):
        samples = self.integer(t["samples"], f"{key}.samples", 1) if "samples" in t else 1000
        self.need(samples <= 1_000_000, t.get("samples"), f"{key}.samples", "more than 1,000,000 samples", "use at most 1000000")
        return samples, self.integer(t["seed"], f"{key}.seed") if "seed" in t else 0

    def is_scalar(self, node) -> bool:
        return isinstance(node, yaml.ScalarNode)

    def is_seq(self, node) -> bool:
        return isinstance(node, yaml.SequenceNode)

    def is_mapping(self, node) -> bool:
        return isinstance(node, yaml.MappingNode)

    def transform(self, node, key):
        """One `- kind: {...}` entry, read by its registered unit (checker/transforms.py)."""
        kinds = tuple(k for u in UNITS for k in (u, *(a for a, c in ALIASES.items() if c == u)))
        m = self.mapping(node, key, (), kinds)
        self.need(len(m) == 1, node, key, "each entry is one transform", f"write `- prune: {{...}}` (or one of {', '.join(kinds[1:])})")
        (kind, body), = m.items()
        return UNITS[ALIASES.get(kind, kind)].read(self, body, f"{key}.{kind}", node.start_mark.line + 1, kind)

    def explanation(self, node, key):
        items = self.seq(node, key)
        self.need(items, node, key, "empty explanation", "list at least one transform")
        out = tuple(self.transform(n, f"{key}[{i}]") for i, n in enumerate(items))
        if any(isinstance(t, Replace) for t in out[:-1]):
            i = next(i for i, t in enumerate(out) if isinstance(t, Replace))
            raise self.bad(items[i], f"{key}[{i}].replace", "replace changes g's layers, so it must be the last transform",
                           "move `replace` to the end of the explanation")
        free = [i for i, t in enumerate(out) if isinstance(t, Prune) and t.fill == "free"]
        if free and free != [len(out) - 1]:
            i = free[0]
            raise self.bad(items[i], f"{key}[{i}].{out[i].kind}.fill", "`fill: free` must be the last transform (one per explanation)",
                           "move it to the end (without replace), or use another fill for the others")
        return out

    def levels(self, node):
        out = []
        for i, n in enumerate(self.seq(node, "levels")):
            m = self.mapping(n, f"levels[{i}]", ("name", "explanation"))
            name = self.string(m["name"], f"levels[{i}].name")
            self.need(re.fullmatch(r"[A-Za-z0-9_-]{1,40}", name), m["name"], f"levels[{i}].name", f"{name[:40]!r} is not a level name",
                      "use 1-40 letters, digits, _ or -")
            self.need(name not in [lv.name for lv in out], m["name"], f"levels[{i}].name", f"level {name!r} is named twice",
                      "give every level its own name")
            out.append(Level(name, self.explanation(m["explanation"], f"levels[{i}].explanation"), n.start_mark.line + 1))
        self.need(out, node, "levels", "no levels", "list at least one `- {name: ..., explanation: [...]}`")
        return tuple(out)

    def property(self, node):
        m = self.mapping(node, "property", ("deviation", "tolerance"), ("outputs", "semantics"))
        outputs = None
        if "outputs" in m:
            items = self.seq(m["outputs"], "property.outputs")
            outputs = tuple(self.integer(n, f"property.outputs[{i}]") for i, n in enumerate(items))
            self.need(outputs and len(set(outputs)) == len(outputs), m["outputs"], "property.outputs", "empty or repeated output index",
                      "list each output index once")
        tol = self.number(m["tolerance"], "property.tolerance")
        self.need(tol >= 0, m["tolerance"], "property.tolerance", "negative tolerance", "write a tolerance >= 0")
        semantics = self.string(m["semantics"], "property.semantics", SEMANTICS) if "semantics" in m else "real"
        return Property(self.string(m["deviation"], "property.deviation", DEVIATIONS), tol, outputs, node.start_mark.line + 1,
                        semantics)

def compose(path: Path) -> tuple[bytes, object]:
    """The spec file's bytes and its YAML node tree (None for an empty file)."""
    try:
        raw = path.read_bytes()
    except OSError:
        raise BadInput(str(path), "", "spec file not found or unreadable", "check the path") from None
    try:
        return raw, yaml.compose(raw.decode("utf-8"), Loader=yaml.SafeLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BadInput(str(path), "", f"not valid YAML ({problem})", "fix the YAML syntax (plain UTF-8 text)",
                       None if line is None else line + 1) from None
    except RecursionError:
        raise BadInput(str(path), "", "not a spec: nested too deeply", "start from an example in specs/") from None


def read_spec(path: str | Path) -> Spec:
    """Parse and validate a spec file. Model-dependent checks happen when the model is read. The
    `options:` section (how to search) is the engine's (certify/options.py): it never changes what a
    certificate means, so the trusted reader does not interpret it."""
    path = Path(path)
    (raw, root), r = compose(path), _Reader(path.resolve())
    if root is None:
        raise BadInput(str(path), "", "empty spec", "start from an example in specs/")
    top = r.mapping(root, "", ("version", "model", "input", "property"), ("explanation", "levels", "options"))
    r.need(r.integer(top["version"], "version") == 1, top["version"], "version", "unsupported spec version", "write `version: 1`")
    r.need(not ("explanation" in top and "levels" in top), top.get("levels"), "levels", "give explanation or levels, not both",
           "move the explanation into a level")
    r.need("explanation" in top or "levels" in top, root, "explanation", "missing",
           "add `explanation:` (a list of transforms) or `levels:` (named explanations)")
    transforms = r.explanation(top["explanation"], "explanation") if "explanation" in top else ()
    spec = Spec(path=path, sha256=hashlib.sha256(raw).hexdigest(), model=r.model_ref(top["model"], "model"),
                input=r.input(top["input"]), explanation=transforms, property=r.property(top["property"]),
                levels=r.levels(top["levels"]) if "levels" in top else ())
    free = any(getattr(t, "fill", "") == "free" for e in [transforms, *(lv.explanation for lv in spec.levels)] for t in e)
    r.need(spec.property.semantics == "real" or not free, top["property"], "property.semantics",
           "float32 semantics is not supported with `fill: free`", "use `semantics: real` (or another fill)")
    return spec
