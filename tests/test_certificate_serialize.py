"""The certificate writer's `serialize`: its list-of-floats fast path writes exactly what the plain
per-value walk writes (the reference below is the writer before the fast path), on random nested
bodies that mix floats, Fractions, ints, bools, strings, None, numpy scalars and arrays."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from certify.certificate import serialize
from certify.checker.numbers import rational_str


def _reference(obj):
    if isinstance(obj, str):
        return obj
    if isinstance(obj, dict):
        return {k: _reference(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_reference(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _reference(obj.tolist())
    if isinstance(obj, Fraction):
        return rational_str(obj)
    if isinstance(obj, (float, np.floating)):
        p, q = float(obj).as_integer_ratio()
        return str(p) if q == 1 else f"{p}/{q}"
    return obj


finite = st.floats(allow_nan=False, allow_infinity=False)
leaf = st.one_of(finite, finite, finite, st.fractions(), st.integers(-10**30, 10**30), st.booleans(), st.none(),
                 st.text(max_size=5), finite.map(np.float64), st.floats(width=32, allow_nan=False, allow_infinity=False).map(np.float32))
arrays = st.lists(finite, max_size=6).map(lambda v: np.array(v, dtype=np.float64))
body = st.recursive(st.one_of(leaf, arrays, st.lists(finite, min_size=1, max_size=8)),
                    lambda inner: st.one_of(st.lists(inner, max_size=6), st.tuples(inner, inner),
                                            st.dictionaries(st.text(max_size=4), inner, max_size=5)), max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(body)
def test_serialize_writes_what_the_plain_walk_writes(obj):
    assert json.dumps(serialize(obj)) == json.dumps(_reference(obj))


@pytest.mark.parametrize("values", [[0.5, 1, 2.0], [1.5, True], [0.25, Fraction(1, 3)], [2.0, "7/2"], [1.0, None],
                                    [0.1, np.float64(0.2)], [-0.0, 3.0]])
def test_a_float_list_with_other_values_keeps_each_values_form(values):
    """An int or bool stays a JSON number, a Fraction and a string as before, in a list that starts with a float."""
    assert serialize(values) == _reference(values)


def test_non_finite_floats_are_refused_as_before():
    for bad in (math.nan, math.inf):
        for obj in ([1.0, bad], [bad]):
            with pytest.raises((ValueError, OverflowError)):
                serialize(obj)
            with pytest.raises((ValueError, OverflowError)):
                _reference(obj)
