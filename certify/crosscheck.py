"""A second opinion from auto_LiRPA: its IBP, CROWN and alpha-CROWN bounds on the deviation.

Optional (`make bench-deps` installs torch and auto_LiRPA) and never certified: the bounds are
float computations in another tool, reported beside certify's checked bound and never used for a
verdict or an exit code. They are computed on one torch module computing f(x) - g(x) (the selected
outputs) for exactly the g a certificate is about: g is rebuilt with the checker's `build_g` from
the spec and the certificate's materialised arrays, and the box is the checker's network-space box
(rounded outward to floats).
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import warnings
from pathlib import Path

from .checker.errors import BadInput
from .checker.model import read_arrays, read_model
from .checker.network import build_g, exact_layers, input_box, normalise_box, with_free
from .checker.spec import read_spec

METHODS = {"interval": "IBP", "crown": "CROWN", "alpha": "alpha-CROWN"}  # certify's name -> auto_LiRPA's
INSTALL = "install them with `make bench-deps` (torch 2.13 CPU and the auto_LiRPA wheel from ../shared/wheels)"


def require() -> None:
    """BadInput (exit 2, one line) unless torch and auto_LiRPA import."""
    try:  # torch's import installs its own warning filters: its deprecation notes are kept off stderr
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            import auto_LiRPA  # noqa: F401
            import torch  # noqa: F401
    except ImportError as exc:
        raise BadInput("--engine auto_lirpa", "", f"{exc.name or 'auto_LiRPA'} is not installed", INSTALL) from None


def diff_module(f_layers, g_layers, outputs=None):
    """torch module x -> f(x)[outputs] - g(x)[outputs] (float64), from exact (weights, bias) layers."""
    import torch

    def seq(layers):
        mods = []
        for i, (w, b) in enumerate(layers):
            if i == len(layers) - 1 and outputs is not None:
                w, b = [w[r] for r in outputs], [b[r] for r in outputs]
            lin = torch.nn.Linear(len(w[0]), len(w), dtype=torch.float64)
            lin.weight.data = torch.tensor([[float(v) for v in row] for row in w], dtype=torch.float64)
            lin.bias.data = torch.tensor([float(v) for v in b], dtype=torch.float64)
            mods += [lin] + ([torch.nn.ReLU()] if i < len(layers) - 1 else [])
        return torch.nn.Sequential(*mods)

    class Diff(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.f, self.g = seq(f_layers), seq(g_layers)

        def forward(self, x):  # g may read extra inputs (free values, `fill: free`) after f's
            return self.f(x[..., :len(f_layers[0][0][0])]) - self.g(x)

    return Diff()


def bounds(f_layers, g_layers, box, outputs=None, iterations: int = 60) -> dict:
    """{certify method: {"bound": max_i max(U_i, -L_i), "seconds": s}} for IBP, CROWN, alpha-CROWN."""
    require()
    import torch
    from auto_LiRPA import BoundedModule, BoundedTensor, PerturbationLpNorm

    from .bounds.network import box_floats

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:  # auto_LiRPA prints progress ("Early stop at ...") on stdout: keep it out of --json
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            lo, up = (torch.tensor(v, dtype=torch.float64)[None] for v in box_floats(*box))
            out = {}
            for ours, theirs in METHODS.items():
                model = BoundedModule(diff_module(f_layers, g_layers, outputs), torch.zeros_like(lo), verbose=False,
                                      bound_opts={"optimize_bound_args": {"iteration": iterations}})
                x = BoundedTensor((lo + up) / 2, PerturbationLpNorm(norm=float("inf"), x_L=lo, x_U=up))
                t = time.perf_counter()
                lb, ub = model.compute_bounds(x=(x,), method=theirs)
                out[ours] = {"bound": float(max(ub.max(), (-lb).max())), "seconds": round(time.perf_counter() - t, 3)}
    finally:
        torch.set_default_dtype(previous)
    return out


def module_bounds(model, lo, up) -> dict:
    """{certify method: {"bound": max_i max(U_i, -L_i), "seconds": s}} of an auto_LiRPA BoundedModule over the
    box [lo, up] (torch tensors of the module's input shape), for IBP, CROWN, alpha-CROWN; auto_LiRPA's progress
    output and warnings kept out of the caller's streams."""
    from auto_LiRPA import BoundedTensor, PerturbationLpNorm

    out = {}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        for ours, theirs in METHODS.items():
            x = BoundedTensor((lo + up) / 2, PerturbationLpNorm(norm=float("inf"), x_L=lo, x_U=up))
            t = time.perf_counter()
            lb, ub = model.compute_bounds(x=(x,), method=theirs)
            out[ours] = {"bound": float(max(ub.max(), (-lb).max())), "seconds": round(time.perf_counter() - t, 3)}
    return out


def lirpa_bounds(p, note: dict | None = None) -> dict:
    """auto_LiRPA's bounds for an engine Problem (`certify.engine.prepare`); {} with a note if absent."""
    try:
        require()
    except BadInput:
        if note is not None:
            note["auto_lirpa"] = "not installed (make bench-deps)"
        return {}
    mat = read_arrays(p.certificate.parent / p.materialized["path"]) if p.materialized else None
    g = build_g(p.spec, p.model, mat)
    return bounds(exact_layers(p.model), g, p.box, p.spec.property.outputs)


def for_certificate(spec_path: str | Path, cert_path: str | Path) -> dict:
    """The cross-check for the g a written certificate is about (its level and materialised arrays)."""
    cert = json.loads(Path(cert_path).read_text())
    spec = read_spec(spec_path)
    if cert.get("level") is not None:
        spec = spec.at_level(cert["level"])
    f = read_model(spec.model.path, spec.model.sha256)
    m = cert.get("materialized")
    g = build_g(spec, f, read_arrays(Path(cert_path).parent / m["path"]) if m else None)
    box = normalise_box(f, *with_free(g, *input_box(spec, f)))
    result = bounds(exact_layers(f), g, box, spec.property.outputs)
    import auto_LiRPA

    return {"certified": False, "tool": f"auto_LiRPA {getattr(auto_LiRPA, '__version__', '?')}",
            "bounds": {METHODS[m]: r["bound"] for m, r in result.items()},
            "seconds": {METHODS[m]: r["seconds"] for m, r in result.items()}}


def summary_line(result: dict) -> str:
    return "  auto_LiRPA (not certified): " + ", ".join(f"{name} {value:.6g}" for name, value in result["bounds"].items())
