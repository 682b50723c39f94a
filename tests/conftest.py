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
