"""benchmarks/verydiff_exact.py --worst-leaves: the leaves' boxes read off an input-split tree."""

import sys
from fractions import Fraction

import pytest

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import verydiff_exact  # noqa: E402


def test_leaf_boxes_follow_the_checkers_split_rule():
    """The first child is x_d <= at, the second x_d >= at (as `certify/checker/check.py` reads an input split);
    the leaves tile the box."""
    box = ([Fraction(0), Fraction(-1), Fraction(5)], [Fraction(1), Fraction(1), Fraction(5)])
    tree = {"split": "input", "dim": 0, "at": "1/2", "steps": [], "children": [
        {"split": "input", "dim": 1, "at": "-1/4", "steps": [], "children": [{"steps": []}, {"steps": []}]},
        {"steps": []}]}
    leaves = verydiff_exact._leaf_boxes(tree, box)
    assert leaves == [
        ([0, -1, 5], [Fraction(1, 2), Fraction(-1, 4), 5]),
        ([0, Fraction(-1, 4), 5], [Fraction(1, 2), 1, 5]),
        ([Fraction(1, 2), -1, 5], [1, 1, 5]),
    ]
    volume = sum((u[0] - l[0]) * (u[1] - l[1]) for l, u in leaves)
    assert volume == (box[1][0] - box[0][0]) * (box[1][1] - box[0][1])
    assert box == ([0, -1, 5], [1, 1, 5])  # the parent's box is not changed


def test_leaf_boxes_refuse_relu_splits():
    with pytest.raises(SystemExit):
        verydiff_exact._leaf_boxes({"split": "relu", "layer": 1, "neuron": 0, "steps": [], "children": [{}, {}]},
                                   ([Fraction(0)], [Fraction(1)]))
