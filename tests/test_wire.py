"""The wire format: frames, their checks, and how the child reads values back.

What crosses from a submission's process is plain data; these tests hold the grader's side to
"check every length and type before trusting it", and the child's side to "read a value through
the C types' own methods, never the value's".
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradkit.sandbox import child as _child, wire
from gradkit.plan import read_call, rebuild


def _frames_fed(data: bytes, chunk: int) -> list[wire.Frame]:
    reader = wire.FrameReader()
    frames = []
    for start in range(0, len(data), chunk):
        frames += reader.feed(data[start:start + chunk])
    assert reader.buffered == 0
    return frames


def test_frames_come_back_whole_however_the_bytes_are_split():
    data = wire.pack({"type": "done"}) + wire.pack({"a": [1, 2.5, None, "x"]}, b"\x00\x01\x02")
    for chunk in (1, 3, 7, len(data)):
        frames = _frames_fed(data, chunk)
        assert [f.header for f in frames] == [{"type": "done", "payload": 0},
                                              {"a": [1, 2.5, None, "x"], "payload": 3}]
        assert frames[1].payload == b"\x00\x01\x02"


def test_reading_a_large_frame_is_linear_in_its_size():
    data = wire.pack({"type": "call"}, bytes(48 << 20))
    started = time.monotonic()
    frames = _frames_fed(data, 1 << 16)
    assert len(frames) == 1 and len(frames[0].payload) == 48 << 20
    assert time.monotonic() - started < 5  # re-parsing the buffer per chunk took minutes


def _raw(header: bytes) -> bytes:
    return wire.HEADER.pack(len(header)) + header


@pytest.mark.parametrize("data, words", [
    (_raw(b"not json"), "not JSON"),
    (_raw(b"[" * 200_000 + b"]" * 200_000), "not JSON"),  # nesting that would overflow a parser
    (_raw(b"[1, 2]"), "not an object with a payload length"),
    (_raw(b'{"payload": "12"}'), "not an object with a payload length"),
    (_raw(b'{"payload": true}'), "not an object with a payload length"),
    (_raw(b'{"payload": -4}'), "negative payload length"),
    (_raw(b'{"payload": 0, "x": "\xff"}'), "not JSON"),
    (wire.HEADER.pack(2 << 20) + b"{}", "over the 1048576 allowed"),
], ids=["text", "deep", "list", "string-length", "bool-length", "negative", "bad-utf8", "huge"])
def test_malformed_frames_are_refused(data, words):
    with pytest.raises(wire.WireError) as error:
        wire.FrameReader().feed(data)
    assert words in str(error.value)


@given(st.binary(max_size=2048))
@settings(max_examples=300, deadline=None)
def test_random_bytes_give_frames_or_a_wire_error(data):
    reader = wire.FrameReader()
    try:
        for frame in reader.feed(data):
            try:
                wire.check_frame(frame)
            except wire.WireError:
                pass
    except wire.WireError:
        pass


def _array(dtype="float64", shape=(2,), offset=0, nbytes=16):
    return {"kind": "array", "dtype": dtype, "shape": list(shape), "offset": offset,
            "nbytes": nbytes}


@pytest.mark.parametrize("desc, words", [
    (_array(dtype="complex128"), "is not one gradkit rebuilds"),
    (_array(dtype="object"), "is not one gradkit rebuilds"),
    (_array(shape=(-1,)), "is not a list of sizes"),
    ({**_array(), "shape": [2.0]}, "is not a list of sizes"),
    (_array(shape=(1,) * 9, nbytes=8), "is not a list of sizes"),
    (_array(nbytes=8), "do not hold a float64 array of shape (2,)"),
    (_array(offset=8), "runs past the end of its frame"),
    (_array(offset=-1), "non-negative integers"),
    (_array(shape=(1 << 30, 1 << 30), nbytes=16), "do not hold"),
])
def test_array_descriptions_are_checked_against_their_frame(desc, words):
    with pytest.raises(wire.WireError) as error:
        wire.check_array(desc, bytes(16))
    assert words in str(error.value)


def _call_frame(**changes) -> wire.Frame:
    encoder = _child._Encoder()
    weights = {name: torch.randn(*shape, dtype=torch.float64)
               for name, shape in (("V", (3, 4)), ("I", (1, 4)), ("W", (4, 1)), ("J", (1, 1)))}
    header = {"type": "call", "id": "batch5", "ok": True, "seconds": 0.01,
              "autograd_calls": {}, "steps": [{
                  "returned": encoder.encode(weights),
                  "captured": {"train_neural_net": {"P": encoder.encode(torch.rand(5, 1))}},
                  "after": {"X": encoder.encode(torch.rand(5, 3))}}]}
    header.update(changes)
    return wire.Frame(json.loads(json.dumps(header)), encoder.out.getvalue())


def test_a_real_call_frame_passes_and_reads_back():
    frame = _call_frame()
    assert wire.check_frame(frame) == "call"
    result = read_call(frame)
    assert result.steps[0].returned.items["V"].tensor.shape == (3, 4)


def _nested(depth: int) -> dict:
    value = {"kind": "scalar", "value": 1, "type": "int"}
    for _ in range(depth):
        value = {"kind": "list", "type": "list", "items": [value]}
    return value


@pytest.mark.parametrize("changes, words", [
    ({"seconds": "soon"}, "seconds is not a number"),
    ({"id": 5}, "call id is not a string"),
    ({"ok": 1}, "ok is not true or false"),
    ({"steps": {"0": {}}}, "steps are not a list"),
    ({"steps": [[]]}, "not an object"),
    ({"steps": [{"returned": {"kind": "pickle", "data": "..."}}]}, "unknown kind 'pickle'"),
    ({"steps": [{"returned": _nested(12)}]}, "nested too deeply"),
    ({"steps": [{"returned": _array(nbytes=16, offset=1 << 40)}]}, "runs past the end"),
    ({"steps": [{"returned": {"kind": "scalar", "value": [1], "type": "list"}}]},
     "scalar is not a number"),
    ({"error": "boom"}, "not an object"),
    ({"error": {"type": "E", "message": 3}}, "must be strings"),
    ({"autograd_calls": {"torch.autograd.grad": "many"}}, "not counts"),
    ({"engine": {"nodes": "many"}}, "engine evidence is not counts and a flag"),
    ({"engine": {"grad_mode": 1}}, "engine evidence is not counts and a flag"),
    ({"engine": [3]}, "not an object"),
])
def test_call_frames_of_the_wrong_shape_are_refused(changes, words):
    with pytest.raises(wire.WireError) as error:
        wire.check_frame(_call_frame(**changes))
    assert words in str(error.value)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["kind", "type", "items", "value", "steps", "returned", "after",
                         "captured", "dtype", "shape", "offset", "nbytes", "id", "ok",
                         "error", "line", "message", "traceback", "step", "repr", "source"]),
        inner, max_size=6),
    max_leaves=30)


@given(_json, st.sampled_from(["call", "load"]))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_frame_that_passes_the_check_can_always_be_read(body, kind):
    """The contract between wire.check_frame and the code that reads frames: no surprises."""
    header = {**(body if isinstance(body, dict) else {"steps": body}), "type": kind,
              "payload": 16}
    frame = wire.Frame(header, bytes(16))
    try:
        wire.check_frame(frame)
    except wire.WireError:
        return
    if kind == "call":
        read_call(frame)


# --- the child's side: reading what a submission returned ------------------------------------

class _Liar(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in ("detach", "numpy", "contiguous", "cpu", "clone"):
            return torch.zeros(3, 4, dtype=torch.float64)
        return super().__torch_function__(func, types, args, kwargs or {})


class _Keys(dict):
    def items(self):
        return [("V", "a lie")]

    def __iter__(self):
        raise RuntimeError("no")


class _Loud:
    def __repr__(self):
        raise AssertionError("gradkit called __repr__")

    __str__ = __repr__


class _Key(str):
    def __str__(self):
        return "not the key"


def _read(value):
    encoder = _child._Encoder()
    desc = json.loads(json.dumps(encoder.encode(value)))
    wire.check_value(desc, encoder.out.getvalue())
    return desc, rebuild(desc, encoder.out.getvalue())


def test_a_tensor_is_read_as_its_bytes_not_through_its_subclass():
    true = torch.arange(12, dtype=torch.float64).reshape(3, 4) + 1
    desc, value = _read(true.as_subclass(_Liar))
    assert desc["source"] == "_Liar"
    assert type(value.tensor) is torch.Tensor and torch.equal(value.tensor, true)


def test_containers_are_read_through_the_builtin_types():
    weights = _Keys(V=torch.ones(3, 4))
    weights[_Key("W")] = torch.zeros(4, 1)
    _, value = _read(weights)
    assert value.type_name == "_Keys"
    assert sorted(value.items) == ["V", "W"]
    assert torch.equal(value.items["V"].tensor, torch.ones(3, 4))


def test_objects_are_named_never_printed():
    desc, value = _read([_Loud(), (x for x in ()), {1, 2}])
    assert [v.type_name for v in value.items.values()] == ["_Loud", "generator", "set"]


@pytest.mark.parametrize("make", [
    lambda: torch.arange(6, dtype=torch.bfloat16).reshape(2, 3),
    lambda: torch.arange(6, dtype=torch.float16),
    lambda: torch.tensor([[True, False]]),
    lambda: np.arange(6, dtype=np.int32).reshape(3, 2),
    lambda: torch.arange(12.0).reshape(3, 4).T,  # not contiguous
], ids=["bfloat16", "float16", "bool", "ndarray", "transposed"])
def test_arrays_round_trip_exactly(make):
    original = make()
    _, value = _read(original)
    expected = torch.as_tensor(original)
    assert value.tensor.dtype == expected.dtype and torch.equal(value.tensor, expected)


def test_autograd_history_is_recorded():
    leaf = torch.ones(2, requires_grad=True)
    assert _read(leaf * 2)[0]["autograd"] is True
    assert "autograd" not in _read(torch.ones(2))[0]


def test_reading_stops_at_a_budget():
    desc, _ = _read([[list(range(64))] * 64] * 64)
    text = json.dumps(desc)
    assert "too many values" in text and len(text) < 1 << 20
    big = [torch.zeros(900_000, dtype=torch.float64)] * 3  # 21.6 MB, over the 16 MiB budget
    assert "over 16 MiB" in json.dumps(_read(big)[0])


def test_an_exception_message_is_read_without_its_str():
    class Hostile(Exception):
        def __str__(self):
            raise AssertionError("gradkit called __str__")

    assert _child._message(ValueError("plain words")) == "plain words"
    assert _child._message(Hostile("args are fine")) == "args are fine"
    assert _child._message(Hostile(_Loud())) == "<a message gradkit does not print>"


# --- a run's budget: what its frames may make the grader rebuild -----------------------------

def _sharing(count: int, nbytes: int) -> wire.Frame:
    """A call frame whose ``count`` arrays all describe the same ``nbytes`` of its payload."""
    same = {"kind": "array", "dtype": "float64", "shape": [nbytes // 8], "offset": 0,
            "nbytes": nbytes, "source": "tensor"}
    return wire.Frame({"type": "call", "id": "batch5", "ok": True, "seconds": 0.1,
                       "steps": [{"returned": {"kind": "list", "type": "list",
                                               "items": [same] * count}}],
                       "payload": nbytes}, bytes(nbytes))


def test_arrays_that_describe_the_same_bytes_are_refused():
    """16 MiB described 220 times rebuilt 3.6 GB in the grader; now the frame is refused."""
    with pytest.raises(wire.WireError, match="describe the same bytes"):
        wire.check_frame(_sharing(2, 16))
    with pytest.raises(wire.WireError, match="describe the same bytes"):
        wire.check_frame(_sharing(220, 16 << 20))
    assert wire.check_frame(_sharing(1, 16)) == "call"
    empty = _sharing(2, 0)  # empty arrays hold no bytes: nothing is shared
    assert wire.check_frame(empty) == "call"


def test_a_runs_frames_are_charged_to_one_budget():
    budget = wire.Budget(nodes=10_000, array_bytes=40)
    wire.check_frame(_sharing(1, 32), budget)
    assert budget.array_bytes == 8
    with pytest.raises(wire.WireError, match="more array bytes than gradkit rebuilds"):
        wire.check_frame(_sharing(1, 16), budget)
    junk = wire.Frame({"type": "call", "id": "x", "ok": True, "junk": [[0] * 1000] * 20,
                       "payload": 0}, b"")
    with pytest.raises(wire.WireError, match="more values than gradkit reads"):
        wire.check_frame(junk, wire.Budget(nodes=10_000))


def test_the_real_protocol_refuses_a_run_past_its_budget():
    """A run's frames, each fine alone, are refused together once past the run's budget."""
    from gradkit.sandbox.runner import _Protocol

    protocol = _Protocol(["a", "b", "c", "d", "e"])
    protocol.accept(wire.Frame({"type": "isolation", "payload": 0}, b""))
    protocol.accept(wire.Frame({"type": "load", "ok": True, "payload": 0}, b""))
    with pytest.raises(wire.WireError, match="more array bytes"):
        for call_id in "abcde":
            frame = _sharing(1, 16 << 20)
            frame.header["id"] = call_id
            protocol.accept(frame)
