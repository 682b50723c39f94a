"""Exact numbers. Spec numbers are decimals or `p/q` strings; certificate numbers are `p/q`.

A spec's `0.1` is the decimal 1/10, never the binary float 0.1000000000000000055...; a float read
from a weight file is converted with `Fraction(float)`, which is exact.
"""

from __future__ import annotations

import re
from fractions import Fraction

MAX_MAGNITUDE = Fraction(10) ** 300  # beyond this a number cannot meet a float64 weight
_SPEC_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?[0-9]+/[0-9]+")
_CERT_RATIONAL = re.compile(r"-?[0-9]{1,4000}(/[0-9]{1,4000})?")  # Python converts ints of <= 4300 digits


def parse_spec_number(text: str) -> Fraction | None:
    """`"2/255"`, `"0.1"`, `"1e-3"`, `"-3"` -> exact Fraction; anything else (nan, inf, 1/0, |x| > 1e300) -> None."""
    text = text.strip()
    if len(text) > 400 or not _SPEC_NUMBER.fullmatch(text):
        return None
    mantissa, _, exponent = text.lower().partition("e")
    if exponent and abs(int(exponent)) > 300:  # 1e999999999 would build a 10**999999999 integer
        return None
    if "/" in text and int(text.split("/")[1]) == 0:
        return None
    value = Fraction(text)
    return value if abs(value) <= MAX_MAGNITUDE else None


def spec_number_problem(text: str) -> tuple[str, str]:
    """Why `parse_spec_number(text)` refused it: (what is wrong, what to write instead)."""
    text = text.strip()
    if len(text) > 400 or not _SPEC_NUMBER.fullmatch(text):
        return f"{text[:40]!r} is not an exact number", 'write a decimal like 0.05 or a ratio like "2/255"'
    exponent = text.lower().partition("e")[2]
    if exponent and int(exponent) < -300:
        return f"{text[:40]!r} is too small to write exactly (decimal exponents below -300 are refused)", \
            "write 0, or a number of magnitude at least 1e-300"
    if "/" in text and int(text.split("/")[1]) == 0:
        return f"{text[:40]!r} is not an exact number (it divides by zero)", "write a ratio with a non-zero denominator"
    return f"{text[:40]!r} is not an exact number of magnitude <= 1e300", "write a number of magnitude at most 1e300"


def parse_rational(text: object) -> Fraction | None:
    """A certificate number: the string `"p"` or `"p/q"` with q > 0; anything else -> None."""
    ratio = parse_ratio(text)
    return None if ratio is None else Fraction(*ratio)


def parse_ratio(text: object) -> tuple[int, int] | None:
    """A certificate number as integers (p, q), q > 0, not necessarily in lowest terms; else None."""
    if type(text) is not str or not _CERT_RATIONAL.fullmatch(text):
        return None
    num, _, den = text.partition("/")
    q = int(den) if den else 1
    return (int(num), q) if q else None


def rational_str(value: Fraction | int) -> str:
    """The certificate form of an exact number."""
    value = Fraction(value)
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def show(value) -> str:
    """An exact number for a message: exact when it prints, else its sign and binary magnitude (Python will not
    print an integer of more than 4,300 digits: the message itself would fail)."""
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(map(show, value)) + ")"
    q = Fraction(value)
    if max(abs(q.numerator).bit_length(), q.denominator.bit_length()) <= 12_000:
        return str(q)
    return f"{'-' if q < 0 else ''}~2^{abs(q.numerator).bit_length() - q.denominator.bit_length()}"
