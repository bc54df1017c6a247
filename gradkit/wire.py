"""What crosses the boundary between the grader and a submission's process: plain data only.

A frame is a 4-byte big-endian header length, a JSON header, then the raw bytes its arrays point
into. Arrays are described as ``{"kind": "array", "dtype", "shape", "offset", "nbytes"}``; any
other value is JSON (numbers, strings, None, lists, dicts with string keys) or a description of an
object that could not be sent (``{"kind": "object", "type": ..., "repr": ...}``).

This module never imports torch: the child encodes with whatever it has, and the grader rebuilds
tensors with ``decode_array``, which checks every length before it trusts it. Nothing here
unpickles anything.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

HEADER = struct.Struct(">I")
#: Dtypes a tensor may cross in, by their torch names; nothing else is rebuilt.
WIRE_DTYPES = ("float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64",
               "uint8", "bool")
ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "int8": 1, "int16": 2,
            "int32": 4, "int64": 8, "uint8": 1, "bool": 1}


class WireError(ValueError):
    """A frame or an array description that does not hold together."""


@dataclass(frozen=True)
class Frame:
    header: dict[str, Any]
    payload: bytes


def pack(header: dict[str, Any], payload: bytes = b"") -> bytes:
    """One frame: header length, JSON header (with the payload length), payload."""
    header = {**header, "payload": len(payload)}
    head = json.dumps(header, allow_nan=True, separators=(",", ":")).encode()
    return HEADER.pack(len(head)) + head + payload


def unpack_stream(buffer: bytes, max_header: int = 1 << 20) -> tuple[list[Frame], bytes]:
    """Split a byte buffer into complete frames; return them and the unconsumed tail."""
    frames: list[Frame] = []
    view = memoryview(buffer)
    while len(view) >= HEADER.size:
        (size,) = HEADER.unpack(view[: HEADER.size])
        if size > max_header:
            raise WireError(f"frame header of {size} bytes is over the {max_header} allowed")
        if len(view) < HEADER.size + size:
            break
        try:
            header = json.loads(bytes(view[HEADER.size : HEADER.size + size]))
        except (ValueError, UnicodeDecodeError) as exc:
            raise WireError(f"frame header is not JSON: {exc}") from None
        if not isinstance(header, dict) or not isinstance(header.get("payload"), int):
            raise WireError("frame header is not an object with a payload length")
        end = HEADER.size + size + header["payload"]
        if header["payload"] < 0:
            raise WireError("negative payload length")
        if len(view) < end:
            break
        frames.append(Frame(header, bytes(view[HEADER.size + size : end])))
        view = view[end:]
    return frames, bytes(view)


class PayloadWriter:
    """Collects raw array bytes for one frame and hands out their descriptions."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0

    def add(self, dtype: str, shape: tuple[int, ...], raw: bytes) -> dict[str, Any]:
        desc = {"kind": "array", "dtype": dtype, "shape": list(shape), "offset": self._size,
                "nbytes": len(raw)}
        self._chunks.append(raw)
        self._size += len(raw)
        return desc

    def getvalue(self) -> bytes:
        return b"".join(self._chunks)


def is_array(value: Any) -> bool:
    return isinstance(value, dict) and value.get("kind") == "array"


def check_array(desc: Any, payload: bytes) -> tuple[str, tuple[int, ...], bytes]:
    """Validate an array description against its frame; return (dtype, shape, raw bytes)."""
    if not is_array(desc):
        raise WireError("not an array description")
    dtype, shape = desc.get("dtype"), desc.get("shape")
    offset, nbytes = desc.get("offset"), desc.get("nbytes")
    if dtype not in ITEMSIZE:
        raise WireError(f"dtype {dtype!r} is not one gradkit rebuilds")
    if not (isinstance(shape, list) and len(shape) <= 8
            and all(isinstance(s, int) and 0 <= s < 1 << 31 for s in shape)):
        raise WireError(f"shape {shape!r} is not a list of sizes")
    if not (isinstance(offset, int) and isinstance(nbytes, int) and offset >= 0 and nbytes >= 0):
        raise WireError("array offset and length must be non-negative integers")
    numel = 1
    for s in shape:
        numel *= s
    if numel * ITEMSIZE[dtype] != nbytes:
        raise WireError(f"{nbytes} bytes do not hold a {dtype} array of shape {tuple(shape)}")
    if offset + nbytes > len(payload):
        raise WireError("array runs past the end of its frame")
    return dtype, tuple(shape), payload[offset : offset + nbytes]
