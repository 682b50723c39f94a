"""Where result files go, and writing them atomically: never a half-written certificate, array file or report."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def certificate_path(spec, out_dir: str | Path = "proofs") -> Path:
    """The one rule for a certificate's default place: OUT_DIR/<spec file stem>.cert.json, and
    OUT_DIR/<spec file stem>.<level>.cert.json for a spec at one of its levels (`Spec.name`)."""
    return Path(out_dir) / f"{spec.name}.cert.json"


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w"):
    """A file handle on a temporary file beside `path`, renamed onto `path` only if the block
    finishes; on any error the temporary file is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
