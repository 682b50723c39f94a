"""`certify export-smt` on a graph model's certificate (residual networks, LayerNorm, GELU, SAEs).

Untrusted, like `certify.smt`: the trusted checker runs first and records every step it accepted
with the verified bounds it started from (`checker.graph.RECORD`); the obligations are stated from
that record. Each op states its own obligations, or a stated refusal (`RULES`, one row per op):

    define    a linear op (linear, affine, add, sub): its exact equations, n = W in + b
    interval  the obligation of an `interval` bounds step: no inputs in their verified bounds put
              the output beyond the claim (QF_LRA; mul's x*y: QF_NRA)
    relax     the obligation of a `relax` step: no input in its verified bounds puts the op below its
              lower line (plane) or above its upper one (relu: QF_LRA; mul: QF_NRA)

A `bounds` step via `linear` (the checker's back-substitution) is one obligation per claimed bound:
the input box, the equations of every linear ancestor and the verified lines and planes of every
nonlinear ancestor (the facts the back-substitution uses, each established by an earlier obligation
or by the checker's ball arithmetic), and the claim's negation: a linear program the other solver
decides itself, so no coefficient the checker derived is taken on trust here. The curves (exp, erf,
GELU, tanh, sigmoid, square, rsqrt, reciprocal, sqrt) have no SMT-LIB2 theory that every solver
decides: their `interval` and `relax` obligations are refused by name in the file (the checker proves
them with arb ball arithmetic, certify/checker/curves.py), and their lines are used as facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

from .checker import graph as cg
from .checker.numbers import parse_ratio
from .smt import Obligation, Refused, _n_ary, lin, num  # smt.py imports this module only inside export()

HEADER = """\
; What is exported (graph model). Every obligation is about the joint graph J (f's nodes, g's own
; nodes, d = f - g) as the checker built it; node k's value is n<k>_<i> (the table below names the
; nodes), the input is x<i>. Each uses only facts that earlier obligations established:
;  interval  per interval step: no inputs within their verified bounds put the node's value outside
;            its claimed bounds (linear ops by their equations; relu by ite; mul by x*y in QF_NRA).
;  relax     per relax step: no input within its verified bounds puts relu below its lower line or
;            above its upper line, or x*y below its lower plane or above its upper plane (mul, QF_NRA).
;  linear    per claimed bound of a back-substitution step: the input box, every linear ancestor's
;            equations (macros D<k>) and every nonlinear ancestor's verified lines or planes (macros
;            L<k>_<s>) do not allow the node's value beyond the claim (a linear program).
;  goal      per region: no output difference d within its verified bounds has |d_i| > bound.
; What is NOT exported: the curves' interval and relax steps (exp, erf, GELU, tanh, sigmoid, square,
; rsqrt, reciprocal, sqrt): the checker proves them with arb ball arithmetic and a proved sign; there
; is no SMT-LIB2 theory of erf, and exp is an extension of one solver only; each is listed below as
; `; not exported` with its step; their lines enter later obligations as facts. Nor: reading and
; hashing the files, building g and J, that a split tree's leaves cover the root box, the witness
; replay, and the comparison bound <= tolerance.
"""


def var(k: int, i: int) -> str:
    return f"x{i}" if k < 0 else f"n{k}_{i}"


def frac(text) -> Fraction:
    return Fraction(*parse_ratio(text))


def _and(args: list[str]) -> str:
    return _n_ary("and", args)


def _or(args: list[str]) -> str:
    return _n_ary("or", args)


# --------------------------------------------------------------------------- op rows


def _eq(values):
    """An exact op's relation: out_i = value_i."""
    return lambda n, ins, out: [f"(= {o} {v})" for o, v in zip(out, values(n, ins))]


def _linear(n, ins):
    return [lin([(w, ins[0][j]) for j, w in enumerate(row)], b) for row, b in zip(n.weight, n.bias)]


def _relu(v: str) -> str:
    return f"(ite (>= {v} 0) {v} 0)"


def _lines(step, ins, out):
    """A unary op's verified lines as facts, per element: lower slope . in + intercept <= out <= upper line."""
    ls, li, us, ui = ([frac(v) for v in step[k]] for k in ("lower_slope", "lower_intercept", "upper_slope", "upper_intercept"))
    return [f"(<= {lin([(a, z)], b)} {o} {lin([(c, z)], d)})" for o, z, a, b, c, d in zip(out, ins[0], ls, li, us, ui)]


def _planes(step, ins, out):
    """mul's verified planes as facts, per element: c_x x + c_y y + c_0 below and above out."""
    lo, up = ([[frac(v) for v in p] for p in step[k]] for k in ("lower", "upper"))
    return [f"(<= {lin([(p[0], x), (p[1], y)], p[2])} {o} {lin([(q[0], x), (q[1], y)], q[2])})"
            for o, x, y, p, q in zip(out, *ins, lo, up)]


def _softmax_lines(step, ins, out, node):
    """softmax's facts as the checker uses them: each group sums to 1, and y_j >= rho_j (1 + sum_l E_jl) + tau_j with
    each E_jl = exp(s_l - s_j) replaced by its verified line on the side rho_j's sign needs (the checker's back-substitution
    is one dual solution of the linear program these facts make)."""
    members, pairs, _ = cg._sm_prepare(node)
    rho, tau = ([frac(v) for v in step[k]] for k in ("lower_slope", "lower_intercept"))
    e = {k: [frac(v) for v in step[f"exp_{k}"]] for k in ("lower_slope", "lower_intercept", "upper_slope", "upper_intercept")}
    facts = [f"(= {_n_ary('+', [out[j] for j in g] + ['0'])} 1)" for g in members]
    for j in range(len(out)):
        side = "lower" if rho[j] >= 0 else "upper"
        terms, const = [], rho[j] + tau[j]
        for p, (pj, pl) in enumerate(pairs):
            if pj == j:
                a = rho[j] * e[f"{side}_slope"][p]
                terms += [(a, ins[0][pl]), (-a, ins[0][j])]
                const += rho[j] * e[f"{side}_intercept"][p]
        facts.append(f"(<= {lin(terms, const)} {out[j]})")
    return facts


@dataclass(frozen=True)
class Rule:
    relation: Callable | None  # (node, input names, output names) -> per element, the op's exact relation; None: none in SMT
    lines: Callable | None = None  # (relax step, input names, output names[, node]) -> per element, its verified lines/planes
    nonlinear: bool = False  # its relation needs QF_NRA
    needs_node: bool = False  # lines also read the node (softmax: its groups)


CURVE = Rule(None, _lines)  # no SMT relation: interval and relax obligations are refused (arb); the lines are facts
RULES: dict[str, Rule] = {
    "linear": Rule(_eq(_linear)),
    "affine": Rule(_eq(lambda n, ins: [lin([(a, v)], b) for a, b, v in zip(n.scale, n.shift, ins[0])])),
    "add": Rule(_eq(lambda n, ins: [f"(+ {a} {b})" for a, b in zip(*ins)])),
    "sub": Rule(_eq(lambda n, ins: [f"(- {a} {b})" for a, b in zip(*ins)])),
    "free": Rule(lambda n, ins, out: [f"(<= {num(l)} {o} {num(u)})" for o, l, u in zip(out, n.lower, n.upper)]),
    "relu": Rule(_eq(lambda n, ins: [_relu(z) for z in ins[0]]), _lines),
    "jumprelu": Rule(_eq(lambda n, ins: [f"(ite (> {z} {num(t)}) {z} 0)" for z, t in zip(ins[0], n.threshold)]), _lines),
    "mul": Rule(_eq(lambda n, ins: [f"(* {a} {b})" for a, b in zip(*ins)]), _planes, nonlinear=True),
    **{fn: CURVE for fn in cg.CURVE_OPS},
    "softmax": Rule(None, _softmax_lines, needs_node=True),  # exp has no SMT relation (arb, as the curves); its facts are linear
}


# --------------------------------------------------------------------------- obligations


class GraphExport:
    """The obligations of one recorded graph check (`checker.graph.RECORD`)."""

    def __init__(self, records: list, bound: Fraction):
        graphs = {id(r["graph"]): r["graph"] for r in records}
        if len(graphs) != 1:
            raise Refused("certificate", f"the checker's steps ran on {len(graphs)} graphs, not one")
        self.graph = next(iter(graphs.values()))
        self.index = {n.name: k for k, n in enumerate(self.graph.nodes)}
        self.index["x"] = -1
        missing = sorted({n.op for n in self.graph.nodes} - set(RULES))
        if missing:
            raise Refused("certificate", f"no SMT-LIB2 rule for the graph ops {', '.join(missing)}")
        self.records, self.bound = records, bound
        self.macros: dict = {}
        self.lines: dict = {}  # node name -> the latest verified relax step (walking the record in order)
        self.refused: list[str] = []

    def names(self, name: str) -> list[str]:
        return [var(self.index[name], i) for i in range(self.graph.dims[name])]

    def inputs(self, node) -> list[list[str]]:
        return [self.names(s) for s in node.inputs]

    def _macro(self, key, build: Callable, ob) -> str:
        if key not in self.macros:
            name = f"{key[0]}{len(self.macros)}"
            self.macros[key] = name
            ob.defines.append(f"(define-fun {name} () Bool {_and(build())})")
        return self.macros[key]

    def box(self, name: str, bounds: tuple, ob) -> str:
        """The value `name` within the verified bounds (lo, up): a macro per bounds object."""
        return self._macro(("B", name, id(bounds)), lambda: [f"(and (<= {num(l)} {v}) (<= {v} {num(u)}))"
                                                               for v, l, u in zip(self.names(name), *bounds)], ob)

    def _within(self, name: str, i: int, bounds: tuple) -> str:
        v, l, u = self.names(name)[i], bounds[0][i], bounds[1][i]
        return f"(and (<= {num(l)} {v}) (<= {v} {num(u)}))"

    def facts(self, node, ob) -> str:
        """What back-substitution may use of a node: its verified lines (a nonlinear op) or its relation."""
        rule, ins, outs = RULES[node.op], self.inputs(node), self.names(node.name)
        if cg.OPS[node.op].relax is None:
            return self._macro(("D", node.name), lambda: rule.relation(node, ins, outs), ob)
        step, k = self.lines[node.name]
        return self._macro(("L", node.name, k), lambda: rule.lines(step, ins, outs, *([node] if rule.needs_node else [])), ob)

    def domain(self, box, ob) -> str:
        """x in the input box; for a token domain also one token per position (sum of its one-hot = 1)."""
        def build():
            xs = self.names("x")
            out = [f"(and (<= {num(l)} {v}) (<= {v} {num(u)}))" for v, l, u in zip(xs, *box)]
            if isinstance(box, cg.TokenBox):
                out += [f"(= (+ {' '.join(xs[p * box.vocab + t] for t in ok)} 0) 1)" for p, ok in enumerate(box.allowed)]
            return out
        return self._macro(("X", id(box)), build, ob)

    def obligations(self) -> list:
        out, region = [], None
        for k, rec in enumerate(self.records):
            step, node, where = rec["step"], self.graph.by_name[rec["step"]["node"]], rec["where"]
            if region is not None and region[0] is not rec["box"]:
                out.append(self.goal(*region[1:]))
            region = (rec["box"], rec["after"], where)  # a region: the steps checked on one box (a tree leaf)
            rule = RULES[node.op]
            if step["kind"] == "relax":
                self.lines[node.name] = (step, k)
                if rule.relation is None:
                    self.refused.append(f"{where}: the lines of {node.op} (checked with arb ball arithmetic)")
                    continue
                ins, outs = self.inputs(node), self.names(node.name)
                for i, (rel, line) in enumerate(zip(rule.relation(node, ins, outs), rule.lines(step, ins, outs))):
                    ob = Obligation("relax", f"{where} element {i}", f"no inputs within their verified bounds put {node.op} "
                                    "outside its verified lines or planes")
                    ob.asserts = [self._within(s, i, rec["bounds"][s]) for s in dict.fromkeys(node.inputs)] + [rel, f"(not {line})"]
                    out.append(ob)
            elif step["via"] == "interval":
                if rule.relation is None:
                    self.refused.append(f"{where}: the interval image of {node.op} (checked with arb ball arithmetic)")
                    continue
                lo, up = ([frac(v) for v in step[s]] for s in ("lower", "upper"))
                ins, outs = self.inputs(node), self.names(node.name)
                for i, (rel, v, l, u) in enumerate(zip(rule.relation(node, ins, outs), outs, lo, up)):
                    ob = Obligation("interval", f"{where} element {i}", "no inputs within their verified bounds put the value "
                                    "outside its claimed bounds")
                    ob.asserts = [self.box(s, rec["bounds"][s], ob) for s in dict.fromkeys(node.inputs)]
                    ob.asserts += [rel, f"(or (< {v} {num(l)}) (> {v} {num(u)}))"]
                    out.append(ob)
            else:  # via linear: one linear program per claimed bound
                lo, up = ([frac(v) for v in step[s]] for s in ("lower", "upper"))
                for i, (v, l, u) in enumerate(zip(self.names(node.name), lo, up)):
                    for side, rel, claim in (("lower", "<", l), ("upper", ">", u)):
                        ob = Obligation("linear", f"{where} {side} bound of element {i}", "the domain, the equations and the "
                                        "verified lines or planes of the ancestors imply the claim")
                        ob.asserts = [self.domain(rec["box"], ob)]
                        ob.asserts += [self.facts(a, ob) for a in cg.ancestors(self.graph, node.name)]
                        ob.asserts.append(f"({rel} {v} {num(claim)})")
                        out.append(ob)
        if region is not None:
            out.append(self.goal(*region[1:]))
        return out

    def goal(self, after, where):
        ob = Obligation("goal", where.split(" (")[0].rsplit("[", 1)[0] or "steps", "no output difference within the verified output bounds exceeds the bound")
        ob.asserts = [self.box("d", after["d"], ob),
                      _or([f"(or (> {v} {num(self.bound)}) (< {v} {num(-self.bound)}))" for v in self.names("d")])]
        return ob

    def head(self) -> list[str]:
        """The logic, the node table and the global declarations."""
        nonlinear = any(RULES[n.op].nonlinear for n in self.graph.nodes)
        lines = ["(set-info :smt-lib-version 2.6)", f"(set-logic {'QF_NRA' if nonlinear else 'QF_LRA'})", "",
                 "; the joint graph's nodes (n<k>_<i>: element i of node k):"]
        lines += [f";   n{k}: {n.name} = {n.op}({', '.join(n.inputs)}), width {self.graph.dims[n.name]}" for k, n in enumerate(self.graph.nodes)]
        if self.refused:
            lines += [f"; not exported: {r}" for r in self.refused]
        lines += [f"(declare-const {v} Real)" for v in self.names("x")]
        lines += [f"(declare-const {v} Real)" for n in self.graph.nodes for v in self.names(n.name)]
        return lines
