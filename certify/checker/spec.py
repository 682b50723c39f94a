"""Strict reader of spec files (YAML) into a frozen `Spec`. Shared by the engine and the checker.

Every number is exact (`0.1` is 1/10, `"2/255"` is 2/255); unknown keys, duplicate keys, wrong
types and impossible values are `BadInput` with `file:line: key.path: what; fix`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import yaml

from .errors import BadInput
from .numbers import parse_spec_number

METHODS = ("auto", "interval", "crown", "alpha", "bab")
DEVIATIONS = ("linf",)


@dataclass(frozen=True)
class ModelRef:
    path: Path
    sha256: str
    key: str = field(default="model", compare=False)
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class InputSpec:
    """A box (lower, upper), an L-inf ball (center, radius) or a VNN-LIB file's input box, then an optional clip."""

    kind: str  # "box" | "linf_ball" | "vnnlib"
    lower: object = None  # Fraction | tuple[Fraction] | Path(.npy)
    upper: object = None
    center: object = None
    radius: Fraction | None = None
    clip: tuple[Fraction, Fraction] | None = None
    line: int | None = field(default=None, compare=False)
    vnnlib: Path | None = None


@dataclass(frozen=True)
class Prune:
    """Neurons of hidden layer `layer` (1-based dense layer) outside `keep` are replaced by `fill`."""

    layer: int
    keep: tuple[int, ...]
    fill: str  # "zero" | "constant" | "mean"
    constant: tuple[Fraction, ...] | Fraction | None = None
    samples: int = 1000
    seed: int = 0
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class LowRank:
    """Weight of dense layer `layer` replaced by its rank-`rank` truncated SVD (materialised)."""

    layer: int
    rank: int
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class SecondModel:
    """g is this model (same architecture), before any later transform."""

    model: ModelRef
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Property:
    deviation: str
    tolerance: Fraction
    outputs: tuple[int, ...] | None = None
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Options:
    """How to search. Never changes what a certificate means."""

    method: str = "auto"
    timeout_s: Fraction = Fraction(600)
    max_leaves: int = 256
    starts: int = 64
    steps: int = 100
    seed: int = 0


@dataclass(frozen=True)
class Spec:
    path: Path
    sha256: str
    model: ModelRef
    input: InputSpec
    explanation: tuple[object, ...]
    property: Property
    options: Options

    @property
    def name(self) -> str:
        return self.path.stem

    def error(self, key: str, what: str, fix: str, line: int | None = None) -> BadInput:
        return BadInput(str(self.path), key, what, fix, line)


class _Reader:
    def __init__(self, path: Path):
        self.path, self.base = path, path.parent

    def bad(self, node, key, what, fix):
        line = node.start_mark.line + 1 if node is not None else None
        return BadInput(str(self.path), key, what, fix, line)

    def mapping(self, node, key, required=(), optional=()):
        if not isinstance(node, yaml.MappingNode):
            where = f"write `{key}:` with" if key else "the spec is a mapping of"
            raise self.bad(node, key, "expected a mapping", f"{where} keys {', '.join(required + optional)}")
        out = {}
        for knode, vnode in node.value:
            name = knode.value if isinstance(knode, yaml.ScalarNode) else None
            sub = f"{key}.{name}" if key else str(name)
            if name not in required + optional:
                raise self.bad(knode, sub, "unknown key", f"allowed keys here: {', '.join(required + optional)}")
            if name in out:
                raise self.bad(knode, sub, "duplicate key", "write each key once")
            out[name] = vnode
        for name in required:
            if name not in out:
                raise self.bad(node, f"{key}.{name}" if key else name, "missing", f"add `{name}:`")
        return out

    def scalar(self, node, key, what):
        if not isinstance(node, yaml.ScalarNode):
            raise self.bad(node, key, f"expected {what}", f"write {what}")
        return node.value

    def number(self, node, key, positive=False):
        text = self.scalar(node, key, "a number")
        value = None if node.tag.endswith(("bool", "null")) else parse_spec_number(text)
        if value is None:
            raise self.bad(node, key, f"{text[:40]!r} is not an exact number of magnitude <= 1e300",
                           'write a decimal like 0.05 or a ratio like "2/255"')
        if positive and value <= 0:
            raise self.bad(node, key, f"{text} is not positive", "write a number > 0")
        return value

    def integer(self, node, key, minimum=0):
        text = self.scalar(node, key, "an integer")
        if not node.tag.endswith(":int") or not text.lstrip("-").isdigit() or len(text) > 18:
            raise self.bad(node, key, f"{text[:40]!r} is not an integer (at most 18 digits)", "write a whole number like 3")
        if int(text) < minimum:
            raise self.bad(node, key, f"{text} is below {minimum}", f"write an integer >= {minimum}")
        return int(text)

    def string(self, node, key, choices=None):
        text = self.scalar(node, key, "a string")
        if choices and text not in choices:
            raise self.bad(node, key, f"{text!r} is not one of {', '.join(choices)}", f"write one of {', '.join(choices)}")
        return text

    def seq(self, node, key):
        if not isinstance(node, yaml.SequenceNode):
            raise self.bad(node, key, "expected a list", f"write `{key}: [...]`")
        return node.value

    def sha(self, node, key):
        text = self.string(node, key)
        if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
            raise self.bad(node, key, "not a sha256 (64 lowercase hex digits)", "run `sha256sum FILE` and paste the hash")
        return text

    def file(self, node, key):
        rel = self.string(node, key)
        path = (self.base / rel).resolve()
        if not path.is_file():
            raise self.bad(node, key, f"file {rel!r} not found (looked in {path.parent})",
                           "paths are relative to the spec file; check the name")
        return path

    def model_ref(self, node, key):
        m = self.mapping(node, key, ("path", "sha256"))
        return ModelRef(self.file(m["path"], f"{key}.path"), self.sha(m["sha256"], f"{key}.sha256"), key, node.start_mark.line + 1)

    def vector(self, node, key):
        """A number, a list of numbers, or a .npy path."""
        if isinstance(node, yaml.SequenceNode):
            items = self.seq(node, key)
            if not items:
                raise self.bad(node, key, "empty list", "give one number per input or a single number")
            return tuple(self.number(n, f"{key}[{i}]") for i, n in enumerate(items))
        if isinstance(node, yaml.ScalarNode) and node.value.endswith(".npy"):
            return self.file(node, key)
        return self.number(node, key)

    def input(self, node):
        m = self.mapping(node, "input", (), ("box", "linf_ball", "vnnlib", "clip"))
        if ("box" in m) + ("linf_ball" in m) + ("vnnlib" in m) != 1:
            raise self.bad(node, "input", "give exactly one of box, linf_ball or vnnlib",
                           "write `box: {lower: .., upper: ..}`, `linf_ball: {center: .., radius: ..}` or `vnnlib: FILE.vnnlib`")
        clip = None
        if "clip" in m:
            items = self.seq(m["clip"], "input.clip")
            if len(items) != 2:
                raise self.bad(m["clip"], "input.clip", "expected [low, high]", "write `clip: [0, 1]`")
            clip = (self.number(items[0], "input.clip[0]"), self.number(items[1], "input.clip[1]"))
            if clip[0] > clip[1]:
                raise self.bad(m["clip"], "input.clip", "low > high", "write the smaller number first")
        line = node.start_mark.line + 1
        if "vnnlib" in m:
            return InputSpec("vnnlib", vnnlib=self.file(m["vnnlib"], "input.vnnlib"), clip=clip, line=line)
        if "box" in m:
            b = self.mapping(m["box"], "input.box", ("lower", "upper"))
            return InputSpec("box", lower=self.vector(b["lower"], "input.box.lower"),
                             upper=self.vector(b["upper"], "input.box.upper"), clip=clip, line=line)
        b = self.mapping(m["linf_ball"], "input.linf_ball", ("center", "radius"))
        radius = self.number(b["radius"], "input.linf_ball.radius")
        if radius < 0:
            raise self.bad(b["radius"], "input.linf_ball.radius", "negative radius", "write a radius >= 0")
        return InputSpec("linf_ball", center=self.vector(b["center"], "input.linf_ball.center"),
                         radius=radius, clip=clip, line=line)

    def transform(self, node, key):
        m = self.mapping(node, key, (), ("prune", "low_rank", "model"))
        if len(m) != 1:
            raise self.bad(node, key, "each entry is one transform", "write `- prune: {...}`, `- low_rank: {...}` or `- model: {...}`")
        (kind, body), = m.items()
        key, line = f"{key}.{kind}", node.start_mark.line + 1
        if kind == "model":
            return SecondModel(self.model_ref(body, key), line)
        if kind == "low_rank":
            t = self.mapping(body, key, ("layer", "rank"))
            return LowRank(self.integer(t["layer"], f"{key}.layer", 1), self.integer(t["rank"], f"{key}.rank", 0), line)
        t = self.mapping(body, key, ("layer", "keep"), ("fill",))
        keep = tuple(self.integer(n, f"{key}.keep[{i}]") for i, n in enumerate(self.seq(t["keep"], f"{key}.keep")))
        if len(set(keep)) != len(keep):
            raise self.bad(t["keep"], f"{key}.keep", "lists a neuron twice", "list each kept neuron once")
        layer = self.integer(t["layer"], f"{key}.layer", 1)
        fill = t.get("fill")
        if fill is None or isinstance(fill, yaml.ScalarNode):
            name = "zero" if fill is None else self.string(fill, f"{key}.fill", ("zero", "mean"))
            return Prune(layer, keep, name, line=line)
        f = self.mapping(fill, f"{key}.fill", (), ("constant", "mean"))
        if len(f) != 1:
            raise self.bad(fill, f"{key}.fill", "give one fill", "write zero, mean, {constant: 0.5} or {mean: {samples: 1000, seed: 0}}")
        if "constant" in f:
            value = self.vector(f["constant"], f"{key}.fill.constant")
            if isinstance(value, Path):
                raise self.bad(f["constant"], f"{key}.fill.constant", "a file is not accepted here", "write a number or a list of numbers")
            return Prune(layer, keep, "constant", constant=value, line=line)
        mm = self.mapping(f["mean"], f"{key}.fill.mean", (), ("samples", "seed"))
        samples = self.integer(mm["samples"], f"{key}.fill.mean.samples", 1) if "samples" in mm else 1000
        if samples > 1_000_000:
            raise self.bad(mm["samples"], f"{key}.fill.mean.samples", "more than 1,000,000 samples", "use at most 1000000")
        seed = self.integer(mm["seed"], f"{key}.fill.mean.seed") if "seed" in mm else 0
        return Prune(layer, keep, "mean", samples=samples, seed=seed, line=line)

    def property(self, node):
        m = self.mapping(node, "property", ("deviation", "tolerance"), ("outputs",))
        outputs = None
        if "outputs" in m:
            items = self.seq(m["outputs"], "property.outputs")
            outputs = tuple(self.integer(n, f"property.outputs[{i}]") for i, n in enumerate(items))
            if not outputs or len(set(outputs)) != len(outputs):
                raise self.bad(m["outputs"], "property.outputs", "empty or repeated output index", "list each output index once")
        tol = self.number(m["tolerance"], "property.tolerance")
        if tol < 0:
            raise self.bad(m["tolerance"], "property.tolerance", "negative tolerance", "write a tolerance >= 0")
        return Property(self.string(m["deviation"], "property.deviation", DEVIATIONS), tol, outputs, node.start_mark.line + 1)

    def options(self, node):
        if node is None:
            return Options()
        m = self.mapping(node, "options", (), ("method", "timeout_s", "max_leaves", "falsifier"))
        kw = {}
        if "method" in m:
            kw["method"] = self.string(m["method"], "options.method", METHODS)
        if "timeout_s" in m:
            kw["timeout_s"] = self.number(m["timeout_s"], "options.timeout_s", positive=True)
        if "max_leaves" in m:
            kw["max_leaves"] = self.integer(m["max_leaves"], "options.max_leaves", 1)
        if "falsifier" in m:
            f = self.mapping(m["falsifier"], "options.falsifier", (), ("starts", "steps", "seed"))
            for name in f:
                kw[name] = self.integer(f[name], f"options.falsifier.{name}", 0 if name != "starts" else 1)
        return Options(**kw)


def read_spec(path: str | Path) -> Spec:
    """Parse and validate a spec file. Model-dependent checks happen when the model is read."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError:
        raise BadInput(str(path), "", "spec file not found or unreadable", "check the path") from None
    r = _Reader(path.resolve())
    try:
        root = yaml.compose(raw.decode("utf-8"), Loader=yaml.SafeLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BadInput(str(path), "", f"not valid YAML ({problem})", "fix the YAML syntax (plain UTF-8 text)",
                       None if line is None else line + 1) from None
    except RecursionError:
        raise BadInput(str(path), "", "not a spec: nested too deeply", "start from an example in specs/") from None
    if root is None:
        raise BadInput(str(path), "", "empty spec", "start from an example in specs/")
    top = r.mapping(root, "", ("version", "model", "input", "explanation", "property"), ("options",))
    if r.integer(top["version"], "version") != 1:
        raise r.bad(top["version"], "version", "unsupported spec version", "write `version: 1`")
    expl = r.seq(top["explanation"], "explanation")
    if not expl:
        raise r.bad(top["explanation"], "explanation", "empty explanation", "list at least one transform")
    transforms = tuple(r.transform(n, f"explanation[{i}]") for i, n in enumerate(expl))
    return Spec(path=path, sha256=hashlib.sha256(raw).hexdigest(), model=r.model_ref(top["model"], "model"),
                input=r.input(top["input"]), explanation=transforms, property=r.property(top["property"]),
                options=r.options(top.get("options")))
