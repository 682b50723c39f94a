"""float32 semantics: a proven bound on how far a binary32 forward pass of f and g can stray from
the real-arithmetic one, per output, over the whole input box.

Covered evaluations: weights and biases rounded to float32 once (round to nearest, or flushed to
zero if subnormal), inputs float32 values of the domain, each dense layer computed with binary32
multiplies, adds and FMAs rounded to nearest, in ANY summation order, with gradual underflow OR
flush-to-zero (FTZ: a subnormal result becomes 0) OR denormals-are-zero (DAZ: a subnormal operand,
an input, weight, bias, activation or partial sum, is read as 0), in any mix; ReLU exact.

One operation. Every result r of an operation with exact value z (from the operands it saw)
satisfies r = z (1 + d) + e, |d| <= u = 2^-24, |e| < T = 2^-126 (the smallest normal), d e = 0:
in the normal range |e| = 0; gradual underflow gives |e| <= 2^-150; FTZ, or DAZ applied to r by the
next operation, gives r' = 0 only if r is subnormal, i.e. |z| < 2^-126, so e = -z. A value read
as 0 by DAZ is thus charged to the operation that made it (or to the input/weight/bias rounding).

One layer (Higham, Accuracy and Stability, 3.1 and 3.5, with an absolute term per operation). The
n products and the bias are n+1 terms summed along a binary tree: on any path from a term to the
root there are at most n+1 relative roundings (product, then at most n additions; an FMA is one
rounding, adding an exact zero is exact unless it flushes), and there are at most 2n operations
with an absolute error. With k = n+1 and k u <= 1/2, prod (1+d_i) = 1 + theta, |theta| <= gamma_k
= k u / (1 - k u) <= 1, so for the effective weights w', bias b' and input h':
    |fl(w'.h' + b') - (w'.h' + b')| <= gamma (|w'|.|h'| + |b'|) + 2n T (1 + gamma).
The checker counts (2n+1) T: one spare operation (e.g. a zero-initialised accumulator whose first
addition flushes a subnormal product). With |w' - w| <= u|w| + T, |b' - b| <= u|b| + T (rounding,
or DAZ), |h' - h| <= E (the previous layer's bound, or at the input min(H, T): DAZ reads a
subnormal input as 0), H >= |h| (exact intervals), Hh = H + E >= |h'|:
    fl(w'.h' + b') - (w.h + b) = [fl(..) - (w'.h' + b')] + (w' - w).h' + w.(h' - h) + (b' - b),
and with P = sum_j |w_j| Hh_j + |b| and Q = (1 + u) P + T (sum_j Hh_j + 1) >= |w'|.Hh + |b'|:
    E_new = (1 + gamma) (Q + (2n+1) T) - P + sum_j |w_j| E_j
(= gamma Q + (2n+1) T (1 + gamma) + [u P + T (sum Hh + 1)] + |w|.E, the four terms above).
ReLU is 1-Lipschitz and exact (and commutes with DAZ), so it does not increase the error.
Refused (bad input): a layer with n + 1 > 2^23 inputs plus bias (the analysis needs k u < 1; the
cap k u <= 1/2 keeps gamma <= 1 and leaves room for twice as many roundings per path as counted),
and overflow: every operand and exact result is at most (1 + gamma)(Q + (2n+1) T + (1+u) max|w|
+ T), which must stay below 2^128 - 2^103, where rounding to nearest would first give infinity.
"""

from __future__ import annotations

import struct
from fractions import Fraction

from .errors import BadInput
from .exact import interval_dense, qmat, qvec

U = Fraction(1, 2**24)  # unit roundoff of binary32, round to nearest
TINY = Fraction(1, 2**126)  # smallest normal: bounds one operation's absolute error (gradual underflow, FTZ, DAZ)
OVERFLOW = Fraction(2**128 - 2**103)
MAX_TERMS = 2**23  # n inputs + bias: (n + 1) u <= 1/2


def is_float32(q: Fraction) -> bool:
    """Is q exactly a (finite) float32 value? Round-trip through the IEEE single format."""
    try:
        return Fraction(struct.unpack("<f", struct.pack("<f", float(q)))[0]) == q
    except (OverflowError, struct.error):
        return False


def _gamma(k: int) -> Fraction:
    """Higham's gamma_k = k u / (1 - k u), only for 0 <= k u <= 1/2 (then 0 <= gamma_k <= 1)."""
    if not 0 <= k <= MAX_TERMS:
        raise ValueError(f"gamma_{k} is outside the float32 error analysis (k must be in 0..2^23)")
    return k * U / (1 - k * U)


def check_widths(layers, in_dim: int, spec_path="spec", name="f") -> None:
    """Refuse (bad input) a dense layer too wide for the error analysis: n inputs with n + 1 > 2^23."""
    widths = [in_dim] + [len(b) for _, b in layers[:-1]]
    for k, n in enumerate(widths):
        if n + 1 > MAX_TERMS:
            raise BadInput(spec_path, "property.semantics", f"dense layer {k + 1} of {name} has {n:,} inputs, more than "
                           f"the float32 error analysis covers ({MAX_TERMS - 1:,}: it needs (inputs + 1) * 2^-24 <= 1/2)",
                           "use semantics: real for this model")


def output_errors(layers, box, spec_path="spec", name="f") -> list[Fraction]:
    """Per output, a bound on |binary32 forward pass - real forward pass| over the box."""
    lo, up = box
    check_widths(layers, len(lo), spec_path, name)
    h = [max(abs(a), abs(b)) for a, b in zip(lo, up)]  # |input|
    err = [min(x, TINY) for x in h]  # inputs are float32 values; DAZ may read a subnormal one as 0
    for k, (w, b) in enumerate(layers):
        g, hat = _gamma(len(h) + 1), [x + e for x, e in zip(h, err)]
        tiny_in, ops = TINY * (sum(hat) + 1), (2 * len(h) + 1) * TINY
        new_err = []
        for row, bias in zip(w, b):
            p = sum(abs(x) * y for x, y in zip(row, hat)) + abs(bias)
            q = (1 + U) * p + tiny_in
            if (1 + g) * (q + ops + (1 + U) * max(map(abs, row), default=0) + TINY) >= OVERFLOW:
                raise BadInput(spec_path, "property.semantics", f"a float32 forward pass may overflow (dense layer "
                               f"{k + 1} of {name}: values near 3.4e38 are reachable on this domain)",
                               "use semantics: real, a smaller domain or smaller weights")
            new_err.append((1 + g) * (q + ops) - p + sum(abs(x) * e for x, e in zip(row, err)))
        err = new_err
        if k < len(layers) - 1:
            lo, up = interval_dense((qmat(w), qvec(b)), lo, up)
            lo, up = [max(v, Fraction(0)) for v in lo], [max(v, Fraction(0)) for v in up]
            h = up  # post-ReLU values lie in [0, up]
    return err


def float32_margins(f_layers, g_layers, box, outputs, spec_path="spec") -> list[Fraction]:
    """Per selected output i: a bound on the float32 rounding error of f_i - g_i."""
    ef, eg = output_errors(f_layers, box, spec_path, "f"), output_errors(g_layers, box, spec_path, "g")
    rows = range(len(ef)) if outputs is None else outputs
    return [ef[i] + eg[i] for i in rows]
