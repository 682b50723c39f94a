"""Export the shipped Max-of-K transformers as ONNX, the way a PyTorch user would.

An `nn.Module` carries the TransformerLens weights of models/maxofk_v16_tl.npz (V = 16) and
models/maxofk_tl.npz (V = 64) (float32 numbers, stored exactly) and computes, on the one-hot input
x of shape [n, V] (row p: the one-hot of token p; flat row-major it is the token domain's x):

    tok    = x @ W_E                          embedding (MatMul by a constant)
    pos    = x @ 0 + W_pos                    TransformerLens's hook_pos_embed as a value of the graph,
                                              so that an explanation can name (ablate) it
    h      = tok + pos
    q, k, v = h @ W_Q, h @ W_K, h @ W_V
    s      = q @ k^T * (1 / sqrt(d_head)) + M  M: the causal mask, 0 on and below the diagonal, -inf
                                              above (torch.nn.Transformer.generate_square_subsequent_mask)
    a      = softmax(s, -1)
    h      = h + (a @ v) @ W_O
    logits = (h @ W_U)[-1]                    the last position's logits (the task's output)

exported with torch.onnx.export (TorchScript exporter, opset 17: MatMul, Transpose, Mul, Add,
Softmax, Gather). It checks with onnxruntime that each file computes the .npz model's logits
(certify.model.transformer.forward, float64) on 500 random sequences, up to float32 rounding, and
prints the largest difference and the files' sha256. Needs torch, onnx and onnxruntime
(`make bench-deps`); tests use the shipped files, not torch.

    .venv/bin/python models/export_maxofk_onnx.py
"""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
EXPORTS = {"maxofk_v16.onnx": "maxofk_v16_tl.npz", "maxofk.onnx": "maxofk_tl.npz"}
OPSET = 17


def module(p: dict):
    """The torch module with the TransformerLens weights p (one layer, one head, attention only)."""
    import torch
    from torch import nn

    f32 = lambda a: torch.tensor(np.asarray(a, dtype=np.float32))  # noqa: E731 (the weights are float32 numbers)

    class MaxOfK(nn.Module):
        def __init__(self):
            super().__init__()
            n = p["W_pos"].shape[0]
            self.W_E, self.W_pos, self.W_U = f32(p["W_E"]), f32(p["W_pos"]), f32(p["W_U"])
            self.zero = torch.zeros(p["W_E"].shape)
            self.W_Q, self.W_K, self.W_V, self.W_O = (f32(p[f"blocks.0.attn.W_{c}"][0]) for c in "QKVO")
            self.scale = float(1 / np.sqrt(self.W_Q.shape[1]))
            self.mask = nn.Transformer.generate_square_subsequent_mask(n)  # 0 / -inf, float

        def forward(self, x):
            h = x @ self.W_E + (x @ self.zero + self.W_pos)
            q, k, v = h @ self.W_Q, h @ self.W_K, h @ self.W_V
            s = q @ k.transpose(0, 1) * self.scale + self.mask
            a = torch.softmax(s, dim=-1)
            h = h + (a @ v) @ self.W_O
            return (h @ self.W_U)[-1]

    return MaxOfK().eval()


def export(p: dict, make=None) -> bytes:
    """The ONNX bytes of the torch module `make(p)` (default: this file's `module`) on a [n, V] one-hot input."""
    import torch

    n, V = p["W_pos"].shape[0], p["W_E"].shape[0]
    buf = io.BytesIO()
    torch.onnx.export((make or module)(p), (torch.zeros(n, V),), buf, input_names=["x"], output_names=["logits"],
                      opset_version=OPSET, do_constant_folding=True, dynamo=False)
    return buf.getvalue()


def write_and_check(name: str, p: dict, tokens: np.ndarray, make=None) -> None:
    """Write models/<name>, then print its ops, onnxruntime's largest difference from forward() on `tokens`
    (the last position's logits) and its sha256."""
    import onnxruntime as ort

    from certify.model.transformer import forward

    V = p["W_E"].shape[0]
    data = export(p, make)
    (ROOT / "models" / name).write_bytes(data)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    ref = forward(p, tokens)[:, -1]
    got = np.stack([sess.run(None, {"x": np.eye(V, dtype=np.float32)[t]})[0] for t in tokens])
    ops = sorted({nd.op_type for nd in __import__("onnx").load_from_string(data).graph.node})
    print(f"models/{name}: opset {OPSET}, ops {', '.join(ops)}; onnxruntime vs forward(): max |diff| "
          f"{np.abs(got - ref).max():.2e} (logits up to {np.abs(ref).max():.1f}); sha256 {hashlib.sha256(data).hexdigest()}")


def main() -> None:
    from certify.model.transformer import read_tl

    rng = np.random.default_rng(0)
    for name, src in EXPORTS.items():
        p = read_tl(ROOT / "models" / src)
        n, V = p["W_pos"].shape[0], p["W_E"].shape[0]
        write_and_check(name, p, rng.integers(0, V, size=(500, n)))


if __name__ == "__main__":
    main()
