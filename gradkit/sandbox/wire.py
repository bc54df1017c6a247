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
from typing import Any, Optional

HEADER = struct.Struct(">I")
#: Dtypes a tensor may cross in, by their torch names; nothing else is rebuilt.
WIRE_DTYPES = ("float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64",
               "uint8", "bool")
ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "int8": 1, "int16": 2,
            "int32": 4, "int64": 8, "uint8": 1, "bool": 1}


#: the largest array the grader rebuilds, in elements, a dimension of length 0 counted as 1
#: (``extent``): a tensor of shape (0, 2147483647) holds nothing, but the grader's diagnosis
#: broadcasts against its shape (a row of 2^31 float64 values: 17 GB, killed). (The child
#: sends at most a million elements of a tensor.)
MAX_EXTENT = 1 << 22


def extent(shape: "tuple[int, ...] | list[int]") -> int:
    """The elements an array of ``shape`` would hold with every empty dimension of length 1."""
    total = 1
    for size in shape:
        total *= max(int(size), 1)
    return total


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


def _parse_header(raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise WireError(f"frame header is not JSON: {str(exc)[:200]}") from None
    if not isinstance(header, dict) or type(header.get("payload")) is not int:
        raise WireError("frame header is not an object with a payload length")
    if header["payload"] < 0:
        raise WireError("negative payload length")
    return header


class FrameReader:
    """Splits a byte stream into frames as it arrives, reading each header once.

    Linear in the bytes fed, however they are chunked; raises ``WireError`` on a header over
    ``max_header`` bytes or one that is not a JSON object with a payload length.
    """

    def __init__(self, max_header: int = 1 << 20) -> None:
        self.max_header = max_header
        self._buffer = bytearray()
        self._pending: Optional[dict[str, Any]] = None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, chunk: bytes) -> list[Frame]:
        self._buffer += chunk
        frames: list[Frame] = []
        while True:
            if self._pending is None:
                if len(self._buffer) < HEADER.size:
                    break
                (size,) = HEADER.unpack_from(self._buffer)
                if size > self.max_header:
                    raise WireError(f"frame header of {size} bytes is over the {self.max_header}"
                                    " allowed")
                if len(self._buffer) < HEADER.size + size:
                    break
                self._pending = _parse_header(bytes(self._buffer[HEADER.size:HEADER.size + size]))
                del self._buffer[:HEADER.size + size]
            need = self._pending["payload"]
            if len(self._buffer) < need:
                break
            frames.append(Frame(self._pending, bytes(self._buffer[:need])))
            del self._buffer[:need]
            self._pending = None
        return frames


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
        header = _parse_header(bytes(view[HEADER.size : HEADER.size + size]))
        end = HEADER.size + size + header["payload"]
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
    if not (isinstance(shape, list) and len(shape) <= 8):
        raise WireError(f"shape {shape!r} is not a list of sizes")
    numel = 1
    for s in shape:
        if not (isinstance(s, int) and 0 <= s < 1 << 31):
            raise WireError(f"shape {shape!r} is not a list of sizes")
        numel *= s
    if not (isinstance(offset, int) and isinstance(nbytes, int) and offset >= 0 and nbytes >= 0):
        raise WireError("array offset and length must be non-negative integers")
    if numel * ITEMSIZE[dtype] != nbytes:
        raise WireError(f"{nbytes} bytes do not hold a {dtype} array of shape {tuple(shape)}")
    if extent(shape) > MAX_EXTENT:
        raise WireError(f"an array of shape {tuple(shape)} is larger than gradkit rebuilds "
                        f"({MAX_EXTENT:,} elements, an empty dimension counted as 1)")
    if offset + nbytes > len(payload):
        raise WireError("array runs past the end of its frame")
    return dtype, tuple(shape), payload[offset : offset + nbytes]


# --- what a child's frames must look like ----------------------------------------------------
#
# The grader checks every result frame against these shapes before anything reads it, so the code
# that grades can trust the types it gets. A frame that fails comes from a broken or hostile child.

MAX_DEPTH = 8
FRAME_TYPES = ("isolation", "load", "call", "done")


@dataclass
class Budget:
    """What all the result frames of one run may make the grader hold and rebuild.

    Within a frame, arrays may not overlap (so the arrays rebuilt never exceed the bytes sent);
    across a run, the JSON values of the headers and the array bytes are counted against these
    totals. A run past either broke the protocol: nothing of it counts. (The child describes at
    most a few thousand values per frame and ``Limits.result_bytes`` of arrays per run.)
    """

    nodes: int = 1 << 21
    array_bytes: int = 64 << 20

    def charge(self, nodes: int, array_bytes: int) -> None:
        self.nodes -= nodes
        self.array_bytes -= array_bytes
        if self.nodes < 0:
            raise WireError("the run's result headers hold more values than gradkit reads")
        if self.array_bytes < 0:
            raise WireError("the run's results describe more array bytes than gradkit rebuilds")


def _count_nodes(header: Any) -> int:
    """Every JSON value in a parsed header, counted without recursion."""
    count, stack = 0, [header]
    while stack:
        value = stack.pop()
        count += 1
        if type(value) is dict:
            stack.extend(value.values())
        elif type(value) is list:
            stack.extend(value)
    return count


def _no_overlap(arrays: list[tuple[int, int]], payload: bytes) -> int:
    """The bytes the arrays of a frame describe; raises if two describe the same bytes."""
    end, total = 0, 0
    for offset, nbytes in sorted(arrays):
        if nbytes and offset < end:
            raise WireError("two arrays describe the same bytes of their frame")
        end = max(end, offset + nbytes)
        total += nbytes
    if total > len(payload):
        raise WireError("the arrays describe more bytes than their frame holds")
    return total


def _need(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise WireError(f"{where}: {what}")


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def _strings(value: Any, where: str, limit: int = 10_000) -> None:
    _need(type(value) is list and len(value) <= limit
          and all(type(v) is str for v in value), where, "not a list of strings")


def _str_dict(value: Any, where: str) -> dict[str, Any]:
    _need(type(value) is dict and all(type(k) is str for k in value), where,
          "not an object")
    return value


def check_value(value: Any, payload: bytes, where: str = "value", depth: int = 0,
                arrays: Optional[list[tuple[int, int]]] = None) -> None:
    """Raise ``WireError`` unless ``value`` is a well-formed description of a returned value.

    ``arrays`` collects each array's (offset, length), for the frame's overlap check.
    """
    _need(depth <= MAX_DEPTH, where, "nested too deeply")
    _need(type(value) is dict, where, "not a value description")
    kind = value.get("kind")
    if kind == "array":
        check_array(value, payload)
        _need(type(value.get("source", "")) is str, where, "array source is not a string")
        if arrays is not None:
            arrays.append((value["offset"], value["nbytes"]))
        return
    _need(type(value.get("type", "")) is str, where, "type is not a string")
    if kind == "dict":
        for key, item in _str_dict(value.get("items"), where).items():
            check_value(item, payload, f"{where}[{key[:40]!r}]", depth + 1, arrays)
    elif kind == "list":
        items = value.get("items")
        _need(type(items) is list, where, "list items are not a list")
        for index, item in enumerate(items):
            check_value(item, payload, f"{where}[{index}]", depth + 1, arrays)
    elif kind == "scalar":
        _need(type(value.get("value")) in (type(None), bool, int, float, str), where,
              "scalar is not a number, string or null")
    elif kind == "object":
        _need(type(value.get("repr", "")) is str, where, "object repr is not a string")
    else:
        raise WireError(f"{where}: unknown kind {str(kind)[:40]!r}")


#: what the grader keeps of a reported error: the type's name, the message, the traceback's
#: last lines and each line's characters (the child sends no more; a forged frame could, and the
#: message is repeated in every check of every case it stopped)
ERROR_KEPT = {"type": 100, "message": 1000, "traceback": 8, "traceback_line": 400}


def _check_error(error: Any, where: str) -> None:
    """Check an error description, and cut its strings to ``ERROR_KEPT``."""
    error = _str_dict(error, where)
    _need(type(error.get("type")) is str and type(error.get("message")) is str, where,
          "error type and message must be strings")
    _strings(error.get("traceback", []), f"{where}.traceback")
    _need(type(error.get("line")) in (type(None), int), where, "error line is not a number")
    error["type"] = error["type"][:ERROR_KEPT["type"]]
    error["message"] = error["message"][:ERROR_KEPT["message"]]
    if "traceback" in error:
        error["traceback"] = [line[:ERROR_KEPT["traceback_line"]]
                              for line in error["traceback"][-ERROR_KEPT["traceback"]:]]


def _check_common(header: dict[str, Any], where: str) -> None:
    _need(type(header.get("ok")) is bool, where, "ok is not true or false")
    _need(_is_number(header.get("seconds", 0)), where, "seconds is not a number")
    calls = _str_dict(header.get("autograd_calls", {}), f"{where}.autograd_calls")
    _need(all(type(v) is int for v in calls.values()), where, "autograd_calls are not counts")
    engine = _str_dict(header.get("engine", {}), f"{where}.engine")
    _need(type(engine.get("nodes", 0)) is int and type(engine.get("threads", 0)) is int
          and type(engine.get("grad_mode", False)) is bool
          and type(engine.get("all_threads", False)) is bool, where,
          "engine evidence is not counts and a flag")
    if "error" in header:
        _check_error(header["error"], f"{where}.error")


def check_frame(frame: Frame, budget: Optional[Budget] = None) -> str:
    """Raise ``WireError`` unless ``frame`` is a well-formed result frame; return its type.

    With a ``budget`` (one per run), the frame's header values and array bytes are charged to
    it, so however a run's frames are made, what the grader keeps and rebuilds is bounded.
    """
    header, payload = frame.header, frame.payload
    kind = header.get("type")
    _need(kind in FRAME_TYPES, "frame", f"unknown frame type {str(kind)[:40]!r}")
    where = f"{kind} frame"
    arrays: list[tuple[int, int]] = []
    if kind == "isolation":
        for key, value in header.items():
            _need(type(value) in (str, int, bool) or (type(value) is list and all(
                type(v) is str for v in value)), f"{where}.{key[:40]}", "not plain text")
    elif kind == "load":
        _check_common(header, where)
        functions = _str_dict(header.get("functions", {}), f"{where}.functions")
        _need(all(type(v) is str for v in functions.values()), where, "function states are "
              "not strings")
        _strings(header.get("new_modules", []), f"{where}.new_modules")
        for name, value in _str_dict(header.get("globals", {}), f"{where}.globals").items():
            check_value(value, payload, f"{where}.globals[{name[:40]!r}]", arrays=arrays)
    elif kind == "call":
        _check_common(header, where)
        _need(type(header.get("id")) is str, where, "call id is not a string")
        steps = header.get("steps", [])
        _need(type(steps) is list, where, "steps are not a list")
        for index, step in enumerate(steps):
            at = f"{where} {header['id'][:40]!r} step {index}"
            step = _str_dict(step, at)
            check_value(step.get("returned"), payload, f"{at}.returned", arrays=arrays)
            for fn, names in _str_dict(step.get("captured", {}), f"{at}.captured").items():
                for name, value in _str_dict(names, f"{at}.captured").items():
                    check_value(value, payload, f"{at}.captured[{name[:40]!r}]", arrays=arrays)
            for name, value in _str_dict(step.get("after", {}), f"{at}.after").items():
                check_value(value, payload, f"{at}.after[{name[:40]!r}]", arrays=arrays)
            _need(type(step.get("step")) in (type(None), int), at, "step is not a number")
    described = _no_overlap(arrays, payload)
    if budget is not None:
        budget.charge(_count_nodes(header), described)
    return kind
