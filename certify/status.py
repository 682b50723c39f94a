"""One status for everything certify reports, with its exit code, and one JSON shape for results.

`Status` extends the trusted checker's `Verdict` (CERTIFIED, VIOLATED, UNKNOWN, REJECTED) with
what only a tool around the checker can say: a certificate that is MISSING, BAD INPUT and an
INTERNAL ERROR. The checker's verdict stays in the checker; `Status.of(verdict)` maps it, and the
exit code is read from this one table (the CLI, `certify report`, JUnit, `certify flow` and the
Python API all use it):

    status          exit   JUnit
    CERTIFIED       0      pass
    VIOLATED        1      failure
    UNKNOWN         1      failure
    BAD INPUT       2      error
    REJECTED        3      error
    MISSING         3      error
    INTERNAL ERROR  4      error

`result_json` is the JSON shape of `certify check --json`, `certify verify --json` and
`Outcome.to_json()`; docs/result.schema.json documents it (and a test validates against it).
"""

from __future__ import annotations

import enum
from fractions import Fraction
from pathlib import Path

from .checker.check import CheckResult, Verdict
from .checker.numbers import rational_str

SCHEMA = "certify.result/1"


class Status(enum.StrEnum):
    """What certify says about one spec (or one level). A `str`: `Status.CERTIFIED == "CERTIFIED"`."""

    CERTIFIED = "CERTIFIED"  # the checker accepted a bound <= tolerance
    UNKNOWN = "UNKNOWN"  # accepted, but the bound exceeds the tolerance and no input does
    VIOLATED = "VIOLATED"  # an input in the domain, replayed exactly, deviates more than the tolerance
    BAD_INPUT = "BAD INPUT"  # spec, model, data or arguments invalid
    INTERNAL_ERROR = "INTERNAL ERROR"  # anything else
    MISSING = "MISSING"  # no certificate where one was expected (`certify report`)
    REJECTED = "REJECTED"  # the checker refused the certificate

    @classmethod
    def of(cls, verdict: Verdict) -> "Status":
        """The status of a checker verdict."""
        return cls(verdict.value)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self]

    @property
    def junit(self) -> str:
        """'pass', 'failure' or 'error' (a JUnit test case)."""
        return "pass" if self is Status.CERTIFIED else "failure" if self.exit_code == 1 else "error"

    @property
    def accepted(self) -> bool:
        """The checker accepted every step of the certificate (whatever the bound says)."""
        return self in (Status.CERTIFIED, Status.VIOLATED, Status.UNKNOWN)


EXIT_CODES = {Status.CERTIFIED: 0, Status.UNKNOWN: 1, Status.VIOLATED: 1, Status.BAD_INPUT: 2, Status.REJECTED: 3,
              Status.MISSING: 3, Status.INTERNAL_ERROR: 4}
SEVERITY = list(Status)  # least to most severe: the declaration order above


def worst(statuses) -> Status:
    """The most severe status (CERTIFIED for none); a run's exit code is `worst(...).exit_code`."""
    return max((Status(s) for s in statuses), key=SEVERITY.index, default=Status.CERTIFIED)


def _exact(q: Fraction | None) -> str | None:
    return None if q is None else rational_str(q)


def _float(q: Fraction | None) -> float | None:
    return None if q is None else float(q)


def gap_ratio(upper: Fraction | None, lower: Fraction | None) -> float | None:
    """upper / lower (1 when both are 0, inf when only the lower is 0); None without both."""
    if upper is None or lower is None:
        return None
    return float("inf") if lower == 0 and upper > 0 else (1.0 if upper == 0 else float(upper / lower))


def result_json(check: CheckResult, *, spec: str | Path, certificate: str | Path, level: str | None = None,
                lower: Fraction | None = None, witness: list[Fraction] | None = None, method: str | None = None,
                tried: dict | None = None, seconds: dict | None = None, cached: bool = False,
                notes: tuple = ()) -> dict:
    """The one JSON shape (docs/result.schema.json). Exact numbers are 'p/q' strings, with a float
    copy beside them for reading; engine-only fields are null (or empty) for `certify verify`."""
    status = Status.of(check.verdict)
    gap = gap_ratio(check.bound, lower)
    return {
        "schema": SCHEMA, "spec": str(spec), "level": level if level is not None else check.level,
        "status": status.value, "verdict": check.verdict.value, "exit_code": status.exit_code,
        "certified_upper": _exact(check.bound), "certified_upper_float": _float(check.bound),
        "attained_lower": _exact(lower), "attained_lower_float": _float(lower),
        "tolerance": _exact(check.tolerance), "gap_ratio": None if gap is None or gap == float("inf") else gap,
        "witness": None if witness is None else [rational_str(v) for v in witness],
        "witness_float": None if witness is None else [float(v) for v in witness],
        "method": method, "tried": dict(tried or {}),
        "seconds": {k: round(v, 3) for k, v in (seconds or {"check": check.seconds, "total": check.seconds}).items()},
        "certificate": str(certificate),
        "checker": {"steps": check.steps, "seconds": round(check.seconds, 3), "reason": check.reason or None},
        "g_arrays": g_arrays_json(check), "cached": cached, "notes": list(notes),
    }


def g_arrays_json(check: CheckResult) -> dict:
    """Whether the spec defines all of g: `pinned` false means g's float arrays (SVD, PCA, k-means) are the
    certificate's materialised arrays (their sha256 given), which the spec does not fix."""
    return {"pinned": not check.unpinned, "unpinned": list(check.unpinned),
            "certificate_arrays_sha256": check.arrays_sha256}


def failed_json(spec: str | Path, message: str, status: Status) -> dict:
    """A spec that could not be run (bad input, internal error) in the same shape."""
    return {"schema": SCHEMA, "spec": str(spec), "level": None, "status": status.value, "verdict": None,
            "exit_code": status.exit_code, "certified_upper": None, "certified_upper_float": None,
            "attained_lower": None, "attained_lower_float": None, "tolerance": None, "gap_ratio": None,
            "witness": None, "witness_float": None, "method": None, "tried": {}, "seconds": {}, "certificate": None,
            "checker": None, "g_arrays": None, "cached": False, "notes": [], "error": message}


class OutcomeViews:
    """Read-only views of an `engine.Outcome` (a mixin: the dataclass holds .spec, .certificate, .check,
    .lower, .witness, .method, .tried, .seconds, .cached, .notes)."""

    @property
    def status(self) -> Status:
        return Status.of(self.check.verdict)

    @property
    def bound(self) -> Fraction | None:
        """The certified upper bound on sup_x max_i |f_i(x) - g_i(x)| (exact; None if rejected)."""
        return self.check.bound

    @property
    def tolerance(self) -> Fraction:
        return self.check.tolerance

    @property
    def witness_float(self) -> list[float] | None:
        """The witness input as floats (`.witness` holds the exact rationals the checker replayed)."""
        return None if self.witness is None else [float(v) for v in self.witness]

    def to_json(self) -> dict:
        """The result as JSON-ready data (docs/result.schema.json): the shape of `certify check --json`."""
        return result_json(self.check, spec=self.spec.path, certificate=self.certificate, level=self.spec.level,
                           lower=self.lower, witness=self.witness, method=self.method, tried=self.tried,
                           seconds=self.seconds, cached=self.cached, notes=self.notes)

    def _repr_html_(self) -> str:
        """The report's summary card (Jupyter renders it)."""
        from .report.html import card

        return card(self.to_json())
