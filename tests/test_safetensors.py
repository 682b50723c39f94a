"""The checker's strict safetensors reader: the same tensors as the reference implementation
(safetensors.numpy) on files it writes, and BadInput (one line: file, tensor, fix) on each way a
file can be corrupt."""

import json
import struct

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from certify.checker.errors import BadInput
from certify.checker.safetensors import read_safetensors


def raw(header: dict, buffer: bytes, pad: bytes = b"") -> bytes:
    text = json.dumps(header).encode() + pad
    return struct.pack("<Q", len(text)) + text + buffer


def good(tmp_path):
    """Two F32 tensors, written by hand: (header, buffer)."""
    a, b = np.arange(6, dtype="<f4").reshape(2, 3) / 7, np.array([1.5, -2.25], dtype="<f4")
    header = {"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": [24, 32]}}
    return header, a.tobytes() + b.tobytes()


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_agrees_with_the_reference_reader(tmp_path, dtype):
    rng = np.random.default_rng(0)
    arrays = {"W_enc": rng.normal(size=(5, 7)).astype(dtype), "b_enc": rng.normal(size=7).astype(dtype),
              "empty": np.zeros((0, 3), dtype=dtype), "scalar": np.array(3.5, dtype=dtype)}
    p = tmp_path / "w.safetensors"
    save_file(arrays, str(p), metadata={"format": "np"})
    mine, ref = read_safetensors(p), load_file(str(p))
    assert set(mine) == set(ref)
    for name, arr in ref.items():
        shape, flat = mine[name]
        assert shape == arr.shape and list(flat) == arr.ravel().astype(np.float64).tolist(), name


def test_bf16_widens_exactly(tmp_path):
    values = np.array([1.0, -0.15625, 1.5 * 2.0 ** 127, 2.0 ** -130], dtype="<f4")
    top = b"".join(v.tobytes()[2:] for v in values)  # these values are exact in bf16: the low half is zero
    p = tmp_path / "b.safetensors"
    p.write_bytes(raw({"t": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}}, top))
    assert read_safetensors(p)["t"] == ((4,), tuple(float(v) for v in values))


def test_header_padding_with_spaces_is_accepted(tmp_path):
    header, buffer = good(tmp_path)
    p = tmp_path / "p.safetensors"
    p.write_bytes(raw(header, buffer, b"    "))
    assert read_safetensors(p)["b"] == ((2,), (1.5, -2.25))


def _corrupt(header, buffer):
    """name -> the bytes of a corrupt file and the words its error must contain."""
    h = json.loads(json.dumps(header))
    cases = {}

    def case(name, data, *words):
        cases[name] = (data, words)

    case("too_short", b"\x01\x02\x03", "header", "too short")
    case("header_past_end", struct.pack("<Q", 10 ** 6) + b"{}", "header", "exceeds")
    case("not_json", struct.pack("<Q", 5) + b"{abc}", "header", "not a JSON")
    case("not_an_object", raw([1, 2], b"").replace(b"[1, 2]", b"[1, 2]"), "header")
    case("leading_space", struct.pack("<Q", 3) + b" {}", "header", "'{'")
    text = json.dumps(h).encode()
    dup = text[:-1] + b', "a": ' + json.dumps(h["a"]).encode() + b"}"
    case("duplicate_key", struct.pack("<Q", len(dup)) + dup + buffer, "duplicate")
    case("bad_dtype", raw({**h, "a": {**h["a"], "dtype": "I32"}}, buffer), "a.dtype", "I32")
    case("big_endian_dtype", raw({**h, "a": {**h["a"], "dtype": ">f4"}}, buffer), "a.dtype")
    case("extra_key", raw({**h, "a": {**h["a"], "order": "C"}}, buffer), "a", "exactly the keys")
    case("negative_shape", raw({**h, "a": {**h["a"], "shape": [-2, -3]}}, buffer), "a.shape")
    case("float_shape", raw({**h, "a": {**h["a"], "shape": [2.0, 3]}}, buffer), "a.shape")
    case("shape_size", raw({**h, "a": {**h["a"], "shape": [3, 3]}}, buffer), "a.data_offsets", "expected")
    case("offset_past_end", raw({**h, "b": {**h["b"], "data_offsets": [24, 40]}}, buffer), "b.data_offsets", "within")
    case("offset_reversed", raw({**h, "b": {**h["b"], "data_offsets": [32, 24]}}, buffer), "b.data_offsets")
    case("overlap", raw({**h, "b": {**h["b"], "data_offsets": [20, 28]}}, buffer), "b.data_offsets", "overlap")
    case("gap", raw({**h, "a": {**h["a"], "shape": [5], "data_offsets": [0, 20]}}, buffer), "b.data_offsets", "gap")
    case("not_at_zero", raw({"b": {**h["b"], "data_offsets": [24, 32]}}, buffer), "b.data_offsets", "gap")
    case("trailing_garbage", raw(h, buffer + b"\x00\x00\x00\x00"), "data", "after the last tensor")
    case("non_finite", raw(h, buffer[:24] + struct.pack("<2f", 1.0, float("nan"))), "b", "non-finite")
    case("bad_metadata", raw({**h, "__metadata__": {"k": 1}}, buffer), "__metadata__")
    case("not_utf8", struct.pack("<Q", 4) + b"{\xff}", "header")
    return cases


def test_each_corruption_is_one_line_of_bad_input(tmp_path):
    header, buffer = good(tmp_path)
    ok = tmp_path / "ok.safetensors"
    ok.write_bytes(raw(header, buffer))
    assert read_safetensors(ok)["a"][0] == (2, 3) and load_file(str(ok))["a"].shape == (2, 3)
    for name, (data, words) in _corrupt(header, buffer).items():
        p = tmp_path / f"{name}.safetensors"
        p.write_bytes(data)
        with pytest.raises(BadInput) as exc:
            read_safetensors(p)
        msg = str(exc.value)
        assert "\n" not in msg and str(p) in msg and exc.value.fix, (name, msg)
        assert all(w in msg for w in words), (name, msg)


def test_the_reference_reader_also_refuses_the_structural_corruptions(tmp_path):
    """Differential: what the reference refuses we refuse too (its rules on offsets and header are ours)."""
    header, buffer = good(tmp_path)
    for name in ("header_past_end", "overlap", "gap", "trailing_garbage", "offset_past_end", "shape_size", "not_json"):
        data, _ = _corrupt(header, buffer)[name]
        p = tmp_path / f"{name}.safetensors"
        p.write_bytes(data)
        with pytest.raises(Exception):
            load_file(str(p))
        with pytest.raises(BadInput):
            read_safetensors(p)


def test_missing_file_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="cannot read"):
        read_safetensors(tmp_path / "nope.safetensors")
