"""certify from Python: `check`, `verify`, `flow`, `report`, with specs given as files, text, dicts or
models held in memory.

A spec is one of:

* a path to a spec file (`str` or `Path`);
* YAML text (a `str` holding a newline);
* a `dict` with the spec's keys (`version: 1` may be left out); paths in it are relative to the
  current directory;
* a `certify.Spec` (as `certify.read_spec` returns it; a chosen level is kept).

In a dict, every `model:` (the spec's f, an explanation's second model, a `replace:` sub-network) may
be a model held in memory instead of `{path, sha256}`:

* a sequence of `(W, b)` pairs, `W` of shape (out, in), `b` of shape (out,): dense layers with a
  ReLU between consecutive ones and none after the last (numpy, JAX or nested lists);
* `{"weights": [W1, W2, ...], "biases": [b1, b2, ...]}`, the same layers;
* a Flax-style parameter pytree: `{"params": {"Dense_0": {"kernel": K, "bias": b}, ...}}` (or the
  inner dict), `K` of shape (in, out), layers in the order of their names' trailing numbers (Flax
  numbers modules in creation order; layers whose shapes do not chain are refused);
* an Equinox-style module: an object with `.layers`, each with `.weight` (out, in) and `.bias`;
* an ONNX `ModelProto` (its serialised bytes are written as is).

An `sae:` or `transcoder:` explanation's `path` may be the dictionary itself: a mapping of its arrays
`W_enc` (d_in, m), `b_enc` (m), `W_dec` (m, d_out), `b_dec` (d_out) and, for JumpReLU, `threshold`
(m), or an object with them as attributes (an SAELens `SAE`; torch tensors are detached). It is
written as an `.npz` the same way and pinned by its sha256.

An in-memory model is written beside the certificate (`<dir>/<sha256 prefix>.npz` or `.onnx`) and
the spec names it with its sha256, so `certify verify` re-reads the very bytes that were checked.
Arrays given for input data (`center`, `lower`, `upper`) are written as `.npy` files the same way,
so their float values stay exact. The spec built from a dict is written as `<dir>/<name>.yaml` and
the outcome's `.spec.path` names it.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from .checker.check import CheckResult, check_certificate
from .checker.errors import BadInput
from .checker.spec import Spec, read_spec

PATH_KEYS = {"path", "vnnlib", "center", "lower", "upper"}


# --------------------------------------------------------------------------- in-memory models

def _array(x, name: str):
    import numpy as np

    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise BadInput("<in-memory model>", name, f"holds {a.dtype} values", "give numeric arrays")
    return a.astype(a.dtype if a.dtype in (np.float32, np.float64) else np.float64)


def _natural(key: str) -> tuple:
    m = re.search(r"(\d+)$", str(key))
    return (int(m.group(1)) if m else -1, str(key))


def _acts_as(fn, want: str) -> bool:
    """Whether an activation function computes ReLU (`want` "relu") or the identity on probe points spanning
    both signs (Equinox's default final activation is an anonymous identity)."""
    import numpy as np

    probe = np.array([-7.0, -2.5, -1.0, -0.25, 0.0, 0.125, 0.5, 1.0, 3.0, 11.0], dtype=np.float32)
    try:
        got = np.asarray(fn(probe), dtype=np.float64)
    except Exception:  # noqa: BLE001 - a function that cannot run on an array is not one certify can read
        return False
    expected = np.maximum(probe, 0) if want == "relu" else probe
    return got.shape == probe.shape and bool(np.array_equal(got, expected.astype(np.float64)))


def dense_layers(model: Any) -> tuple[list, list] | None:
    """(weights (out, in), biases) as numpy arrays of an in-memory MLP in one of the forms this module
    documents, or None when `model` is not one (e.g. a `{path, sha256}` reference)."""
    import numpy as np

    if isinstance(model, dict) and "path" in model:
        return None
    if isinstance(model, dict) and set(model) == {"weights", "biases"}:
        pairs = list(zip(model["weights"], model["biases"]))
    elif isinstance(model, dict):
        params = model.get("params", model)
        dense = [(k, v) for k, v in params.items() if isinstance(v, dict) and "kernel" in v]
        if not dense or len(dense) != len(params):
            return None
        pairs = [(np.asarray(v["kernel"]).T, v.get("bias", np.zeros(np.shape(v["kernel"])[1])))
                 for _, v in sorted(dense, key=lambda kv: _natural(kv[0]))]
    elif hasattr(model, "layers") and all(hasattr(l, "weight") for l in model.layers):
        for attr, want in (("activation", "relu"), ("final_activation", "identity")):  # eqx.nn.MLP names them
            fn = getattr(model, attr, None)
            if fn is not None and not _acts_as(fn, want):
                raise BadInput("<in-memory model>", attr, f"is {getattr(fn, '__name__', fn)!r}; certify reads dense layers "
                               "with ReLU between them and none after the last", f"use {want} (or give the layers as (W, b) pairs)")
        pairs = [(l.weight, l.bias if getattr(l, "bias", None) is not None else np.zeros(np.shape(l.weight)[0]))
                 for l in model.layers]
    elif isinstance(model, (list, tuple)) and model and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in model):
        pairs = list(model)
    else:
        return None
    weights = [_array(w, f"layer {i + 1} weight") for i, (w, _) in enumerate(pairs)]
    biases = [_array(b, f"layer {i + 1} bias") for i, (_, b) in enumerate(pairs)]
    for i, (w, b) in enumerate(zip(weights, biases), start=1):
        if w.ndim != 2 or b.shape != (w.shape[0],):
            raise BadInput("<in-memory model>", f"layer {i}", f"weight {w.shape} and bias {b.shape} do not fit",
                           "give W of shape (out, in) and b of shape (out,) (Flax kernels: (in, out))")
        if i > 1 and w.shape[1] != weights[i - 2].shape[0]:
            raise BadInput("<in-memory model>", f"layer {i}", f"takes {w.shape[1]} inputs but layer {i - 1} gives "
                           f"{weights[i - 2].shape[0]}", "check the order of the layers")
    return weights, biases


def _content_file(directory: Path, data: bytes, suffix: str) -> tuple[Path, str]:
    digest = hashlib.sha256(data).hexdigest()
    path = directory / f"{digest[:16]}{suffix}"
    if not (path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest):
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path.resolve(), digest


def save_in_memory_model(model: Any, directory: Path) -> dict | None:
    """Write an in-memory model into `directory`; its `{path, sha256}` (None if `model` is not one)."""
    if type(model).__name__ == "ModelProto" and hasattr(model, "SerializeToString"):
        path, digest = _content_file(directory, model.SerializeToString(), ".onnx")
        return {"path": str(path), "sha256": digest}
    layers = dense_layers(model)
    if layers is None:
        return None
    from .model import save_model

    import tempfile

    with tempfile.TemporaryDirectory() as scratch:  # the .npz format of certify.model, then stored under its own hash
        tmp = Path(scratch) / "model.npz"
        save_model(tmp, *layers)
        data = tmp.read_bytes()
    path, digest = _content_file(directory, data, ".npz")
    return {"path": str(path), "sha256": digest}


DICTIONARY_ARRAYS = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")
UNMODELLED = ("log_threshold", "W_skip", "b_dec_out", "scaling_factor")  # carried along so that the reader refuses them


def _dictionary_arrays(value: Any) -> dict | None:
    """An SAE or transcoder held in memory, as its arrays (None if `value` is not one): a mapping with W_enc,
    b_enc, W_dec, b_dec[, threshold] (every array in it is carried along), or an object with them as
    attributes (an SAELens `SAE`, a torch module, a namespace; names the checker does not model, such as
    `log_threshold` or `W_skip`, are carried along too, and an SAELens architecture other than standard or
    jumprelu is refused), so that the reader judges what the arrays model. Torch tensors are detached."""
    if isinstance(value, (str, Path)):
        return None
    if isinstance(value, dict):
        names = [k for k, v in value.items() if hasattr(v, "__array__") or isinstance(v, (list, tuple))]
        get = value.get
    else:
        names = [k for k in DICTIONARY_ARRAYS + UNMODELLED if getattr(value, k, None) is not None]
        get = lambda k: getattr(value, k, None)  # noqa: E731
    if any(get(k) is None for k in DICTIONARY_ARRAYS[:4]):
        return None
    cfg = getattr(value, "cfg", None)
    arch = getattr(cfg, "architecture", None)
    arch = arch() if callable(arch) else arch
    if isinstance(arch, str) and arch not in ("standard", "jumprelu"):
        raise BadInput("<in-memory dictionary>", "cfg.architecture", f"SAELens architecture {arch!r} is not supported",
                       "certify models ReLU (standard) and JumpReLU SAEs and transcoders")
    if arch == "jumprelu" and get("threshold") is None:
        raise BadInput("<in-memory dictionary>", "threshold", "a JumpReLU dictionary without its `threshold`",
                       "give the thresholds (not log_threshold) as `threshold`")
    out = {}
    for k in names:
        x = get(k)
        if hasattr(x, "detach"):  # a torch tensor (certify never imports torch)
            x = x.detach().cpu().numpy()
        out[str(k)] = _array(x, str(k))
    return out


def save_in_memory_dictionary(value: Any, directory: Path) -> dict | None:
    """Write an in-memory SAE or transcoder into `directory` as an .npz of its arrays (the layout the checker
    reads); its `{path, sha256}`, or None if `value` is not one."""
    import numpy as np

    arrays = _dictionary_arrays(value)
    if arrays is None:
        return None
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()})
    path, digest = _content_file(directory, buf.getvalue(), ".npz")
    return {"path": str(path), "sha256": digest}


# --------------------------------------------------------------------------- specs from dicts

def _relative(path: Path, directory: Path) -> str:
    """`path` as the spec written into `directory` names it (relative, so the folder can move)."""
    return os.path.relpath(Path(path).resolve(), directory.resolve())


def _plain(value: Any, key: str, base: Path, directory: Path) -> Any:
    """A dict spec's value as YAML-ready data: models and arrays written to files, paths made relative
    to the spec's directory, Fractions as "p/q" strings, floats as their shortest decimal (read back as
    that decimal)."""
    import numpy as np

    if key == "model":
        saved = save_in_memory_model(value, directory)
        if saved is not None:
            return {"path": _relative(saved["path"], directory), "sha256": saved["sha256"]}
    if key in ("sae", "transcoder") and isinstance(value, dict) and "path" in value:
        saved = save_in_memory_dictionary(value["path"], directory)
        if saved is not None:  # `path:` holds the dictionary itself: written, and pinned by its hash
            out = {}
            for k, v in value.items():
                if k == "path":
                    out.update(path=_relative(saved["path"], directory), sha256=saved["sha256"])
                elif k != "sha256":
                    out[str(k)] = _plain(v, str(k), base, directory)
            return out
    if isinstance(value, dict):
        return {str(k): _plain(v, str(k), base, directory) for k, v in value.items()}
    if hasattr(value, "__array__") and not isinstance(value, (list, tuple)) and np.ndim(value) > 0:
        buf = io.BytesIO()
        np.save(buf, np.asarray(value, dtype=np.float64))
        path, _ = _content_file(directory, buf.getvalue(), ".npy")
        return _relative(path, directory)
    if isinstance(value, (list, tuple)):
        return [_plain(v, key, base, directory) for v in value]
    if isinstance(value, Path) or (key in PATH_KEYS and isinstance(value, str) and not _numberish(value)):
        return _relative(base / value, directory)
    if isinstance(value, Fraction):
        return f"{value.numerator}/{value.denominator}" if value.denominator != 1 else str(value.numerator)
    if isinstance(value, (np.floating, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _numberish(text: str) -> bool:
    return bool(re.fullmatch(r"[-+0-9./eE ]+", text))


def write_spec(spec: dict, directory: str | Path = "proofs", *, name: str | None = None, base: str | Path = ".") -> Path:
    """Write a dict spec (in-memory models and arrays saved beside it) as `directory/<name>.yaml`;
    the default name is `spec-<12 hex digits of its content's sha256>`. Returns the path."""
    if not isinstance(spec, dict):
        raise BadInput("<spec>", "", f"a {type(spec).__name__} is not a spec", "give a path, YAML text, a dict or a certify.Spec")
    directory = Path(directory)
    data = _plain({"version": 1, **spec}, "", Path(base).resolve(), directory)
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120)
    name = name or f"spec-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,80}", name):
        raise BadInput("<spec>", "name", f"{name!r} is not a file name", "use letters, digits, _, . or -")
    path = directory / f"{name}.yaml"
    directory.mkdir(parents=True, exist_ok=True)
    if not (path.is_file() and path.read_text() == text):
        path.write_text(text)
    return path


def spec_path(spec, *, out: str | Path | None = None, name: str | None = None) -> tuple[Path, str | None]:
    """(spec file, level) for any accepted spec form; dicts and YAML text are written first (beside
    `out`, else under proofs/)."""
    if isinstance(spec, Spec):
        return spec.path, spec.level
    if isinstance(spec, Path) or (isinstance(spec, str) and "\n" not in spec):
        return Path(spec), None
    if isinstance(spec, str):
        try:
            spec = yaml.safe_load(spec)
        except yaml.YAMLError as exc:
            raise BadInput("<spec text>", "", f"not valid YAML ({getattr(exc, 'problem', None) or exc})",
                           "fix the YAML syntax") from None
    directory = Path(out).parent if out is not None else Path("proofs")
    return write_spec(spec, directory, name=name), None


# --------------------------------------------------------------------------- the API

def check(spec, *, method: str | None = None, out: str | Path | None = None, timeout: float | None = None,
          level: str | None = None, name: str | None = None):
    """Bound sup_x max_i |f_i(x) - g_i(x)| for a spec, falsify it, write the certificate and let the
    trusted checker decide. The verdict is the checker's.

    Args:
        spec: a path, YAML text, a dict (models may be held in memory; see the module docstring) or a
            `certify.Spec`.
        method: `auto` (default: the spec's options), `interval`, `crown`, `alpha`, `lp` or `bab`.
        out: the certificate path (default `proofs/<spec name>.cert.json`); in-memory models, arrays
            and a spec written from a dict go beside it.
        timeout: seconds to search (overrides the spec's `options.timeout_s`; not part of the claim).
        level: for a spec with `levels:`, the level to certify (default: every level).
        name: the file name (without `.yaml`) of a spec written from a dict or text.

    Returns:
        an `Outcome` (`.status`, `.verdict`, `.bound`, `.lower`, `.witness`, `.witness_float`,
        `.certificate`, `.seconds`, `.to_json()`; shown as a card in Jupyter); for a spec with
        levels and no `level`, a list of them, fine to coarse.

    Raises:
        BadInput: the spec, a model or a data file is invalid (the message names file, key and fix).
    """
    from .engine import run_check, run_levels

    path, chosen = spec_path(spec, out=out, name=name)
    level = level if level is not None else chosen
    if level is None and read_spec(path).levels:
        if timeout is not None:
            return [run_check(path, None if out is None else _level_out(out, lv.name), method, lv.name, timeout=timeout)
                    for lv in read_spec(path).levels]
        return run_levels(path, out, method)
    return run_check(path, out, method, level, timeout=timeout)


def _level_out(out, level):
    from .engine import level_certificate_path

    return level_certificate_path(out, level)


def verify(spec, cert: str | Path | None = None) -> CheckResult:
    """Re-check a certificate with the trusted checker alone (no JAX is used).

    Args:
        spec: a spec path or `certify.Spec`, or an `Outcome` (then `cert` defaults to its certificate).
        cert: the certificate file.

    Returns:
        the checker's `CheckResult` (`.verdict`, `.bound`, `.tolerance`, `.witness_deviation`,
        `.steps`, `.reason`); `certify.Status.of(result.verdict)` gives its status and exit code.
    """
    if hasattr(spec, "check") and hasattr(spec, "certificate"):  # an Outcome
        spec, cert = spec.spec.path, cert if cert is not None else spec.certificate
    if cert is None:
        raise BadInput("<verify>", "cert", "no certificate given", "give the path of a .cert.json file")
    if not Path(cert).is_file():
        raise BadInput(str(cert), "", "certificate file not found", "give the path of a .cert.json file")
    path = spec.path if isinstance(spec, Spec) else Path(spec)
    return check_certificate(path, cert)


def flow(spec, *, out_dir: str | Path = "proofs", method: str | None = None, fresh: bool = False,
         factor: float = 10.0, name: str | None = None):
    """Certify every level of a spec with `levels:` (re-verifying certificates the checker accepts);
    returns a `Flow`: `.levels` (bounds and kept degrees of freedom per level), `.steps()` (the
    separation-of-scales diagnostic), `.plot()` (a matplotlib Figure) and `.to_json()`."""
    from .flow import run_flow

    path, _ = spec_path(spec, out=Path(out_dir) / "x.cert.json", name=name)
    return run_flow(path, out_dir=out_dir, method=method, fresh=fresh, factor=factor, log=None)


def report(specs, *, html: str | Path | None = None, md: str | Path | None = None,
           cert: str | Path | None = None) -> list[Path]:
    """Write the audit report of `certify report` for one spec or several (each re-checked by the
    checker first; `cert` for a single spec's certificate). Returns the files written
    (HTML by default: certify-report.html)."""
    from .report import DEFAULT_HTML, build, write  # the module (certify.report names this function)

    specs = [specs] if not isinstance(specs, (list, tuple)) else list(specs)
    paths = [str(spec_path(s)[0]) for s in specs]
    html = html if html is not None or md is not None else DEFAULT_HTML
    entries = build(paths, None if cert is None else str(cert))
    return write(entries, None if html is None else str(html), None if md is None else str(md), paths)


def from_torch(module, example_input, *, opset: int = 17):
    """A torch module as an ONNX `ModelProto`, to give a spec as an in-memory model (`certify[torch]`).

    Exported on the CPU with `torch.onnx.export` (its TorchScript exporter, which needs no extra
    package), the module in eval mode for the export. `example_input` fixes the input shape, e.g.
    `torch.zeros(1, 784)`. certify reads the result like any ONNX file: Gemm/MatMul/Add/Relu chains.

    Raises:
        BadInput: torch (or onnx) is not installed.
    """
    try:
        import onnx
        import torch
    except ImportError as exc:
        raise BadInput("<from_torch>", "", f"{exc.name} is not installed", "pip install 'certify[torch]'") from None
    import warnings

    buf = io.BytesIO()
    training = module.training
    module.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(module, (example_input,), buf, dynamo=False, opset_version=opset, input_names=["x"],
                              output_names=["y"])
    finally:
        module.train(training)
    return onnx.load_from_string(buf.getvalue())
