"""JAX is imported only where it is used, and always computes in float64 (certify/bounds/network.py): a Ray worker
that bounds CROWN leaves imports branch and bound without JAX (~1.3 s of its start-up), and JAX imported before or
after certify runs in float64 either way."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import ROOT


def _run(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_branch_and_bound_and_crown_leaves_do_not_import_jax():
    code = ("import sys, numpy as np\n"
            "from certify.bounds import bab, driver\n"
            "from certify.bounds.linear import relax_relu, backsubstitute, crown_layer\n"
            "from certify.bounds.network import FloatNet\n"
            "net = FloatNet((np.array([[1.0, -1.0], [0.5, 2.0]]), np.array([[1.0, 1.0]])), (np.zeros(2), np.zeros(1)))\n"
            "lo, up = crown_layer(net, 2, [relax_relu(np.array([-1.0, -2.0]), np.array([2.0, 3.0]))], -np.ones(2), np.ones(2))\n"
            "print('jax' in sys.modules, type(lo).__module__)")
    assert _run(code) == "False numpy"


@pytest.mark.parametrize("first", ["jax", "certify"])
def test_jax_computes_in_float64_whichever_is_imported_first(first):
    imports = ["import jax.numpy as jnp", "import certify.bounds.network"]
    code = "\n".join(imports if first == "jax" else imports[::-1]) + "\nimport jax.numpy as jnp\nprint(jnp.zeros(1).dtype)"
    assert _run(code) == "float64"
