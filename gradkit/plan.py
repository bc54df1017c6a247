"""Turning cases into the calls a child makes, and the child's frames back into plain tensors.

The grader sends every input as raw bytes and keeps its own copy of what it sent; what comes back
is rebuilt here as plain ``torch.Tensor`` objects (``Value``), with where each came from, so
nothing a submission defines (subclasses, ``__eq__``, ``__torch_function__``) reaches a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from gradkit.sandbox import wire
from gradkit.cases import Case


def _encode_tensor(t: Tensor, out: wire.PayloadWriter) -> dict[str, Any]:
    t = t.detach().contiguous()
    return out.add(str(t.dtype).removeprefix("torch."), tuple(t.shape), t.numpy().tobytes())


#: the seed torch, numpy and ``random`` are given before the submission loads, so whatever a
#: module draws at load time (``I = torch.randn(1, 4)``) is the same on every run
LOAD_SEED = 0


def build_request(cases: tuple[Case, ...], source: str, filename: str, workdir: str,
                  allow_autograd: bool = False,
                  functions: tuple[str, str] = ("train_neural_net", "neural_net_predict")
                  ) -> tuple[dict[str, Any], bytes]:
    """The request a child runs: the source to load, the names of the student's train and
    predict functions (the assignment's), and one call per case. Unless ``allow_autograd``,
    the child switches forward-mode autograd off before the submission loads and watches the
    engine."""
    out = wire.PayloadWriter()
    calls = []
    for case in cases:
        weights = None if case.weights is None else {
            name: _encode_tensor(w, out) for name, w in case.weights.items()}
        inputs: dict[str, Any] = {"X": _encode_tensor(case.X, out), "weights": weights}
        if case.kind == "training":
            inputs["Y"] = _encode_tensor(case.Y, out)
            inputs["rows"] = _encode_tensor(case.rows, out)
        elif case.kind != "predict":
            batches = case.batches or ((case.X, case.Y),)
            inputs["batches"] = [{"X": _encode_tensor(X, out), "Y": _encode_tensor(Y, out)}
                                 for X, Y in batches]
        calls.append({"id": case.id, "kind": case.kind, "inputs": inputs, "seed": case.seed,
                      "learning_rate": case.learning_rate, "repeat": case.repeat,
                      "capture": case.capture, "checkpoints": list(case.checkpoints)})
    request = {"source": source, "filename": filename, "workdir": workdir, "calls": calls,
               "autograd_allowed": allow_autograd, "functions": list(functions),
               "load_seed": LOAD_SEED}
    return request, out.getvalue()


@dataclass
class Value:
    """A value a submission sent back, rebuilt. ``tensor`` is set for tensors and arrays."""

    kind: str  # "array", "dict", "list", "scalar", "object", "missing"
    tensor: Optional[Tensor] = None
    source: str = ""  # "tensor", "ndarray" or a Tensor subclass's name
    items: dict[str, "Value"] = field(default_factory=dict)
    type_name: str = ""
    text: str = ""

    def describe(self) -> str:
        if self.kind == "array":
            kind = "numpy array" if self.source == "ndarray" else "tensor"
            return f"a {kind} of shape {tuple(self.tensor.shape)} and dtype " \
                   f"{str(self.tensor.dtype).removeprefix('torch.')}"
        if self.kind == "dict":
            return f"a dict with keys {sorted(self.items)}"
        if self.kind == "missing":
            return "nothing"
        name = self.type_name or self.kind
        article = "an" if name[:1].lower() in "aeiou" else "a"
        return f"{article} {name}" + (f" ({self.text})" if self.text else "")


def rebuild(desc: Any, payload: bytes) -> Value:
    """A wire description as a ``Value`` of plain tensors. Raises ``wire.WireError``."""
    if not isinstance(desc, dict):
        return Value("object", type_name=type(desc).__name__)
    kind = desc.get("kind")
    if kind == "array":
        dtype, shape, raw = wire.check_array(desc, payload)
        if dtype == "bfloat16":  # numpy has no bfloat16
            t = torch.frombuffer(bytearray(raw), dtype=torch.int16).view(torch.bfloat16) \
                if raw else torch.empty(0, dtype=torch.bfloat16)
            t = t.reshape(shape)
        else:
            # a copy the tensor owns; numpy reshapes a tiny array at half torch's cost
            t = torch.from_numpy(np.frombuffer(raw, dtype=dtype).reshape(shape).copy())
        source = desc.get("source")
        return Value("array", tensor=t, source=source if isinstance(source, str) else "tensor")
    if kind == "dict" and isinstance(desc.get("items"), dict):
        return Value("dict", items={str(k): rebuild(v, payload) for k, v in desc["items"].items()},
                     type_name=str(desc.get("type", "dict")))
    if kind == "list" and isinstance(desc.get("items"), list):
        return Value("list", items={str(i): rebuild(v, payload)
                                    for i, v in enumerate(desc["items"])},
                     type_name=str(desc.get("type", "list")))
    if kind == "scalar":
        return Value("scalar", type_name=str(desc.get("type", "")), text=repr(desc.get("value"))[:80])
    return Value("object", type_name=str(desc.get("type", "object"))[:80],
                 text=str(desc.get("repr", ""))[:200])


@dataclass
class StepResult:
    """One call of the student's function within a case."""

    returned: Value
    captured: dict[str, dict[str, Value]] = field(default_factory=dict)
    after: dict[str, Value] = field(default_factory=dict)
    step: Optional[int] = None


@dataclass
class CallResult:
    """What a case's call produced: steps, or the student's exception, or nothing at all."""

    case_id: str
    steps: list[StepResult] = field(default_factory=list)
    error: Optional[dict[str, Any]] = None  # the student's exception (type, message, line, ...)
    missing: Optional[str] = None  # why there is no result (timeout, crash, not run)
    seconds: float = 0.0


def read_call(frame: wire.Frame) -> CallResult:
    header, payload = frame.header, frame.payload
    result = CallResult(case_id=str(header.get("id")), seconds=float(header.get("seconds") or 0))
    if not header.get("ok"):
        error = header.get("error")
        result.error = error if isinstance(error, dict) else {"type": "?", "message": str(error)}
    for raw in header.get("steps") or []:
        if not isinstance(raw, dict):
            raise wire.WireError("a step is not an object")
        captured = {
            str(fn): {str(name): rebuild(v, payload) for name, v in names.items()}
            for fn, names in (raw.get("captured") or {}).items() if isinstance(names, dict)
        }
        after = {str(k): rebuild(v, payload) for k, v in (raw.get("after") or {}).items()}
        step = raw.get("step")
        result.steps.append(StepResult(rebuild(raw.get("returned"), payload), captured, after,
                                       step if isinstance(step, int) else None))
    return result
