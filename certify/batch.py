"""Many specs at once, a certificate cache, and Ray.

Cache: a certificate is reused when it was written by this certify version for a spec and model
with the same sha256 (and, checked by the checker, the same data files) and the trusted checker
accepts it again: an unchanged model is only re-verified, never re-bounded. Anything else, a
rejected cached certificate included, is bounded afresh.

Distribution: specs are independent, so `workers > 1` runs them as Ray tasks (a local Ray
instance by default, a cluster when `address` is given); results are the same as a serial run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

from . import __version__
from .checker.check import Verdict, check_certificate
from .checker.errors import BadInput
from .checker.model import read_model
from .checker.numbers import parse_rational
from .checker.spec import read_spec
from .files import certificate_path
from .status import Status


@dataclass(frozen=True)
class Failed:
    """A spec that could not be run: bad input (exit 2) or an internal error (exit 4)."""

    spec: str
    message: str
    exit_code: int

    @property
    def status(self) -> Status:
        return Status.INTERNAL_ERROR if self.exit_code == Status.INTERNAL_ERROR.exit_code else Status.BAD_INPUT


def cached_outcome(spec_path, out=None, method=None, jobs=None):
    """The Outcome of re-verifying an up-to-date certificate, or None when it must be re-bounded."""
    from .engine import Outcome

    spec = read_spec(spec_path)
    if spec.levels:
        return None
    cert_path = Path(out) if out is not None else certificate_path(spec)
    try:
        cert = json.loads(cert_path.read_text())
        engine = cert.get("engine") or {}
        if (cert.get("spec_sha256") != spec.sha256 or engine.get("certify") != __version__
                or cert.get("model_sha256") != read_model(spec.model.path, spec.model.sha256).sha256
                or (method is not None and engine.get("method") != method)):
            return None
    except (OSError, ValueError, AttributeError):
        return None
    t = time.perf_counter()
    result = check_certificate(spec.path, cert_path, jobs)
    if result.verdict is Verdict.REJECTED:
        return None
    witness = cert.get("witness") or {}
    x = [parse_rational(v) for v in witness.get("x", [])] or None
    seconds = time.perf_counter() - t
    return Outcome(spec, cert_path, result, result.witness_deviation, x, engine.get("method", "?"), {},
                   {"build": 0.0, "falsify": 0.0, "bound": 0.0, "check": seconds, "total": seconds}, cached=True)


def run_one(spec_path, out=None, method=None, use_cache: bool = True, *, workers: int = 0, address: str | None = None,
            jobs: int | None = None):
    """Outcome for one spec, or Failed. Never raises for bad input. `workers`, `address`: branch and
    bound on Ray; `jobs`: processes that check a split tree (engine.run_check)."""
    from .engine import run_check

    try:
        if use_cache:
            hit = cached_outcome(spec_path, out, method, jobs)
            if hit is not None:
                return hit
        return run_check(spec_path, out, method, workers=workers, address=address, jobs=jobs)
    except BadInput as exc:
        return Failed(str(spec_path), str(exc), 2)


def run_many(spec_paths: list[str], *, method=None, use_cache: bool = True, workers: int = 1, address: str | None = None) -> list:
    """Outcomes (or Failed) in the order of `spec_paths`."""
    if workers <= 1 or len(spec_paths) <= 1:
        return [run_one(p, None, method, use_cache) for p in spec_paths]
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    try:
        task = ray.remote(num_cpus=1)(run_one)
        cwd = str(Path.cwd())
        return ray.get([task.remote(str(Path(p).resolve()), _default_out(p, cwd), method, use_cache) for p in spec_paths])
    finally:
        if started:
            ray.shutdown()


def _default_out(spec_path, cwd: str):
    """Workers may run elsewhere: pin the default certificate path to the caller's proofs/."""
    try:
        return str(certificate_path(read_spec(spec_path), Path(cwd) / "proofs"))
    except BadInput:
        return None


def same_result(a, b) -> bool:
    """What a user sees: verdict, certified bound, attained lower bound (exactly)."""
    if isinstance(a, Failed) or isinstance(b, Failed):
        return a == b
    return (a.verdict, a.check.bound, a.lower) == (b.verdict, b.check.bound, b.lower)
