"""Branch and bound on the joint network: split the input box or unstable ReLUs until every region's
bound meets the tolerance, a counterexample is known, or the budget is spent.

Each region (leaf) is bounded by `certify.bounds.driver.propose` and carries its own steps; the tree
of splits goes into the certificate, where the checker verifies every leaf and that the children
of every split cover their parent (by construction). The best certified bound reached so far is
the maximum over the leaves, so stopping early still yields a valid (looser) certificate.
"""

from __future__ import annotations

import dataclasses
import gc
import heapq
import itertools
import os
import pickle
import time
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
from threadpoolctl import threadpool_limits

from .driver import Proposal, below, box_floats, enclosing, propose
from ..checker import exact
from ..checker.numbers import rational_str
from .linear import backsubstitute
from .network import FloatNet, from_exact

INPUT_SPLIT_MAX_DIM = 16  # boxes with this few free inputs are split on the box; larger ones on ReLUs
EXACT_SLACK = 1e-6  # a float leaf bound this close (relative) to the target is recomputed with exact outputs
INPUT_CANDIDATES = 2  # input splits: candidate dimensions whose children are all bounded, the best kept (strong
# branching): the best by first-layer mass and the best by `input_scores`. 15 s A/B at load 3-4 against one candidate by
# `input_scores`: MNIST-0 1.236x with 471 leaves vs 1.234x with 910 (half the leaves to check), MNIST-7 1.851x vs 1.869x,
# w16x2-prune50-box 1.675x exact vs 1.708x (mass alone: 1.551x)
ALPHA_CANDIDATES = 1  # the same on alpha-CROWN leaves; 1: the input by `mass_scores` alone, no strong branching (a split
# costs 2 alpha leaves, not 4). Nineteenth session, 15 CPU s, load 1.2-3.4, as the quick benchmark builds the instances:
# w64x2-svd50-ball50 1.067-1.075x exact (994-1,133 leaves) -> 1.044x (2,089); w32x2-prune50-ball50 1.025x -> 1.014x its
# lower bound, w16x2-svd50-box 2.48x -> 2.31x; the instances that reach 1.01x do so in the same CPU seconds (up to 2x the
# leaves). At equal leaves strong branching is only a little tighter (w64x2-svd50-ball50, 1,100 leaves: 1.0697x over 2
# candidates, 1.0683x over 4, 1.0671x over all 10; the mass alone 1.0744x), and the score's input alone is worse
# (1.088x, 1,978 leaves in 15 s). CROWN leaves keep INPUT_CANDIDATES: on the VeryDiff pairs (30 CPU s) the mass alone
# moved MNIST-0 1.093x -> 1.072x but MNIST-7 1.579x -> 1.613x
BLAS_THREADS = 1  # leaves multiply small matrices (hundreds of rows): more BLAS threads only spin; on this 2-core
# machine at load 7, a 400x200 @ 200x200 product took 8.4x longer with OpenBLAS's 2 threads than with 1
XLA_THREADS = "1"  # XLA's CPU client: its intra-op thread pool's size (PJRT_NPROC, read once, when JAX first starts its
# backend; set here, on import, unless already set: `certify.engine` imports this module before anything runs JAX). As
# BLAS_THREADS: alpha-CROWN's programs are small, and a pool of one thread per core spent half a branch and bound's CPU
# seconds in its threads for no wall time: w64x2-svd50-ball50, 15 CPU s, quiet machine, 835 leaves (the main thread 7.5 of
# the 15 s, XLA's pool 4 s and dispatch threads 3.4 s) against 1,095 with one thread (1.087x -> 1.071x its lower bound) in
# the same wall seconds (14.7); the VeryDiff MNIST pair's root alpha-CROWN 5.9-6.3 wall s against 4.4-5.9
os.environ.setdefault("PJRT_NPROC", XLA_THREADS)
CLOCK = time.perf_counter  # what time_budget counts (benchmarks on a shared machine set time.process_time: CPU seconds)
ALPHA_MAX_HIDDEN = 256  # input splits on a joint network with more hidden neurons: CROWN leaves, alpha not tried at
# the root (on the VeryDiff MNIST pair, 420 hidden neurons, the root's alpha-CROWN took 5.7 s of a 60 s budget on a quiet
# machine, 17 s at load 5, to find that alpha does not pay there)
SHARED_FIRST = 0.75  # a joint network whose first layers f and g share, with at least this share of their neurons
# unstable at the root (a wide domain), on alpha-CROWN leaves, splits those ReLUs first, then ReLUs by BaBSR, never
# inputs: one split fixes a neuron of f and of g at once, and beta-CROWN holds it (CROWN leaves only clamp the split
# neuron, and converge slower than with input splits). w16x2-prune50-box (10 inputs, layer 1 shared, 16 of 16
# unstable), 30 s at load 3-4: input splits 1.647x exact, BaBSR ReLU splits 1.809x, shared ReLUs first then BaBSR
# 1.348x (then input splits 1.447x; shared ReLUs ranked by gap x output weight mass 1.389x, by gap alone 1.449x). Where
# half the shared layer is unstable (w32x2-prune50-ball50, 16 of 32) input splits stay better: 1.097x against
# 1.118-1.339x in 15 s
ALPHA_PAYS = 0.05  # alpha-CROWN bounds input-split leaves where it removes this share of CROWN's excess at the root
ALPHA_ITERS = 60  # Adam steps per layer of alpha-CROWN: the root, ReLU-split leaves (their new split's beta starts at 0)
INPUT_ALPHA_ITERS = 3  # the same for the children of an input split, started from their parent's optimised slopes
# and multipliers (a smaller box, the same ReLUs: the parent's optimum is close). w32x2-prune50-ball50, 15 CPU s, load
# 5-8: 3 steps 1.030-1.034x exact (1,590-1,730 leaves), 5 steps 1.032-1.034x, 10 steps 1.037-1.041x, 60 steps (as
# ReLU-split leaves) 1.062-1.067x (740-830 leaves); 5 steps without the parent's start 1.031x, 1 step 1.033x with it,
# 1.067x without. ReLU-split leaves need their steps: w16x2-prune50-box at 3 steps 2.12x, 10 steps 1.63x, 20 steps 1.525x
# (2,137 leaves), 60 steps 1.526-1.528x (1,480-1,500 leaves: fewer for the checker)
INHERIT_METHODS = ("crown", "alpha")  # input-split leaves of these methods are bounded inside the root's steps (alpha
# since the fourteenth session: w64x2-prune50-ball50's 483-leaf tree checks in 4.4 CPU s instead of 7.5, the same tree)
MAX_DEPTH = 120  # splits along one path at most (as certify/bounds/graph.py): past float resolution a split moves no
# bound, and a tree stays shallower than the recursion of the certificate writer and the checker


@dataclass
class Node:
    """A region. Its bound is the best of its own and its ancestors' (each holds on the region):
    linear bounds are not monotone under splitting, so a child can be looser than its parent."""

    box: tuple[list[Fraction], list[Fraction]]
    assume: dict
    inherited: Fraction | None = None  # the best bound of the ancestors
    first_layer: int = 1  # layers below this are as in the parent, whose verified steps the child inherits
    proposal: Proposal | None = None
    split: dict | None = None
    children: list["Node"] = field(default_factory=list)
    bound: Fraction | None = None  # set with the proposal: the best of its own bound and the ancestors'
    exact_output: bool = True  # the proposal's output bounds are exact (else padded floats)
    keep: tuple = (1, 1)  # a split region: the layers [lo, hi) of its own steps that its children inherit
    depth: int = 0  # splits above it (at most MAX_DEPTH)
    warm: dict | None = None  # alpha: the proposal's optimised parameters, kept until its children are bounded
    votes: tuple = (0, 0)  # strong branching on its ancestors' input splits: (won by the mass-best input, by another)

    def set_proposal(self, proposal: Proposal, exact_output: bool = True) -> None:
        if proposal.warm:  # held here, and dropped once the region is split, not for the life of the tree
            self.warm, proposal = proposal.warm, dataclasses.replace(proposal, warm=None)
        self.proposal, self.exact_output, own = proposal, exact_output, proposal.bound
        self.bound = own if own is None or self.inherited is None else min(own, self.inherited)

    def to_json(self, claim: Fraction, dims: list[int] | None = None, rows: tuple | None = None) -> dict:
        """A proved region: the steps it derives (layers from `first_layer` on). A split region:
        only the steps its children inherit (`keep`): layers `first_layer` .. j-1 for a ReLU split
        on layer j; for an input split, none (its children derive every layer on their own boxes, so
        the checker would verify the parent's steps for nothing), except at the root of a tree whose
        regions bound only the neurons it leaves unstable (`keep` = its hidden layers); then the
        split and the children. `rows`: see `_rows_only`."""
        own = self.proposal.bound
        if own is None or own <= claim or not self.children:
            return {"steps": [_rows_only(s, rows) for s in self.proposal.steps if s["layer"] >= self.first_layer]}
        steps = [s for s in self.proposal.steps if self.keep[0] <= s["layer"] < self.keep[1]]
        split = self.split if dims is None or self.split["split"] != "input" else {**self.split, "dim": dims[self.split["dim"]]}
        return {**split, "steps": steps, "children": [c.to_json(claim, dims, rows) for c in self.children]}


def _rows_only(step: dict, rows: tuple | None) -> dict:
    """A region's output-layer linear step that bounds some output neurons (`propose`'s `outputs`: the rows whose root
    bound missed the target), cut to the neurons in `rows` = (output layer, the rows whose root bound exceeds the
    tree's claim). The checker keeps the root's verified bounds for a row no step lists, and those are within the
    claim for every other row. A tree stopped by its budget claims more than its target: on the VeryDiff MNIST-7 pair
    in 15 s, 3 of the 8 rows its leaves bounded."""
    if rows is None or step["layer"] != rows[0] or "neurons" not in step:
        return step
    assert set(step) <= {"kind", "layer", "neurons", "lower", "upper", "alpha"}, sorted(step)
    keep = [j for j, i in enumerate(step["neurons"]) if i in rows[1]]
    if not keep or len(keep) == len(step["neurons"]):
        return step
    cut = {**step, **{key: [step[key][j] for j in keep] for key in ("neurons", "lower", "upper")}}
    if step.get("alpha"):  # a row of slopes per claimed side: the lower sides' rows, then the upper sides'
        lows, ups = ([j for j, c in enumerate(step[key]) if c is not None] for key in ("lower", "upper"))
        pick = [lows.index(j) for j in keep if j in lows] + [len(lows) + ups.index(j) for j in keep if j in ups]
        cut["alpha"] = {key: {**entry, "slopes": np.asarray(entry["slopes"])[pick]} for key, entry in step["alpha"].items()}
    return cut


def _worst_row(p: Proposal) -> tuple[int, float]:
    """(output index, sign) of the row that attains the leaf's bound."""
    best = max(range(len(p.output_lower)), key=lambda i: max(p.output_upper[i], -p.output_lower[i]))
    return best, (1.0 if p.output_upper[best] >= -p.output_lower[best] else -1.0)


def input_scores(net: FloatNet, node: Node) -> np.ndarray:
    """Per input: |coefficient| of the input in the linear bound of the leaf's worst output row, times
    the input's width (what that bound loses to the box along the input; alpha-beta-CROWN's "sb"
    input-split heuristic). Falls back to width times the input's first-layer weight mass."""
    lo, up = node.box
    width = np.array([float(u - l) for l, u in zip(lo, up)])
    p = node.proposal
    if p is None or not p.relax or len(p.relax) != len(net.weights) - 1:
        return width * np.abs(np.asarray(net.weights[0])).sum(axis=0)
    row, sign = _worst_row(p)
    lam = np.zeros((1, net.weights[-1].shape[0]))
    lam[0, row] = -sign
    trace: dict = {}
    lo_f, up_f = box_floats(*node.box)
    backsubstitute(net, len(net.weights), lam, list(p.relax), lo_f, up_f, trace, diff=p.diff or None)
    return np.abs(np.asarray(trace[0])[0]) * width + 1e-12 * width  # ties (a zero coefficient): the wider input


def input_split(node: Node, d: int) -> dict:
    lo, up = node.box
    return {"split": "input", "dim": int(d), "at": rational_str((lo[d] + up[d]) / 2)}


def mass_scores(net: FloatNet, node: Node) -> np.ndarray:
    """Per input: its width times its first-layer weight mass (how much it widens the first layer)."""
    width = np.array([float(u - l) for l, u in zip(*node.box)])
    return width * np.abs(np.asarray(net.weights[0])).sum(axis=0)


VOTE_DEPTH = 6  # CROWN input splits (k > 1 candidates; alpha leaves take ALPHA_CANDIDATES = 1 and never vote): strong
# branching only on regions above this depth; below, the mass-best input alone where it won strong branching at least as
# often as the other candidate on the region's path (`Node.votes`), else strong branching. Node-local (a region's votes
# are its ancestors'), so Ray builds the serial tree. Issue 19, verydiff 60 CPU s, jobs 1, back to back, load 4.6-7.2:
# MNIST-0 1.063x -> 1.049x (3,744 -> 6,680 leaves; check CPU 66 -> 100 s), MNIST-7 1.534x -> 1.545x (2,170 -> 1,888,
# inside the load noise); 30 CPU s: MNIST-0 1.0940x -> 1.0786x, MNIST-7 1.5845x -> 1.5817x. Tallies: strong branching
# keeps the mass-best on 80 % of MNIST-0's splits, 36 % of MNIST-7's
VOTE_SCORE_ALONE = False  # below VOTE_DEPTH, where the other candidate won more often: the `input_scores`-best input
# alone (True; 60 CPU s: MNIST-7 1.534x -> 1.513x but MNIST-0 1.063x -> 1.067x, checking ~2x) or strong branching (False)


def input_candidates(net: FloatNet, node: Node, k: int) -> list[dict]:
    """Up to k input splits: the best by `mass_scores` and the best by `input_scores`, then the next
    best by `input_scores` (k = 1: the best by `mass_scores`); [] if the box is a point. A region at VOTE_DEPTH or
    deeper: see VOTE_DEPTH."""
    widths = [u > l for l, u in zip(*node.box)]
    order = [int(np.argmax(mass_scores(net, node)))]
    if k > 1 and node.depth >= VOTE_DEPTH:
        mass, other = node.votes
        if mass >= other:
            k = 1
        elif VOTE_SCORE_ALONE:
            order, k = [int(np.argmax(np.where(widths, input_scores(net, node), -1.0)))], 1
    if k > 1:
        order += [int(d) for d in np.argsort(-input_scores(net, node), kind="stable")]
    dims = [d for d in dict.fromkeys(order) if widths[d]]
    return [input_split(node, d) for d in dims[:k]]


def shared_split(net: FloatNet, node: Node) -> dict | None:
    """The unstable, not yet split ReLU of the joint network's shared layers (f's and g's alike) with
    the largest relaxation gap times its input weight mass; None if there is none."""
    best, best_score = None, 0.0
    for j, (l, u) in enumerate(node.proposal.claims[:net.shared], start=1):
        mass = np.abs(np.asarray(net.weights[j - 1])).sum(axis=1)
        for i in np.flatnonzero((l < 0) & (u > 0)):
            score = -l[i] * u[i] / (u[i] - l[i]) * mass[i]
            if (j, int(i)) not in node.assume and score > best_score:
                best, best_score = {"split": "relu", "layer": j, "neuron": int(i)}, float(score)
    return best


def choose_split(net: FloatNet, node: Node, inputs: bool = True) -> dict | None:
    """Input split on the best scored dimension (small inputs: `input_scores`; `inputs`), else the unstable
    ReLU with the largest relaxation gap times its coefficient in the worst output row (BaBSR-like)."""
    lo, up = node.box
    if inputs and sum(l < u for l, u in zip(lo, up)) <= INPUT_SPLIT_MAX_DIM:  # few free inputs (fixed ones do not count)
        score = input_scores(net, node)
        d = int(np.argmax(np.where([u > l for l, u in zip(lo, up)], score, -1.0)))
        if up[d] > lo[d]:
            return input_split(node, d)
    p = node.proposal
    row, sign = _worst_row(p)
    lam = np.zeros((1, net.weights[-1].shape[0]))
    lam[0, row] = -sign
    trace: dict = {}
    lo_f, up_f = box_floats(*node.box)
    backsubstitute(net, len(net.weights), lam, list(p.relax), lo_f, up_f, trace)
    best, best_score = None, (0.0, 0.0)
    for j, (l, u) in enumerate(p.claims, start=1):
        unstable = (l < 0) & (u > 0) & np.array([(j, i) not in node.assume for i in range(len(l))])
        gap = np.where(unstable, -l * u / np.where(unstable, u - l, 1.0), 0.0)
        score = gap * np.abs(np.asarray(trace[j])[0])
        for i in np.flatnonzero(unstable):  # rank by score, then by gap (neurons the row does not see)
            if (score[i], gap[i]) > best_score:
                best, best_score = {"split": "relu", "layer": j, "neuron": int(i)}, (float(score[i]), float(gap[i]))
    if best is None:  # every ReLU is stable or split: split the input box instead
        width = [u - l for l, u in zip(lo, up)]
        d = max(range(len(width)), key=width.__getitem__)
        if width[d] > 0:
            return {"split": "input", "dim": d, "at": rational_str((lo[d] + up[d]) / 2)}
    return best


def _fixed(node: Node, proposal: Proposal | None) -> tuple:
    """`propose`'s `fixed` for a region: its layers below `first_layer` are those of `proposal` (its parent's, or its
    own earlier one, which took them from the parent), as the checker holds them; only their claims, lines and
    difference lines (`driver.below`), not the proposal's steps."""
    return below(proposal, node.first_layer) if node.first_layer > 1 and proposal is not None else ()


def _split_score(children: list[Node]) -> tuple:
    """How good a split is once its children are bounded: the sum of their bounds, then the worse child's (an empty
    child counts as 0). Best-first search splits the worse child next anyway; what a split leaves to do later is both
    children's. Ranked by the worse child first, strong branching over all 15 inputs made MNIST-7's 400-leaf tree looser
    than over 2 (1.7736x against 1.6984x); ranked by the sum, 1.6531x over 15 and 1.6796x over 2. Over 2 candidates,
    worse child first against sum first, equal leaves: MNIST-7 1.6984x / 1.6796x (400), 1.6145x / 1.6006x (1,000),
    1.5672x / 1.5622x (1,600); MNIST-0 1.1167x / 1.1137x (1,000); w64x2-svd50-ball50 1.0971x / 1.0953x (700), 1.0557x
    / 1.0536x (1,500); w16x2-svd50-box 2.5952x / 2.5878x (1,600); MNIST-0 1.0810x / 1.0774x (2,500); but
    w32x2-prune50-ball50 1.0804x / 1.0829x (600), 1.0544x / 1.0579x (1,000), 1.0366x / 1.0381x (1,500). In 60 CPU s
    (verydiff.py, load 4-10) the two are within the run-to-run spread of the leaves a CPU second buys"""
    bounds = [float(c.bound) if c.bound is not None else 0.0 for c in children]
    return sum(bounds), max(bounds)


def _candidates(net: FloatNet, node: Node, plan: dict) -> list[dict]:
    """The splits tried on a bounded region (strong branching keeps the one whose worse child is best); [] if none.
    `plan`: the run's `shared_first`, `input_splits`, `candidates` and whether regions are bounded inside the root's
    steps (`inherited`)."""
    if node.depth >= MAX_DEPTH:
        cands = []
    elif plan["shared_first"]:  # see SHARED_FIRST
        cands = [s for s in [shared_split(net, node) or choose_split(net, node, inputs=False)] if s]
    else:
        cands = (input_candidates(net, node, plan["candidates"]) if plan["input_splits"] else []) or \
            [s for s in [choose_split(net, node)] if s is not None]
    if plan["inherited"] and cands:  # regions bounded inside the root's steps: input splits; a ReLU split on a neuron
        # unstable only through the padding (`padded_split`), which no input split makes stable, where the region misses
        # the target by no more than the padding (`_rebound`'s EXACT_SLACK), where its other neurons are all stable or
        # split, or where it has no input to split (a point box: test_campaign's exact-zero cases; else a ReLU split by
        # `choose_split` there)
        inputs = [c for c in cands if c["split"] == "input"]
        padded, only = padded_split(node)
        cands = [padded] if padded is not None and (only or not inputs or node.bound <= _slack(plan["target"])) else \
            inputs or cands[:1]
    return cands


PADDED_WIDTH = 1e-6  # an unstable neuron whose range is no wider than this is unstable only through the engine's
# outward padding (`driver.PAD`, 1e-8 relative): a pruned neuron whose range is exactly 0 comes out as [-1e-8, 1e-8]


def padded_split(node: Node) -> tuple[dict | None, bool]:
    """A ReLU split on the unstable, not yet split neuron of `node`'s claims whose range is the narrowest, if no wider
    than PADDED_WIDTH (inside the root's steps, see `_candidates`), else None; and whether every unstable, not yet split
    neuron is that narrow."""
    best, width, only = None, PADDED_WIDTH, True
    for j, (l, u) in enumerate(node.proposal.claims, start=1):
        for i in np.flatnonzero((l < 0) & (u > 0)):
            if (j, int(i)) not in node.assume:
                only = only and u[i] - l[i] <= PADDED_WIDTH
                if u[i] - l[i] <= width:
                    best, width = {"split": "relu", "layer": j, "neuron": int(i)}, float(u[i] - l[i])
    return best, only


def _child_regions(node: Node, options: list) -> list:
    """What `_Bounder.bound` takes for the children of each candidate split [(split, children)] of `node`, in order."""
    regions = []
    for split, kids in options:
        iters = INPUT_ALPHA_ITERS if split["split"] == "input" else ALPHA_ITERS
        regions += [(child.box, child.assume, False, node.warm, iters, _fixed(child, node.proposal)) for child in kids]
    return regions


def _rebound_region(node: Node) -> tuple:
    """What `_Bounder.bound` takes for `node` bounded again with exact outputs (`_rebound`)."""
    return node.box, node.assume, True, node.warm, ALPHA_ITERS, _fixed(node, node.proposal)


def _vote(options: list, best: int) -> None:
    """Strong branching's outcome (`options`' kept split `best`; the first is the mass-best input's, see
    `input_candidates`) added to the votes that the kept split's children carry (serially, on the Ray worker that chose
    it and on the driver alike)."""
    if len(options) > 1:
        for kid in options[best][1]:
            mass, other = kid.votes
            kid.votes = (mass + 1, other) if best == 0 else (mass, other + 1)


def _take_split(node: Node, split: dict, children: list[Node]) -> None:
    """`node` split by the candidate kept (strong branching), serially or on Ray alike."""
    node.split, node.children = split, children
    node.warm = None
    if split["split"] == "relu" and node.keep == (1, 1):  # (the root of a tree inside its steps keeps all of them)
        node.keep = (node.first_layer, split["layer"])


def _children(node: Node, split: dict) -> list[Node]:
    lo, up = node.box
    if split["split"] == "input":
        d, at = split["dim"], Fraction(split["at"])
        left_up, right_lo = list(up), list(lo)
        left_up[d], right_lo[d] = at, at
        return [Node((lo, left_up), node.assume, node.bound, depth=node.depth + 1, votes=node.votes),
                Node((right_lo, up), node.assume, node.bound, depth=node.depth + 1, votes=node.votes)]
    key, j = (split["layer"], split["neuron"]), split["layer"]
    return [Node(node.box, {**node.assume, key: phase}, node.bound, j, depth=node.depth + 1, votes=node.votes)
            for phase in ("inactive", "active")]


def fold_inputs(net: FloatNet, exact_joint, box):
    """The problem on the box's free inputs only: fixed inputs (lower = upper) folded into the first
    layer's bias exactly (the checker's `exact.fold_fixed`, which it applies itself), its float copy
    rounded from the exact one. Returns (net, exact joint, box, free indices, or None if none is fixed)."""
    first, free, lo, up = exact.fold_fixed(exact_joint[0], *box)
    if len(free) == len(box[0]):
        return net, exact_joint, box, None
    layer = from_exact([first])
    net = dataclasses.replace(net, weights=(layer.weights[0], *net.weights[1:]), biases=(layer.biases[0], *net.biases[1:]))
    return net, [first, *exact_joint[1:]], (lo, up), free


def sampled_lower(net: FloatNet, box, samples: int = 256, seed: int = 0) -> float:
    """max |f - g| over the box's centre and uniform random points (float64): a rough attained deviation."""
    lo, up = (np.asarray(v, dtype=np.float64) for v in box_floats(*box))
    x = np.vstack([(lo + up) / 2, lo + (up - lo) * np.random.default_rng(seed).uniform(size=(samples, lo.size))])
    # in numpy: JAX compiled 6 small programs for `net(x)` (0.1-0.2 CPU s of a branch and bound's first seconds)
    return float(np.max(np.abs(net.numpy(x))))


class _Bounder:
    """Bounds regions with the leaf method of one run (in this process, or as a Ray actor: `box`, `plan`, see `work`)."""

    def __init__(self, net: FloatNet, exact_joint, method: str = "", margins: tuple = (), differential: bool = False,
                 inherited: tuple = (), outputs: tuple | None = None, plan: dict | None = None, box=None):
        if box is not None:  # a Ray worker, started before the run's root is bounded (`_RayBounders`): the problem as
            # given, folded here as the driver folds it, and one BLAS thread for good (see BLAS_THREADS)
            threadpool_limits(BLAS_THREADS, user_api="blas")
            net, exact_joint, _, _ = fold_inputs(net, exact_joint, box)
        self.args = (net, exact_joint)
        self.configure(method, margins, differential, inherited, outputs, plan)

    def configure(self, method: str, margins: tuple, differential: bool, inherited: tuple = (), outputs: tuple | None = None,
                  plan: dict | None = None) -> bool:
        self.method, self.margins, self.differential, self.inherited = method, margins, differential, inherited
        self.outputs, self.plan = outputs, plan
        return True

    def bound(self, regions: list) -> list[Proposal]:
        """Proposals for [(box, assume, exact output, alpha start, alpha steps, fixed lower layers)]: leaves are
        bounded with float outputs, a leaf near the target again with exact outputs; each inside the root's verified
        bounds `inherited`; a ReLU-split child on its parent's layers below the split (`propose`'s `fixed`)."""
        return [propose(*self.args, box, self.method, assume, self.margins, self.differential, exact_output=exact,
                        inherited=self.inherited, alpha_iters=iters, warm=warm, outputs=None if exact else self.outputs,
                        fixed=fixed)
                for box, assume, exact, warm, iters, fixed in regions]

    def work(self, regions: list, options: list | Node) -> tuple:
        """A Ray worker's task (see `_ray_search`): `regions` as for `bound`, and what they are for. `options`, a split
        region's candidate splits [(split, children)] (the children of each in `regions`, in order): the children are
        bounded, the split whose worse child is best kept as in a serial run (`_split_score`), and (its index, [(child's
        proposal, splits to try on the child)]) returned. `options`, a Node (without its proposal): the region bounded
        again with exact outputs, returned as (proposal, splits to try on it). The splits to try (`_candidates`) are
        computed here, from the full proposal, for a region the driver will split (its bound misses the target), else
        None; the proposals go back without what only choosing a split needs (`_light`)."""
        proposals = self.bound(regions)
        if isinstance(options, Node):
            options.set_proposal(proposals[0], True)
            cands = self._to_try(options)
            return self._light(proposals[0], options, cands), cands
        kids = [kid for _, children in options for kid in children]
        for kid, proposal in zip(kids, proposals):
            kid.set_proposal(proposal, False)
        best = min(range(len(options)), key=lambda i: _split_score(options[i][1]))  # the first of equals, as min(options)
        _vote(options, best)
        first = sum(len(children) for _, children in options[:best])
        to_try = [self._to_try(kid) for kid in options[best][1]]
        return best, [(self._light(proposals[first + i], kid, c), c) for i, (kid, c) in enumerate(zip(options[best][1], to_try))]

    def _to_try(self, node: Node) -> list | None:
        target = self.plan["target"]
        if node.bound is None or node.bound <= target or _rebound(node, target):
            return None
        return _candidates(self.args[0], node, self.plan)

    def _light(self, p: Proposal, node: Node, cands: list | None) -> Proposal:
        """`p` (`node`'s proposal) without its float relaxations, claims and differences where the driver needs none of
        them: a region inside the root's steps (`inherited`) whose splits to try (`cands`, from here) are input splits
        only, so that no child takes layers from it (`_fixed`), and that takes none from its parent (a ReLU split's child
        bounded again takes them from its own proposal). On the VeryDiff MNIST pair 39 KB -> 15 KB a proposal."""
        if not self.plan["inherited"] or node.first_layer > 1 or any(c["split"] == "relu" for c in cands or ()):
            return p
        light = dataclasses.replace(p, relax=(), claims=(), diff=None)
        light.__dict__["bound"] = p.bound  # its cached bound travels with it (Fraction arithmetic the driver need not redo)
        return light

    def work_pickled(self, task: bytes) -> bytes:
        """`work` on each (regions, options) of a pickled list, the results pickled: plain pickle, not Ray's
        cloudpickle, whose per-object hook cost the driver 0.9 ms a task on MNIST-0 (boxes of Fractions, Nodes)."""
        return pickle.dumps([self.work(*item) for item in pickle.loads(task)], protocol=pickle.HIGHEST_PROTOCOL)

    def close(self) -> None:
        pass


RAY_QUEUE = 2  # tasks in flight per Ray worker: one running, the next waiting, so that no worker waits for the driver
RAY_BATCH = 2  # regions per task once the heap holds RAY_BATCH_HOT per worker to split (fewer Ray calls: each cost ~1 ms
# of the driver's CPU and ~1 ms of the worker's on MNIST-0, where a region to split takes ~27 ms); one while fewer, so
# that no worker waits while another holds two
RAY_BATCH_HOT = 2 * RAY_BATCH * RAY_QUEUE
RAY_FREEZE = 64  # finished tasks between the driver's gc.freeze() calls: the tree it keeps (every leaf's steps, as lists)
# is long-lived, and Python's cyclic collector otherwise walks all of it again as it grows while the driver unpickles the
# workers' results; on MNIST-0 to 1.24x (420 leaves) the driver's main thread 0.64-0.67 -> 0.49-0.50 CPU s with the
# collector off. 0: never


class _RayBounders:
    """`workers` Ray actors, each a `_Bounder`, started on `problem` (net, exact joint, box) without waiting for them
    (a worker's start-up, importing certify and JAX, took 2.0-2.7 s on this 2-core machine, when the driver's root
    took 0.3-0.5 s), then `configure`d for the run. Ray is started here (locally, or joined at `address`) unless it
    already runs, and shut down after. `seconds`: the driver's time in starting and waiting for them."""

    def __init__(self, workers: int, address: str | None, problem: tuple):
        import ray

        t = time.perf_counter()
        self.ray, self.started = ray, not ray.is_initialized()
        if self.started:
            ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        actor = ray.remote(num_cpus=1)(_Bounder)
        net, joint = ray.put(problem[0]), ray.put(problem[1])  # pickled once for all workers
        self.actors = [actor.remote(net, joint, box=problem[2]) for _ in range(workers)]
        self.seconds = time.perf_counter() - t

    def configure(self, args: tuple, plan: dict) -> None:
        """The run's leaf method etc. (`_Bounder.configure`), queued on every worker without waiting for it: an actor
        runs one caller's tasks in the order they were submitted, so a worker still starting takes its first regions once
        it has started, and a worker that failed to start fails the search at its first task's result. (Waiting here
        for every worker cost MNIST-0 to 1.21x on 2 workers 0.7 s of start-up against 0.3 s on 1.)"""
        for a in self.actors:
            a.configure.remote(*args, plan=plan)

    def submit(self, worker: int, items: list) -> object:
        """A task: [(regions, options)] for `_Bounder.work` on `worker`."""
        return self.actors[worker].work_pickled.remote(pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL))

    def next_done(self, tasks: list) -> tuple:
        """One finished task of `tasks` and its result (waits for one)."""
        (task,), _ = self.ray.wait(tasks, num_returns=1)
        return task, pickle.loads(self.ray.get(task))

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
        if self.started:
            self.ray.shutdown()
            self.started = False


@dataclass(frozen=True)
class BabResult:
    tree: dict
    bound: Fraction
    leaves: int
    splits: int
    seconds: float
    leaf_method: str = ""
    startup_seconds: float = 0.0  # the driver's time starting its Ray workers and waiting for them, part of `seconds`


def _rebound(node: Node, target: Fraction) -> bool:
    """A region with padded float output bounds that miss the target by no more than their padding: its outputs are
    bounded exactly before it is split (a region where f = g has deviation exactly 0, and tolerance 0 is met)."""
    return not node.exact_output and node.bound <= _slack(target)


def _slack(target: Fraction) -> Fraction:
    """The target plus EXACT_SLACK: a bound below it misses the target by no more than the padding."""
    return target + EXACT_SLACK * (1 + abs(target))


def _serial_search(bounder: _Bounder, net: FloatNet, live: list, order, plan: dict, max_leaves: int, time_budget: float,
                   clock: float, progress) -> int:
    """`_branch_and_bound`'s search in this process: the worst region off the heap is split (its children bounded under
    every candidate split, the split whose worse child is best kept: strong branching), or bounded again with exact
    outputs (`_rebound`), until the heap's worst meets the target, a region has nothing to split, or the budget is
    spent. Returns the number of splits, as `_ray_search`."""
    target, splits = plan["target"], 0
    while 1 + splits < max_leaves and CLOCK() - clock < time_budget and live and live[0][2].bound > target:
        _, _, worst = heapq.heappop(live)
        if _rebound(worst, target):
            worst.set_proposal(bounder.bound([_rebound_region(worst)])[0], True)
            kept = [worst]
        else:
            cands = _candidates(net, worst, plan)
            if not cands:  # nothing left to split: the search ends here
                heapq.heappush(live, (-worst.bound, next(order), worst))
                return splits
            options = [(split, _children(worst, split)) for split in cands]
            regions = _child_regions(worst, options)
            for kid, proposal in zip([kid for _, kids in options for kid in kids], bounder.bound(regions)):
                kid.set_proposal(proposal, False)
            best = min(range(len(options)), key=lambda i: _split_score(options[i][1]))  # the first of equals
            _vote(options, best)
            _take_split(worst, *options[best])
            kept = worst.children
            splits += 1
        for node in kept:
            if node.bound is not None:  # None: the region is empty
                heapq.heappush(live, (-node.bound, next(order), node))
        if progress is not None:
            progress(1 + splits, -live[0][0] if live else None)
    return splits


def _ray_search(workers: _RayBounders, net: FloatNet, live: list, order, plan: dict, max_leaves: int, time_budget: float,
                clock: float, progress) -> int:
    """`_branch_and_bound`'s search on Ray workers, pipelined: every worker holds up to RAY_QUEUE tasks, and a finished
    task's successor is handed out at once (no round waits for its slowest worker). A task holds up to RAY_BATCH regions
    off the heap, the worst first (one while there are few to split), each to split (its children under every candidate
    split; the worker keeps the split as a serial run does and returns that split's children, each with its splits to
    try, see `_Bounder.work`) or to bound again with exact outputs. The driver only keeps the heap and the tree. Returns
    the number of splits (the search ends as the serial one does, also where a region has nothing to split)."""
    frozen = gc.get_freeze_count()  # objects a caller froze stay frozen
    try:
        return _ray_loop(workers, net, live, order, plan, max_leaves, time_budget, clock, progress)
    finally:
        if not frozen:
            gc.unfreeze()  # what RAY_FREEZE froze goes back to the collector's oldest generation


def _ray_loop(workers: _RayBounders, net: FloatNet, live: list, order, plan: dict, max_leaves: int, time_budget: float,
              clock: float, progress) -> int:
    """`_ray_search`'s loop (the driver's collector frozen every RAY_FREEZE finished tasks)."""
    target, splits, stop, done = plan["target"], 0, False, 0
    to_try: dict = {}  # id(node) -> its candidate splits, from the worker that bounded it
    pending: dict = {}  # task -> (worker, [(node, its options, or None: bounded again)])
    queued = [0] * len(workers.actors)
    hot = sum(item[2].bound > target for item in live)  # regions on the heap that miss the target
    while True:
        while not stop and hot and 1 + splits < max_leaves and CLOCK() - clock < time_budget and min(queued) < RAY_QUEUE:
            w = queued.index(min(queued))
            batch = RAY_BATCH if hot >= RAY_BATCH_HOT * len(queued) else 1
            items, owners = [], []
            while len(items) < batch and live and live[0][2].bound > target and 1 + splits < max_leaves:
                _, _, worst = heapq.heappop(live)
                hot -= 1
                if _rebound(worst, target):
                    items.append(([_rebound_region(worst)], dataclasses.replace(worst, proposal=None, split=None, children=[], warm=None)))
                    owners.append((worst, None))
                    continue
                cands = to_try.pop(id(worst), None)
                if cands is None:  # a region the driver bounded (the root), whose proposal is whole
                    assert worst.proposal.relax or not plan["inherited"], "a light proposal without its splits to try"
                    cands = _candidates(net, worst, plan)
                if not cands:  # nothing left to split: the search ends here
                    heapq.heappush(live, (-worst.bound, next(order), worst))
                    stop = True
                    break
                options = [(split, _children(worst, split)) for split in cands]
                items.append((_child_regions(worst, options), options))
                owners.append((worst, options))
                splits += 1
            if items:
                pending[workers.submit(w, items)] = (w, owners)
                queued[w] += 1
        if not pending:
            return splits
        task, results = workers.next_done(list(pending))
        w, owners = pending.pop(task)
        queued[w] -= 1
        done += 1
        if RAY_FREEZE and done % RAY_FREEZE == 0:
            gc.freeze()
        for (node, options), result in zip(owners, results):
            if options is None:
                node.set_proposal(result[0], True)
                keep = [(node, result[1])]
            else:
                best, kids = result
                _vote(options, best)
                _take_split(node, *options[best])
                for kid, (proposal, _) in zip(node.children, kids):
                    kid.set_proposal(proposal, False)
                keep = [(kid, cands) for kid, (_, cands) in zip(node.children, kids)]
            for kid, cands in keep:
                if cands is not None:
                    to_try[id(kid)] = cands
                if kid.bound is not None:  # None: the region is empty
                    heapq.heappush(live, (-kid.bound, next(order), kid))
                    hot += kid.bound > target
        if progress is not None:
            progress(1 + splits, -live[0][0] if live else None)


def branch_and_bound(net: FloatNet, exact_joint, box, *args, workers: int = 0, address: str | None = None,
                     **kwargs) -> BabResult:
    """`_branch_and_bound` with BLAS_THREADS BLAS threads in this process; its Ray workers (`workers` > 0) are started
    first, so that their start-up overlaps the root's bounds here."""
    with threadpool_limits(BLAS_THREADS, user_api="blas"):
        pool = _RayBounders(workers, address, (net, exact_joint, box)) if workers else None
        try:
            return _branch_and_bound(net, exact_joint, box, *args, workers=workers, address=address, pool=pool, **kwargs)
        finally:
            if pool is not None:
                pool.close()


def _branch_and_bound(net: FloatNet, exact_joint, box, method: str, tolerance: Fraction, *,
                     max_leaves: int = 256, time_budget: float = 60.0, stop_below: Fraction | None = None,
                     margins: tuple = (), progress=None, workers: int = 0, address: str | None = None,
                     candidates: int | None = None, pool: _RayBounders | None = None) -> BabResult:
    """Split the worst leaf until its bound is <= tolerance, or the budget is spent. `stop_below`, when
    given, replaces the tolerance as the target: callers pass 1.01 x an attained deviation, where
    splitting further cannot help (a violated tolerance is out of reach; a tightness run goes past it).
    `progress(leaves, bound)` is called after every split (after every finished task, on Ray).

    `workers` > 0: the leaves are bounded by that many Ray actors (`_RayBounders`: a local Ray
    instance, or the cluster at `address`), each handed a region to split, the worst first, as soon
    as it has room (`_ray_search`); a worker also chooses the split (strong branching) and the
    splits to try on the children, with the serial run's code. Every leaf is bounded as in a serial
    run; a run that reaches its target splits exactly the regions whose bound misses it, so its tree
    is the serial tree (leaves bounded in another order). A run stopped by its budget holds the
    regions split so far, which may differ from a serial run's. `pool`: the workers, when already
    started (`branch_and_bound` starts them before the root is bounded). `candidates`: input splits tried per region
    (`input_candidates`; 1: the input by `mass_scores` alone); None: ALPHA_CANDIDATES on alpha-CROWN leaves, else
    INPUT_CANDIDATES."""
    start, clock = time.perf_counter(), CLOCK()
    net, exact_joint, box, dims = fold_inputs(net, exact_joint, box)
    root = Node(box, {})
    input_splits = sum(l < u for l, u in zip(*box)) <= INPUT_SPLIT_MAX_DIM
    if method == "alpha" and input_splits and sum(net.widths[1:-1]) > ALPHA_MAX_HIDDEN:
        method = "crown"  # see ALPHA_MAX_HIDDEN
    crown = None
    if input_splits and net.pairs:  # pairs for a 2x gain of CROWN at the root (cheap): the VeryDiff pairs
        # gain 2.1x (MNIST 1.63 vs 3.45) and need them; w16x2-prune50-box and -svd50-ball50 gain less and branch
        # better without them (1.63x and 1.02x exact in 15 s without, 1.76x and 1.05x with). Decided before the
        # root's own bound, which is then made once (an alpha-CROWN root made twice cost w32x2-prune50-ball50 1.5 CPU s
        # of its 15, mostly compiling the program it threw away)
        crown, plain = (propose(net, exact_joint, box, "crown", margins=margins, differential=d, exact_output=False)
                        for d in (True, False))
        differential = any(s["kind"] == "difference" and s["pairs"] for s in crown.steps)
        if not differential or (plain.bound is not None and crown.bound is not None and plain.bound <= 2 * crown.bound):
            differential, crown = False, plain
        root.set_proposal(propose(net, exact_joint, box, method, margins=margins, differential=differential))
    else:
        root.set_proposal(propose(net, exact_joint, box, method, margins=margins))
        differential = any(s["kind"] == "difference" and s["pairs"] for s in root.proposal.steps)
    if differential and not input_splits:  # ReLU splits sharpen separate
        # ReLU relaxations, not difference lines (digits_low_rank at tolerance 0.085: 3 leaves without pairs, 256
        # leaves and still 0.0863 with): pairs only for a 2x gain. Input splits narrow the differences' ranges too.
        plain = propose(net, exact_joint, box, method, margins=margins, differential=False)
        if plain.bound is not None and root.proposal.bound is not None and root.proposal.bound * 2 > plain.bound:
            differential = False
            root.set_proposal(plain)
    leaf_method = method
    if method == "alpha" and input_splits:  # alpha costs ~10x CROWN a leaf: only where it pays at the root, as a
        # share of CROWN's excess over a sampled deviation (the VeryDiff MNIST pair: 1.606 vs 1.629 over 0.935, 3 %, where
        # 10x more CROWN leaves win; w32x2-prune50-ball10: 0.166 vs 0.175 over 0.15). ReLU splits keep alpha: their
        # multipliers (beta) are optimised with the slopes
        crown = crown or propose(net, exact_joint, box, "crown", margins=margins, differential=differential, exact_output=False)
        if crown.bound is not None and root.bound is not None and \
                crown.bound - root.bound < ALPHA_PAYS * (crown.bound - sampled_lower(net, box)):
            leaf_method = "crown"
    order = itertools.count()  # ties between equal bounds go to the older leaf
    live = [(-root.bound, next(order), root)] if root.bound is not None else []  # a heap: the worst leaf first
    target = tolerance if stop_below is None else stop_below
    inherited, outputs = (), None
    unstable = [(l < 0) & (u > 0) for l, u in root.proposal.claims[:net.shared]]
    shared_first = leaf_method == "alpha" and bool(unstable) and \
        sum(map(np.sum, unstable)) >= SHARED_FIRST * sum(map(len, unstable))  # alpha: beta-CROWN holds the splits
    if input_splits and not shared_first and leaf_method in INHERIT_METHODS and root.proposal.claims:  # the root's hidden-layer
        # steps go into the certificate, checked once; every region's linear steps then bound only the neurons they leave unstable (see
        # `propose`): on the VeryDiff MNIST pair, 69 of layer 2's 200 rows, and fewer for the checker to re-derive
        root.keep, inherited = (1, len(net.weights)), enclosing(root.proposal)  # its claims and difference lines
        p, n = root.proposal, len(net.weights)
        rows = [i for i, b in enumerate(p.row_bounds()) if b > target]
        if len(rows) < len(p.output_lower) or leaf_method == "alpha":  # the root's output steps go into the certificate too, and its leaves bound
            # only the output neurons whose root bound misses the target (the others' bounds are the root's, verified
            # once): on the VeryDiff MNIST pair 1 of 10. Alpha leaves always: their output rows are alpha-CROWN's
            # back-substitutions through every layer, and a side the root's bound keeps is not derived (`propose`'s
            # `outputs`: 7.7 of 10 sides on w64x2-prune50-ball50's leaves, their output step 2.35 -> 2.00 CPU ms)
            root.keep, outputs = (1, n + 1), (rows, p.output_lower, p.output_upper)
    args = (net, exact_joint, leaf_method, margins, differential, inherited, outputs)
    if candidates is None:  # see ALPHA_CANDIDATES
        candidates = ALPHA_CANDIDATES if leaf_method == "alpha" and input_splits and not shared_first else INPUT_CANDIDATES
    plan = {"target": target, "shared_first": shared_first, "input_splits": input_splits, "candidates": candidates,
            "inherited": bool(inherited)}
    if workers:  # `pool`: started by `branch_and_bound`
        bounder = pool or _RayBounders(workers, address, (net, exact_joint, box))
        bounder.configure(args[2:], plan)
    else:
        bounder = _Bounder(*args)
    startup = bounder.seconds if workers else 0.0
    try:
        search = _ray_search if workers else _serial_search
        splits = search(bounder, net, live, order, plan, max_leaves, time_budget, clock, progress)
    finally:
        bounder.close()
    claim = -live[0][0] if live else Fraction(0)
    rows = None
    if outputs is not None:  # the leaves' output steps list only the rows whose root bound exceeds the claim (`_rows_only`)
        row_bounds = root.proposal.row_bounds()
        rows = (len(net.weights), {i for i in outputs[0] if row_bounds[i] > claim})
    return BabResult(root.to_json(claim, dims, rows), claim, 1 + splits, splits, time.perf_counter() - start, leaf_method, startup)
