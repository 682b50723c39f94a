"""float32 semantics: a proven bound on how far a float32 forward pass of f and g can stray from
the real-arithmetic one, per output, over the whole input box.

Model: weights and biases rounded to float32 (round to nearest), inputs float32 values of the
domain, each dense layer computed in float32 in ANY summation order (with or without FMA), ReLU
exact. For a dot product of length n plus a bias (Higham, Accuracy and Stability, 3.1 and 3.5):
|fl(w.h + b) - (w.h + b)| <= gamma_{n+1} (|w|.|h| + |b|) + (n+1) eta, gamma_k = k u / (1 - k u),
u = 2^-24 (unit roundoff) and eta = 2^-150 (half the smallest subnormal, for underflow). With
rounded weights w^ = w + dw, |dw| <= u|w| + eta, and a perturbed input h^ = h + e, the
pre-activation error of a layer is at most
    gamma (|w^| |h^| + |b^|) + (u|w| + eta) |h^| + |w| E + u|b| + eta + (n+1) eta,
where |h^| <= H + E, H bounds |h| (exact interval arithmetic over the box) and E is the previous
layer's error bound; ReLU is 1-Lipschitz, so it does not increase the error.
The model assumes no overflow: every partial sum of a layer is at most (1 + gamma) times the sum
of its terms' magnitudes, so the analysis is refused (bad input) unless that bound stays below
2^128 - 2^103, where rounding to nearest would first give infinity.
"""

from __future__ import annotations

import struct
from fractions import Fraction

from .errors import BadInput
from .exact import interval_dense, qmat, qvec

U = Fraction(1, 2**24)
ETA = Fraction(1, 2**150)
OVERFLOW = Fraction(2**128 - 2**103)


def is_float32(q: Fraction) -> bool:
    """Is q exactly a (finite) float32 value? Round-trip through the IEEE single format."""
    try:
        return Fraction(struct.unpack("<f", struct.pack("<f", float(q)))[0]) == q
    except (OverflowError, struct.error):
        return False


def _gamma(k: int) -> Fraction:
    return k * U / (1 - k * U)


def output_errors(layers, box) -> list[Fraction]:
    """Per output, a bound on |float32 forward pass - real forward pass| over the box."""
    lo, up = box
    h = [max(abs(a), abs(b)) for a, b in zip(lo, up)]  # |input|; inputs are float32 values: no error
    err = [Fraction(0)] * len(h)
    for k, (w, b) in enumerate(layers):
        g = _gamma(len(h) + 1)
        hat = [x + e for x, e in zip(h, err)]
        new_err = []
        for row, bias in zip(w, b):
            wh = sum(abs(x) * y for x, y in zip(row, hat))
            if (1 + g) * ((1 + U) * (wh + abs(bias) + max(map(abs, row), default=0)) + ETA * (sum(hat) + 1)) >= OVERFLOW:
                raise OverflowError(f"dense layer {k + 1}")
            new_err.append(g * ((1 + U) * wh + sum(hat) * ETA + (1 + U) * abs(bias) + ETA)
                           + U * wh + ETA * sum(hat) + sum(abs(x) * e for x, e in zip(row, err))
                           + U * abs(bias) + (len(h) + 2) * ETA * (1 + g))
        err = new_err
        if k < len(layers) - 1:
            lo, up = interval_dense((qmat(w), qvec(b)), lo, up)
            lo, up = [max(v, Fraction(0)) for v in lo], [max(v, Fraction(0)) for v in up]
            h = up  # post-ReLU values lie in [0, up]
    return err


def float32_margins(f_layers, g_layers, box, outputs, spec_path="spec") -> list[Fraction]:
    """Per selected output i: a bound on the float32 rounding error of f_i - g_i."""
    try:
        ef, eg = output_errors(f_layers, box), output_errors(g_layers, box)
    except OverflowError as exc:
        raise BadInput(spec_path, "property.semantics", f"a float32 forward pass may overflow ({exc}: values near "
                       "3.4e38 are reachable on this domain)", "use semantics: real, a smaller domain or smaller weights") from None
    rows = range(len(ef)) if outputs is None else outputs
    return [ef[i] + eg[i] for i in rows]
