"""Writing graph models: typed nodes over named vector values (checker/graph.py reads them).

    b = GraphBuilder(64)
    h = b.linear("embed", "x", W, bias)           # W (out, in)
    h = b.layernorm("ln1", h, gamma, beta, eps=1e-5)   # written as primitive nodes, checked op by op
    h = b.add("block1.out", h, b.linear(...))
    b.save("model.npz", output=h)

LayerNorm is the composition mean -> centre -> square -> mean -> + eps -> rsqrt -> multiply ->
scale and shift, so every step is an op of the table (no op of its own, no float in the checker).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..files import atomic_open


class GraphBuilder:
    def __init__(self, in_dim: int):
        self.in_dim, self.nodes, self.arrays, self.dims = in_dim, [], {}, {"x": in_dim}

    def _node(self, name: str, op: str, inputs: list[str], dim: int, **arrays) -> str:
        if name in self.dims:
            raise ValueError(f"node {name!r} defined twice")
        node = {"name": name, "op": op, "inputs": inputs}
        for key, value in arrays.items():
            self.arrays[f"{name}.{key}"] = np.ascontiguousarray(value, dtype=np.float64)
            node[key] = f"{name}.{key}"
        self.nodes.append(node)
        self.dims[name] = dim
        return name

    def linear(self, name: str, x: str, weight, bias=None) -> str:
        weight = np.asarray(weight, dtype=np.float64)
        if weight.ndim != 2 or weight.shape[1] != self.dims[x]:
            raise ValueError(f"{name}: weight {weight.shape} does not read {x!r} of width {self.dims[x]}")
        arrays = {"weight": weight} if bias is None else {"weight": weight, "bias": np.asarray(bias, dtype=np.float64)}
        return self._node(name, "linear", [x], weight.shape[0], **arrays)

    def affine(self, name: str, x: str, scale, shift) -> str:
        return self._node(name, "affine", [x], self.dims[x], scale=np.broadcast_to(scale, self.dims[x]),
                          shift=np.broadcast_to(shift, self.dims[x]))

    def unary(self, name: str, op: str, x: str) -> str:
        return self._node(name, op, [x], self.dims[x])

    def jumprelu(self, name: str, x: str, threshold) -> str:
        """y = z where z > threshold, else 0 (elementwise; a JumpReLU SAE's features)."""
        return self._node(name, "jumprelu", [x], self.dims[x], threshold=np.broadcast_to(threshold, self.dims[x]))

    def free(self, name: str, x: str, lower, upper) -> str:
        """y_j: any value in [lower_j, upper_j], chosen adversarially (x fixes only the width)."""
        return self._node(name, "free", [x], self.dims[x], lower=np.broadcast_to(lower, self.dims[x]),
                          upper=np.broadcast_to(upper, self.dims[x]))

    def softmax(self, name: str, x: str, groups) -> str:
        """y = softmax of x over each group (groups: a group id per element), e.g. an attention pattern's rows."""
        return self._node(name, "softmax", [x], self.dims[x], groups=np.broadcast_to(groups, self.dims[x]))

    def binary(self, name: str, op: str, a: str, b: str) -> str:
        if self.dims[a] != self.dims[b]:
            raise ValueError(f"{name}: widths {self.dims[a]} and {self.dims[b]} differ")
        return self._node(name, op, [a, b], self.dims[a])

    def add(self, name: str, a: str, b: str) -> str:
        return self.binary(name, "add", a, b)

    def layernorm(self, name: str, x: str, gamma, beta, eps: float = 1e-5) -> str:
        n = self.dims[x]
        mean = np.full((n, n), 1.0 / n)  # every row the mean: the value stays a vector of width n
        centred = self.linear(f"{name}.centre", x, np.eye(n) - mean)
        var = self.linear(f"{name}.var", self.unary(f"{name}.sq", "square", centred), mean)
        inv = self.unary(f"{name}.rsqrt", "rsqrt", self.affine(f"{name}.eps", var, 1.0, eps))
        return self.affine(name, self.binary(f"{name}.norm", "mul", centred, inv), gamma, beta)

    def save(self, path: str | Path, output: str) -> None:
        """Write the model as an .npz (weights + `__graph__`), atomically."""
        graph = {"input": self.in_dim, "nodes": self.nodes, "output": output}
        with atomic_open(path, "wb") as fh:
            np.savez(fh, __graph__=np.array(json.dumps(graph)), **self.arrays)


def evaluate(path: str | Path, x: np.ndarray) -> np.ndarray:
    """Float64 forward pass of a saved graph model (a batch of rows x), for training scripts and tests."""
    from ..checker.graph import read_graph

    return evaluate_graph(read_graph(path), x)


def evaluate_graph(graph, x: np.ndarray) -> np.ndarray:
    """Float64 forward pass of a graph as the checker reads it (a model, or g rebuilt by the transforms)."""
    from ..bounds.graph import ENGINE, floats

    values = {"x": np.asarray(x, dtype=np.float64).T}
    for n in floats(graph):
        if n.op == "linear":
            values[n.name] = n.weight @ values[n.inputs[0]] + n.bias[:, None]
        elif n.op == "affine":
            values[n.name] = n.scale[:, None] * values[n.inputs[0]] + n.shift[:, None]
        else:
            values[n.name] = ENGINE[n.op].eval(n, [values[s] for s in n.inputs])
    return values[graph.output].T
