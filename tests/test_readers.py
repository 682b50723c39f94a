"""The trusted readers against reference implementations, and under random corruption.

The checker reads the spec, the weights (.npz/.npy and ONNX) and VNN-LIB files with its own strict
stdlib readers, so they are part of what a certificate trusts. Here they are checked two ways:

- differentially: every value `read_arrays` returns is bit-for-bit the value numpy wrote, every spec
  and VNN-LIB number is exactly the decimal it spells (compared with `decimal.Decimal`), and an
  ONNX model that survives a random byte change computes what onnxruntime computes;
- fail-closed: a randomly corrupted spec, .npy payload, ONNX or VNN-LIB file is either read or
  refused with one `BadInput`; any other exception (a traceback, exit 4) fails the test.
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from certify.checker.errors import BadInput
from certify.checker.model import read_arrays, read_model
from certify.checker.numbers import parse_spec_number
from certify.checker.spec import read_spec
from certify.checker.vnnlib import read_vnnlib

from .conftest import ROOT, shipped_text

ACAS = ROOT / "tests" / "data" / "verydiff" / "2_80-1.onnx"  # 10 KB, 5 inputs
SIGMA = ROOT / "tests" / "data" / "verydiff" / "sigma_0.1.vnnlib"
TINY = ROOT / "models" / "tiny_mlp.npz"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def bits(v: float, dtype) -> bytes:
    return struct.pack("<d" if dtype == np.float64 else "<f", v)


def mutate(data: bytes, draw) -> bytes:
    """One random corruption: overwrite, delete or insert a few bytes, or truncate."""
    kind = draw(st.sampled_from(["overwrite", "delete", "insert", "truncate"]))
    at = draw(st.integers(0, max(0, len(data) - 1)))
    if kind == "truncate":
        return data[:at]
    chunk = draw(st.binary(min_size=1, max_size=4))
    if kind == "overwrite":
        return data[:at] + chunk + data[at + len(chunk):]
    if kind == "delete":
        return data[:at] + data[at + len(chunk):]
    return data[:at] + chunk + data[at:]


def read_or_refused(read, name: str):
    """read() or None when it raised one BadInput line naming the file; any other exception fails."""
    try:
        return read()
    except BadInput as exc:
        assert "\n" not in str(exc) and name in str(exc), str(exc)
        return None


# ----------------------------------------------------------------------------- differential


@given(st.data())
@FUZZ
def test_npz_reader_returns_exactly_what_numpy_wrote(tmp_path, data):
    arrays = {}
    for i in range(data.draw(st.integers(1, 3))):
        dtype = data.draw(st.sampled_from([np.float64, np.float32]))
        shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
        elements = st.floats(allow_nan=False, allow_infinity=False, width=64 if dtype == np.float64 else 32)
        arrays[f"a{i}"] = data.draw(hnp.arrays(dtype, shape, elements=elements))
    arrays["__layers__"] = np.array(data.draw(st.text(max_size=40)))
    path = tmp_path / "m.npz"
    (np.savez_compressed if data.draw(st.booleans()) else np.savez)(path, **arrays)
    read = read_arrays(path)
    assert set(read) == set(arrays)
    assert read["__layers__"] == ((), str(arrays["__layers__"]))
    for name, a in arrays.items():
        if name == "__layers__":
            continue
        shape, flat = read[name]
        assert shape == a.shape
        assert [bits(v, a.dtype) for v in flat] == [bits(float(v), a.dtype) for v in a.ravel()]  # -0.0 and subnormals too


@given(st.sampled_from([np.float64, np.float32]), st.integers(0, 11), st.sampled_from([math.nan, math.inf, -math.inf]))
@FUZZ
def test_npy_non_finite_values_are_refused_by_index(tmp_path, dtype, index, value):
    a = np.arange(12, dtype=dtype).reshape(3, 4)
    a.flat[index] = value
    np.savez(tmp_path / "m.npz", W=a)
    with pytest.raises(BadInput, match=f"non-finite value .* at flat index {index}"):
        read_arrays(tmp_path / "m.npz")


@given(st.decimals(allow_nan=False, allow_infinity=False, places=None).filter(lambda d: abs(d) < Decimal("1e300")),
       st.sampled_from(["{}", "{:e}", "{:E}", "+{}"]))
@settings(max_examples=300, deadline=None)
def test_spec_numbers_are_the_decimal_they_spell(d, form):
    text = form.format(d)
    if text.startswith("+-"):
        text = text[1:]
    assert parse_spec_number(text) == Fraction(Decimal(text))


@given(st.lists(st.tuples(st.decimals(-10**6, 10**6, places=6), st.decimals(0, 10**6, places=6)), min_size=1, max_size=6),
       st.sampled_from(["{}", "{:e}", "(- {})"]))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_vnnlib_box_is_exactly_the_written_numbers(tmp_path, bounds, form):
    def term(d: Decimal) -> str:
        return form.format(-d) if form.startswith("(-") and d < 0 else f"{d:e}" if form == "{:e}" else str(d)

    lines = [f"(declare-const X_{i} Real)" for i in range(len(bounds))]
    for i, (c, r) in enumerate(bounds):
        lines += [f"(assert (>= X_{i} {term(c - r)}))", f"(assert (<= X_{i} {term(c + r)}))"]
    path = tmp_path / "box.vnnlib"
    path.write_text("\n".join(lines) + "\n(declare-const Y_0 Real)\n(assert (<= Y_0 0))\n")
    lo, up = read_vnnlib(path, "input.vnnlib")
    assert lo == [Fraction(c - r) for c, r in bounds] and up == [Fraction(c + r) for c, r in bounds]


# ----------------------------------------------------------------------------- fail-closed


@given(st.data())
@FUZZ
def test_corrupted_npy_payload_is_read_or_refused(tmp_path, data):
    """Corrupt one .npy entry inside a valid zip (so zip CRCs pass and the .npy parser sees it)."""
    with zipfile.ZipFile(TINY) as zf:
        entries = {i.filename: zf.read(i) for i in zf.infolist()}
    name = data.draw(st.sampled_from(sorted(entries)))
    entries[name] = mutate(entries[name], data.draw)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, b in entries.items():
            zf.writestr(n, b)
    path = tmp_path / "m.npz"
    path.write_bytes(buf.getvalue())
    model = read_or_refused(lambda: read_model(path), str(path))
    assert model is None or all(math.isfinite(v) for d in model.dense for row in d.weight for v in row)


@given(st.data())
@FUZZ
def test_corrupted_onnx_is_read_or_refused_and_read_means_what_onnxruntime_computes(tmp_path, data):
    path = tmp_path / "m.onnx"
    path.write_bytes(mutate(ACAS.read_bytes(), data.draw))
    model = read_or_refused(lambda: read_model(path), str(path))
    if model is None or not hasattr(model, "dense"):  # a mutation that makes a residual graph: tests/test_onnx_graph.py
        return
    weights = [abs(float(v)) for d in model.dense for row in d.weight for v in (*row, *d.bias)]
    ort = pytest.importorskip("onnxruntime")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - onnxruntime refusing a model our reader accepts is not a defect by itself
        return
    if max(weights) > 1e4 or model.notes:
        return  # float32 runs of huge weights are not comparable
    inp = session.get_inputs()[0]
    x = np.random.default_rng(0).uniform(-1, 1, (8, model.in_dim))
    theirs = session.run(None, {inp.name: x.astype(np.float32).reshape((8, *[d if isinstance(d, int) else 1 for d in inp.shape[1:]]))})[0]
    ours = x.astype(np.float32).astype(np.float64)
    for i, d in enumerate(model.dense):
        ours = ours @ np.array([[float(v) for v in r] for r in d.weight]).T + np.array([float(v) for v in d.bias])
        ours = np.maximum(ours, 0) if i < len(model.dense) - 1 else ours
    np.testing.assert_allclose(ours, theirs.reshape(ours.shape), rtol=1e-4, atol=1e-3 * (1 + np.abs(ours).max()))


@given(st.data())
@FUZZ
def test_corrupted_vnnlib_is_read_or_refused(tmp_path, data):
    path = tmp_path / "r.vnnlib"
    path.write_bytes(mutate(SIGMA.read_bytes(), data.draw))
    box = read_or_refused(lambda: read_vnnlib(path, "input.vnnlib"), str(path))
    assert box is None or len(box[0]) == len(box[1]) and all(isinstance(v, Fraction) for v in box[0] + box[1])


@given(st.data())
@FUZZ
def test_corrupted_spec_is_read_or_refused(tmp_path, data):
    text = shipped_text("tiny_replace")
    lines = text.splitlines(keepends=True)
    op = data.draw(st.sampled_from(["bytes", "drop_line", "duplicate_line", "swap_lines"]))
    i, j = data.draw(st.integers(0, len(lines) - 1)), data.draw(st.integers(0, len(lines) - 1))
    if op == "bytes":
        raw = mutate(text.encode(), data.draw)
    else:
        if op == "drop_line":
            del lines[i]
        elif op == "duplicate_line":
            lines.insert(i, lines[i])
        else:
            lines[i], lines[j] = lines[j], lines[i]
        raw = "".join(lines).encode()
    path = tmp_path / "spec.yaml"
    path.write_bytes(raw)
    read_or_refused(lambda: read_spec(path), "spec.yaml")
