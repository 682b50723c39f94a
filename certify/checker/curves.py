"""Exact checks of linear relaxations of scalar curves (TRUSTED): does a claimed line a*x + b lie
below (or above) phi on [l, u], for phi in `CURVES`; the image of [l, u] under phi; McCormick
planes of a product x*y on a box.

Every decision is a sign proved with FLINT's arb ball arithmetic (a ball certainly contains the true
value; `ball >= 0` is True only when proved) or an exact Fraction comparison: no float enters.

Each curve is one row of `CURVES`: phi and phi' on balls, the inflection points (`breaks`) and the
curvature of each piece between them (+1 convex, -1 concave), its domain, and its interior minima
(images). One generic rule covers them all (docs/soundness.md, "Nonlinear relaxation obligations"):
the gap g = s*(phi - line) (s = +1 for a line below, -1 above) must be >= 0 on [l, u]. Split [l, u]
at the breaks inside it; on each piece g is concave or convex:
  * g concave: g >= 0 on the piece iff g >= 0 at its two ends (a chord-type check);
  * g convex: g(x) >= g(m) + g'(m)(x - m) for every x and any m in the piece (tangent below a convex
    function), and that affine bound is smallest at an end; so g(m) + g'(m)(end - m) >= 0 at both
    ends proves g >= 0. m bisects towards the minimiser (g'(m) > 0: the minimum lies left of m,
    since a convex g increases right of m), at most `STEPS` times; not proved by then: reject.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

from flint import arb, ctx, fmpq

from .numbers import show

PREC = 192  # bits of the balls
STEPS = 160  # bisections of a convex piece before the check gives up (rejects)
Ball = Callable[[arb], arb]


def _exact(q) -> Fraction:
    """q as a Fraction (an int or a Fraction: itself, not a copy)."""
    return q if type(q) is Fraction else Fraction(q)


def ball(q: Fraction | int) -> arb:
    """A ball that contains the exact rational q."""
    q = q if type(q) is Fraction else Fraction(q)
    return arb(fmpq(q.numerator, q.denominator))


EXP_BITS = 1 << 14  # ends beyond 2^16384 are refused; ends nearer 0 than 2^-16384 are rounded outward (side)


def exact(x: arb, side: int = 0) -> Fraction:
    """The exact value of a ball of radius 0 (an end from `lower()`/`upper()`/`mid()`). A lower (side -1)
    or upper (+1) end nearer 0 than 2^-EXP_BITS is rounded outward to 0 or -/+2^-EXP_BITS; an end beyond
    2^EXP_BITS, or a tiny one with side 0, raises ValueError (a 2^(10^30) Fraction would exhaust memory)."""
    man, exp = (int(v) for v in x.man_exp())
    mag = exp + abs(man).bit_length()  # 2^(mag-1) <= |value| < 2^mag
    if man == 0 or -EXP_BITS <= mag <= EXP_BITS:
        return Fraction(man * 2 ** exp) if exp >= 0 else Fraction(man, 2 ** -exp)
    if mag > EXP_BITS or side == 0:
        raise ValueError(f"a value of about 2^{mag} is out of the checker's range")
    return Fraction(0) if (man > 0) == (side < 0) else Fraction(side, 2 ** EXP_BITS)  # |value| < 2^-EXP_BITS


def _ncdf(x: arb) -> arb:  # the standard normal CDF Phi, as erfc(-x/sqrt 2)/2: no cancellation in the left tail
    return (-x / arb(2).sqrt()).erfc() / 2


def _npdf(x: arb) -> arb:  # the standard normal density
    return (-x * x / 2).exp() / (2 * arb.pi()).sqrt()


def _gelu_fdf(x: arb) -> tuple[arb, arb]:  # gelu and gelu' at x with one Phi(x): the same balls as f(x), df(x)
    p = _ncdf(x)
    return x * p, p + x * _npdf(x)


def _sigmoid(x: arb) -> arb:
    return 1 / (1 + (-x).exp())


def _gelu_minimum() -> tuple[arb, ...]:
    """gelu' = Phi + x*phi has one zero (docs/soundness.md), in the bracket below: its signs at the
    bracket's ends are proved when it is made at a precision (gelu' < 0, then > 0; `_fixed` keeps it), or
    the minimum is refused (ValueError)."""
    lo, hi = ball(Fraction("-0.75179152469356445745790494678")), ball(Fraction("-0.75179152469356445745790494677"))
    if not (CURVES["gelu"].df(lo) < 0 < CURVES["gelu"].df(hi)):
        raise ValueError("gelu: the bracket of its minimum is not proved")
    return (lo.union(hi),)


@dataclass(frozen=True)
class Curve:
    """phi and phi' on balls; `breaks()`: the inflection points, increasing; `shape`: +1 (convex) or
    -1 (concave) on each piece between them; domain x >= `lowest` (x > `lowest` if `open_`); `minima()`:
    the interior local minima (phi is monotone between them, so its maximum on [l, u] is at an end)."""

    f: Ball
    df: Ball
    shape: tuple[int, ...]
    breaks: Callable[[], tuple[arb, ...]] = tuple
    lowest: Fraction | None = None
    open_: bool = False
    minima: Callable[[], tuple[arb, ...]] = tuple
    fdf: Callable[[arb], tuple[arb, arb]] | None = None  # (phi, phi') at one point sharing work, if given

    def admits(self, l: Fraction) -> bool:
        return self.lowest is None or l > self.lowest or (l == self.lowest and not self.open_)

    def both(self, x: arb) -> tuple[arb, arb]:
        return self.fdf(x) if self.fdf is not None else (self.f(x), self.df(x))


_S = (1, -1)  # S-shaped: convex for x <= 0, concave for x >= 0
CURVES: dict[str, Curve] = {
    "exp": Curve(lambda x: x.exp(), lambda x: x.exp(), (1,)),
    "square": Curve(lambda x: x * x, lambda x: 2 * x, (1,), minima=lambda: (arb(0),)),
    "reciprocal": Curve(lambda x: 1 / x, lambda x: -1 / (x * x), (1,), lowest=Fraction(0), open_=True),
    "rsqrt": Curve(lambda x: x.rsqrt(), lambda x: -x.rsqrt() / (2 * x), (1,), lowest=Fraction(0), open_=True),
    "sqrt": Curve(lambda x: x.sqrt(), lambda x: 1 / (2 * x.sqrt()), (-1,), lowest=Fraction(0)),
    "tanh": Curve(lambda x: x.tanh(), lambda x: 1 - x.tanh() ** 2, _S, lambda: (arb(0),)),
    "sigmoid": Curve(_sigmoid, lambda x: _sigmoid(x) * (1 - _sigmoid(x)), _S, lambda: (arb(0),)),
    "erf": Curve(lambda x: x.erf(), lambda x: 2 * (-x * x).exp() / arb.pi().sqrt(), _S, lambda: (arb(0),)),
    "gelu": Curve(lambda x: x * _ncdf(x), lambda x: _ncdf(x) + x * _npdf(x), (-1, 1, -1),
                  lambda: (-arb(2).sqrt(), arb(2).sqrt()), minima=_gelu_minimum, fdf=_gelu_fdf),
}


_FIXED: dict = {}


def _fixed(fn: str, which: str, prec: int) -> tuple[arb, ...]:
    """A curve's breaks or minima at a precision, made once (the same balls each call would make)."""
    if (fn, which, prec) not in _FIXED:
        with ctx.workprec(prec):
            _FIXED[fn, which, prec] = getattr(CURVES[fn], which)()
    return _FIXED[fn, which, prec]


def _curve(fn: str) -> Curve:
    if fn not in CURVES:
        raise ValueError(f"unknown curve {fn!r}; known: {', '.join(CURVES)}")
    return CURVES[fn]


def _pieces(c: Curve, lo: arb, hi: arb, breaks: tuple | None = None) -> list[tuple[arb, arb, int]] | None:
    """[lo, hi] split at the breaks inside it: (start, end, curvature) per piece; None where a break's
    place relative to lo or hi is not proved."""
    ends, first = [lo], 0
    for k, p in enumerate(c.breaks() if breaks is None else breaks):
        if p <= lo:
            first = k + 1
        elif lo < p < hi:
            ends.append(p)
        elif not p >= hi:
            return None
    ends.append(hi)
    return [(p, q, c.shape[first + i]) for i, (p, q) in enumerate(zip(ends, ends[1:]))]


def _convex_gap_ok(gap: Ball, both: Callable[[arb], tuple[arb, arb]], p: arb, q: arb) -> bool:
    """g >= 0 on [p, q] for a convex g (module docstring): tangent bounds at bisected points (both: g, g')."""
    for _ in range(STEPS):
        m = ((p + q) / 2).mid()
        if not p < m < q:  # a piece too narrow to bisect: one enclosure of g over all of it
            return gap(p.union(q)) >= 0
        g, d = both(m)
        if g < 0:
            return False
        if g + d * (p - m) >= 0 and g + d * (q - m) >= 0:
            return True
        if d > 0:
            q = m
        elif d < 0:
            p = m
        else:
            return False
    return False


def lines_hold(fn: str, lines, l: Fraction, u: Fraction) -> bool:
    """True only if side*(fn(x) - a*x - b) >= 0 on [l, u] is proved for each (a, b, side) of lines (side 1:
    a line below, -1: above). The lines share [l, u]'s pieces and fn at the pieces' ends."""
    c = _curve(fn)
    l, u = _exact(l), _exact(u)
    if not (l <= u and c.admits(l)):
        return False
    with ctx.workprec(PREC):
        pieces, at = _pieces(c, ball(l), ball(u), _fixed(fn, "breaks", PREC)), {}
        if pieces is None:
            return False
        for a, b, side in lines:
            la, lb = ball(a), ball(b)
            gap = lambda x, fx=None: side * ((c.f(x) if fx is None else fx) - la * x - lb)  # noqa: E731  must be >= 0
            both = lambda x: (lambda f, df: (gap(x, f), side * (df - la)))(*c.both(x))  # noqa: E731  (g, g')
            for k, (p, q, shape) in enumerate(pieces):
                if side * shape < 0:  # g concave: its ends decide
                    if k not in at:
                        at[k] = c.f(p), c.f(q)
                    if not (gap(p, at[k][0]) >= 0 and gap(q, at[k][1]) >= 0):
                        return False
                elif not _convex_gap_ok(gap, both, p, q):
                    return False
    return True


def line_below(fn: str, a: Fraction, b: Fraction, l: Fraction, u: Fraction) -> bool:
    """True only if a*x + b <= fn(x) for every x in [l, u] is proved (False: not proved, or l > u, or
    [l, u] leaves fn's domain)."""
    return lines_hold(fn, [(a, b, 1)], l, u)


def line_above(fn: str, a: Fraction, b: Fraction, l: Fraction, u: Fraction) -> bool:
    """True only if a*x + b >= fn(x) for every x in [l, u] is proved."""
    return lines_hold(fn, [(a, b, -1)], l, u)


def interval_image(fn: str, l: Fraction, u: Fraction) -> tuple[Fraction, Fraction]:
    """Exact rationals lo <= fn(x) <= hi for every x in [l, u] (outward-rounded ends of balls): the
    maximum is at an end; the minimum at an end or at an interior minimum (kept unless proved
    outside [l, u]). ValueError where [l, u] is empty, leaves the domain, or a value is not finite."""
    c = _curve(fn)
    l, u = _exact(l), _exact(u)
    if not (l <= u and c.admits(l)):
        raise ValueError(f"{fn}: [{show(l)}, {show(u)}] is empty or leaves the domain")
    with ctx.workprec(PREC):
        lo, hi = ball(l), ball(u)
        ends = [c.f(lo), c.f(hi)]
        # at a minimum ball M: phi(mid M) + phi'(M)(M - mid M) (mean value theorem; phi' ~ 0 on M, so tight)
        inner = [c.f(m.mid()) + c.df(m) * (m - m.mid()) for m in _fixed(fn, "minima", PREC) if not (m < lo or m > hi)]
        if not all(v.is_finite() for v in ends + inner):
            raise ValueError(f"{fn}: no finite enclosure on [{show(l)}, {show(u)}]")
        return min(exact(v.lower(), -1) for v in ends + inner), max(exact(v.upper(), 1) for v in ends)


def _plane_holds(c1: Fraction, c2: Fraction, c0: Fraction, box: tuple[Fraction, ...], side: int) -> bool:
    """side * (x*y - c1*x - c2*y - c0) >= 0 at the box's four corners, on integers: times the positive common denominator
    of its terms, x y - c1 x - c2 y - c0 is v below (the same sign, no gcd per operation)."""
    lx, ux, ly, uy = map(_exact, box)
    if not (lx <= ux and ly <= uy):
        return False
    (a, da), (b, db), (c, dc) = (_exact(v).as_integer_ratio() for v in (c1, c2, c0))
    dab = da * db
    for xn, xd in (lx.as_integer_ratio(), ux.as_integer_ratio()):
        for yn, yd in (ly.as_integer_ratio(), uy.as_integer_ratio()):
            v = dc * (xn * yn * dab - a * xn * yd * db - b * yn * xd * da) - c * xd * yd * dab  # over xd yd da db dc > 0
            if (v < 0) if side > 0 else (v > 0):
                return False
    return True


def plane_below(c1: Fraction, c2: Fraction, c0: Fraction, box: tuple[Fraction, Fraction, Fraction, Fraction]) -> bool:
    """c1*x + c2*y + c0 <= x*y on the box (lx, ux, ly, uy). x*y - plane is affine in x for fixed y and
    in y for fixed x, so its minimum on a box is at a corner: the four exact corner checks decide."""
    return _plane_holds(c1, c2, c0, box, 1)


def plane_above(c1: Fraction, c2: Fraction, c0: Fraction, box: tuple[Fraction, Fraction, Fraction, Fraction]) -> bool:
    """c1*x + c2*y + c0 >= x*y on the box (the corner argument of `plane_below`)."""
    return _plane_holds(c1, c2, c0, box, -1)
