"""The dense bab soundness family with shared-layer ReLU splits forced (SHARED_FIRST = 0: wherever f and g share a
layer with any unstable neuron and the leaves are alpha-CROWN), counting the trees that made such splits:

    python benchmarks/soundness_shared_first.py --methods bab --cases 400 --seed 2051 --json PATH
"""
import atexit
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "benchmarks"))
from certify.bounds import bab  # noqa: E402

bab.SHARED_FIRST = 0.0
made = {"splits": 0, "trees": 0}
_split, _bab = bab.shared_split, bab._branch_and_bound


def counted_split(net, node):
    s = _split(net, node)
    made["splits"] += s is not None
    return s


def counted_bab(*args, **kwargs):
    before = made["splits"]
    r = _bab(*args, **kwargs)
    made["trees"] += made["splits"] > before
    return r


bab.shared_split, bab._branch_and_bound = counted_split, counted_bab
atexit.register(lambda: print(f"shared-layer ReLU splits: {made['splits']} in {made['trees']} trees", flush=True))
import soundness  # noqa: E402

sys.exit(soundness.main(sys.argv[1:]))
