"""Pinning an explanation's float arrays in its spec (`certify pin SPEC`).

A truncated SVD (`low_rank`), principal components (`pca`) and k-means labels (`merge` with
`groups: N`) need floating point, so the checker cannot re-derive them. Pinned, the spec names them
by path and sha256, like its model: `arrays: {path: pinned/x.npz, sha256: "..."}`, and g is exactly
what the spec says. Unpinned, g's float parts are the arrays that travel with the certificate, and
every output says so. `certify pin` computes the arrays once, writes one `.npz` per transform and
rewrites the spec text in place (comments and layout kept), so that the next certificate is about a
g the spec defines.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .checker.errors import BadInput
from .checker.model import read_model, sha256_file
from .checker.network import FLOAT_ARRAYS
from .checker.spec import compose, read_spec


@dataclass(frozen=True)
class Pinned:
    key: str  # the transform's spec key, e.g. "levels[2].explanation[0].pca"
    path: Path  # the arrays file
    sha256: str

    def entry(self, spec_dir: Path) -> str:
        """The `arrays:` entry to add to the transform, with its path relative to the spec's folder."""
        return f'arrays: {{path: {os.path.relpath(self.path, spec_dir)}, sha256: "{self.sha256}"}}'


def by_transform(spec, materialized: dict) -> dict:
    """The unpinned float transforms of `spec` (one explanation: no levels, or a level chosen), each with
    its arrays by plain name, from `materialized` (`explanation.<i>.<name>` -> array, as `materialize` gives)."""
    out = {}
    for key, t in spec.unpinned():
        index = key.rsplit("[", 1)[1].split("]")[0]
        out[key] = {name: materialized[f"explanation.{index}.{name}"] for name in FLOAT_ARRAYS[t.kind]}
    return out


def compute_arrays(spec, f) -> dict:
    """spec key of each unpinned float transform (every level) -> its arrays by plain name (U, V / P, mean /
    labels). (The engine's float numerics are imported here: `verify --strict` imports neither JAX nor numpy.)"""
    from .explain import materialize

    out: dict = {}
    for s in [spec.at_level(lv.name) for lv in spec.levels] if spec.levels and spec.level is None else [spec]:
        out.update(by_transform(s, materialize(s, f)))
    return out


def write_arrays(spec, per_transform: dict, directory: Path) -> list[Pinned]:
    """Write one `.npz` per transform into `directory`: <spec stem>[.<level>].<index>.<kind>.npz."""
    from .model import save_arrays

    written = []
    for key, arrays in per_transform.items():
        level = ""
        if key.startswith("levels["):
            level = "." + spec.levels[int(key[len("levels["):key.index("]")])].name
        index, kind = key.rsplit("[", 1)[1].split("].")
        path = directory / f"{spec.path.stem}{level}.{index}.{kind}.npz"
        save_arrays(path, arrays)
        written.append(Pinned(key, path.resolve(), sha256_file(path)))
    return written


def _transform_body(root, key: str):
    """The YAML mapping node of the transform at `key` (e.g. `levels[1].explanation[0].pca`)."""
    node = root
    for part in key.replace("]", "").replace("[", ".").split("."):
        if part.isdigit():
            node = node.value[int(part)]
        else:
            node = next(v for k, v in node.value if k.value == part)
    return node


def rewrite(text: str, root, pins: list[Pinned], spec_dir: Path) -> str:
    """The spec text with an `arrays:` entry added to each pinned transform (last edit first)."""
    edits = []
    for pin in pins:
        body = _transform_body(root, pin.key)
        entry = pin.entry(spec_dir)
        if body.flow_style:  # {layer: 2, rank: 16} -> {layer: 2, rank: 16, arrays: {...}}
            close = text.rindex("}", 0, body.end_mark.index)
            edits.append((close, f", {entry}"))
        else:  # a block mapping: a new line under its first key
            last = body.value[-1][1]
            indent = body.value[0][0].start_mark.column
            edits.append((last.end_mark.index, "\n" + " " * indent + entry))
    for at, insert in sorted(edits, reverse=True):
        text = text[:at] + insert + text[at:]
    return text


def pin_spec(spec_path: str | Path, directory: str | Path | None = None) -> list[Pinned]:
    """Compute and write the unpinned float arrays of a spec and add `arrays:` entries to it (atomically).
    Returns what was pinned (empty if nothing needed pinning)."""
    spec_path = Path(spec_path)
    spec = read_spec(spec_path)
    if not spec.unpinned():
        return []
    f = read_model(spec.model.path, spec.model.sha256)
    folder = Path(directory) if directory is not None else spec_path.parent / "pinned"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(str(folder), "", f"cannot create the folder ({exc.strerror})", "give a writable folder with --dir") from None
    pins = write_arrays(spec, compute_arrays(spec, f), folder)
    raw, root = compose(spec_path)
    text = rewrite(raw.decode("utf-8"), root, pins, spec_path.resolve().parent)
    fd, tmp = tempfile.mkstemp(dir=spec_path.parent, prefix=f".{spec_path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    try:
        again = read_spec(tmp)  # the rewritten spec must parse, and pin everything
        assert not again.unpinned(), again.unpinned()
        os.replace(tmp, spec_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return pins


def cmd_pin(args) -> int:
    pins = pin_spec(args.spec, args.dir)
    if not pins:
        print(f"certify pin {args.spec}: every float array is already pinned (or the explanation has none)")
        return 0
    print(f"certify pin {args.spec}: pinned {len(pins)} transform(s); the spec now defines g's float arrays")
    for p in pins:
        print(f"  {p.key:<36} {os.path.relpath(p.path)}  sha256 {p.sha256[:16]}...")
    print("  re-run `certify check` (the spec's sha256 changed, so earlier certificates no longer match it)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("pin", help="pin an explanation's float arrays (SVD, PCA, k-means) in its spec by path and sha256")
    p.add_argument("spec")
    p.add_argument("--dir", help="where to write the arrays (default: pinned/ beside the spec)")
    p.set_defaults(func=cmd_pin)


def refuse_unpinned(spec) -> None:
    """`--strict`: bad input (exit 2) if any float array of g is not pinned by the spec."""
    loose = spec.unpinned()
    if loose:
        key, t = loose[0]
        more = f" (and {len(loose) - 1} more)" if len(loose) > 1 else ""
        raise BadInput(str(spec.path), key, f"g's float arrays ({', '.join(FLOAT_ARRAYS[t.kind])}) are not pinned by the spec{more}; "
                       "--strict refuses them", f"run `certify pin {spec.path}` and commit the spec and its arrays", t.line)
