"""Scale-aware commands: `certify flow`, `certify scales`, `certify components`.

* flow: every level of a spec's hierarchy (`levels:`, fine to coarse) certified separately; the
  certified upper bound, attained lower bound and kept degrees of freedom per level; the
  separation-of-scales diagnostic (ratio of bounds between adjacent levels); a plot. With several
  specs, an overlay normalised by each model's output scale: an EMPIRICAL comparison.
* scales: spectra of each hidden layer's activation covariance (over samples of the domain), of
  each weight matrix, and k-means inertia of each layer's neurons; cut points at the largest gaps,
  printed as a ready `levels:` block.
* components: for the components a level discards (pruned neurons, merged blocks, dropped principal
  components or singular directions), a certified bound on the deviation when only that one
  component is neglected; components whose bound is <= a threshold are irrelevant.

Every bound here comes from a certificate the trusted checker accepted; ratios, normalisations and
labels derived from them are computed here and say so.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from .bounds.methods import NAMES as METHODS, SINGLE_PASS
from .checker.check import Verdict, check_certificate
from .checker.errors import BadInput
from .checker.numbers import parse_spec_number, rational_str
from .checker.graph import Graph
from .checker.spec import Spec, read_spec
from .files import certificate_path
from .options import read_options
from .status import Status, worst

EMPIRICAL = ("EMPIRICAL comparison: each model's bounds are certified separately; the output-scale normalisation "
             "(RMS of f's outputs over uniform samples of the domain) and the comparison across models are not certified")


# --------------------------------------------------------------------------- degrees of freedom

def transform_dof(t, f) -> tuple[int, int]:
    """(kept, full) degrees of freedom of one transform on model f, from its float half
    (explain/transforms.py: prune kept neurons, merge blocks, pca components, low_rank rank, ...)."""
    from .explain.transforms import half

    return half(t).dof(t, f)


def level_dof(explanation, f) -> tuple[int, int]:
    """A level's kept (and full) degrees of freedom: the sum over its transforms."""
    pairs = [transform_dof(t, f) for t in explanation]
    return sum(k for k, _ in pairs), sum(n for _, n in pairs)


# --------------------------------------------------------------------------- one flow

@dataclass
class LevelResult:
    name: str
    dof: int
    full_dof: int
    verdict: Verdict
    upper: Fraction | None
    lower: Fraction | None
    certificate: Path
    reused: bool
    seconds: float
    reason: str = ""


@dataclass
class Flow:
    spec: Spec
    levels: list[LevelResult]
    factor: float
    output_scale: float | None = None
    components: dict = field(default_factory=dict)  # level name -> list of ComponentResult

    @property
    def tolerance(self) -> Fraction:
        return self.spec.property.tolerance

    def plot(self, path: str | Path | None = None):
        """The scale-flow plot as a matplotlib Figure (a notebook shows it); with `path` (a stem), also
        written as PATH.png and PATH.svg."""
        if path is not None:
            plot_flows([self], path)
        return flow_figure([self])

    def to_json(self) -> dict:
        """Levels, bounds and the separation-of-scales steps (the shape of `certify flow --json`)."""
        return flow_json(self)

    def steps(self) -> list[dict]:
        """The separation-of-scales diagnostic between adjacent levels (fine -> coarse)."""
        out = []
        for fine, coarse in zip(self.levels, self.levels[1:]):
            ratio = _ratio(coarse.upper, fine.upper)
            proven = _ratio(coarse.lower, fine.upper)  # true sup ratio >= lower_coarse / upper_fine
            out.append({"fine": fine.name, "coarse": coarse.name, "ratio": ratio, "certified_ratio": proven,
                        "boundary": ratio is not None and ratio > self.factor,
                        "proven_boundary": proven is not None and proven > self.factor})
        return out


def _ratio(a: Fraction | None, b: Fraction | None) -> float | None:
    if a is None or b is None:
        return None
    if b == 0:
        return 1.0 if a == 0 else math.inf
    return float(a / b)


def level_certificate(out_dir: Path, spec: Spec, level: str) -> Path:
    return certificate_path(spec.at_level(level), out_dir)


def run_flow(spec_path, *, out_dir="proofs", method=None, fresh=False, factor=10.0, log=print) -> Flow:
    """Certify every level (or re-verify its certificate when the checker accepts it for this spec and level)."""
    from .checker.model import read_model

    spec = read_spec(spec_path)
    if not spec.levels:
        raise BadInput(str(spec.path), "levels", "certify flow needs a spec with `levels:`",
                       "list named explanations from fine to coarse under `levels:` (see `certify scales SPEC`)")
    f = read_model(spec.model.path, spec.model.sha256)
    reused = {}
    for lv in spec.levels if not fresh else ():
        t0 = time.perf_counter()
        cert = level_certificate(out_dir, spec, lv.name)
        if cert.is_file():
            r = check_certificate(spec.path, cert)  # reuse only what the checker accepts for exactly this level
            if r.verdict is not Verdict.REJECTED and r.level == lv.name:
                reused[lv.name] = LevelResult(lv.name, 0, 0, r.verdict, r.bound, r.witness_deviation, cert, True,
                                              time.perf_counter() - t0)
    if len(reused) < len(spec.levels):
        from .engine import run_check, validate_levels

        validate_levels(spec.path, {lv.name for lv in spec.levels} - set(reused))  # a bad level: one line, nothing bounded yet
    results = []
    for lv in spec.levels:
        t0 = time.perf_counter()
        cert = level_certificate(out_dir, spec, lv.name)
        result = reused.get(lv.name)
        if result is None:
            o = run_check(spec.path, cert, method, lv.name)
            result = LevelResult(lv.name, 0, 0, o.verdict, o.check.bound, o.lower, cert, False,
                                 time.perf_counter() - t0, o.check.reason)
        result.dof, result.full_dof = level_dof(lv.explanation, f)  # after g was built, so the level is known valid
        results.append(result)
        if log:
            log(f"  {lv.name}: {'re-verified' if result.reused else 'certified'} {cert} ({result.seconds:.1f} s)")
    return Flow(spec, results, factor)


def flow_of_checked(spec: Spec, checked, factor: float = 10.0) -> Flow:
    """The flow of a spec with levels from certificates the checker has already decided, as
    (level name, CheckResult, certificate path) triples (`certify report`: no second check, no bounding).
    Levels without an accepted certificate are left out."""
    from .checker.model import read_model

    f = read_model(spec.model.path, spec.model.sha256)
    explanations = {lv.name: lv.explanation for lv in spec.levels}
    levels = [LevelResult(name, *level_dof(explanations[name], f), r.verdict, r.bound, r.witness_deviation, Path(cert), True, 0.0)
              for name, r, cert in checked if r is not None and r.verdict is not Verdict.REJECTED]
    return Flow(spec, levels, factor)


# --------------------------------------------------------------------------- universality

def output_scale(spec: Spec, samples: int = 2000, seed: int = 0) -> float:
    """RMS over uniform samples of the domain of f's (selected) outputs minus their mean. Empirical."""
    import numpy as np

    from .checker.model import read_model
    from .explain import sample_domain
    from .model import to_numpy

    f = read_model(spec.model.path, spec.model.sha256)
    x = sample_domain(spec, f, samples, seed)
    ws, bs = to_numpy(f)
    for i, (w, b) in enumerate(zip(ws, bs)):
        x = x @ w.T + b
        if i < len(ws) - 1:
            x = np.maximum(x, 0.0)
    if spec.property.outputs is not None:
        x = x[:, list(spec.property.outputs)]
    return float(np.sqrt(np.mean((x - x.mean(axis=0)) ** 2)))


def universality(flows: list[Flow]) -> dict:
    """How far the normalised flows are from collapsing onto one curve (levels matched by name, or by
    position when the specs share no level names but have as many levels)."""
    names = [lv.name for lv in flows[0].levels]
    common = [n for n in names if all(n in {lv.name for lv in fl.levels} for fl in flows)]
    by_position = not common and len({len(fl.levels) for fl in flows}) == 1
    rows = []
    for i, name in enumerate(common or (names if by_position else [])):
        values = []
        for fl in flows:
            lv = fl.levels[i] if by_position else next(v for v in fl.levels if v.name == name)
            values.append(None if lv.upper is None or not fl.output_scale else float(lv.upper) / fl.output_scale)
        positive = [v for v in values if v is not None and v > 0]
        spread = math.log10(max(positive) / min(positive)) if len(positive) == len(values) else None
        rows.append({"level": name if not by_position else f"#{i + 1} ({name}, ...)", "normalised_upper": values,
                     "spread_decades": spread})
    spreads = [r["spread_decades"] for r in rows if r["spread_decades"] is not None]
    boundaries = [[(fl.levels.index(next(v for v in fl.levels if v.name == s["coarse"])) if by_position else s["coarse"])
                   for s in fl.steps() if s["boundary"]] for fl in flows]
    return {"label": EMPIRICAL, "models": [str(fl.spec.path) for fl in flows], "matched_by": "position" if by_position else "name",
            "output_scales": [fl.output_scale for fl in flows], "levels": rows,
            "max_spread_decades": max(spreads) if spreads else None,
            "mean_spread_decades": sum(spreads) / len(spreads) if spreads else None,
            "boundaries": boundaries, "same_boundaries": all(b == boundaries[0] for b in boundaries)}


# --------------------------------------------------------------------------- output

def _q(v: Fraction | None) -> str | None:
    return None if v is None else rational_str(v)


def _f(v) -> float | None:
    return None if v is None else float(v)


def _num(v) -> str:
    return "-" if v is None else f"{float(v):.4g}"


def _times(r: float | None) -> str:
    return "-" if r is None else ("inf" if math.isinf(r) else f"x{r:.3g}")


def _finite(step: dict) -> dict:
    """JSON has no infinity: an infinite ratio (the finer level's bound is 0) is written "inf"."""
    return {k: ("inf" if isinstance(v, float) and math.isinf(v) else v) for k, v in step.items()}


def flow_json(fl: Flow) -> dict:
    steps = [_finite(s) for s in fl.steps()]
    return {
        "spec": str(fl.spec.path), "tolerance": rational_str(fl.tolerance), "factor": fl.factor,
        "output_scale": fl.output_scale,
        "levels": [{"name": lv.name, "dof": lv.dof, "full_dof": lv.full_dof, "verdict": lv.verdict.value,
                    "certified_upper": _q(lv.upper), "attained_lower": _q(lv.lower),
                    "certified_upper_float": _f(lv.upper), "attained_lower_float": _f(lv.lower),
                    "certificate": str(lv.certificate), "reused": lv.reused, "seconds": round(lv.seconds, 3),
                    "reason": lv.reason or None} for lv in fl.levels],
        "steps": steps,
        "scale_boundaries": [s for s in steps if s["boundary"]],
        "components": {name: [c.to_json() for c in comps] for name, comps in fl.components.items()},
    }


def print_flow(fl: Flow) -> None:
    print(f"certify flow {fl.spec.path}  (tolerance {rational_str(fl.tolerance)}, scale boundary: bound ratio > {fl.factor:g})")
    print(f"  {'level':<14} {'dof':>9}  {'certified upper':>15}  {'attained lower':>14}  {'verdict':<9}  ratio to previous")
    steps = {s["coarse"]: s for s in fl.steps()}
    for lv in fl.levels:
        s = steps.get(lv.name)
        note = ""
        if s is not None:
            note = f"{_times(s['ratio'])}"
            if s["boundary"]:
                note += f"  << SCALE BOUNDARY (certified >= {_times(s['certified_ratio'])})"
        dof = f"{lv.dof}/{lv.full_dof}" if lv.full_dof < 10**6 else str(lv.dof)
        print(f"  {lv.name:<14} {dof:>9}  {_num(lv.upper):>15}  {_num(lv.lower):>14}  {lv.verdict.value:<9}  {note}")
    bounds = [s for s in fl.steps() if s["boundary"]]
    if bounds:
        for s in bounds:
            proof = ("proven: the coarse level's attained deviation exceeds the fine level's certified bound "
                     f"{_times(s['certified_ratio'])}" if s["proven_boundary"] else
                     f"suggested by the certified bounds; proven only up to {_times(s['certified_ratio'])}")
            print(f"  scale boundary between {s['fine']} and {s['coarse']}: bound {_times(s['ratio'])} ({proof})")
    else:
        print(f"  no scale boundary: no adjacent levels' bounds differ by more than x{fl.factor:g}")
    if fl.output_scale is not None:
        print(f"  output scale (empirical RMS of f) {fl.output_scale:.4g}")


def print_universality(u: dict) -> None:
    print("universality (" + u["label"] + ")")
    for m, s in zip(u["models"], u["output_scales"]):
        print(f"  {m}: output scale {s:.4g}")
    for row in u["levels"]:
        vals = "  ".join(_num(v) for v in row["normalised_upper"])
        sp = row["spread_decades"]
        print(f"  {row['level']:<14} normalised upper: {vals}   spread {'-' if sp is None else f'{sp:.2f}'} decades")
    ms, mean = u["max_spread_decades"], u["mean_spread_decades"]
    spread = "-" if ms is None else f"max {ms:.2f}, mean {mean:.2f}"
    where = "at the same levels in every model" if u["same_boundaries"] else f"differ: {u['boundaries']}"
    print(f"  collapse: spread of the normalised bounds across models {spread} decades; scale boundaries {where}")


def plot_flows(flows: list[Flow], stem: str | Path, normalise: bool = False) -> list[Path]:
    """The flow figure (`flow_figure`) written as STEM.png and STEM.svg."""
    stem = Path(stem)
    if stem.suffix.lower() in (".png", ".svg"):
        stem = stem.with_suffix("")
    fig = flow_figure(flows, normalise)
    out = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    stem.parent.mkdir(parents=True, exist_ok=True)
    for p in out:
        fig.savefig(p, dpi=130)
    return out


def flow_figure(flows: list[Flow], normalise: bool = False):
    """Upper and lower bounds against kept dof (log-log), tolerance line, boundaries shaded: a matplotlib
    Figure made without pyplot (no backend is switched, so a notebook's stays as it is)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.6))
    ax = fig.subplots()
    floor = None
    by_dof = any(lv.dof > 0 for fl in flows for lv in fl.levels)  # else (ablations only) the levels in their order
    for i, fl in enumerate(flows):
        scale = fl.output_scale if normalise and fl.output_scale else 1.0
        xs = [lv.dof for lv in fl.levels] if by_dof else [len(fl.levels) - k for k in range(len(fl.levels))]
        up = [None if lv.upper is None else float(lv.upper) / scale for lv in fl.levels]
        lo = [None if lv.lower is None else float(lv.lower) / scale for lv in fl.levels]
        positive = [v for v in up + lo if v]
        floor = min([floor] + positive if floor else positive) if positive else floor
        colour = f"C{i}"
        label = fl.spec.path.stem if len(flows) > 1 else None
        ax.plot(xs, [v if v else float("nan") for v in up], "o-", color=colour,
                label=f"certified upper{'' if label is None else ' - ' + label}")
        ax.plot(xs, [v if v else float("nan") for v in lo], "v--", color=colour, alpha=0.7,
                label=f"attained lower{'' if label is None else ' - ' + label}")
        if len(flows) == 1:
            for x, y, lv in zip(xs, up, fl.levels):
                if y:
                    ax.annotate(lv.name, (x, y), textcoords="offset points", xytext=(4, 6), fontsize=8)
        at = dict(zip((lv.name for lv in fl.levels), xs))
        for s in fl.steps():
            if s["boundary"]:
                a, b = sorted((at[s["fine"]], at[s["coarse"]]))
                ax.axvspan(a, b, color=colour, alpha=0.12)
                if len(flows) == 1:
                    ax.text((a * b) ** 0.5, 0.97, f"scale boundary {_times(s['ratio'])}", transform=ax.get_xaxis_transform(),
                            ha="center", va="top", fontsize=8)
    if not normalise:
        tol = float(flows[0].tolerance)
        if tol > 0:
            ax.axhline(tol, color="grey", linestyle=":", label=f"tolerance {rational_str(flows[0].tolerance)}")
    dofs = sorted({lv.dof for fl in flows for lv in fl.levels if lv.dof > 0})
    ax.set_yscale("log" if floor else "linear")
    if by_dof:
        ax.set_xscale("log")
        ax.set_xlabel("kept degrees of freedom (log)")
    if not by_dof:  # levels that differ by what they ablate, not by kept degrees of freedom: one tick per level
        names = flows[0].levels
        ax.set_xticks([len(names) - k for k in range(len(names))], [lv.name for lv in names])
        ax.set_xlabel("level, as listed in the spec (no level keeps degrees of freedom)")
    elif len(dofs) <= 16:  # label the levels' own dof, as plain numbers
        from matplotlib.ticker import NullFormatter, NullLocator

        ax.set_xticks(dofs, [str(d) for d in dofs])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("sup |f - g| / output scale (log)" if normalise else "sup_x max_i |f_i - g_i| (log)")
    title = "scale flow" + (f": {flows[0].spec.path.name}" if len(flows) == 1 else
                            " overlay, normalised by output scale (EMPIRICAL comparison)")
    ax.set_title(title, fontsize=10)
    ax.invert_xaxis()  # fine (many dof) on the left, coarse on the right
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="lower right" if len(flows) == 1 else "best")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- components

@dataclass
class ComponentResult:
    label: str
    entry: dict  # the explanation entry that neglects only this component
    spec_path: Path
    certificate: Path
    verdict: Verdict
    upper: Fraction | None
    lower: Fraction | None
    threshold: Fraction
    reason: str = ""

    @property
    def relevance(self) -> str:
        """irrelevant: certified influence <= threshold; relevant: an input attains more; else undecided."""
        if self.upper is not None and self.upper <= self.threshold:
            return "irrelevant"
        if self.lower is not None and self.lower > self.threshold:
            return "relevant"
        return "undecided"

    def to_json(self) -> dict:
        return {"component": self.label, "relevance": self.relevance, "certified_upper": _q(self.upper),
                "attained_lower": _q(self.lower), "certified_upper_float": _f(self.upper),
                "attained_lower_float": _f(self.lower), "threshold": rational_str(self.threshold),
                "verdict": self.verdict.value, "spec": str(self.spec_path), "certificate": str(self.certificate),
                "explanation": self.entry, "reason": self.reason or None}


def discarded_components(spec: Spec, f) -> list[tuple[str, dict]]:
    """(label, explanation entry neglecting only that component) for the components the chosen level
    discards, from each transform's float half. Each is neglected alone, in f (not after the level's
    other transforms)."""
    from .explain.transforms import half

    return [c for i, t in enumerate(spec.explanation) for c in half(t).components(spec, i, t, f)]


def _input_json(spec: Spec, base: Path) -> dict:
    def rel(p: Path) -> str:
        return str(Path(__import__("os").path.relpath(p, base)))

    def value(v):
        if isinstance(v, Path):
            return rel(v)
        if isinstance(v, tuple):
            return [rational_str(x) for x in v]
        return rational_str(v)

    inp = spec.input
    if inp.kind == "vnnlib":
        out = {"vnnlib": rel(inp.vnnlib)}
    elif inp.kind == "tokens":
        vocab, length, allowed = inp.tokens
        out = {"tokens": {"vocab": vocab, "length": length, "allowed": [list(a) for a in allowed]}}
    elif inp.kind == "box":
        out = {"box": {"lower": value(inp.lower), "upper": value(inp.upper)}}
    else:
        out = {"linf_ball": {"center": value(inp.center), "radius": rational_str(inp.radius)}}
    if inp.clip is not None:
        out["clip"] = [rational_str(inp.clip[0]), rational_str(inp.clip[1])]
    return out


def component_spec_text(spec: Spec, entry: dict, directory: Path, method: str) -> str:
    """A spec (JSON is YAML) for f against f with only `entry` applied; paths relative to `directory`."""
    import os

    prop = {"deviation": spec.property.deviation, "tolerance": rational_str(spec.property.tolerance)}
    if spec.property.outputs is not None:
        prop["outputs"] = list(spec.property.outputs)
    doc = {"version": 1,
           "model": {"path": os.path.relpath(spec.model.path, directory), "sha256": spec.model.sha256},
           "input": _input_json(spec, directory), "explanation": [entry], "property": prop,
           "options": {"method": method}}
    return f"# Written by `certify components` for {spec.path.name} level {spec.level}: only one component neglected.\n" \
           + json.dumps(doc, indent=1) + "\n"


def quick_lower(p, samples: int = 512, steps: int = 40, seed: int = 0):
    """A cheap attained lower bound: uniform samples and corners, then sign-gradient ascent in numpy
    (no JIT: components are many small runs). Replayed exactly like the falsifier's witness."""
    import numpy as np

    from .checker import exact
    from .checker.network import normalise_box
    from .engine import exact_witness, float_affine

    ws = [np.asarray(w) for w in p.net.weights]
    bs = [np.asarray(b) for b in p.net.biases]
    lo = np.array([float(v) for v in p.domain[0]])
    up = np.array([float(v) for v in p.domain[1]])
    f = p.model
    scale, shift = float_affine(f, len(lo)).values()
    rng = np.random.default_rng(seed)
    x = np.concatenate([lo + (up - lo) * rng.random((samples, len(lo))),
                        np.where(rng.random((samples // 4, len(lo))) < 0.5, lo, up), ((lo + up) / 2)[None]])

    def run(x):
        a = x if scale is None else x * scale + shift
        acts = []
        for i, (w, b) in enumerate(zip(ws, bs)):
            a = a @ w.T + b
            if i < len(ws) - 1:
                acts.append(a > 0)
                a = np.maximum(a, 0.0)
        return a, acts

    for step in range(steps):
        d, acts = run(x)
        rows = np.argmax(np.abs(d), axis=1)
        g = np.sign(d[np.arange(len(x)), rows])[:, None] * ws[-1][rows]
        for w, act in zip(reversed(ws[:-1]), reversed(acts)):
            g = (g * act) @ w
        if scale is not None:
            g = g * scale
        size = (up - lo) * (0.25 * (1 - step / steps) + 1e-3)
        x = np.clip(x + size * np.sign(g), lo, up)
        if step == steps // 2:  # keep the best quarter for the rest
            keep = np.argsort(-np.max(np.abs(run(x)[0]), axis=1))[: max(1, len(x) // 4)]
            x = x[keep]
    d, _ = run(x)
    best = x[int(np.argmax(np.max(np.abs(d), axis=1)))]
    witness = exact_witness(best, p.domain)
    return witness, max(abs(v) for v in exact.forward(p.joint, normalise_box(f, witness, witness)[0]))


def run_components(spec_path, level: str | None, *, out_dir="proofs", threshold: Fraction | None = None,
                   method: str = "crown", log=print) -> tuple[Spec, list[ComponentResult]]:
    """Certify the influence of every component the level discards (each its own spec and certificate).

    The default threshold is tolerance / (number of components): where the deviation is a sum of the
    components' terms (one hidden layer read by the output layer: prune, pca), components that are all
    irrelevant at that threshold neglect, together, at most the tolerance."""
    from .checker.model import read_model
    from .engine import bound_with, prepare, select_level, write_and_check

    spec = read_spec(spec_path)
    if spec.levels and level is None:
        level = spec.levels[-1].name  # the coarsest level by default
    spec = select_level(spec, level)
    budget = float(read_options(spec).timeout_s)  # the spec's own budget, per component
    f = read_model(spec.model.path, spec.model.sha256)
    directory = Path(out_dir) / f"{spec.name}.components"
    directory.mkdir(parents=True, exist_ok=True)
    comps = discarded_components(spec, f)
    if threshold is None:  # default: the tolerance shared out over the discarded components
        threshold = spec.property.tolerance / max(1, len(comps))
    results = []
    for n, (label, entry) in enumerate(comps):
        slug = label.replace("layer ", "L").replace(" ", "-").replace("[", "").replace("]", "").replace(",", "")[:60]
        sp = directory / f"{n:03d}-{slug}.yaml"
        sp.write_text(component_spec_text(spec, entry, directory.resolve(), method))
        cert = sp.with_suffix(".cert.json")
        if isinstance(f, Graph):  # a graph model: its own engine (certify/engine_graph.py)
            from .engine_graph import run_graph_check
            r = run_graph_check(sp, cert, method).check
        else:
            p = prepare(sp, cert)
            bound, body, notes = bound_with(p, method, time_budget=budget)
            witness, lower = quick_lower(p)
            r = write_and_check(p, method, bound, body, witness, lower, notes)
        results.append(ComponentResult(label, entry, sp, cert, r.verdict, r.bound, r.witness_deviation, threshold,
                                       r.reason))
        if log and r.verdict is Verdict.REJECTED:
            log(f"  {label}: REJECTED by the checker ({r.reason})")
    return spec, results


def print_components(spec: Spec, results: list[ComponentResult], top: int = 10) -> None:
    if not results:
        print(f"certify components {spec.path} level {spec.level}: this level discards no discrete components "
              "(quantize, a second model, replace and sae have none: an SAE feature's influence is relative to the SAE)")
        return
    thr = results[0].threshold
    counts = {k: sum(r.relevance == k for r in results) for k in ("relevant", "undecided", "irrelevant")}
    print(f"certify components {spec.path}" + (f"  (level {spec.level})" if spec.level else ""))
    print(f"  {len(results)} discarded components, each neglected alone and certified; threshold {rational_str(thr)}: "
          f"{counts['relevant']} relevant, {counts['undecided']} undecided, {counts['irrelevant']} irrelevant")
    ranked = sorted(results, key=lambda r: (r.upper is None, -(r.upper or 0)))
    print(f"  {'component':<44} {'certified upper':>15}  {'attained lower':>14}  relevance")
    for r in ranked[:top]:
        print(f"  {r.label[:44]:<44} {_num(r.upper):>15}  {_num(r.lower):>14}  {r.relevance}")
    if len(ranked) > top:
        rest = ranked[top:]
        print(f"  ... {len(rest)} more, all with certified upper <= {_num(rest[0].upper)}")
    rejected = [r for r in results if r.verdict is Verdict.REJECTED]
    if rejected:
        print(f"  {len(rejected)} component certificates were REJECTED by the checker: a bug in the engine; please report")
    print(f"  certificates in {results[0].spec_path.parent}")


# --------------------------------------------------------------------------- scales

def spectral_gaps(values, top: int, floor: float = 1e-12) -> tuple[list[tuple[int, float]], int]:
    """([(r, values[r-1] / values[r]) largest first], numerical rank) of a decreasing spectrum: cutting after
    the first r values. Values below floor * max are numerical zeros: the drop to them is the rank, not a gap."""
    vals = [max(float(v), 0.0) for v in values]
    if not vals or vals[0] <= 0:
        return [], 0
    rank = sum(v > floor * vals[0] for v in vals)
    gaps = [(r, vals[r - 1] / vals[r]) for r in range(1, rank)]
    return sorted(gaps, key=lambda g: -g[1])[:top], rank


def analyse_scales(spec_path, samples: int = 2000, seed: int = 0, cuts: int = 3, max_groups: int = 24) -> dict:
    import warnings

    import numpy as np
    from sklearn.cluster import KMeans

    from .checker.model import read_model
    from .checker.network import exact_layers
    from .explain import hidden_activations, principal_components, sample_domain
    from .model import to_numpy

    spec = read_spec(spec_path)
    f = read_model(spec.model.path, spec.model.sha256)
    x = sample_domain(spec, f, samples, seed)
    layers = exact_layers(f)
    ws, bs = to_numpy(f)
    out = {"spec": str(spec.path), "samples": samples, "seed": seed, "layers": []}
    for k in range(1, len(ws) + 1):
        sv = np.linalg.svd(ws[k - 1], compute_uv=False)
        gaps, rank = spectral_gaps(sv, cuts)
        entry = {"layer": k, "weight_shape": list(ws[k - 1].shape), "singular_values": sv.tolist(), "weight_rank": rank,
                 "singular_value_gaps": [{"rank": r, "ratio": g} for r, g in gaps]}
        if k < len(ws):
            _, ev, _ = principal_components(hidden_activations(layers, k, x))
            gaps, rank = spectral_gaps(ev, cuts)
            entry.update(activation_eigenvalues=ev.tolist(), activation_rank=rank,
                         activation_gaps=[{"components": r, "ratio": g} for r, g in gaps])
            points = np.c_[ws[k - 1], bs[k - 1]]
            inertia = []
            for groups in range(1, min(max_groups, len(np.unique(points, axis=0))) + 1):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    inertia.append(float(KMeans(n_clusters=groups, n_init=4, random_state=0).fit(points).inertia_))
            gaps, _ = spectral_gaps(inertia, cuts)  # inertia[r-1] / inertia[r]: the drop on reaching r + 1 groups
            entry.update(kmeans_inertia=inertia, cluster_gaps=[{"groups": r + 1, "ratio": g} for r, g in gaps])
        out["layers"].append(entry)
    out["suggestions"] = [s for s in (suggest_levels(out, "pca"), suggest_levels(out, "merge")) if s]
    return out


def suggest_levels(analysis: dict, kind: str, min_ratio: float = 10.0) -> dict | None:
    """Levels at the strongest gap of one kind: pca (activation spectrum) or merge (k-means inertia of the
    neurons' incoming weights). Levels: every cut with ratio > 2, fine to coarse, and one step past the strongest."""
    gaps_key, key = ("activation_gaps", "components") if kind == "pca" else ("cluster_gaps", "groups")
    best = max(((e["layer"], e[gaps_key]) for e in analysis["layers"] if e.get(gaps_key)),
               key=lambda lg: lg[1][0]["ratio"], default=None)
    if best is None or best[1][0]["ratio"] < min_ratio:
        return None
    layer, gaps = best
    strongest = gaps[0][key]
    counts = sorted({g[key] for g in gaps if g["ratio"] > 2} | ({strongest - 1} if strongest > 1 else set()), reverse=True)
    where = "activation spectrum" if kind == "pca" else "k-means inertia (neurons clustered on incoming weights)"
    why = ", ".join(f"{g[key]} {key} (x{g['ratio']:.3g})" for g in gaps)
    return {"transform": kind, "layer": layer, "cuts": [g[key] for g in gaps],
            "levels": [{"name": f"{kind}{c}", "explanation": [{kind: {"layer": layer, key: c}}]} for c in counts],
            "reason": f"layer {layer}'s {where}: largest gaps at {why}"}


def levels_yaml(suggestion: dict) -> str:
    key = "components" if suggestion["transform"] == "pca" else "groups"
    lines = [f"levels:   # suggested by `certify scales`: {suggestion['reason']}"]
    for lv in suggestion["levels"]:
        (kind, body), = lv["explanation"][0].items()
        lines.append(f"  - {{name: {lv['name']}, explanation: [{{{kind}: {{layer: {body['layer']}, {key}: {body[key]}}}}}]}}")
    return "\n".join(lines)


def print_scales(a: dict, show: int = 12) -> None:
    print(f"certify scales {a['spec']}  ({a['samples']} uniform samples of the domain, seed {a['seed']})")
    fmt = lambda vs: ", ".join(f"{v:.3g}" for v in vs[:show]) + (", ..." if len(vs) > show else "")
    for e in a["layers"]:
        gaps = ", ".join(f"rank {g['rank']} (x{g['ratio']:.3g})" for g in e["singular_value_gaps"])
        print(f"  dense layer {e['layer']} {tuple(e['weight_shape'])}: singular values {fmt(e['singular_values'])}"
              + (f"; largest gaps after {gaps}" if gaps else ""))
        if "activation_eigenvalues" in e:
            print(f"  hidden layer {e['layer']}: activation covariance eigenvalues {fmt(e['activation_eigenvalues'])}"
                  f" (numerical rank {e['activation_rank']})")
            gaps = ", ".join(f"after {g['components']} (x{g['ratio']:.3g})" for g in e["activation_gaps"])
            print(f"    largest spectral gaps: {gaps or '-'}")
            cg = ", ".join(f"at {g['groups']} groups (x{g['ratio']:.3g})" for g in e["cluster_gaps"])
            print(f"    k-means inertia of its neurons (incoming weights) drops most: {cg or '-'}")
    if not a["suggestions"]:
        print("  no gap of 10x or more: no hierarchy suggested")
    for s in a["suggestions"]:
        print(f"  suggested hierarchy from the {'activation spectrum' if s['transform'] == 'pca' else 'neuron clusters'}"
              " (paste into a spec in place of `explanation:`):")
        print("\n".join("    " + line for line in levels_yaml(s).splitlines()))


# --------------------------------------------------------------------------- commands

def _threshold(text: str | None) -> Fraction | None:
    if text is None:
        return None
    value = parse_spec_number(text)
    if value is None or value < 0:
        raise BadInput("--threshold", "", f"{text!r} is not an exact number >= 0", 'write e.g. 0.05 or "1/20"')
    return value


def cmd_flow(args) -> int:
    flows = []
    for path in args.spec:
        fl = run_flow(path, out_dir=args.out_dir, method=args.method, fresh=args.fresh, factor=args.factor,
                      log=(lambda m: print(m)) if args.verbose else None)
        if len(args.spec) > 1:
            fl.output_scale = output_scale(fl.spec)
        if args.components:
            names = [s["coarse"] for s in fl.steps() if s["boundary"]] or [fl.levels[-1].name]
            for name in names:
                _, comps = run_components(path, name, out_dir=args.out_dir, threshold=_threshold(args.threshold))
                fl.components[name] = comps
        flows.append(fl)
    for fl in flows:
        print_flow(fl)
        for name, comps in fl.components.items():
            print_components(fl.spec.at_level(name), comps, args.top)
    uni = universality(flows) if len(flows) > 1 else None
    if uni is not None:
        print_universality(uni)
    if args.plot:
        written = plot_flows(flows, args.plot, normalise=len(flows) > 1)
        print(f"plot: {', '.join(map(str, written))}")
    if args.json:
        data = {"flows": [flow_json(fl) for fl in flows], "universality": uni}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
        print(f"json: {args.json}")
    return worst(Status.of(lv.verdict) for fl in flows for lv in fl.levels).exit_code


def cmd_components(args) -> int:
    spec, results = run_components(args.spec, args.level, out_dir=args.out_dir, threshold=_threshold(args.threshold),
                                   method=args.method)
    print_components(spec, results, args.top)
    if args.json:
        Path(args.json).write_text(json.dumps({"spec": str(spec.path), "level": spec.level,
                                               "components": [r.to_json() for r in results]}, indent=1) + "\n")
        print(f"json: {args.json}")
    return 3 if any(r.verdict is Verdict.REJECTED for r in results) else 0


def cmd_scales(args) -> int:
    a = analyse_scales(args.spec, samples=args.samples, seed=args.seed, cuts=args.cuts)
    print_scales(a)
    if args.json:
        Path(args.json).write_text(json.dumps(a, indent=1) + "\n")
        print(f"json: {args.json}")
    return 0


def register(sub) -> None:
    """Add `flow`, `scales` and `components` to certify's command line."""
    f = sub.add_parser("flow", help="certify every level of a hierarchy; scale flow, boundaries, plot")
    f.add_argument("spec", nargs="+", help="spec(s) with `levels:`; several: an EMPIRICAL overlay (universality)")
    f.add_argument("--json", metavar="PATH", help="write the flow(s) as JSON")
    f.add_argument("--plot", metavar="PATH", help="write PATH.png and PATH.svg (PATH without suffix)")
    f.add_argument("--factor", type=float, default=10.0, help="flag a scale boundary where the bound jumps by more (default 10)")
    f.add_argument("--fresh", action="store_true", help="re-bound every level (default: re-verify certificates that the checker accepts)")
    f.add_argument("--method", choices=METHODS, help="override options.method")
    f.add_argument("--out-dir", default="proofs", help="where certificates go (default proofs/)")
    f.add_argument("--components", action="store_true",
                   help="also certify each discarded component of the levels past a scale boundary (or the coarsest)")
    f.add_argument("--threshold", help="relevance threshold for --components (default: tolerance / number of components)")
    f.add_argument("--top", type=int, default=10, help="components shown (default 10)")
    f.add_argument("--verbose", action="store_true", help="say which levels were re-verified or certified")
    f.set_defaults(func=cmd_flow)
    c = sub.add_parser("components", help="certified influence of each component a level discards; relevant vs irrelevant")
    c.add_argument("spec")
    c.add_argument("--level", help="the level (default: the coarsest)")
    c.add_argument("--threshold", help="relevance threshold (default: tolerance / number of components)")
    c.add_argument("--method", default="crown", choices=SINGLE_PASS, help="bounding method (default crown)")
    c.add_argument("--out-dir", default="proofs", help="component specs and certificates go to OUT_DIR/<spec>.<level>.components/")
    c.add_argument("--top", type=int, default=10, help="components shown (default 10)")
    c.add_argument("--json", metavar="PATH")
    c.set_defaults(func=cmd_components)
    s = sub.add_parser("scales", help="activation and weight spectra; cut points at the largest gaps as a `levels:` block")
    s.add_argument("spec")
    s.add_argument("--samples", type=int, default=2000, help="uniform samples of the domain (default 2000)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--cuts", type=int, default=3, help="gaps reported per spectrum (default 3)")
    s.add_argument("--json", metavar="PATH")
    s.set_defaults(func=cmd_scales)
