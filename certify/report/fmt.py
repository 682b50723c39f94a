"""Number formatting for reports: exact rationals, and decimals rounded in the safe direction."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

from ..checker.numbers import rational_str


def exact(q: Fraction | None) -> str:
    return "-" if q is None else rational_str(q)


def decimal(q: Fraction | None, digits: int = 6, mode: str = "nearest") -> str:
    """q to `digits` significant digits, rounded up ('up'), down ('down') or to nearest, computed exactly.

    An upper bound shown rounded up (and a lower bound rounded down) is still a bound."""
    if q is None:
        return "-"
    q = Fraction(q)
    if q == 0:
        return "0"
    e = math.floor(math.log10(abs(q.numerator)) - math.log10(q.denominator))
    for guess in (e - 1, e, e + 1):  # log10 of huge ints is approximate: settle the exponent exactly
        if Fraction(10) ** guess <= abs(q) < Fraction(10) ** (guess + 1):
            e = guess
            break
    shift = digits - 1 - e
    scaled = q * Fraction(10) ** shift
    n = {"up": math.ceil, "down": math.floor}.get(mode, round)(scaled)
    d = Decimal(int(n)).scaleb(-shift)
    if -5 <= e < 9:
        text = format(d, "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text
    return format(d.normalize(), "E")


def ratio(x: float | None) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "infinite (attained lower bound 0)"
    return f"{x:.4g}x"
