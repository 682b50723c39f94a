"""The dense bab soundness family with every input-split tree on CROWN leaves (ALPHA_PAYS = inf), so every
split tree inherits its root's steps and carries sparse steps (issue 19)."""
import sys
sys.path.insert(0, "/work/main"); sys.path.insert(0, "/work/main/benchmarks")
from certify.bounds import bab
bab.ALPHA_PAYS = float("inf")
import soundness
sys.exit(soundness.main(sys.argv[1:]))
