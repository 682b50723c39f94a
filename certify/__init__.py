"""certify: certified worst-case deviation bounds between a network and its coarse-grained explanation.

The public surface (everything else is internal):

    certify.check(spec, *, method=None, out=None, timeout=None) -> Outcome    bound, falsify, certify, check
    certify.verify(spec, cert) -> CheckResult                                 the trusted checker alone
    certify.flow(spec) -> Flow                                                every level of a hierarchy; .plot()
    certify.report(specs, *, html=None, md=None) -> list[Path]               the audit report
    certify.Status                                                            verdicts and exit codes
    certify.read_spec(path) -> Spec                                           a spec file, validated
    certify.from_torch(module, example_input) -> onnx.ModelProto             a torch module (certify[torch])

`spec` is a path, YAML text, a dict (whose models may be held in memory: numpy (W, b) pairs, a Flax
or Equinox parameter pytree, an ONNX ModelProto) or a `Spec`. See docs/api.md.
"""

__version__ = "0.2.0"

# The submodules certify.flow and certify.report are loaded first, so that the functions below, not the
# modules, are what `certify.flow` and `certify.report` name (Python binds a submodule on its first import).
from . import flow as _flow_module, report as _report_module  # noqa: F401
from .api import check as check, flow as flow, from_torch as from_torch, report as report, verify as verify
from .api import write_spec as write_spec
from .checker.check import CheckResult as CheckResult, Verdict as Verdict
from .checker.errors import BadInput as BadInput
from .checker.spec import Spec as Spec, read_spec as read_spec
from .flow import Flow as Flow
from .status import Status as Status


def __getattr__(name: str):
    """`certify.Outcome` imports the engine (JAX) only when asked for: `certify verify` imports no JAX or numpy."""
    if name == "Outcome":
        from .engine import Outcome

        return Outcome
    raise AttributeError(f"module 'certify' has no attribute {name!r}")


__all__ = ["BadInput", "CheckResult", "Flow", "Outcome", "Spec", "Status", "Verdict", "check", "flow", "from_torch",
           "read_spec", "report", "verify", "write_spec", "__version__"]
