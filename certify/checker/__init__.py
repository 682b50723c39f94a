"""certify's trusted kernel: stdlib, fractions, z3 and strict readers. It imports no JAX or numpy."""

from .check import STEP_CHECKERS as STEP_CHECKERS, CheckResult as CheckResult, Verdict as Verdict, check_certificate as check_certificate
from .errors import BadInput as BadInput, Rejected as Rejected
from .spec import Spec as Spec, read_spec as read_spec
