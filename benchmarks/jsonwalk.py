"""Walking a parsed JSON or YAML document, for the campaigns that change one random place in one
(benchmarks/corruption.py: certificates; benchmarks/spec_fuzz.py: specs)."""

from __future__ import annotations


def sites(node, path=(), skip_top=()):
    """Every place in the document: (path, value) for containers and leaves alike, the root first;
    the top-level keys in `skip_top` are left out with all below them."""
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            if not (path == () and k in skip_top):
                yield from sites(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from sites(v, path + (i,))


def get(doc, path):
    """The value at `path` (a tuple of keys and indices)."""
    for k in path:
        doc = doc[k]
    return doc
