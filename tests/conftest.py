import os
from pathlib import Path

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"


@pytest.fixture
def root() -> Path:
    return ROOT


def assert_rejected(spec, tampered: dict, tmp_path, name: str) -> None:
    """A tampered certificate (a dict): the checker REJECTS it and `certify verify` exits 3."""
    import json

    from certify.checker import Verdict, check_certificate
    from certify.cli import main

    forged = tmp_path / "t.cert.json"
    forged.write_text(json.dumps(tampered))
    assert check_certificate(spec, forged).verdict is Verdict.REJECTED, f"{name} was accepted"
    assert main(["verify", str(spec), str(forged)]) == 3


def shipped_text(name: str = "tiny_prune") -> str:
    """specs/<name>.yaml's text with its `../models/` paths made absolute, so a copy works from any folder."""
    return (SPECS / f"{name}.yaml").read_text().replace("../models/", str(ROOT / "models") + "/")


def shipped_copy(directory: Path, name: str = "tiny_prune", tolerance: str | None = None, file: str = "spec.yaml") -> Path:
    """A copy of specs/<name>.yaml in `directory` (models read from the repository), at `tolerance` when given
    (the spec's one `tolerance:` line replaced; a spec without one is an error, not a silent no-op)."""
    text = shipped_text(name)
    if tolerance is not None:
        lines = [i for i, line in enumerate(text.splitlines()) if line.strip().startswith("tolerance:")]
        assert len(lines) == 1, f"specs/{name}.yaml has {len(lines)} tolerance lines"
        rows = text.splitlines(keepends=True)
        indent = rows[lines[0]][:len(rows[lines[0]]) - len(rows[lines[0]].lstrip())]
        rows[lines[0]] = f'{indent}tolerance: "{tolerance}"\n'
        text = "".join(rows)
    path = directory / file
    path.write_text(text)
    return path
