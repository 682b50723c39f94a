"""Export the shipped two-layer modular-addition transformer (models/modadd_tl.npz) as ONNX, the way a
PyTorch user would: an `nn.Module` with its TransformerLens weights (float32 numbers, stored exactly)
computes, on the one-hot input x of shape [3, 14] (row p: the one-hot of token p; flat row-major it is
the token domain's x), per layer l = 0, 1:

    h = h + sum over heads of softmax(h W_Q (h W_K)^T / sqrt(d_head) + M) (h W_V) W_O    M: causal mask (0 / -inf)
    h = h + relu(h W_in + b_in) W_out + b_out
    logits = (h W_U)[-1]

(h = x W_E + (x 0 + W_pos) first), exported with torch.onnx.export (TorchScript exporter, opset 17) by
models/export_maxofk_onnx.py's helper.
It checks with onnxruntime that the file computes certify.model.transformer.forward's logits on all 169
inputs "a b =" up to float32 rounding, and prints the largest difference, the ops and the sha256.

    .venv/bin/python models/export_modadd_onnx.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
EXPORTS = {"modadd.onnx": "modadd_tl.npz"}


def module(p: dict):
    """The torch module with the TransformerLens weights p (attention heads and a ReLU MLP per layer)."""
    import torch
    from torch import nn

    f32 = lambda a: torch.tensor(np.asarray(a, dtype=np.float32))  # noqa: E731 (the weights are float32 numbers)
    layers = sorted({int(k.split(".")[1]) for k in p if k.startswith("blocks.")})

    class ModAdd(nn.Module):
        def __init__(self):
            super().__init__()
            n = p["W_pos"].shape[0]
            self.W_E, self.W_pos, self.W_U = f32(p["W_E"]), f32(p["W_pos"]), f32(p["W_U"])
            self.zero = torch.zeros(p["W_E"].shape)
            self.w = {k: f32(v) for k, v in p.items() if k.startswith("blocks.")}
            self.mask = nn.Transformer.generate_square_subsequent_mask(n)  # 0 / -inf, float
            self.scale = float(1 / np.sqrt(p["blocks.0.attn.W_Q"].shape[-1]))

        def forward(self, x):
            h = x @ self.W_E + (x @ self.zero + self.W_pos)
            for layer in layers:
                a_, m_ = f"blocks.{layer}.attn", f"blocks.{layer}.mlp"
                out = 0
                for head in range(self.w[f"{a_}.W_Q"].shape[0]):
                    q, k, v = (h @ self.w[f"{a_}.W_{c}"][head] for c in "QKV")
                    s = q @ k.transpose(0, 1) * self.scale + self.mask
                    out = out + (torch.softmax(s, dim=-1) @ v) @ self.w[f"{a_}.W_O"][head]
                h = h + out
                h = h + torch.relu(h @ self.w[f"{m_}.W_in"] + self.w[f"{m_}.b_in"]) @ self.w[f"{m_}.W_out"] + self.w[f"{m_}.b_out"]
            return (h @ self.W_U)[-1]

    return ModAdd().eval()


def main() -> None:
    from certify.model.transformer import read_tl
    from models.export_maxofk_onnx import write_and_check  # export and onnxruntime check, shared

    for name, src in EXPORTS.items():
        p = read_tl(ROOT / "models" / src)
        V = p["W_E"].shape[0]
        write_and_check(name, p, np.array([(a, b, V - 1) for a in range(V - 1) for b in range(V - 1)]), module)


if __name__ == "__main__":
    main()
