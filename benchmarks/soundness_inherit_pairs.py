"""The dense bab soundness (or corruption) campaign with difference pairs forced on input-split trees with CROWN
leaves, so that leaves inside the root's steps write difference steps with `inherit` (and `drop`), which the plain
campaign almost never reaches (0 in the first 40 cases of seed 3915). bab's root keeps its difference pairs whatever
their gain (the pair-free CROWN proposal it compares them against is made empty) and the leaves are CROWN (ALPHA_PAYS
out of reach). Counts the difference steps the checker saw in this process (run with --workers 1: spawned workers
would not carry the patches):

    python benchmarks/soundness_inherit_pairs.py --family dense --methods bab --cases 150 --seed 3926 --json PATH
    python benchmarks/soundness_inherit_pairs.py --corruption --family dense --methods bab --cases 60 --seed 3929 --json PATH
"""
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "benchmarks"))
from certify.bounds import bab  # noqa: E402
from certify.checker import check  # noqa: E402

bab.ALPHA_PAYS = 1e9
_propose = bab.propose


def forced(net, exact_joint, box, method, *args, **kwargs):
    """The root's pair-free CROWN proposal (what the pairs are weighed against) comes back empty: the pairs always win."""
    p = _propose(net, exact_joint, box, method, *args, **kwargs)
    if not args and method == "crown" and kwargs.get("differential") is False and kwargs.get("exact_output") is False \
            and not kwargs.get("inherited"):
        return dataclasses.replace(p, empty=True)
    return p


bab.propose = forced
seen = {"inherit": 0, "drop": 0, "listed": 0, "plain": 0}
_check_difference = check.check_difference


def counted(step, state, where):
    if isinstance(step, dict) and step.get("inherit") is True:
        seen["inherit"] += 1
        seen["drop"] += len(step.get("drop", []))
        seen["listed"] += len(step.get("pairs", []))
    else:
        seen["plain"] += 1
    return _check_difference(step, state, where)


check.STEP_CHECKERS["difference"] = counted

if __name__ == "__main__":
    argv = sys.argv[1:]
    corrupt = "--corruption" in argv
    argv = [a for a in argv if a != "--corruption"]
    if corrupt:
        import corruption as campaign
    else:
        import soundness as campaign
    rc = campaign.main(argv)
    print("difference steps the checker saw in this process:", seen, flush=True)
    sys.exit(rc)
