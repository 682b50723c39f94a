"""Strict reader of `.safetensors` files (TRUSTED; stdlib only), for SAELens-layout SAEs and transcoders.

The format: 8 bytes, a little-endian unsigned header length N; N bytes of UTF-8 JSON, an object
mapping tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (plus an optional
"__metadata__" of string -> string), padded at the end with spaces only; then the data buffer.
Offsets are relative to the buffer. Accepted only when:

  * the header is a JSON object with no duplicate keys, starting with `{`;
  * each tensor has exactly those three keys; dtype is F64, F32, F16 or BF16 (little-endian);
    shape is a list of non-negative integers; end - begin = prod(shape) * itemsize;
  * sorted by begin, the tensors tile the buffer: the first begins at 0, each begins where the
    previous ends (no gap, no overlap), and the last ends at the end of the file (nothing trailing);
  * every value is finite.

Any violation is `BadInput` naming the file, the tensor and the fix. Values come back as Python
floats, which are exact binary numbers (Fraction(v) is exact); F16 and BF16 widen to them exactly.
The same (shape, flat values) pairs as `model.read_arrays` reads from an .npz.
"""

from __future__ import annotations

import json
import math
import struct

from .errors import BadInput, need

DTYPES = {"F64": ("d", 8), "F32": ("f", 4), "F16": ("e", 2), "BF16": (None, 2)}  # struct code (BF16: widened by hand), bytes
MAX_HEADER = 100_000_000  # the reference implementation's limit
FIX = "write it with safetensors.numpy.save_file (or SAELens), dtype float32 or float64"


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
    return dict(pairs)


def _values(raw: bytes, dtype: str, count: int) -> tuple:
    code, _ = DTYPES[dtype]
    if code is not None:
        return struct.unpack(f"<{count}{code}", raw)
    return struct.unpack(f"<{count}f", b"".join(b"\x00\x00" + raw[2 * i:2 * i + 2] for i in range(count)))  # bf16 = top half of f32


def read_safetensors(path) -> dict[str, tuple[tuple[int, ...], tuple[float, ...]]]:
    """name -> (shape, flat values in C order) of every tensor of the file."""
    file = str(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise BadInput(file, "", f"cannot read the file ({type(exc).__name__})", "check the path (relative to the spec file)") from None
    need(len(data) >= 8, file, "header", f"{len(data)} bytes: too short for the 8-byte header length", FIX)
    (n,) = struct.unpack("<Q", data[:8])
    need(n <= min(MAX_HEADER, len(data) - 8), file, "header", f"header length {n} exceeds the file ({len(data) - 8} bytes after it)", FIX)
    text = data[8:8 + n]
    try:
        need(text[:1] == b"{", file, "header", "the header does not start with '{'", FIX)
        header = json.loads(text.decode("utf-8").rstrip(" "), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadInput(file, "header", f"not a JSON object ({str(exc)[:80]})", FIX) from None
    need(isinstance(header, dict), file, "header", "not a JSON object", FIX)
    meta = header.pop("__metadata__", {})
    need(isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values()), file, "__metadata__",
         "must map strings to strings", FIX)
    buffer, spans, out = data[8 + n:], [], {}
    for name, t in header.items():
        need(isinstance(t, dict) and set(t) == {"dtype", "shape", "data_offsets"}, file, name,
             "a tensor entry has exactly the keys dtype, shape, data_offsets", FIX)
        need(t["dtype"] in DTYPES, file, f"{name}.dtype", f"unsupported dtype {t['dtype']!r} (F64, F32, F16, BF16 are read)",
             "save the weights as float32 or float64")
        shape, offsets = t["shape"], t["data_offsets"]
        need(isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape), file, f"{name}.shape",
             f"{shape!r} is not a list of non-negative integers", FIX)
        need(isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
             and 0 <= offsets[0] <= offsets[1] <= len(buffer), file, f"{name}.data_offsets",
             f"{offsets!r} is not [begin, end] within the {len(buffer)}-byte buffer", FIX)
        count, size = math.prod(shape), DTYPES[t["dtype"]][1]
        need(offsets[1] - offsets[0] == count * size, file, f"{name}.data_offsets",
             f"{offsets[1] - offsets[0]} bytes for shape {shape} of {t['dtype']} ({count * size} expected)", FIX)
        spans.append((offsets[0], offsets[1], name))
        values = _values(buffer[offsets[0]:offsets[1]], t["dtype"], count)
        bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
        need(bad is None, file, name, f"a non-finite value at flat index {bad}", "every weight must be a finite number")
        out[name] = (tuple(shape), values)
    end = 0
    for begin, stop, name in sorted(spans):
        need(begin == end, file, f"{name}.data_offsets", f"begins at byte {begin}, not where the previous tensor ends ({end}): "
             + ("overlap" if begin < end else "a gap"), FIX)
        end = stop
    need(end == len(buffer), file, "data", f"{len(buffer) - end} bytes after the last tensor", FIX)
    return out
