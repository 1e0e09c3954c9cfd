"""Read and check a safetensors header without torch: names, dtypes, shapes.

A safetensors file is an 8-byte little-endian header length, a JSON header
(`name → {dtype, shape, data_offsets}` plus optional `__metadata__`) and the
tensor bytes. Checking that every tensor's offsets fit its shape and dtype and
that the data exactly fills the file catches truncated and corrupt files with
a stat and a small read, so a base model's multi-gigabyte shards are never
read in full.
"""

import json
import math
import os
import struct
from pathlib import Path

MAX_HEADER = 100_000_000  # safetensors' own limit on the header's size
# Bytes per element; dtypes not listed (sub-byte floats) skip the size check.
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8,
}  # fmt: skip


def parse_header(prefix: bytes | memoryview, total_size: int) -> dict[str, dict]:
    """Tensor name → {"dtype", "shape", "data_offsets"} from the file's first bytes.

    `prefix` must hold at least the 8-byte length and the header; `total_size`
    is the whole file's size. Raises ValueError saying what is wrong.
    """
    if total_size < 8 or len(prefix) < 8:
        raise ValueError("the file is shorter than a safetensors header")
    (length,) = struct.unpack("<Q", prefix[:8])
    if length > min(MAX_HEADER, total_size - 8):
        raise ValueError(f"header length {length} does not fit a file of {total_size} bytes")
    try:
        header = json.loads(bytes(prefix[8 : 8 + length]))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"the header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    header.pop("__metadata__", None)
    data_size = total_size - 8 - length
    end = 0
    for name, info in header.items():
        end = max(end, _check_entry(name, info, data_size))
    if end != data_size:
        raise ValueError(f"the tensors take {end} bytes of data but the file holds {data_size}")
    return header


def _check_entry(name: str, info: object, data_size: int) -> int:
    """Check one tensor's entry; return where its data ends."""
    if not isinstance(info, dict):
        raise ValueError(f"tensor {name}: its entry is not an object")
    shape, offsets, dtype = info.get("shape"), info.get("data_offsets"), info.get("dtype")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ValueError(f"tensor {name}: invalid shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise ValueError(f"tensor {name}: invalid data_offsets {offsets!r}")
    if offsets[1] > data_size:
        raise ValueError(
            f"the file is truncated: tensor {name} ends at byte {offsets[1]} of the data, "
            f"which holds {data_size}"
        )
    if dtype in DTYPE_BYTES and offsets[1] - offsets[0] != math.prod(shape) * DTYPE_BYTES[dtype]:
        raise ValueError(
            f"tensor {name}: {offsets[1] - offsets[0]} bytes for shape {shape} of {dtype}"
        )
    return offsets[1]


def read_header(path: Path) -> dict[str, dict]:
    """The header of a safetensors file, reading only its first bytes."""
    with open(path, "rb") as f:
        total = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) == 8:
            (length,) = struct.unpack("<Q", head)
            head += f.read(min(length, MAX_HEADER + 1))
    return parse_header(head, total)
