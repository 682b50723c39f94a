"""The certificate writer's fast paths for a split tree's lists (sixteenth session): floats with None (one-sided
claims), and lists of ints, strings and None (neuron indices, pairs) write exactly what the per-value walk writes."""

from __future__ import annotations

import json
import math

import pytest

from certify.certificate import serialize
from tests.test_certificate_serialize import _reference


@pytest.mark.parametrize("values", [[None, 0.5, -1.25], [0.5, None, None], [None, None], [None, 3], [None, "1/2"],
                                    [3, 4, 5], [[1, 2], [3, 4]], ["1/2", None, 7], [None, 0.5, True], [True, 1],
                                    [None, 0.5, 2], (None, 1.5), [], [[None, 0.5], [1, None]]])
def test_fast_paths_write_what_the_plain_walk_writes(values):
    assert json.dumps(serialize(values)) == json.dumps(_reference(values))


def test_non_finite_floats_after_none_are_refused():
    for bad in (math.nan, math.inf):
        with pytest.raises((ValueError, OverflowError)):
            serialize([None, bad])
