"""Export the shipped residual MLP (models/resmlp.npz) as ONNX, the way a PyTorch user would.

An `nn.Module` (embed, two residual blocks h + down(GELU(up(LayerNorm(h)))), LayerNorm, unembed)
carries resmlp.npz's weights rounded to float32 (a float32 module, as PyTorch users have; onnxruntime
has no float64 Erf) and is exported with `torch.onnx.export` (TorchScript exporter) three ways:

    models/resmlp.onnx          opset 20: LayerNormalization and Gelu nodes
    models/resmlp_opset17.onnx  opset 17: LayerNormalization; GELU as Div, Erf, Add, Mul, Mul
    models/resmlp_opset14.onnx  opset 14: LayerNorm decomposed (ReduceMean, Sub, Pow, ReduceMean, Add,
                                Sqrt, Div, Mul, Add) and GELU as above

Value names are torch's: the residual stream after block 1 is `/block1/Add_output_0` (a spec's
SAE `site`), the input `x`, the output `logits`. The script checks with onnxruntime that each file
computes resmlp.npz's logits (certify.model.graph.evaluate, float64) on 200 digits images up to
float32 rounding, and prints the largest difference and the files' sha256. Needs torch and onnx (`make bench-deps`); tests use the shipped files, not torch.

    .venv/bin/python models/export_resmlp_onnx.py
"""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
EXPORTS = {"resmlp.onnx": 20, "resmlp_opset17.onnx": 17, "resmlp_opset14.onnx": 14}


def npz_weights(path: Path) -> dict:
    from certify.checker.graph import read_graph

    g = read_graph(path)
    arr = lambda v: np.array([[float(t) for t in r] for r in v] if isinstance(v[0], tuple) else [float(t) for t in v])
    return {n.name: {k: arr(getattr(n, k)) for k in ("weight", "bias", "scale", "shift") if getattr(n, k) is not None} for n in g.nodes}


def module(w: dict):
    """The torch module with the npz graph's weights (linear nodes' weight/bias, LayerNorms' scale/shift)."""
    import torch
    from torch import nn

    def linear(name):
        lin = nn.Linear(w[name]["weight"].shape[1], w[name]["weight"].shape[0])
        lin.weight.data, lin.bias.data = torch.tensor(w[name]["weight"]), torch.tensor(w[name]["bias"])
        return lin

    def layernorm(name):
        ln = nn.LayerNorm(len(w[name]["scale"]), eps=1e-5)
        ln.weight.data, ln.bias.data = torch.tensor(w[name]["scale"]), torch.tensor(w[name]["shift"])
        return ln

    class Block(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.ln, self.up, self.gelu, self.down = layernorm(f"block{k}.ln"), linear(f"block{k}.up"), nn.GELU(), linear(f"block{k}.down")

        def forward(self, h):
            return h + self.down(self.gelu(self.up(self.ln(h))))

    class ResMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.block1, self.block2 = linear("embed"), Block(1), Block(2)
            self.ln_f, self.unembed = layernorm("ln_f"), linear("logits")

        def forward(self, x):
            return self.unembed(self.ln_f(self.block2(self.block1(self.embed(x)))))

    return ResMLP().float().eval()


def main() -> int:
    import onnxruntime as ort
    import torch
    from sklearn.datasets import load_digits

    from certify.model.graph import evaluate

    npz = ROOT / "models" / "resmlp.npz"
    m = module(npz_weights(npz))
    x = load_digits().data[:200] / 16.0
    ref = evaluate(npz, x)
    with torch.no_grad():
        assert np.abs(m(torch.tensor(x, dtype=torch.float32)).numpy() - ref).max() < 1e-3, "the torch module differs from resmlp.npz"
    for name, opset in EXPORTS.items():
        buf = io.BytesIO()
        torch.onnx.export(m, (torch.zeros(1, 64),), buf, dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["logits"], do_constant_folding=True)
        data = buf.getvalue()
        (ROOT / "models" / name).write_bytes(data)
        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        got = np.concatenate([sess.run(None, {"x": row[None].astype(np.float32)})[0] for row in x])
        err = float(np.abs(got - ref).max())
        assert err < 1e-3, f"{name}: onnxruntime differs from resmlp.npz by {err}"
        print(f"{name}: opset {opset}, {len(data)} bytes, max |onnxruntime - npz| = {err:.2e} on 200 digits, "
              f"sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
