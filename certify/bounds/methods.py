"""The bounding methods: one registry that the CLI, options, flow, batch and both engines read.

Each method names what it runs on a dense network (`certify.engine`) and on a graph model
(`certify.engine_graph`), in order: the first whose bound meets the tolerance stops the plan, else
the tightest is kept. A method a graph model does not have runs the named stand-in, and the output
says so (engine_graph's note).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    summary: str
    dense: tuple[str, ...]  # the plan on a dense network
    graph: tuple[str, ...]  # the plan on a graph model
    single_pass: bool = True  # one bound per network, no search (flow's `compare` and the crosscheck take these)


METHODS: dict[str, Method] = {
    "auto": Method("interval, CROWN, alpha-CROWN, then branch and bound, until one meets the tolerance",
                   ("interval", "crown", "alpha", "bab"), ("interval", "crown", "alpha", "bab"), single_pass=False),
    "interval": Method("interval bound propagation", ("interval",), ("interval",)),
    "crown": Method("CROWN: linear relaxations, back-substitution", ("crown",), ("crown",)),
    "alpha": Method("alpha-CROWN: CROWN with optimised slopes", ("alpha",), ("alpha",)),
    "lp": Method("the LP relaxation (HiGHS); graph models: CROWN", ("lp",), ("crown",)),
    "bab": Method("branch and bound: input and ReLU splits, a checkable split tree", ("bab",), ("bab",), single_pass=False),
}
NAMES = tuple(METHODS)
SINGLE_PASS = tuple(m for m, v in METHODS.items() if v.single_pass)
