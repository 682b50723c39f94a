"""Malformed inputs through the real CLI: every one must end in exit 2 and ONE line on stderr.

Each case builds a broken spec, model or data file in `tmp_path` (starting from
specs/tiny_prune.yaml and a copy of models/tiny_mlp.npz), runs `certify check` in-process via
`certify.cli.main`, and asserts: exit code 2, stderr is exactly one non-empty line starting with
`error: `, naming the file at fault (and, for spec errors, `FILE:LINE:` and the key path), no
traceback, nothing on stdout, and no file written in the certificate's output directory.

A few cases run as subprocesses to show that no traceback reaches a real terminal. Cases that
exposed a bug in certify (now fixed) are kept as regressions, with the bug in their reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from certify.cli import main

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "tiny_mlp.npz"
TINY_SPEC = ROOT / "specs" / "tiny_prune.yaml"
SPEC = "spec.yaml"  # every generated spec has this name


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def base_text() -> str:
    """specs/tiny_prune.yaml with the model path pointing at the copy in tmp_path."""
    text = TINY_SPEC.read_text()
    assert "../models/tiny_mlp.npz" in text
    return text.replace("../models/tiny_mlp.npz", "tiny_mlp.npz")


BASE_SHA = re.search(r'sha256: "([0-9a-f]{64})"', base_text()).group(1)
MODEL_FIELD = f'path: tiny_mlp.npz, sha256: "{BASE_SHA}"'
PRUNE = "- prune: {layer: 1, keep: [0, 2, 4, 6], fill: zero}"
BOX = "box: {lower: -1, upper: 1}"
TOL = "tolerance: 3"


def edit(text: str, *pairs: tuple[str, str]) -> str:
    for old, new in pairs:
        assert old in text, f"test bug: {old!r} not in the base spec"
        text = text.replace(old, new, 1)
    return text


def write_spec(tmp: Path, text: str | bytes) -> Path:
    path = tmp / SPEC
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def use_model(text: str, tmp: Path, name: str, field: str = MODEL_FIELD) -> str:
    """Point the spec's model (or `field`) at tmp/name with its true sha256."""
    return edit(text, (field, f'path: {name}, sha256: "{sha256(tmp / name)}"'))


# ----------------------------------------------------------------------------- builders


def spec(*pairs: tuple[str, str]) -> Callable[[Path], Path]:
    """The base spec with textual replacements."""
    return lambda tmp: write_spec(tmp, edit(base_text(), *pairs))


def raw(content: str | bytes) -> Callable[[Path], Path]:
    """A spec file with exactly this content."""
    return lambda tmp: write_spec(tmp, content)


def tiny_arrays() -> dict[str, np.ndarray]:
    with np.load(MODEL) as z:
        return {k: z[k] for k in z.files}


def layers_of(arrays) -> list[dict]:
    return json.loads(str(arrays["__layers__"]))


def bad_model(name: str, mutate: Callable[[dict], None], compressed: bool = False) -> Callable[[Path], Path]:
    """The tiny model's arrays, mutated, saved as tmp/name; the spec names it with its true sha256."""

    def build(tmp: Path) -> Path:
        arrays = tiny_arrays()
        mutate(arrays)
        with open(tmp / name, "wb") as fh:
            (np.savez_compressed if compressed else np.savez)(fh, **arrays)
        return write_spec(tmp, use_model(base_text(), tmp, name))

    return build


def model_bytes(name: str, make: Callable[[bytes], bytes]) -> Callable[[Path], Path]:
    """A model file whose bytes are make(tiny_mlp.npz bytes); the spec carries its true sha256."""

    def build(tmp: Path) -> Path:
        (tmp / name).write_bytes(make(MODEL.read_bytes()))
        return write_spec(tmp, use_model(base_text(), tmp, name))

    return build


def center_file(name: str, make: Callable[[Path], None]) -> Callable[[Path], Path]:
    """An L-inf ball around the centre stored in tmp/name (written by make)."""

    def build(tmp: Path) -> Path:
        make(tmp / name)
        return write_spec(tmp, edit(base_text(), (BOX, f'linf_ball: {{center: {name}, radius: "1/10"}}')))

    return build


def set_array(key, value):
    def mutate(arrays):
        arrays[key] = value(arrays[key]) if callable(value) else value
    return mutate


def with_value(key, index, value):
    def mutate(arrays):
        a = arrays[key].copy()
        a[index] = value
        arrays[key] = a
    return mutate


def set_layers(change: Callable[[list], object]):
    def mutate(arrays):
        layers = layers_of(arrays)
        out = change(layers)
        arrays["__layers__"] = np.array(out if isinstance(out, str) else json.dumps(layers if out is None else out))
    return mutate


def truncated_model(tmp: Path) -> Path:
    data = MODEL.read_bytes()
    (tmp / "truncated.npz").write_bytes(data[: len(data) // 2])
    return write_spec(tmp, use_model(base_text(), tmp, "truncated.npz"))


def corrupt_deflate(tmp: Path) -> Path:
    """A compressed .npz whose first deflate block of W1.npy has the reserved block type 11."""
    import struct
    import zipfile

    path = tmp / "bad_deflate.npz"
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **tiny_arrays())
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        offset = zf.getinfo("W1.npy").header_offset
    n, e = struct.unpack("<HH", data[offset + 26: offset + 30])
    data[offset + 30 + n + e] = 0xFF  # BFINAL=1, BTYPE=11 (reserved): zlib "invalid block type"
    path.write_bytes(bytes(data))
    return write_spec(tmp, use_model(base_text(), tmp, path.name))


def mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def second_model(widths: tuple[int, ...], name: str = "wide.npz", sha: str | None = None) -> Callable[[Path], Path]:
    """Explanation `- model:` pointing at a fresh MLP with these layer widths."""

    def build(tmp: Path) -> Path:
        from certify.model import save_model

        rng = np.random.default_rng(0)
        ws = [rng.normal(size=(b, a)) for a, b in zip(widths[:-1], widths[1:])]
        digest = save_model(tmp / name, ws, [np.zeros(w.shape[0]) for w in ws])
        entry = f'- model: {{path: {name}, sha256: "{sha or digest}"}}'
        return write_spec(tmp, edit(base_text(), (PRUNE, entry)))

    return build


# ----------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    build: Callable[[Path], Path]
    file: str = SPEC  # name of the file at fault: stderr must contain it
    key: str | None = None  # for spec errors: stderr must contain `: KEY: `
    line: bool = False  # stderr must contain `FILE:LINE: `
    also: tuple[str, ...] = ()  # further substrings stderr must contain
    forbid: tuple[str, ...] = ()  # substrings stderr must not contain


def S(build, key, *also, line=True, forbid=()):
    """A spec error: names spec.yaml, a line and the key path."""
    return Case(build, SPEC, key, line, tuple(also), tuple(forbid))


def F(build, file, *also, key=None, forbid=()):
    """An error in another file (model, .npy), or one with no key path."""
    return Case(build, file, key, False, tuple(also), tuple(forbid))


def bug(case: Case, reason: str, id: str):
    """A case that once exposed a bug (fixed); the reason stays as the regression's documentation."""
    return pytest.param(case, id=id)


LOW_RANK = "- low_rank: {layer: 2, rank: 3}"

CASES = [
    # --- structure
    pytest.param(S(spec(("version: 1\n", "version: 1\ncolour: red\n")), "colour", "unknown key"), id="unknown-top-level-key"),
    pytest.param(S(spec((BOX, "box: {lower: -1, upper: 1, middle: 0}")), "input.box.middle", "unknown key"), id="unknown-nested-key"),
    pytest.param(S(spec(("deviation: linf\n", "deviation: linf\n  deviation: linf\n")), "property.deviation", "duplicate"), id="duplicate-nested-key"),
    pytest.param(S(spec(("version: 1\n", "version: 1\nversion: 1\n")), "version", "duplicate"), id="duplicate-top-level-key"),
    pytest.param(S(spec(("version: 1\n", "")), "version", "missing"), id="missing-version"),
    pytest.param(S(spec((f"model: {{{MODEL_FIELD}}}\n", "")), "model", "missing"), id="missing-model"),
    pytest.param(S(spec((f"input:\n  {BOX}\n", "")), "input", "missing"), id="missing-input"),
    pytest.param(S(spec((f"explanation:\n  {PRUNE}\n", "")), "explanation", "missing"), id="missing-explanation"),
    pytest.param(S(spec(("property:\n  deviation: linf\n  tolerance: 3\n", "")), "property", "missing"), id="missing-property"),
    pytest.param(S(spec(("deviation: linf\n", "")), "property.deviation", "missing"), id="missing-nested-deviation"),
    pytest.param(S(spec(("version: 1", "version: 2")), "version", "version"), id="wrong-version"),
    pytest.param(S(spec(("version: 1", 'version: "1"')), "version", "integer"), id="version-quoted-string"),
    pytest.param(S(spec((f"input:\n  {BOX}", "input: [-1, 1]")), "input", "mapping"), id="input-is-list"),
    # --- numbers
    pytest.param(S(spec((TOL, "tolerance: nan")), "property.tolerance", "exact number"), id="tolerance-nan"),
    pytest.param(S(spec((TOL, "tolerance: .nan")), "property.tolerance", "exact number"), id="tolerance-dot-nan"),
    pytest.param(S(spec((TOL, "tolerance: .inf")), "property.tolerance", "exact number"), id="tolerance-dot-inf"),
    pytest.param(S(spec((TOL, 'tolerance: "1/0"')), "property.tolerance", "exact number"), id="tolerance-one-over-zero"),
    pytest.param(S(spec((TOL, "tolerance: abc")), "property.tolerance", "exact number"), id="tolerance-abc"),
    pytest.param(S(spec((TOL, "tolerance: true")), "property.tolerance", "exact number"), id="tolerance-true"),
    pytest.param(S(spec((TOL, "tolerance:")), "property.tolerance", "exact number"), id="tolerance-null"),
    pytest.param(S(spec((TOL, "tolerance: [1, 2]")), "property.tolerance", "number"), id="tolerance-list"),
    pytest.param(S(spec((TOL, "tolerance: {value: 1}")), "property.tolerance", "number"), id="tolerance-mapping"),
    pytest.param(S(spec((TOL, "tolerance: -1")), "property.tolerance", "negative"), id="negative-tolerance"),
    pytest.param(S(spec((BOX, "box: {lower: [-1, -1, .nan, -1], upper: 1}")), "input.box.lower[2]", "exact number"), id="box-lower-nan-entry"),
    pytest.param(S(spec((BOX, "box: {lower: -1, upper: []}")), "input.box.upper", "empty list"), id="box-upper-empty-list"),
    pytest.param(S(spec((BOX, "linf_ball: {center: 0, radius: -0.1}")), "input.linf_ball.radius", "negative"), id="negative-radius"),
    pytest.param(S(spec((BOX, "linf_ball: {center: 0, radius: [1]}")), "input.linf_ball.radius", "number"), id="radius-list"),
    # --- input domain
    pytest.param(S(spec((BOX, f"{BOX}\n  linf_ball: {{center: 0, radius: 1}}")), "input", "exactly one"), id="box-and-linf-ball"),
    pytest.param(S(spec((BOX, "clip: [0, 1]")), "input", "exactly one"), id="neither-box-nor-linf-ball"),
    pytest.param(S(spec((BOX, f"{BOX}\n  clip: [0, 1, 2]")), "input.clip", "[low, high]"), id="clip-three-entries"),
    pytest.param(S(spec((BOX, f"{BOX}\n  clip: [1, 0]")), "input.clip", "low > high"), id="clip-low-above-high"),
    pytest.param(S(spec((BOX, "box: {lower: 1, upper: -1}")), "input", "empty"), id="empty-domain-lower-above-upper"),
    pytest.param(S(spec((BOX, 'box: {lower: -1, upper: "-1/2"}\n  clip: [0, 1]')), "input", "empty"), id="empty-domain-after-clip"),
    pytest.param(S(spec((BOX, "box: {lower: [0, 0, 0], upper: 1}")), "input.box.lower", "3 entries", "4 inputs"), id="input-vector-wrong-length"),
    pytest.param(S(spec((BOX, "linf_ball: {center: [0, 0, 0, 0, 0], radius: 1}")), "input.linf_ball.center", "5 entries"), id="center-vector-wrong-length"),
    # --- hashes and files named by the spec
    pytest.param(F(spec((BASE_SHA, "0" * 64)), "tiny_mlp.npz", "mismatch", key="model.sha256"), id="sha256-wrong"),
    pytest.param(S(spec((BASE_SHA, BASE_SHA[:40])), "model.sha256", "sha256"), id="sha256-too-short"),
    pytest.param(S(spec((BASE_SHA, BASE_SHA.upper())), "model.sha256", "lowercase"), id="sha256-uppercase"),
    pytest.param(S(spec((BASE_SHA, "z" * 64)), "model.sha256", "sha256"), id="sha256-not-hex"),
    pytest.param(S(spec(("path: tiny_mlp.npz", "path: nope.npz")), "model.path", "nope.npz", "not found"), id="model-file-missing"),
    pytest.param(S(spec(("path: tiny_mlp.npz", "path: .")), "model.path", "not found"), id="model-path-is-directory"),
    pytest.param(S(spec((BOX, "linf_ball: {center: nope.npy, radius: 1}")), "input.linf_ball.center", "nope.npy", "not found"), id="center-npy-missing"),
    # --- explanation
    pytest.param(Case(spec((PRUNE, "- prune: {layer: 3, keep: [0], fill: zero}")), SPEC, None, True, ("explanation[0]", "layer 3 does not exist")), id="prune-layer-out-of-range"),
    pytest.param(S(spec((PRUNE, "- prune: {layer: 0, keep: [0], fill: zero}")), "explanation[0].prune.layer", "below 1"), id="prune-layer-zero"),
    pytest.param(S(spec((PRUNE, "- prune: {layer: 1, keep: [0, 8], fill: zero}")), "explanation[0].prune.keep", "[8]"), id="prune-keep-out-of-range"),
    pytest.param(S(spec((PRUNE, "- prune: {layer: 1, keep: [0, 2, 2], fill: zero}")), "explanation[0].prune.keep", "twice"), id="prune-keep-duplicate"),
    pytest.param(S(spec((PRUNE, "- prune: {layer: 1, keep: [-1], fill: zero}")), "explanation[0].prune.keep[0]", "below 0"), id="prune-keep-negative"),
    pytest.param(S(spec((PRUNE, "- prune: {layer: 1, keep: 0, fill: zero}")), "explanation[0].prune.keep", "list"), id="prune-keep-not-list"),
    pytest.param(S(spec((PRUNE, "- low_rank: {layer: 1, rank: 5}")), "explanation[0].low_rank.rank", "exceeds"), id="low-rank-rank-too-large"),
    pytest.param(S(spec((PRUNE, "- low_rank: {layer: 0, rank: 1}")), "explanation[0].low_rank.layer", "below 1"), id="low-rank-layer-zero"),
    pytest.param(Case(spec((PRUNE, "- low_rank: {layer: 4, rank: 1}")), SPEC, None, True, ("explanation[0]", "layer 4 does not exist")), id="low-rank-layer-out-of-range"),
    pytest.param(S(spec((PRUNE, "- prune: {layer: 1, keep: [0, 2, 4, 6], fill: {constant: [1, 2]}}")), "explanation[0].prune.fill.constant", "2 values for 4"), id="fill-constant-wrong-length"),
    pytest.param(S(spec((PRUNE, "- prune: {layer: 1, keep: [0, 2, 4, 6], fill: ones}")), "explanation[0].prune.fill", "'ones'"), id="fill-unknown-name"),
    pytest.param(S(spec((PRUNE, "- prune: {layer: 1, keep: [0], fill: {constant: 1, mean: {}}}")), "explanation[0].prune.fill", "one fill"), id="fill-two-kinds"),
    pytest.param(S(spec((PRUNE, "- prune: {layer: 1, keep: [0], fill: {constant: .inf}}")), "explanation[0].prune.fill.constant", "exact number"), id="fill-constant-inf"),
    pytest.param(Case(spec((PRUNE, "- prune: {layer: 3, keep: [0], fill: free}")), SPEC, None, True, ("explanation[0]", "layer 3 does not exist")), id="fill-free-output-layer"),
    pytest.param(S(spec((PRUNE, "- prune: {layer: 1, keep: [0], fill: free}\n  - prune: {layer: 2, keep: [0], fill: zero}")),
                   "explanation[0].prune.fill", "last transform"), id="fill-free-not-last"),
    pytest.param(S(spec((PRUNE, "- prune: {layer: 1, keep: [0], fill: free}"), (TOL, f"{TOL}\n  semantics: float32")),
                   "property.semantics", "fill: free"), id="fill-free-float32"),
    pytest.param(S(spec((PRUNE, "- distill: {layers: [1, 2]}")), "explanation[0].distill", "unknown key"), id="unknown-transform"),
    pytest.param(S(spec((PRUNE, "- {prune: {layer: 1, keep: [0]}, low_rank: {layer: 1, rank: 1}}")), "explanation[0]", "one transform"), id="two-transforms-in-one-entry"),
    pytest.param(S(spec((f"explanation:\n  {PRUNE}", "explanation: []")), "explanation", "empty"), id="empty-explanation"),
    pytest.param(S(spec((f"explanation:\n  {PRUNE}", "explanation: {prune: {layer: 1, keep: [0]}}")), "explanation", "list"), id="explanation-not-list"),
    pytest.param(F(second_model((4, 16, 8, 3)), SPEC, "architecture", key="explanation[0].model"), id="second-model-different-widths"),
    pytest.param(F(second_model((4, 8, 8, 3), sha="1" * 64), "wide.npz", "mismatch", key="explanation[0].model.sha256"), id="second-model-wrong-sha256"),
    # --- scale-aware transforms (tiny model: hidden layers 1 and 2 have 8 neurons) and levels
    pytest.param(S(spec((PRUNE, "- merge: {layer: 1, groups: 9}")), "explanation[0].merge.groups", "9 groups", "at most 8"), id="merge-more-groups-than-neurons"),
    pytest.param(S(spec((PRUNE, "- merge: {layer: 1, groups: [[0, 1], [1, 2, 3, 4, 5, 6, 7]]}")), "explanation[0].merge.groups", "[1]", "more than one group"), id="merge-groups-overlap"),
    pytest.param(S(spec((PRUNE, "- merge: {layer: 1, groups: [[0, 1, 2, 3, 4, 5, 6, 7], []]}")), "explanation[0].merge.groups", "empty group"), id="merge-empty-group"),
    pytest.param(S(spec((PRUNE, "- merge: {layer: 1, groups: [[0, 1], [2, 3]]}")), "explanation[0].merge.groups", "not a partition", "missing [4, 5, 6, 7]"), id="merge-groups-incomplete"),
    pytest.param(S(spec((PRUNE, "- merge: {layer: 2, groups: [[0, 1, 2, 3, 4, 5, 6, 7, 8]]}")), "explanation[0].merge.groups", "unknown [8]"), id="merge-unknown-neuron"),
    pytest.param(S(spec((PRUNE, "- merge: {layer: 3, groups: 2}")), "explanation[0].merge.layer", "layer 3 does not exist", "hidden layer"), id="merge-output-layer"),
    pytest.param(S(spec((PRUNE, "- merge: {layer: 1, groups: 0}")), "explanation[0].merge.groups", "below 1"), id="merge-zero-groups"),
    pytest.param(S(spec((PRUNE, "- merge: {layer: 1, groups: [[0, 1, 2, 3, 4, 5, 6, 7]], seed: 1}")), "explanation[0].merge.seed", "only applies"), id="merge-seed-with-explicit-groups"),
    pytest.param(S(spec((PRUNE, "- pca: {layer: 2, components: 9}")), "explanation[0].pca.components", "exceed", "8 neurons"), id="pca-more-components-than-neurons"),
    pytest.param(S(spec((PRUNE, "- pca: {layer: 1, components: 2, keep: [0]}")), "explanation[0].pca", "exactly one of components or keep"), id="pca-components-and-keep"),
    pytest.param(S(spec((PRUNE, "- pca: {layer: 1, components: 0}")), "explanation[0].pca.components", "below 1"), id="pca-zero-components"),
    pytest.param(S(spec((PRUNE, "- pca: {layer: 1, keep: [0, 0]}")), "explanation[0].pca.keep", "twice"), id="pca-keep-repeated"),
    pytest.param(S(spec((PRUNE, "- pca: {layer: 3, components: 1}")), "explanation[0].pca.layer", "layer 3 does not exist"), id="pca-output-layer"),
    pytest.param(S(spec((PRUNE, "- quantize: {layer: 1, bits: 1}")), "explanation[0].quantize.bits", "below 2"), id="quantize-one-bit"),
    pytest.param(S(spec((PRUNE, "- quantize: {layer: 4, bits: 8}")), "explanation[0].quantize.layer", "layer 4 does not exist"), id="quantize-unknown-layer"),
    pytest.param(S(spec((PRUNE, "- low_rank: {layer: 2, keep: [0, 9]}")), "explanation[0].low_rank.keep", "singular directions"), id="low-rank-keep-out-of-range"),
    pytest.param(S(spec((PRUNE, "- ablate: {layer: 1, keep: [0, 9]}")), "explanation[0].ablate.keep", "[9]"), id="ablate-keep-out-of-range"),
    pytest.param(S(spec((TOL, f"{TOL}\nlevels: [{{name: a, explanation: [{PRUNE[2:]}]}}]")), "levels", "not both"), id="levels-and-explanation"),
    pytest.param(S(spec((f"explanation:\n  {PRUNE}", "levels: []")), "levels", "no levels"), id="levels-empty"),
    pytest.param(S(spec((f"explanation:\n  {PRUNE}", "levels:\n  - {name: a, explanation: [{merge: {layer: 1, groups: 2}}]}\n  - {name: a, explanation: [{merge: {layer: 1, groups: 3}}]}")), "levels[1].name", "named twice"), id="levels-duplicate-name"),
    pytest.param(S(spec((f"explanation:\n  {PRUNE}", "levels: [{name: a b, explanation: [{merge: {layer: 1, groups: 2}}]}]")), "levels[0].name", "not a level name"), id="levels-bad-name"),
    pytest.param(S(spec((f"explanation:\n  {PRUNE}", "levels: [{name: a, explanation: []}]")), "levels[0].explanation", "empty"), id="level-empty-explanation"),
    pytest.param(S(spec((f"explanation:\n  {PRUNE}", "levels: [{name: a, explanation: [{merge: {layer: 1, groups: 2}}]}, {name: b, explanation: [{merge: {layer: 1, groups: 20}}]}]")), "levels[1].explanation[0].merge.groups", "20 groups"), id="level-impossible-parameter"),
    # --- property and options
    pytest.param(S(spec(("deviation: linf\n", "deviation: linf\n  outputs: [0, 0]\n")), "property.outputs", "repeated"), id="outputs-index-repeated"),
    pytest.param(S(spec(("deviation: linf\n", "deviation: linf\n  outputs: []\n")), "property.outputs", "empty"), id="outputs-empty"),
    pytest.param(S(spec(("deviation: linf", "deviation: l2")), "property.deviation", "'l2'"), id="deviation-unknown"),
    pytest.param(S(spec((TOL, f"{TOL}\noptions: {{method: exact}}")), "options.method", "'exact'"), id="method-unknown"),
    pytest.param(S(spec((TOL, f"{TOL}\noptions: {{timeout_s: 0}}")), "options.timeout_s", "not positive"), id="options-timeout-zero"),
    pytest.param(S(spec((TOL, f"{TOL}\noptions: {{falsifier: {{starts: 0}}}}")), "options.falsifier.starts", "below 1"), id="falsifier-starts-zero"),
    # --- the spec file itself
    pytest.param(F(raw("version: [1\nmodel: {path: x\n"), SPEC, "not valid YAML"), id="not-yaml"),
    pytest.param(F(raw("version: 1\n\tmodel: x\n"), SPEC, "not valid YAML"), id="not-yaml-tab-indent"),
    pytest.param(F(raw(""), SPEC, "empty"), id="empty-file"),
    pytest.param(F(raw("# only a comment\n"), SPEC, "empty"), id="comment-only-file"),
    pytest.param(F(raw(bytes(range(128, 256)) * 4), SPEC, "not valid YAML"), id="binary-garbage"),
    pytest.param(F(lambda tmp: tmp / "no_such_spec.yaml", "no_such_spec.yaml", "not found"), id="spec-file-missing"),
    pytest.param(F(lambda tmp: mkdir(tmp / "dir.yaml"), "dir.yaml", "unreadable"), id="spec-path-is-directory"),
    # --- model files (each carries its true sha256, so the hash check passes and the reader fails)
    pytest.param(F(truncated_model, "truncated.npz", ".npz"), id="model-truncated"),
    pytest.param(F(model_bytes("text.npz", lambda b: b"this is not a zip archive\n"), "text.npz", ".npz"), id="model-not-npz"),
    pytest.param(F(model_bytes("empty.npz", lambda b: b""), "empty.npz", ".npz"), id="model-empty-file"),
    pytest.param(F(bad_model("nan_weight.npz", with_value("W2", (3, 5), np.nan)), "nan_weight.npz", "W2", "non-finite"), id="model-nan-weight"),
    pytest.param(F(bad_model("inf_bias.npz", with_value("b1", 2, np.inf)), "inf_bias.npz", "b1", "non-finite"), id="model-inf-bias"),
    pytest.param(F(bad_model("chain.npz", set_array("W2", lambda w: w[:, :7].copy())), "chain.npz", "W2", "(8, 7)"), id="model-layer-shape-mismatch"),
    pytest.param(F(bad_model("bias.npz", set_array("b2", lambda b: b[:7].copy())), "bias.npz", "b2", "(7,)"), id="model-bias-shape-mismatch"),
    pytest.param(F(bad_model("conv.npz", set_layers(lambda ls: ls[:1] + [{"op": "conv"}] + ls[1:])), "conv.npz", "__layers__", "conv"), id="model-unsupported-op-conv"),
    pytest.param(F(bad_model("nolayers.npz", lambda a: a.pop("__layers__")), "nolayers.npz", "__layers__"), id="model-no-layers"),
    pytest.param(F(bad_model("notjson.npz", set_layers(lambda ls: "[{op: dense,")), "notjson.npz", "__layers__", "JSON"), id="model-layers-not-json"),
    pytest.param(F(bad_model("layersdict.npz", set_layers(lambda ls: ls[0])), "layersdict.npz", "__layers__"), id="model-layers-not-list"),
    pytest.param(F(bad_model("noname.npz", set_layers(lambda ls: [dict(ls[0], weight="W9")] + ls[1:])), "noname.npz", "__layers__[0].weight", "W9"), id="model-layer-names-missing-array"),
    pytest.param(F(bad_model("int.npz", set_array("W1", lambda w: w.astype(np.int64))), "int.npz", "W1", "dtype"), id="model-int-weights"),
    pytest.param(F(bad_model("relu_last.npz", set_layers(lambda ls: ls + [{"op": "relu"}])), "relu_last.npz", "__layers__", "end with a dense"), id="model-ends-with-relu"),
    # --- .npy centres
    pytest.param(F(center_file("text.npy", lambda p: np.save(p, np.array("hello"))), "text.npy", "input.linf_ball.center", "text"), id="center-npy-text"),
    pytest.param(F(center_file("nan.npy", lambda p: np.save(p, np.array([0.0, np.nan, 0.0, 0.0]))), "nan.npy", "non-finite"), id="center-npy-nan"),
    pytest.param(F(center_file("junk.npy", lambda p: p.write_bytes(b"\x00junk" * 20)), "junk.npy", "not a .npy"), id="center-npy-garbage"),
    pytest.param(F(center_file("short.npy", lambda p: np.save(p, np.zeros(3))), SPEC, "3 entries", key="input.linf_ball.center"), id="center-npy-wrong-length"),
    # --- regressions: bugs this corpus found, now fixed
    bug(S(spec((PRUNE, "- prune: {layer: 3, keep: [0], fill: zero}")), "explanation[0].prune.layer"),
        "prune layer out of range names key `explanation[0].layer`, a path that does not exist in the spec "
        "(certify/checker/network.py check_transform: spec.error(f\"{key}.layer\") omits the transform name)",
        id="prune-layer-out-of-range-keypath"),
    bug(S(spec((PRUNE, "- low_rank: {layer: 4, rank: 1}")), "explanation[0].low_rank.layer"),
        "low_rank layer out of range names key `explanation[0].layer` instead of `explanation[0].low_rank.layer` "
        "(certify/checker/network.py check_transform)", id="low-rank-layer-out-of-range-keypath"),
    bug(S(spec(("deviation: linf\n", "deviation: linf\n  outputs: [0, 5]\n")), "property.outputs"),
        "outputs index >= the model's output width is never validated: IndexError in "
        "certify/checker/network.py joint_network (`[w[r] for r in rows]`) -> exit 4 'internal error'",
        id="outputs-index-out-of-range"),
    bug(F(raw(b"version: 1\x00\x01\n"), SPEC, "not valid YAML"),
        "a NUL/control byte gives a TWO-line message: yaml.ReaderError has no .problem, so "
        "certify/checker/spec.py read_spec falls back to str(exc), which contains '\\n  in \"<unicode string>\"'",
        id="control-bytes-in-spec"),
    bug(F(raw("- version: 1\n- model: x\n"), SPEC, "mapping", forbid=("`:`",)),
        "a spec that is a YAML list (or scalar) says 'write `:` with keys version, ...': the root key is '' so "
        "certify/checker/spec.py _Reader.mapping formats an empty key into the fix",
        id="spec-is-yaml-list"),
    bug(F(raw("[" * 3000 + "]" * 3000), SPEC),
        "deeply nested YAML raises RecursionError in yaml.compose (not a YAMLError) -> exit 4 "
        "(certify/checker/spec.py read_spec catches only YAMLError/UnicodeDecodeError)",
        id="deeply-nested-yaml"),
    bug(S(spec(("version: 1", "version: " + "1" * 5000)), "version"),
        "an integer with more than 4300 digits: int(text) raises ValueError (Python's int max str digits) "
        "in certify/checker/spec.py _Reader.integer -> exit 4",
        id="version-5000-digits"),
    bug(S(spec((TOL, "tolerance: " + "1" * 5000)), "property.tolerance"),
        "a number with more than 4300 digits: Fraction(text) raises ValueError in "
        "certify/checker/numbers.py parse_spec_number -> exit 4",
        id="tolerance-5000-digits"),
    bug(S(spec((BOX, "box: {lower: -1e400, upper: 1}")), "input.box.lower"),
        "a box bound beyond float range (-1e400) passes the spec reader, then float(Fraction) raises OverflowError "
        "in certify/bounds/network.py box_floats -> exit 4",
        id="box-bound-beyond-float-range"),
    bug(F(bad_model("listname.npz", set_layers(lambda ls: [dict(ls[0], weight=["W1"])] + ls[1:])), "listname.npz", "__layers__[0].weight"),
        "a layer whose array name is a JSON list: `name not in arrays` raises TypeError (unhashable) in "
        "certify/checker/model.py read_model.array -> exit 4",
        id="model-layer-array-name-is-list"),
    bug(F(corrupt_deflate, "bad_deflate.npz", ".npz"),
        "a compressed .npz with a corrupt deflate stream raises zlib.error, which "
        "certify/checker/model.py read_arrays does not catch -> exit 4 'internal error: error: Error -3 ...'",
        id="model-corrupt-deflate"),
    bug(S(spec((PRUNE, LOW_RANK), (BOX, "box: {lower: [0, 0, 0], upper: 1}")), "input.box.lower"),
        "bad input found after materialisation leaves <out>.g.npz in the certificate directory: "
        "certify/engine.py run_check saves the low_rank arrays (save_arrays) before build_g/input_box validate the spec",
        id="low-rank-then-bad-input-leaves-g-npz"),
]


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), f"expected one line on stderr, got {err!r}"
    assert lines[0].strip(), "stderr line is empty"
    return lines[0]


def assert_message(case: Case, err: str) -> None:
    assert "Traceback" not in err
    line = one_line(err)
    assert line.startswith("error: "), line
    assert case.file in line, f"{case.file!r} not named in {line!r}"
    if case.line:
        assert re.search(re.escape(case.file) + r":\d+: ", line), f"no {case.file}:LINE: in {line!r}"
    if case.key is not None:
        assert f": {case.key}: " in line, f"key path {case.key!r} not in {line!r}"
    for text in case.also:
        assert text in line, f"{text!r} not in {line!r}"
    for text in case.forbid:
        assert text not in line, f"{text!r} in {line!r}"


def files_in(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()] if directory.exists() else []


@pytest.fixture
def work(tmp_path: Path) -> Path:
    shutil.copy(MODEL, tmp_path / "tiny_mlp.npz")
    return tmp_path


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_line(case: Case, work: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("CERTIFY_DEBUG", raising=False)
    spec_path = case.build(work)
    proofs = work / "proofs"
    rc = main(["check", str(spec_path), "--out", str(proofs / "x.cert.json")])
    out, err = capsys.readouterr()
    assert rc == 2, f"exit {rc}, stderr {err!r}"
    assert out == "", f"stdout should be empty: {out!r}"
    assert_message(case, err)
    assert files_in(proofs) == [], f"files written for a rejected input: {files_in(proofs)}"


def test_base_spec_is_valid(work: Path) -> None:
    """Control: the unmodified base spec and model pass every reader, so each case fails by its mutation."""
    from certify.checker.model import read_model
    from certify.checker.network import build_g, input_box
    from certify.checker.spec import read_spec

    s = read_spec(write_spec(work, base_text()))
    f = read_model(s.model.path, s.model.sha256)
    build_g(s, f, None)
    assert len(input_box(s, f)[0]) == f.in_dim == 4


def test_case_count() -> None:
    assert len(CASES) >= 50


# ----------------------------------------------------------------------------- subprocesses

SUBPROCESS_CASES = [
    pytest.param("module", spec(("version: 1\n", "version: 1\ncolour: red\n")), SPEC, id="module-unknown-top-level-key"),
    pytest.param("module", bad_model("nan_weight.npz", with_value("W2", (3, 5), np.nan)), "nan_weight.npz", id="module-model-nan-weight"),
    pytest.param("script", raw(bytes(range(128, 256)) * 4), SPEC, id="script-binary-garbage"),
]


def command(kind: str) -> list[str]:
    if kind == "script":
        script = Path(sys.executable).parent / "certify"
        found = str(script) if script.exists() else shutil.which("certify")
        if found is None:
            pytest.skip("no `certify` console script installed")
        return [found]
    return [sys.executable, "-m", "certify.cli"]


def run_cli(args: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CERTIFY_DEBUG"}
    env["JAX_PLATFORMS"] = "cpu"
    env["CERTIFY_XLA_CACHE"] = ""  # the console script writes no compilation cache under $HOME from the tests
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("kind, build, file", SUBPROCESS_CASES)
def test_subprocess_no_traceback(kind: str, build, file: str, work: Path) -> None:
    spec_path = build(work)
    proofs = work / "proofs"
    p = run_cli(command(kind) + ["check", str(spec_path), "--out", str(proofs / "x.cert.json")], work)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout
    assert p.stdout == ""
    line = one_line(p.stderr)
    assert line.startswith("error: ") and file in line
    assert files_in(proofs) == []


def test_huge_exponent_does_not_hang(work: Path) -> None:
    spec_path = write_spec(work, edit(base_text(), (TOL, "tolerance: 1e999999999")))
    cert = work / "x.cert.json"
    cert.write_text("{}")
    try:  # `verify` reads the spec first and does not import JAX, so a fixed reader answers in well under a second; the
        # limit leaves room for a slow interpreter start on a loaded machine (5 s timed out once at load 8), far below
        # what building 10**999999999 exactly would take
        p = run_cli(command("module") + ["verify", str(spec_path), str(cert)], work, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("certify verify still running after 30 s on `tolerance: 1e999999999`")
    assert p.returncode == 2 and one_line(p.stderr).startswith("error: ")


# ----------------------------------------------------------------------------- certify verify


def test_verify_missing_certificate(work: Path, capsys) -> None:
    spec_path = write_spec(work, base_text())
    rc = main(["verify", str(spec_path), str(work / "absent.cert.json")])
    out, err = capsys.readouterr()
    assert rc == 2
    line = one_line(err)
    assert line.startswith("error: ") and "absent.cert.json" in line and "Traceback" not in err
    assert out == ""


def test_verify_certificate_not_json(work: Path, capsys) -> None:
    spec_path = write_spec(work, base_text())
    cert = work / "garbage.cert.json"
    cert.write_text("this is {not json\n")
    rc = main(["verify", str(spec_path), str(cert)])
    out, err = capsys.readouterr()
    assert rc == 3
    assert out.startswith("REJECTED"), out
    assert "garbage.cert.json" in out and "Traceback" not in out + err
    assert err == ""


def test_verify_bad_spec_is_bad_input(work: Path, capsys) -> None:
    spec_path = write_spec(work, edit(base_text(), (TOL, "tolerance: -1")))
    cert = work / "x.cert.json"
    cert.write_text("{}")
    rc = main(["verify", str(spec_path), str(cert)])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    line = one_line(err)
    assert line.startswith("error: ") and SPEC in line and ": property.tolerance: " in line
