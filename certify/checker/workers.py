"""Worker processes for checking split trees in parallel (trusted path: stdlib only)."""

from __future__ import annotations

import contextlib
import sys
import types


@contextlib.contextmanager
def bare_main():
    """While workers start (spawn), an empty __main__: spawn then does not import the caller's script again in each
    (a script that imports the engine loads JAX there, about 1.7 s of CPU per worker); the workers need nothing from it."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main
