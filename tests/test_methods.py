"""The bounding methods live in one registry (certify/bounds/methods.py) that the CLI, options, flow,
VNN-COMP runner and both engines read: no second list of method names anywhere in the package."""

import re
from pathlib import Path

from certify import engine, engine_graph, options
from certify.bounds.methods import METHODS, NAMES, SINGLE_PASS

PACKAGE = Path(engine.__file__).parent


def test_no_second_list_of_method_names():
    pattern = re.compile(r"""["']interval["'],\s*["']crown["'],\s*["']alpha["'],\s*["']lp["']""")  # the whole list
    found = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "methods.py" and pattern.search(p.read_text())]
    assert not found, f"a list of method names outside certify/bounds/methods.py: {found}"


def test_every_reader_of_methods_takes_the_registry():
    assert options.METHODS == NAMES
    assert set(engine.PLANS) == set(engine_graph.PLANS) == set(METHODS)
    assert all(engine.PLANS[m] == METHODS[m].dense and engine_graph.PLANS[m] == METHODS[m].graph for m in METHODS)
    assert set(SINGLE_PASS) == {"interval", "crown", "alpha", "lp"}
    steps = {"interval", "crown", "alpha", "lp", "bab"}
    assert all(set(m.dense) <= steps and set(m.graph) <= steps for m in METHODS.values())


def test_the_bound_driver_lives_in_bounds():
    """Bounding (certify/bounds/) proposes steps; the certificate writer only writes them out. The driver
    does not reach back into the writer, and the writer holds no bounding."""
    import ast

    writer = (PACKAGE / "certificate" / "__init__.py").read_text()
    assert "def propose" not in writer and "from ..bounds" not in writer
    for path in (PACKAGE / "bounds").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert "certificate" not in (node.module or ""), f"{path.name} imports the certificate writer"
